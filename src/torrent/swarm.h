/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Swarm: downloads one content from BitTorrent v2 peers on an sd-event loop, given its manifest (info
 * dictionary and piece layer, from the control) and peer addresses that may keep coming while it runs
 * (the DHT's get_peers under the first 20 bytes of the id, a fallback list of seeders):
 *
 *     swarm_new(event, &(SwarmConfig) { .dir = dir, .manifest = m, .sink = sink }, on_done, ud, &s);
 *     swarm_add_peer_string(s, "10.0.0.5:6881");       or swarm_add_peer(s, sockaddr, len), any time
 *     swarm_start(s);
 *     ... on_done(s, &result, ud) once: result.error 0 and result.path, or why not ...
 *     swarm_free(s);
 *
 * It connects to at most max_peers peers at once (the others wait their turn), picks pieces rarest
 * first with `pipeline` blocks in flight per peer and endgame duplicates at the end (piece-picker.h),
 * verifies every piece against the piece layer before it counts, and writes it to the ContentStore in
 * dir (content-store.h: resumable after a crash, the final DIR/<id hex> appearing only when whole;
 * no name a peer sends is ever used). Verifying (SHA-256) and writing run on verify_threads worker
 * threads (piece-verifier.h), so that the loop only receives; the store's pieces are made durable
 * (fdatasync there, then the state file) every second and every 16 MiB, one sync at a time.
 *
 * A peer whose piece fails verification is banned for this content (disconnected and never called
 * again) and the piece is fetched from another; when a bad piece had blocks from several peers
 * (endgame), each gets a strike and two strikes ban. A peer with requests in flight that delivers no
 * block for stall_usec is dropped and its requests go to others; a peer that fails (refused,
 * closed, a protocol violation) is tried again after a pause growing with each failure; after 3
 * failures in a row (without a good piece in between) it is not called again. The fetch ends with
 *   -ETIMEDOUT  "no peer delivered within N s" (no verified piece for no_progress_usec), or the
 *               deadline passed;
 *   -ENOSPC     the disk is full (the partial files are removed only with remove_partial_on_error);
 *   other disk errors of the store.
 *
 * With a SwarmServer, the content is registered with it from the start, so that the verified pieces
 * are served to others while downloading (peers connected to us get `have` as pieces complete); it
 * stays registered after success (swarm_server_remove() to stop), and is removed on failure. */

#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "manifest.h"
#include "peer-conn.h"
#include "swarm-server.h"

typedef struct Swarm Swarm;

typedef struct SwarmConfig {
        const char *dir;                        /* the store directory (required) */
        const Manifest *manifest;               /* with its piece layer (copied) */
        PeerSink *sink;                         /* required (peer_sink_default_new()) */
        SwarmServer *server;                    /* NULL: no serving while downloading */
        unsigned max_peers;                     /* connections at once (8) */
        unsigned pipeline;                      /* blocks in flight per peer (128) */
        uint64_t no_progress_usec;              /* 60 s */
        uint64_t deadline_usec;                 /* 0: none */
        uint64_t stall_usec;                    /* 15 s */
        uint64_t retry_usec;                    /* pause before calling a failed peer again (2 s) */
        uint64_t memory_max;                    /* bytes of pieces assembled (and being verified) at once (64 MiB) */
        unsigned verify_threads;                /* threads verifying and writing pieces (2) */
        bool remove_partial_on_error;
        const PeerConnConfig *conn;             /* NULL: defaults (the sink above in any case) */
        /* After each verified piece (may be NULL). */
        void (*progress)(Swarm *s, uint32_t have, uint32_t total, void *userdata);
} SwarmConfig;

typedef struct SwarmPeerStats {
        char address[PEER_CONN_ADDR_MAX];
        uint64_t bytes;                         /* block payload received */
        uint32_t pieces;                        /* verified pieces it sent (alone) */
        bool banned;
        unsigned connects, failures;
        int error;                              /* of its last connection */
        const char *reason;
} SwarmPeerStats;

typedef struct SwarmResult {
        int error;
        const char *reason;                     /* NULL on success */
        const char *path;                       /* the complete file (on success) */
        uint64_t bytes;                         /* block payload received, wasted included */
        uint64_t bytes_wasted;                  /* duplicates, bad pieces */
        uint64_t duration_usec;
        uint32_t pieces_fetched, pieces_failed, pieces_resumed;
        unsigned peers_used;                    /* peers that sent at least one verified piece */
        const SwarmPeerStats *peers;
        size_t n_peers;
} SwarmResult;

typedef void (*SwarmDoneCallback)(Swarm *s, const SwarmResult *r, void *userdata);

/* Opens (or resumes) the store. -ENOSPC: the disk cannot hold the file; errors of content_store_open_dir(). */
int swarm_new(sd_event *e, const SwarmConfig *config, SwarmDoneCallback done, void *userdata, Swarm **ret);
/* Stops everything; no callback runs after. */
Swarm *swarm_free(Swarm *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Swarm *, swarm_free);

int swarm_start(Swarm *s);
/* Adds a peer (duplicates ignored: 0); may be called at any time. -EINVAL for an address that is not
 * IPv4 or IPv6. */
int swarm_add_peer(Swarm *s, const struct sockaddr *sa, socklen_t salen);
/* "IP:PORT" or "[IPv6]:PORT", numeric (callers resolve names). */
int swarm_add_peer_string(Swarm *s, const char *address);
ContentStore *swarm_store(Swarm *s);

/* Parses a numeric "IP:PORT" / "[IPv6]:PORT". */
int swarm_parse_address(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);
