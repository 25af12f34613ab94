/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* InputServer: the agent's side of the swarm as a server. Other agents fetch inputs from us as they
 * would from a seeder: a SwarmServer (src/torrent/swarm-server.h, with its caps) on the peer port
 * (PEER_PORT, 6882 by default, since the seeder has 6881; 0: any free port; or the socket systemd passed
 * with the name "peer", which the agent hands over as listen_fd), serving every content of the input cache, complete or being downloaded, each
 * announced in the DHT under the first 20 bytes of its id with the peer port (when the agent runs a
 * DHT node), and re-announced every 15 minutes until it leaves the cache.
 *
 *     input_server_new(event, &(InputServerConfig) { .port = 6882, .sink = sink, .dht = dht }, &srv);
 *     input_server_add(srv, store);        the store is served (a reference is taken) and announced
 *     input_server_remove(srv, store);     not any more (connections to it close), unannounced
 *
 * A store replaces another of the same content (a download that starts over the partial file found
 * at start, say): the server's connections then see the pieces as the new store gets them. */

#include <systemd/sd-event.h>

#include "content-store.h"
#include "dht.h"
#include "peer-sink.h"
#include "swarm-server.h"

typedef struct InputServer InputServer;

typedef struct InputServerConfig {
        int64_t port;                   /* 0: any free port */
        const int *listen_fd;           /* NULL, or a listening socket to serve on instead of port (the one
                                         * systemd passed as "peer"), taken over whatever happens */
        PeerSink *sink;                 /* required; shared with the downloads */
        Dht *dht;                       /* NULL: nothing is announced */
} InputServerConfig;

int input_server_new(sd_event *e, const InputServerConfig *config, InputServer **ret);
InputServer *input_server_free(InputServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(InputServer *, input_server_free);

uint16_t input_server_port(const InputServer *s);
SwarmServer *input_server_swarm(InputServer *s);

/* Serves and announces store (replacing a store of the same content). */
int input_server_add(InputServer *s, ContentStore *store);
/* -ENOENT when that store is not served. */
int input_server_remove(InputServer *s, ContentStore *store);
/* Block payload sent to peers so far. */
uint64_t input_server_bytes_served(const InputServer *s);
