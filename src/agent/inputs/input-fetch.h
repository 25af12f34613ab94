/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* InputFetcher: brings contents into the input cache, one download per content however many tasks
 * want it at once, at most max_running downloads at a time (the others wait their turn, in order).
 *
 * A fetch, for a content the caller has pinned in the cache:
 *   1. the manifest: DIR/<id>.torrent when it is there and hashes to the id, else
 *      GET /api/contents/{id} from the control (agent token; failover like every call), checked
 *      (canonical, its info dictionary hashing to the id) and kept as DIR/<id>.torrent;
 *   2. a content already complete in the cache is done at once (source "cache");
 *   3. else room is made (input_cache_reserve(): -ENOSPC, -EFBIG) and a Swarm (src/torrent/swarm.h)
 *      downloads it into the cache directory, resuming what a previous run left, from the peers of the
 *      DHT (get_peers under the first 20 bytes of the id, asked again every few seconds while it runs)
 *      and the configured seeders; it is served to other agents from its first verified piece on.
 * It fails with -ETIMEDOUT when no verified piece came within no_progress_usec (the swarm's own
 * timeout; while the manifest cannot be had, the same bound applies), -ENOENT when the control does
 * not know the content, -EBADMSG when its manifest is not the content's, -ENOSPC / -EFBIG when it does
 * not fit, other errors of the disk. The partial files stay for the next fetch (except after
 * -ENOSPC).
 *
 * Waiters are told once, always from the event loop (never from within input_fetcher_want()). A
 * waiter that leaves (input_fetcher_forget()) is not told; the last one to leave stops the download
 * (its verified pieces stay on disk, and served). */

#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "control-client.h"
#include "dht.h"
#include "input-cache.h"
#include "input-server.h"
#include "list.h"
#include "peer-sink.h"

typedef struct InputFetcher InputFetcher;
typedef struct InputFetch InputFetch;

typedef struct InputSeeder {
        struct sockaddr_storage sa;
        socklen_t salen;
} InputSeeder;

typedef struct InputFetcherConfig {
        ControlClient *control;
        InputCache *cache;
        InputServer *server;            /* NULL: not served while downloading */
        PeerSink *sink;
        Dht *dht;                       /* NULL: the seeders only */
        const InputSeeder *seeders;     /* copied */
        size_t n_seeders;
        uint64_t no_progress_usec;
        uint64_t request_timeout_usec;  /* of the manifest's GET */
        unsigned max_running;
} InputFetcherConfig;

typedef struct InputFetchResult {
        int error;
        const char *reason;             /* for a person, on failure */
        const char *path;               /* the complete file, on success */
        bool cached;                    /* it was complete before: nothing was fetched */
        bool shared;                    /* another waiter of the same download was told first: the
                                         * byte counts below are that download's, counted there */
        uint64_t bytes;                 /* block payload received, wasted included */
        uint64_t bytes_seeders;         /* from the configured SEEDERS */
        uint64_t bytes_agents;          /* from other peers (agents found in the DHT) */
        unsigned peers;                 /* peers that delivered a verified piece */
        unsigned peers_banned;          /* peers that sent a piece that failed verification */
        uint32_t pieces_fetched, pieces_resumed;
        uint64_t duration_usec;
        const char *peer_list;          /* "ADDRESS=BYTES,..." of the peers that sent anything */
} InputFetchResult;

typedef struct InputWaiter InputWaiter;
struct InputWaiter {
        void (*done)(InputWaiter *w, const InputFetchResult *r);
        InputFetch *fetch;              /* the fetcher's */
        LIST_FIELDS(InputWaiter);
};

typedef struct InputFetcherStats {
        uint64_t bytes, bytes_seeders, bytes_agents;    /* received, over all fetches */
        unsigned running, queued;
} InputFetcherStats;

int input_fetcher_new(sd_event *e, const InputFetcherConfig *config, InputFetcher **ret);
/* Stops every download; no waiter is told. */
InputFetcher *input_fetcher_free(InputFetcher *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(InputFetcher *, input_fetcher_free);

/* w waits for entry's content (pinned by the caller for as long as it waits). */
int input_fetcher_want(InputFetcher *f, InputCacheEntry *entry, InputWaiter *w);
void input_fetcher_forget(InputWaiter *w);
void input_fetcher_get_stats(const InputFetcher *f, InputFetcherStats *ret);
