/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SwarmServer: the serving side. It accepts TCP connections on a listening socket the caller gives
 * (socket-activated, or daemon_listen_tcp()), or takes connections the caller accepted itself
 * (swarm_server_take(): a daemon with several listening sockets of its own), reads each peer's handshake, looks the info-hash up
 * among the contents registered with swarm_server_add() (complete or being downloaded), and serves
 * it with a PeerConn (peer-conn.h says what serving means). An unknown info-hash is disconnected and
 * counted; so is every protocol violation (counted by errno).
 *
 * Caps: at most max_connections connections at once and max_per_address from one IP address;
 * connections beyond are accepted and closed at once (counted), so that the backlog does not fill.
 * At max_connections, the connection that has waited longest for its peer's handshake is closed to
 * make room (counted as evicted); only when every one has shaken hands is the new one refused. A
 * connection that cannot be accepted for want of a descriptor is accepted through a spare one and
 * closed (daemon_accept()).
 *
 * A complete content is served as a seed: a request for a piece that another connected peer holds
 * or is being sent is declined once while some piece is held by nobody (seed-ledger.h), so that the
 * seed's upload goes to pieces the swarm lacks.
 *
 * Contents are few per process (a seeder's catalogue, an agent's inputs): a list, looked up linearly
 * by the 20-byte short id. */

#include <systemd/sd-event.h>

#include "content-store.h"
#include "peer-conn.h"

typedef struct SwarmServer SwarmServer;

typedef struct SwarmServerConfig {
        int listen_fd;                          /* a listening TCP socket (not closed by the server), or -1 */
        PeerSink *sink;                         /* required */
        unsigned max_connections;               /* 256 */
        unsigned max_per_address;               /* 16 */
        const PeerConnConfig *conn;             /* NULL: defaults */
        /* A complete content is served as a seed that sends each piece once first (seed-ledger.h);
         * true: every request is served (comparisons, benchmarks). */
        bool no_seed_sharing;
        /* Told of every connection that ends (logging, tests); may be NULL. */
        void (*closed)(SwarmServer *srv, const char *address, int error, const char *reason, void *userdata);
        void *userdata;
} SwarmServerConfig;

typedef struct SwarmServerStats {
        uint64_t accepted;
        uint64_t refused_global, refused_address;       /* over the caps */
        uint64_t refused_descriptors;           /* shed for want of a descriptor (EMFILE on accept()) */
        uint64_t evicted;                       /* closed without a handshake to make room at max_connections */
        uint64_t unknown_info_hash;
        uint64_t violations;                    /* closed for a protocol violation (any negative errno but timeouts and resets) */
        uint64_t timeouts;
        uint64_t closed_clean;                  /* the peer closed */
        uint64_t requests_rejected;             /* rejects sent, over closed connections and open ones */
        uint64_t requests_declined;             /* of which as a seed, another peer holding the piece */
        uint64_t bytes_sent;                    /* block payload, closed connections and open ones */
        uint64_t hash_requests, hash_rejects;   /* BEP 52 hash requests answered, rejected */
        uint64_t metadata_pieces;               /* ut_metadata pieces served */
        unsigned connections;                   /* open now */
} SwarmServerStats;

int swarm_server_new(sd_event *e, const SwarmServerConfig *config, SwarmServer **ret);
SwarmServer *swarm_server_free(SwarmServer *srv);
DEFINE_TRIVIAL_CLEANUP_FUNC(SwarmServer *, swarm_server_free);

/* An accepted TCP connection (taken: closed when refused or on failure), under the same caps. 0, or
 * -EBUSY when over a cap, other errors when it cannot be served. */
int swarm_server_take(SwarmServer *srv, int fd);

/* Serves store (a reference is taken). -EEXIST when a content with that id is registered. */
int swarm_server_add(SwarmServer *srv, ContentStore *store);
/* Stops serving it: its connections are closed. -ENOENT when not registered. */
int swarm_server_remove(SwarmServer *srv, ContentStore *store);
void swarm_server_get_stats(const SwarmServer *srv, SwarmServerStats *ret);
