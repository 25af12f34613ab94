/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SeedServer: mc-seeder's serving half. One io_uring block sender (block-sender.h, on the path
 * SEND_PATH names, `auto` by default) wrapped as the PeerSink of one SwarmServer
 * (src/torrent/swarm-server.h), which the daemon feeds with the connections its peer listener
 * accepts (seed_server_take()); each stored content is a complete ContentStore registered with it.
 *
 * Besides wiring, it keeps the serving quiet in the journal and cheap on the bus:
 *  - a connection that ends is logged at debug; one closed for a protocol violation or an unknown
 *    info-hash is a `peer_violation` event, and one refused over MAX_PEERS or MAX_PEERS_PER_ADDRESS a
 *    `peer_limit` event, each at most once every SEED_SERVER_LOG_INTERVAL_USEC with the count of
 *    those not logged since (a hostile peer reconnecting in a loop costs a line every 10 s, not one
 *    per connection);
 *  - a `serving_summary` event every SEED_SERVER_SUMMARY_USEC when anything was served or refused
 *    since the last one, and one when the server is freed;
 *  - `changed` is called when the counters the bus shows moved (connections, bytes served,
 *    violations, refusals), at most once a second, and once a second while connections are open.
 *
 * Everything runs on the daemon's sd-event loop; nothing here blocks it for long (the block sender
 * works through io_uring, or non-blocking sendfile() from page cache). */

#include <systemd/sd-event.h>

#include "block-sender.h"
#include "manifest.h"
#include "swarm-server.h"

#define SEED_SERVER_NOTIFY_USEC (1 * USEC_PER_SEC)
#define SEED_SERVER_LOG_INTERVAL_USEC (10 * USEC_PER_SEC)
#define SEED_SERVER_SUMMARY_USEC (600 * USEC_PER_SEC)

typedef struct SeedServer SeedServer;

typedef struct SeedServerConfig {
        BlockSendPath send_path;        /* BLOCK_SEND_AUTO ... */
        unsigned max_peers;             /* 0: SwarmServer's default (256) */
        unsigned max_peers_per_address; /* 0: SwarmServer's default (16) */
        void (*changed)(SeedServer *s, void *userdata);
        void *userdata;
} SeedServerConfig;

/* -EOPNOTSUPP when a forced send path is missing from this kernel (or refused by a seccomp filter). */
int seed_server_new(sd_event *e, const SeedServerConfig *config, SeedServer **ret);
/* Closes every connection (after a last summary in the journal). */
SeedServer *seed_server_free(SeedServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(SeedServer *, seed_server_free);

/* An accepted connection (taken): served, or closed when over a cap. */
void seed_server_take(SeedServer *s, int fd);

/* Serves the complete file at path, whose manifest is m (copied). -EEXIST when served already;
 * -EBADFD when the file's size is not the manifest's; errors of open(). */
int seed_server_add(SeedServer *s, const char *path, const Manifest *m);
/* Stops serving the content: its connections are closed at once. -ENOENT when not served. */
int seed_server_remove(SeedServer *s, const uint8_t id[TORRENT_ID_SIZE]);

BlockSendPath seed_server_send_path(const SeedServer *s);
void seed_server_get_stats(const SeedServer *s, SwarmServerStats *ret);
/* Connections closed for a protocol violation or an unknown info-hash, and refused over a cap (or
 * closed without a handshake to make room at it, or shed for want of a descriptor). */
uint64_t seed_server_violations(const SwarmServerStats *st);
uint64_t seed_server_refused(const SwarmServerStats *st);
