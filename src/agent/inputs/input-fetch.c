/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <ifaddrs.h>

#include "daemon-util.h"
#include "dht-addr.h"
#include "file-util.h"
#include "input-fetch.h"
#include "log.h"
#include "manifest.h"
#include "swarm.h"

/* The DHT is asked again this often while a download runs: agents that start holding the content
 * announce it meanwhile. */
#define DHT_REQUERY_USEC (5 * USEC_PER_SEC)
/* Between tries of the manifest's GET while no replica answers usefully. */
#define MANIFEST_RETRY_MIN_USEC (250 * USEC_PER_MSEC)
#define MANIFEST_RETRY_MAX_USEC (5 * USEC_PER_SEC)
/* docs/api.md: a manifest is at most 2 MiB. */
#define MANIFEST_MAX (2U << 20)
#define PEER_LIST_MAX 1024

typedef enum FetchState {
        FETCH_QUEUED,
        FETCH_MANIFEST,
        FETCH_SWARM,
        FETCH_DONE,
} FetchState;

/* A get_peers in flight outlives the fetch that asked (the DHT has no cancel): it points back through
 * this, which the fetch disowns when it goes. */
typedef struct DhtLookup {
        InputFetch *fetch;
} DhtLookup;

struct InputFetch {
        InputFetcher *fetcher;
        InputCacheEntry *entry;
        FetchState state;
        bool running;                   /* counted in fetcher->running */
        bool finishing;                 /* telling the waiters */
        InputWaiter *waiters;
        Manifest *manifest;
        ControlCall *manifest_call;
        uint64_t started_usec, manifest_backoff_usec;
        Swarm *swarm;
        DhtLookup *lookup;
        sd_event_source *timer;         /* manifest retry, DHT re-query */
        sd_event_source *defer;         /* a result known at once, told from the loop */
        InputFetchResult result;
        char reason[256];
        char *peer_list;
        LIST_FIELDS(InputFetch);
};

struct InputFetcher {
        sd_event *event;
        InputFetcherConfig config;
        InputSeeder *seeders;
        InputFetch *fetches, *fetches_tail;
        sd_event_source *kick_source;
        unsigned running;
        uint64_t bytes, bytes_seeders, bytes_agents;
};

static void schedule_kick(InputFetcher *f);

static void fetch_free(InputFetch *x) {
        InputFetcher *f = x->fetcher;

        if (x->running) {
                x->running = false;
                f->running--;
        }
        LIST_REMOVE_QUEUED(f->fetches, f->fetches_tail, x);
        control_call_cancel(x->manifest_call);
        if (x->lookup)
                x->lookup->fetch = NULL;
        x->swarm = swarm_free(x->swarm);
        sd_event_source_disable_unref(x->timer);
        sd_event_source_disable_unref(x->defer);
        manifest_free(x->manifest);
        input_cache_unpin(x->entry);
        free(x->peer_list);
        free(x);
}

/* Tells every waiter, then goes. */
static void fetch_finish(InputFetch *x, int error, const char *fmt, ...) _printf_(3, 4);
static void fetch_finish(InputFetch *x, int error, const char *fmt, ...) {
        InputFetcher *f = x->fetcher;

        if (x->state == FETCH_DONE)
                return;
        x->state = FETCH_DONE;
        x->result.error = error;
        if (error < 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(x->reason, sizeof(x->reason), fmt, ap);
                va_end(ap);
                x->result.reason = x->reason;
        } else
                x->result.path = input_cache_entry_path(x->entry);
        x->result.peer_list = x->peer_list ?: "";
        if (x->running) {
                x->running = false;
                f->running--;
        }

        x->finishing = true;
        while (x->waiters) {
                InputWaiter *w = x->waiters;
                LIST_REMOVE(x->waiters, w);
                w->fetch = NULL;
                w->done(w, &x->result);
                x->result.shared = true;
        }
        fetch_free(x);
        schedule_kick(f);
}

static int on_defer(sd_event_source *s, void *userdata) {
        InputFetch *x = userdata;

        x->defer = sd_event_source_disable_unref(x->defer);
        if (x->result.error < 0) {
                char reason[sizeof(x->reason)];
                memcpy(reason, x->reason, sizeof(reason));
                fetch_finish(x, x->result.error, "%s", reason);
        } else
                fetch_finish(x, 0, NULL);
        return 0;
}

/* From the loop, soon: waiters are never told from within input_fetcher_want(). */
static void fetch_finish_later(InputFetch *x, int error, const char *reason) {
        int r;

        x->result.error = error;
        snprintf(x->reason, sizeof(x->reason), "%s", reason ?: "");
        r = sd_event_add_defer(x->fetcher->event, &x->defer, on_defer, x);
        if (r < 0)
                log_error_errno(r, "Cannot schedule a fetch's result: %m");
}

/* ---------------------------------------------------------------------------------------------- */
/* Peers */

static bool is_seeder(InputFetcher *f, const struct sockaddr_storage *sa, socklen_t salen) {
        for (size_t i = 0; i < f->config.n_seeders; i++)
                if (f->seeders[i].salen == salen && memcmp(&f->seeders[i].sa, sa, salen) == 0)
                        return true;
        return false;
}

/* Whether a is an address of one of this host's interfaces (as its network namespace sees them). */
static bool is_local_address(const DhtAddr *a) {
        struct ifaddrs *ifs;
        bool found = false;

        if (getifaddrs(&ifs) < 0)
                return false;
        for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
                if (!i->ifa_addr || i->ifa_addr->sa_family != a->family)
                        continue;
                if (a->family == AF_INET)
                        found = memcmp(&((const struct sockaddr_in *) i->ifa_addr)->sin_addr, a->ip, 4) == 0;
                else
                        found = memcmp(&((const struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, a->ip, 16) == 0;
        }
        freeifaddrs(ifs);
        return found;
}

/* Ourselves, as the DHT returns us (we announce what we download, and the DHT nodes record the
 * address our packets come from, which is one of this host's): our port on a loopback address or on
 * an address of one of our interfaces. A connection to ourselves has nothing to give and would take
 * one of the download's few connection slots for as long as it runs. */
static bool is_self(InputFetcher *f, const DhtAddr *a) {
        if (!f->config.server || a->port != input_server_port(f->config.server))
                return false;
        if (a->family == AF_INET && a->ip[0] == 127)
                return true;
        if (a->family == AF_INET6 && memcmp(a->ip, (const uint8_t[16]) { [15] = 1 }, 16) == 0)
                return true;
        return is_local_address(a);
}

static void schedule_lookup(InputFetch *x, uint64_t delay);

static void on_peers(Dht *d, const DhtResult *r, void *userdata) {
        DhtLookup *l = userdata;
        InputFetch *x = l->fetch;
        unsigned added = 0;

        free(l);
        if (!x || r->error == -ECANCELED)
                return;
        x->lookup = NULL;
        if (x->state != FETCH_SWARM)
                return;
        for (size_t i = 0; i < r->n_peers; i++) {
                struct sockaddr_storage sa;
                socklen_t salen;

                if (is_self(x->fetcher, &r->peers[i]))
                        continue;
                salen = dht_addr_to_sockaddr(&r->peers[i], &sa);
                if (salen > 0 && swarm_add_peer(x->swarm, (struct sockaddr *) &sa, salen) > 0)
                        added++;
        }
        log_debug("Input %s: the DHT gave %zu peers (%u new).", input_cache_entry_id(x->entry), r->n_peers, added);
        schedule_lookup(x, DHT_REQUERY_USEC);
}

static void lookup(InputFetch *x) {
        uint8_t id[TORRENT_ID_SIZE], short_id[TORRENT_ID_SHORT_SIZE];
        DhtLookup *l;
        int r;

        if (!x->fetcher->config.dht || x->lookup)
                return;
        l = calloc(1, sizeof(*l));
        if (!l)
                return (void) log_oom();
        l->fetch = x;
        (void) torrent_id_from_hex(input_cache_entry_id(x->entry), id);
        torrent_id_short(id, short_id);
        r = dht_get_peers(x->fetcher->config.dht, short_id, on_peers, l);
        if (r < 0) {
                free(l);
                log_debug_errno(r, "Input %s: cannot ask the DHT: %m", input_cache_entry_id(x->entry));
                schedule_lookup(x, DHT_REQUERY_USEC);
                return;
        }
        x->lookup = l;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void schedule_timer(InputFetch *x, uint64_t delay) {
        int r;

        if (!x->timer) {
                r = sd_event_add_time_relative(x->fetcher->event, &x->timer, CLOCK_MONOTONIC, delay, 10 * USEC_PER_MSEC,
                                               on_timer, x);
                if (r < 0)
                        log_error_errno(r, "Cannot arm a fetch's timer: %m");
                else
                        (void) sd_event_source_set_enabled(x->timer, SD_EVENT_ONESHOT);
                return;
        }
        (void) sd_event_source_set_time_relative(x->timer, delay);
        (void) sd_event_source_set_enabled(x->timer, SD_EVENT_ONESHOT);
}

static void schedule_lookup(InputFetch *x, uint64_t delay) {
        if (x->fetcher->config.dht)
                schedule_timer(x, delay);
}

/* ---------------------------------------------------------------------------------------------- */
/* The download */

static void on_swarm_done(Swarm *s, const SwarmResult *r, void *userdata) {
        InputFetch *x = userdata;
        InputFetcher *f = x->fetcher;
        size_t len = 0;
        int error = r->error;

        x->result.bytes = r->bytes;
        x->result.peers = r->peers_used;
        x->result.pieces_fetched = r->pieces_fetched;
        x->result.pieces_resumed = r->pieces_resumed;
        x->result.duration_usec = now_usec() - x->started_usec;
        x->peer_list = calloc(1, PEER_LIST_MAX);
        for (size_t i = 0; i < r->n_peers; i++) {
                const SwarmPeerStats *p = &r->peers[i];
                struct sockaddr_storage sa;
                socklen_t salen;

                x->result.peers_banned += p->banned;
                if (p->bytes == 0)
                        continue;
                if (swarm_parse_address(p->address, &sa, &salen) >= 0 && is_seeder(f, &sa, salen))
                        x->result.bytes_seeders += p->bytes;
                else
                        x->result.bytes_agents += p->bytes;
                if (x->peer_list && len < PEER_LIST_MAX - 1) {
                        int n = snprintf(x->peer_list + len, PEER_LIST_MAX - len, "%s%s=%" PRIu64, len ? "," : "",
                                         p->address, p->bytes);
                        if (n > 0)
                                len = MIN(len + (size_t) n, (size_t) PEER_LIST_MAX - 1);
                }
        }
        f->bytes += r->bytes;
        f->bytes_seeders += x->result.bytes_seeders;
        f->bytes_agents += x->result.bytes_agents;

        if (error == 0) {
                (void) input_cache_completed(x->entry);
                fetch_finish(x, 0, NULL);
                return;
        }
        if (error == -ENOSPC)
                input_cache_drop_partial(x->entry);
        fetch_finish(x, error, "%s", strna(r->reason));
}

static void start_swarm(InputFetch *x) {
        InputFetcher *f = x->fetcher;
        const char *id = input_cache_entry_id(x->entry);
        int r;

        r = input_cache_reserve(f->config.cache, x->entry);
        if (r == -EFBIG)
                return fetch_finish(x, r, "the content (%" PRIu64 " bytes) is larger than the input cache (%" PRIu64 " bytes)",
                                    input_cache_entry_length(x->entry), input_cache_max_bytes(f->config.cache));
        if (r < 0)
                return fetch_finish(x, r, "no room in the input cache for %" PRIu64 " bytes: %" PRIu64 " of %" PRIu64
                                    " bytes are held by the inputs of tasks", input_cache_entry_length(x->entry),
                                    input_cache_bytes(f->config.cache), input_cache_max_bytes(f->config.cache));
        r = swarm_new(f->event, &(SwarmConfig) {
                        .dir = input_cache_dir(f->config.cache),
                        .manifest = x->manifest,
                        .sink = f->config.sink,
                        .no_progress_usec = f->config.no_progress_usec,
                }, on_swarm_done, x, &x->swarm);
        if (r == -ENOSPC) {
                input_cache_drop_partial(x->entry);
                return fetch_finish(x, r, "the disk cannot hold %" PRIu64 " bytes", input_cache_entry_length(x->entry));
        }
        if (r < 0)
                return fetch_finish(x, r, "cannot open the download in %s: %s", input_cache_dir(f->config.cache),
                                    strerror(-r));
        x->state = FETCH_SWARM;
        /* Served from the first verified piece on (the pieces a previous run left, at once). */
        input_cache_set_store(x->entry, swarm_store(x->swarm));
        for (size_t i = 0; i < f->config.n_seeders; i++)
                (void) swarm_add_peer(x->swarm, (struct sockaddr *) &f->seeders[i].sa, f->seeders[i].salen);
        x->started_usec = now_usec();
        r = swarm_start(x->swarm);
        if (r < 0)
                return fetch_finish(x, r, "cannot start the download: %s", strerror(-r));
        log_debug("Input %s: downloading, %" PRIu32 " of %" PRIu32 " pieces there already.", id,
                  content_store_n_have(swarm_store(x->swarm)), x->manifest->geometry.n_pieces);
        lookup(x);
}

/* ---------------------------------------------------------------------------------------------- */
/* The manifest */

static void get_manifest(InputFetch *x);

static void manifest_retry(InputFetch *x, const char *why) {
        uint64_t waited = now_usec() - x->started_usec;

        if (waited >= x->fetcher->config.no_progress_usec)
                return fetch_finish(x, -ETIMEDOUT, "the manifest could not be had from the control within %" PRIu64
                                    " s: %s", waited / USEC_PER_SEC, why);
        x->manifest_backoff_usec = MIN(MAX(x->manifest_backoff_usec * 2, MANIFEST_RETRY_MIN_USEC), MANIFEST_RETRY_MAX_USEC);
        log_debug("Input %s: no manifest yet (%s); again in %" PRIu64 " ms.", input_cache_entry_id(x->entry), why,
                  x->manifest_backoff_usec / USEC_PER_MSEC);
        schedule_timer(x, x->manifest_backoff_usec);
}

static void on_manifest(const ControlReply *reply, void *userdata) {
        InputFetch *x = userdata;
        _cleanup_(manifest_freep) Manifest *m = NULL;
        uint8_t id[TORRENT_ID_SIZE];
        const char *why = NULL;
        int r;

        x->manifest_call = NULL;
        if (reply->error < 0 || reply->code >= 500 || reply->code == 401 || reply->code == 403 || reply->code == 429)
                return manifest_retry(x, strna(reply->message));
        if (reply->code == 404)
                return fetch_finish(x, -ENOENT, "the control knows no content %s", input_cache_entry_id(x->entry));
        if (reply->code != 200)
                return manifest_retry(x, "unexpected answer");

        (void) torrent_id_from_hex(input_cache_entry_id(x->entry), id);
        r = manifest_parse_torrent(reply->body, reply->size, id, MANIFEST_CANONICAL, &m, &why);
        if (r < 0)
                return fetch_finish(x, -EBADMSG, "the control's manifest of %s is not that content's: %s",
                                    input_cache_entry_id(x->entry), strna(why));
        if (m->geometry.length != input_cache_entry_length(x->entry))
                return fetch_finish(x, -EBADMSG, "the manifest says %" PRIu64 " bytes, the claim %" PRIu64,
                                    m->geometry.length, input_cache_entry_length(x->entry));
        /* Kept next to the content: a restarted agent serves (and resumes) with it. */
        r = write_file_atomic(input_cache_entry_torrent(x->entry), reply->body, reply->size, 0644, WRITE_FILE_SYNC);
        if (r == -ENOSPC)
                return fetch_finish(x, r, "the disk cannot hold the manifest");
        if (r < 0)
                log_warning_errno(r, "Cannot keep the manifest %s: %m", input_cache_entry_torrent(x->entry));
        x->manifest = TAKE_PTR(m);
        start_swarm(x);
}

static void get_manifest(InputFetch *x) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (asprintf(&path, "/api/contents/%s", input_cache_entry_id(x->entry)) < 0)
                return fetch_finish(x, -ENOMEM, "out of memory");
        r = control_get(x->fetcher->config.control, path, "application/x-bittorrent", MANIFEST_MAX,
                        x->fetcher->config.request_timeout_usec, on_manifest, x, &x->manifest_call);
        if (r < 0)
                manifest_retry(x, strerror(-r));
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        InputFetch *x = userdata;

        if (x->state == FETCH_MANIFEST && !x->manifest_call)
                get_manifest(x);
        else if (x->state == FETCH_SWARM)
                lookup(x);
        return 0;
}

static void fetch_start(InputFetch *x) {
        int r;

        x->state = FETCH_MANIFEST;
        x->running = true;
        x->fetcher->running++;
        x->started_usec = now_usec();
        r = input_cache_read_manifest(x->entry, &x->manifest);
        if (r >= 0 && x->manifest->geometry.length == input_cache_entry_length(x->entry))
                return start_swarm(x);
        x->manifest = manifest_free(x->manifest);
        get_manifest(x);
}

/* Starts queued fetches while there is room: always from the loop (its own event), so that no
 * waiter is ever told from within a call of the caller's (want, forget). */
static int on_kick(sd_event_source *s, void *userdata) {
        InputFetcher *f = userdata;
        InputFetch *x;

        for (;;) {
                for (x = f->fetches; x && x->state != FETCH_QUEUED; x = x->next)
                        ;
                if (!x || f->running >= f->config.max_running)
                        return 0;
                fetch_start(x);         /* may finish x at once */
        }
}

static void schedule_kick(InputFetcher *f) {
        int r;

        if (!f->kick_source) {
                r = sd_event_add_defer(f->event, &f->kick_source, on_kick, f);
                if (r < 0) {
                        log_error_errno(r, "Cannot schedule the input downloads: %m");
                        return;
                }
        }
        (void) sd_event_source_set_enabled(f->kick_source, SD_EVENT_ONESHOT);
}

/* ---------------------------------------------------------------------------------------------- */

int input_fetcher_new(sd_event *e, const InputFetcherConfig *config, InputFetcher **ret) {
        _cleanup_(input_fetcher_freep) InputFetcher *f = NULL;

        assert(e);
        assert(config);
        assert(config->control);
        assert(config->cache);
        assert(config->sink);
        assert(ret);
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->event = sd_event_ref(e);
        f->config = *config;
        if (f->config.max_running == 0)
                f->config.max_running = 4;
        if (f->config.no_progress_usec == 0)
                f->config.no_progress_usec = 120 * USEC_PER_SEC;
        if (f->config.request_timeout_usec == 0)
                f->config.request_timeout_usec = 30 * USEC_PER_SEC;
        if (config->n_seeders > 0) {
                f->seeders = calloc(config->n_seeders, sizeof(InputSeeder));
                if (!f->seeders)
                        return -ENOMEM;
                memcpy(f->seeders, config->seeders, config->n_seeders * sizeof(InputSeeder));
        }
        f->config.seeders = f->seeders;
        *ret = TAKE_PTR(f);
        return 0;
}

InputFetcher *input_fetcher_free(InputFetcher *f) {
        if (!f)
                return NULL;
        while (f->fetches) {
                InputFetch *x = f->fetches;
                while (x->waiters) {
                        InputWaiter *w = x->waiters;
                        LIST_REMOVE(x->waiters, w);
                        w->fetch = NULL;
                }
                fetch_free(x);
        }
        sd_event_source_disable_unref(f->kick_source);
        free(f->seeders);
        sd_event_unref(f->event);
        free(f);
        return NULL;
}

int input_fetcher_want(InputFetcher *f, InputCacheEntry *entry, InputWaiter *w) {
        InputCacheEntry *pinned;
        InputFetch *x = NULL;
        int r;

        assert(f);
        assert(entry);
        assert(w && w->done && !w->fetch);
        for (InputFetch *y = f->fetches; y; y = y->next)
                if (y->entry == entry && y->state != FETCH_DONE && !y->finishing) {
                        x = y;
                        break;
                }
        if (!x) {
                x = calloc(1, sizeof(*x));
                if (!x)
                        return -ENOMEM;
                x->fetcher = f;
                /* Our own pin: the entry outlives the fetch whatever the waiters do. */
                r = input_cache_pin(f->config.cache, input_cache_entry_id(entry), input_cache_entry_length(entry), &pinned);
                if (r < 0) {
                        free(x);
                        return r;
                }
                x->entry = pinned;
                LIST_APPEND(f->fetches, f->fetches_tail, x);
                if (input_cache_entry_complete(entry)) {
                        x->state = FETCH_MANIFEST;      /* not queued: nothing to download */
                        x->result.cached = true;
                        fetch_finish_later(x, 0, NULL);
                } else
                        x->state = FETCH_QUEUED;
        }
        LIST_PREPEND(x->waiters, w);
        w->fetch = x;
        if (x->state == FETCH_QUEUED)
                schedule_kick(f);
        return 0;
}

void input_fetcher_forget(InputWaiter *w) {
        InputFetch *x;

        if (!w || !w->fetch)
                return;
        x = w->fetch;
        LIST_REMOVE(x->waiters, w);
        w->fetch = NULL;
        if (!x->waiters && !x->finishing) {
                InputFetcher *f = x->fetcher;
                log_debug("Input %s: nobody waits for it any more; stopping its download.", input_cache_entry_id(x->entry));
                fetch_free(x);
                schedule_kick(f);
        }
}

void input_fetcher_get_stats(const InputFetcher *f, InputFetcherStats *ret) {
        unsigned queued = 0;

        for (InputFetch *x = f->fetches; x; x = x->next)
                queued += x->state == FETCH_QUEUED;
        *ret = (InputFetcherStats) {
                .bytes = f->bytes,
                .bytes_seeders = f->bytes_seeders,
                .bytes_agents = f->bytes_agents,
                .running = f->running,
                .queued = queued,
        };
}
