/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <netinet/in.h>

#include "daemon-util.h"
#include "list.h"
#include "log.h"
#include "piece-picker.h"
#include "piece-verifier.h"
#include "random-util.h"
#include "swarm.h"

#define TICK_USEC (250 * USEC_PER_MSEC)
#define FLUSH_BYTES (16U << 20)
#define FLUSH_USEC USEC_PER_SEC
#define MAX_FAILURES 3
#define STRIKES_BAN 2
#define REFILL_BATCH 16                 /* request in batches: fewer picker walks */
/* A piece a peer declined is not asked of it again for 2-4 s: a seed declines a piece that another
 * peer holds or is being sent (seed-ledger.h); that peer announces it within about a pipeline's
 * worth of the seed's upload, and the seed serves the piece when asked again after a second. */
#define DECLINED_USEC (2 * USEC_PER_SEC)

typedef enum PeerState {
        PEER_IDLE,                      /* not connected, may be called */
        PEER_CONNECTED,                 /* connecting or connected */
        PEER_FAILED,                    /* gave up */
        PEER_BANNED,
} PeerState;

typedef struct SwarmPeer SwarmPeer;
struct SwarmPeer {
        LIST_FIELDS(SwarmPeer);
        Swarm *swarm;
        struct sockaddr_storage sa;
        socklen_t salen;
        PeerState state;
        PeerConn *conn;
        bool counted, counted_seed;     /* in the picker's availability */
        uint64_t retry_at, last_activity;
        unsigned strikes;
        unsigned failures_in_row;       /* since it last delivered a good piece */
        /* Pieces it declined (rejected while unchoking us): in this period and the one before
         * (DECLINED_USEC each); and the bitfield offered to the picker less those. Allocated at the
         * first decline. */
        uint8_t *declined[2], *offered;
        bool any_declined;
        uint64_t declined_since;
        SwarmPeerStats stats;
};

struct Swarm {
        sd_event *event;
        sd_event_source *tick, *done_source;
        SwarmConfig config;
        PeerConnConfig conn_config;
        SwarmDoneCallback done;
        void *userdata;
        ContentStore *store;
        PiecePicker *picker;
        PieceVerifier *verifier;
        SwarmPeer *peers;
        unsigned n_peers, n_connected;
        bool started, finished, served;
        uint64_t started_usec, last_progress, last_flush;
        uint32_t pieces_resumed;
        SwarmResult result;
        SwarmPeerStats *result_peers;
        char reason[256];
};

static void peer_fill(Swarm *s, SwarmPeer *p);
static void finish(Swarm *s, int error, const char *fmt, ...) _printf_(3, 4);

int swarm_parse_address(const char *str, struct sockaddr_storage *ret, socklen_t *ret_len) {
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon, *h = str;
        size_t hl;
        char *end;
        unsigned long port;

        assert(str);
        if (str[0] == '[') {
                const char *close = strchr(str, ']');
                if (!close || close[1] != ':')
                        return -EINVAL;
                h = str + 1;
                hl = (size_t) (close - h);
                colon = close + 1;
        } else {
                colon = strrchr(str, ':');
                if (!colon)
                        return -EINVAL;
                hl = (size_t) (colon - str);
        }
        if (hl == 0 || hl >= sizeof(host))
                return -EINVAL;
        memcpy(host, h, hl);
        host[hl] = 0;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end || end == colon + 1 || port == 0 || port > 65535)
                return -EINVAL;

        memset(ret, 0, sizeof(*ret));
        if (inet_pton(AF_INET, host, &((struct sockaddr_in *) ret)->sin_addr) == 1) {
                struct sockaddr_in *in = (struct sockaddr_in *) ret;
                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t) port);
                *ret_len = sizeof(*in);
                return 0;
        }
        if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *) ret)->sin6_addr) == 1) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ret;
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t) port);
                *ret_len = sizeof(*in6);
                return 0;
        }
        return -EINVAL;
}

static const char *format_sockaddr(const struct sockaddr_storage *sa, char *buf, size_t size) {
        char ip[INET6_ADDRSTRLEN] = "?";
        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
                snprintf(buf, size, "%s:%u", ip, ntohs(in->sin_port));
        } else {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
                snprintf(buf, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
        }
        return buf;
}

/* Connections. */

static void peer_uncount(Swarm *s, SwarmPeer *p) {
        if (!p->counted)
                return;
        piece_picker_peer_remove(s->picker, p->counted_seed ? NULL : peer_conn_peer_bitfield(p->conn));
        p->counted = false;
}

/* Ends p's connection: its requests go back to the picker. */
static void peer_disconnect(Swarm *s, SwarmPeer *p, int error, const char *reason) {
        if (!p->conn)
                return;
        peer_uncount(s, p);
        piece_picker_forget_peer(s->picker, p);
        p->conn = peer_conn_free(p->conn);
        p->stats.error = error;
        p->stats.reason = reason;
        if (p->state == PEER_CONNECTED)
                p->state = PEER_IDLE;
        s->n_connected--;
}

static void fill_all(Swarm *s) {
        for (SwarmPeer *p = s->peers; p && !s->finished; p = p->next)
                if (p->conn && peer_conn_is_ready(p->conn))
                        peer_fill(s, p);
}

static void peer_failed(Swarm *s, SwarmPeer *p, int error, const char *reason) {
        peer_disconnect(s, p, error, reason);
        if (p->state == PEER_BANNED)
                return;
        p->stats.failures++;
        p->failures_in_row++;
        if (p->failures_in_row >= MAX_FAILURES)
                p->state = PEER_FAILED;
        else
                p->retry_at = now_usec() + s->config.retry_usec * p->failures_in_row;
}

static void peer_ban(Swarm *s, SwarmPeer *p, const char *reason) {
        log_warning("Peer %s banned for content: %s", p->stats.address, reason);
        p->state = PEER_BANNED;
        p->stats.banned = true;
        peer_disconnect(s, p, -EBADMSG, reason);
}

static void on_ready(PeerConn *c, void *userdata) {
        SwarmPeer *p = userdata;
        p->last_activity = now_usec();
}

static void update_interest(Swarm *s, SwarmPeer *p) {
        const uint8_t *bf = peer_conn_peer_bitfield(p->conn);
        bool want = bf && piece_picker_interesting(s->picker, p->counted_seed ? NULL : bf);
        (void) peer_conn_set_interested(p->conn, want);
}

static void on_bitfield(PeerConn *c, void *userdata) {
        SwarmPeer *p = userdata;
        Swarm *s = p->swarm;

        p->counted = true;
        p->counted_seed = peer_conn_peer_is_seed(c);
        piece_picker_peer_add(s->picker, p->counted_seed ? NULL : peer_conn_peer_bitfield(c));
        update_interest(s, p);
        peer_fill(s, p);
}

static void on_have(PeerConn *c, uint32_t index, void *userdata) {
        SwarmPeer *p = userdata;
        Swarm *s = p->swarm;

        if (!p->counted) {
                /* No bitfield came first (a peer with nothing may skip it): counted from here. */
                p->counted = true;
                piece_picker_peer_add(s->picker, peer_conn_peer_bitfield(c));
        } else if (!p->counted_seed)
                piece_picker_peer_have(s->picker, index);
        update_interest(s, p);
        peer_fill(s, p);
}

static void on_choke(PeerConn *c, bool choked, void *userdata) {
        SwarmPeer *p = userdata;
        if (!choked) {
                p->last_activity = now_usec();
                peer_fill(p->swarm, p);
        }
}

/* Every block of a piece is here: verified and written on the verifier's threads, on_verified() after. */
static void piece_complete(Swarm *s, uint32_t index) {
        const uint8_t *data = piece_picker_piece_data(s->picker, index);
        uint32_t size = torrent_piece_size(content_store_geometry(s->store), index);
        int r;

        assert(data);
        r = piece_verifier_submit(s->verifier, index, data, size);
        if (r < 0)
                finish(s, r, "cannot verify piece %" PRIu32 ": %s", index, strerror(-r));
}

/* Starts making the written pieces durable, unless a sync runs. */
static void flush_start(Swarm *s) {
        int r;

        if (piece_verifier_syncing(s->verifier))
                return;
        s->last_flush = now_usec();
        r = piece_verifier_sync(s->verifier);
        if (r < 0)
                finish(s, r, "syncing %s failed: %s", content_store_path(s->store), strerror(-r));
}

static void on_synced(PieceVerifier *v, int r, void *userdata) {
        Swarm *s = userdata;

        if (r < 0 && !s->finished)
                finish(s, r, "syncing %s failed: %s", content_store_path(s->store), strerror(-r));
}

static void on_verified(PieceVerifier *v, uint32_t index, int r, void *userdata) {
        Swarm *s = userdata;
        uint32_t size = torrent_piece_size(content_store_geometry(s->store), index);
        void *senders[PICKER_SENDERS_MAX];
        size_t n_senders;

        if (s->finished)
                return;
        n_senders = piece_picker_piece_senders(s->picker, index, senders, ELEMENTSOF(senders));
        if (r == -EBADMSG) {
                s->result.pieces_failed++;
                s->result.bytes_wasted += size;
                piece_picker_piece_done(s->picker, index, false);
                for (size_t i = 0; i < n_senders; i++) {
                        SwarmPeer *p = senders[i];
                        if (p->state == PEER_BANNED)
                                continue;
                        if (n_senders == 1 || ++p->strikes >= STRIKES_BAN)
                                peer_ban(s, p, "sent a piece that failed verification");
                }
                fill_all(s);
                return;
        }
        if (r < 0) {
                if (r == -ENOSPC)
                        finish(s, r, "disk full writing %s", content_store_path(s->store));
                else
                        finish(s, r, "writing piece %" PRIu32 " failed: %s", index, strerror(-r));
                return;
        }
        piece_picker_piece_done(s->picker, index, true);
        s->result.pieces_fetched++;
        s->last_progress = now_usec();
        if (n_senders == 1) {
                SwarmPeer *p = senders[0];
                p->stats.pieces++;
                p->failures_in_row = 0;         /* a peer that delivers is worth calling again */
        }
        if (s->config.progress)
                s->config.progress(s, content_store_n_have(s->store), content_store_geometry(s->store)->n_pieces,
                                   s->userdata);
        if (s->finished)
                return;
        if (piece_picker_missing(s->picker) == 0) {
                finish(s, 0, NULL);
                return;
        }
        if (content_store_unflushed(s->store) >= FLUSH_BYTES)
                flush_start(s);
        /* The piece's memory is free again: room for a new one. */
        fill_all(s);
}

static const PieceVerifierCallbacks verifier_callbacks = {
        .piece = on_verified,
        .synced = on_synced,
};

static void on_block(PeerConn *c, uint32_t index, uint32_t begin, const void *data, size_t size, void *userdata) {
        SwarmPeer *p = userdata;
        Swarm *s = p->swarm;
        void *others[ENDGAME_DUPLICATES];
        size_t n_others = 0;
        int r;

        p->last_activity = now_usec();
        p->stats.bytes += size;
        s->result.bytes += size;
        r = piece_picker_block_received(s->picker, p, index, begin, data, size, others, &n_others);
        for (size_t i = 0; i < n_others; i++) {
                SwarmPeer *o = others[i];
                if (o->conn)
                        (void) peer_conn_cancel(o->conn, index, begin, (uint32_t) size);
        }
        if (r < 0) {
                s->result.bytes_wasted += size;
                /* -ENOENT: the piece failed meanwhile, or a block we asked for before its piece
                 * completed elsewhere; the request was answered all the same. */
        } else if (r == 1) {
                piece_complete(s, index);
                if (s->finished)
                        return;
        }
        if (p->conn && peer_conn_is_ready(p->conn))
                peer_fill(s, p);
}

/* Remembers that p declined piece index; false without memory for it. */
static bool peer_declined(Swarm *s, SwarmPeer *p, uint32_t index) {
        size_t size = bitfield_size(content_store_geometry(s->store)->n_pieces) ?: 1;

        if (!p->offered) {
                p->declined[0] = calloc(1, size);
                p->declined[1] = calloc(1, size);
                p->offered = malloc(size);
                if (!p->declined[0] || !p->declined[1] || !p->offered) {
                        free(p->declined[0]);
                        free(p->declined[1]);
                        free(p->offered);
                        p->declined[0] = p->declined[1] = p->offered = NULL;
                        return false;
                }
        }
        if (!p->any_declined)
                p->declined_since = now_usec();
        bitfield_set(p->declined[0], index);
        p->any_declined = true;
        return true;
}

/* Starts a new period of declines every DECLINED_USEC, forgetting the one before. */
static void peer_declined_age(SwarmPeer *p, uint64_t now) {
        uint8_t *t;
        size_t size;

        if (!p->any_declined || now < p->declined_since + DECLINED_USEC)
                return;
        size = bitfield_size(content_store_geometry(p->swarm->store)->n_pieces) ?: 1;
        if (now >= p->declined_since + 2 * DECLINED_USEC) {
                memset(p->declined[0], 0, size);
                memset(p->declined[1], 0, size);
                p->any_declined = false;
                return;
        }
        t = p->declined[1];
        p->declined[1] = p->declined[0];
        p->declined[0] = t;
        memset(p->declined[0], 0, size);
        p->declined_since += DECLINED_USEC;
}

static void on_rejected(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length, void *userdata) {
        SwarmPeer *p = userdata;
        Swarm *s = p->swarm;

        /* A reject while the peer unchokes us is its choice about this piece (a seed sending each
         * piece once first): ask others, and this peer later. Otherwise (choked, reqq full ...) the
         * block just goes back. */
        if (!peer_conn_peer_choking(c) && peer_declined(s, p, index))
                piece_picker_block_declined(s->picker, p, index, begin);
        else
                piece_picker_block_abandon(s->picker, p, index, begin);
        /* Others may take it; this peer asks again later only if it is still the one to ask. */
        fill_all(s);
}

static void on_closed(PeerConn *c, int error, const char *reason, void *userdata) {
        SwarmPeer *p = userdata;
        Swarm *s = p->swarm;

        log_debug("Peer %s: %s", p->stats.address, reason);
        peer_failed(s, p, error, reason);
        fill_all(s);
}

static const PeerConnCallbacks swarm_callbacks = {
        .ready = on_ready,
        .bitfield = on_bitfield,
        .have = on_have,
        .choke = on_choke,
        .block = on_block,
        .rejected = on_rejected,
        .closed = on_closed,
};

static void peer_fill(Swarm *s, SwarmPeer *p) {
        PickedBlock blocks[PEER_CONN_OUT_MAX];
        const PeerRequest *reqs;
        const uint8_t *bf;
        size_t in_flight, n, want, cap;
        unsigned room;

        if (s->finished || !p->conn || !peer_conn_is_ready(p->conn))
                return;
        bf = peer_conn_peer_bitfield(p->conn);
        if (!bf)
                return;
        in_flight = peer_conn_requests(p->conn, &reqs);
        room = peer_conn_request_room(p->conn);
        if (in_flight >= s->config.pipeline || room == 0)
                return;
        want = MIN((size_t) room, s->config.pipeline - in_flight);
        /* Ask in batches once the pipeline runs (each pick walks the picker's lists), smaller ones
         * for a peer with a short queue (its reqq). */
        cap = MIN(in_flight + room, (size_t) s->config.pipeline);
        if (in_flight > 0 && want < MIN((size_t) REFILL_BATCH, cap / 2) && !piece_picker_endgame(s->picker))
                return;
        peer_declined_age(p, now_usec());
        if (p->any_declined) {
                size_t size = bitfield_size(content_store_geometry(s->store)->n_pieces);
                for (size_t k = 0; k < size; k++)
                        p->offered[k] = (p->counted_seed ? 0xff : bf[k]) & ~(p->declined[0][k] | p->declined[1][k]);
                bf = p->offered;
        } else if (p->counted_seed)
                bf = NULL;
        n = piece_picker_pick(s->picker, p, bf, blocks, want);
        if (n > 0 && in_flight == 0)
                p->last_activity = now_usec();
        for (size_t i = 0; i < n; i++) {
                int r = peer_conn_request(p->conn, blocks[i].piece, blocks[i].begin, blocks[i].length);
                if (r < 0)
                        piece_picker_block_abandon(s->picker, p, blocks[i].piece, blocks[i].begin);
        }
}

static void connect_more(Swarm *s) {
        uint64_t now = now_usec();

        for (SwarmPeer *p = s->peers; p && s->n_connected < s->config.max_peers && !s->finished; p = p->next) {
                int r;

                if (p->state != PEER_IDLE || p->conn || p->retry_at > now)
                        continue;
                p->stats.connects++;
                r = peer_conn_connect(s->event, (struct sockaddr *) &p->sa, p->salen, s->store, &s->conn_config,
                                      &swarm_callbacks, p, &p->conn);
                if (r < 0) {
                        p->stats.error = r;
                        p->stats.reason = "cannot connect";
                        p->stats.failures++;
                        p->failures_in_row++;
                        if (p->failures_in_row >= MAX_FAILURES)
                                p->state = PEER_FAILED;
                        else
                                p->retry_at = now + s->config.retry_usec * p->failures_in_row;
                        continue;
                }
                p->state = PEER_CONNECTED;
                p->last_activity = now;
                s->n_connected++;
        }
}

/* Ending. */

static int on_done_event(sd_event_source *src, void *userdata) {
        Swarm *s = userdata;
        s->done_source = sd_event_source_disable_unref(s->done_source);
        if (s->done)
                s->done(s, &s->result, s->userdata);
        return 0;
}

static void finish(Swarm *s, int error, const char *fmt, ...) {
        size_t i = 0;
        int r;

        if (s->finished)
                return;
        s->finished = true;
        s->tick = sd_event_source_disable_unref(s->tick);
        for (SwarmPeer *p = s->peers; p; p = p->next)
                peer_disconnect(s, p, p->stats.error, p->stats.reason);

        if (error == 0) {
                r = content_store_flush(s->store);
                if (r < 0) {
                        error = r;
                        fmt = NULL;
                        snprintf(s->reason, sizeof(s->reason), "syncing %s failed: %s", content_store_path(s->store),
                                 strerror(-r));
                }
        }
        if (fmt) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
                va_end(ap);
        }
        if (error < 0) {
                if (s->served && s->config.server) {
                        (void) swarm_server_remove(s->config.server, s->store);
                        s->served = false;
                }
                if (s->config.remove_partial_on_error)
                        (void) content_store_remove_partial(s->store);
                log_error("Fetching %s failed: %s", content_store_path(s->store), s->reason);
        }

        s->result.error = error;
        s->result.reason = error < 0 ? s->reason : NULL;
        s->result.path = error < 0 ? NULL : content_store_path(s->store);
        s->result.duration_usec = now_usec() - s->started_usec;
        s->result.pieces_resumed = s->pieces_resumed;
        s->result_peers = calloc(s->n_peers ?: 1, sizeof(SwarmPeerStats));
        if (s->result_peers)
                for (SwarmPeer *p = s->peers; p; p = p->next) {
                        s->result_peers[i++] = p->stats;
                        s->result.peers_used += p->stats.pieces > 0;
                }
        s->result.peers = s->result_peers;
        s->result.n_peers = s->result_peers ? i : 0;

        r = sd_event_add_defer(s->event, &s->done_source, on_done_event, s);
        if (r < 0)
                log_error_errno(r, "Cannot schedule the fetch's completion: %m");
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata) {
        Swarm *s = userdata;
        uint64_t now = now_usec();

        for (SwarmPeer *p = s->peers; p; p = p->next) {
                const PeerRequest *reqs;
                if (p->conn && peer_conn_is_ready(p->conn) && peer_conn_requests(p->conn, &reqs) > 0 &&
                    now > p->last_activity + s->config.stall_usec)
                        peer_failed(s, p, -ETIMEDOUT, "stalled: no block within the stall timeout");
        }
        if (now > s->last_progress + s->config.no_progress_usec) {
                finish(s, -ETIMEDOUT, "no peer delivered within %" PRIu64 " s", s->config.no_progress_usec / USEC_PER_SEC);
                return 0;
        }
        if (s->config.deadline_usec > 0 && now > s->started_usec + s->config.deadline_usec) {
                finish(s, -ETIMEDOUT, "not complete within the deadline of %" PRIu64 " s",
                       s->config.deadline_usec / USEC_PER_SEC);
                return 0;
        }
        if (content_store_unflushed(s->store) > 0 && now >= s->last_flush + FLUSH_USEC) {
                flush_start(s);
                if (s->finished)
                        return 0;
        }
        connect_more(s);
        fill_all(s);
        sd_event_source_set_time(src, now + TICK_USEC);
        sd_event_source_set_enabled(src, SD_EVENT_ON);
        return 0;
}

int swarm_new(sd_event *e, const SwarmConfig *config, SwarmDoneCallback done, void *userdata, Swarm **ret) {
        _cleanup_(swarm_freep) Swarm *s = NULL;
        uint32_t piece_length;
        int r;

        assert(e);
        assert(config);
        assert(config->dir);
        assert(config->manifest);
        assert(config->sink);
        assert(ret);
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->config = *config;
        s->config.manifest = NULL;      /* the store keeps its copy */
        s->done = done;
        s->userdata = userdata;
        if (s->config.max_peers == 0)
                s->config.max_peers = 8;
        if (s->config.pipeline == 0)
                s->config.pipeline = 128;
        s->config.pipeline = MIN(s->config.pipeline, PEER_CONN_OUT_MAX);
        if (s->config.no_progress_usec == 0)
                s->config.no_progress_usec = 60 * USEC_PER_SEC;
        if (s->config.stall_usec == 0)
                s->config.stall_usec = 15 * USEC_PER_SEC;
        if (s->config.retry_usec == 0)
                s->config.retry_usec = 2 * USEC_PER_SEC;
        if (s->config.memory_max == 0)
                s->config.memory_max = 64U << 20;
        if (config->conn)
                s->conn_config = *config->conn;
        s->conn_config.sink = config->sink;
        /* One peer id for all of this swarm's connections, so that a peer sees one client. */
        if (memcmp(s->conn_config.peer_id, (uint8_t[PEER_ID_SIZE]) {}, PEER_ID_SIZE) == 0) {
                memcpy(s->conn_config.peer_id, "-MC0100-", 8);
                random_bytes(s->conn_config.peer_id + 8, PEER_ID_SIZE - 8);
        }

        r = content_store_open_dir(config->dir, config->manifest, &s->store);
        if (r < 0)
                return r;
        s->pieces_resumed = content_store_n_have(s->store);
        piece_length = config->manifest->geometry.piece_length;
        r = piece_picker_new(&config->manifest->geometry, content_store_bitfield(s->store),
                             (unsigned) MAX(UINT64_C(2), s->config.memory_max / piece_length), &s->picker);
        if (r < 0)
                return r;
        r = piece_verifier_new(e, s->store, s->config.verify_threads, &verifier_callbacks, s, &s->verifier);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

Swarm *swarm_free(Swarm *s) {
        if (!s)
                return NULL;
        s->done = NULL;
        s->tick = sd_event_source_disable_unref(s->tick);
        s->done_source = sd_event_source_disable_unref(s->done_source);
        /* First: its threads may be reading pieces the picker holds. */
        s->verifier = piece_verifier_free(s->verifier);
        while (s->peers) {
                SwarmPeer *p = s->peers;
                if (p->conn) {
                        peer_uncount(s, p);
                        peer_conn_free(p->conn);
                }
                LIST_REMOVE(s->peers, p);
                free(p->declined[0]);
                free(p->declined[1]);
                free(p->offered);
                free(p);
        }
        piece_picker_free(s->picker);
        content_store_unref(s->store);
        sd_event_unref(s->event);
        free(s->result_peers);
        free(s);
        return NULL;
}

int swarm_start(Swarm *s) {
        int r;

        if (s->started)
                return -EALREADY;
        s->started = true;
        s->started_usec = s->last_progress = s->last_flush = now_usec();
        if (content_store_complete(s->store)) {
                finish(s, 0, NULL);
                return 0;
        }
        if (s->config.server) {
                r = swarm_server_add(s->config.server, s->store);
                if (r < 0 && r != -EEXIST)
                        return r;
                s->served = r >= 0;
        }
        r = sd_event_add_time(s->event, &s->tick, CLOCK_MONOTONIC, now_usec(), TICK_USEC / 4, on_tick, s);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(s->tick, SD_EVENT_ON);
}

int swarm_add_peer(Swarm *s, const struct sockaddr *sa, socklen_t salen) {
        SwarmPeer *p;

        if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) || salen > sizeof(struct sockaddr_storage))
                return -EINVAL;
        for (p = s->peers; p; p = p->next)
                if (p->salen == salen && memcmp(&p->sa, sa, salen) == 0)
                        return 0;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->swarm = s;
        memcpy(&p->sa, sa, salen);
        p->salen = salen;
        format_sockaddr(&p->sa, p->stats.address, sizeof(p->stats.address));
        /* Appended: peers are called in the order they were given (fallback seeders last if
         * added last). */
        if (!s->peers)
                s->peers = p;
        else {
                SwarmPeer *t = s->peers;
                while (t->next)
                        t = t->next;
                t->next = p;
                p->prev = t;
        }
        s->n_peers++;
        return 1;
}

int swarm_add_peer_string(Swarm *s, const char *address) {
        struct sockaddr_storage sa;
        socklen_t len;
        int r;

        r = swarm_parse_address(address, &sa, &len);
        if (r < 0)
                return r;
        return swarm_add_peer(s, (struct sockaddr *) &sa, len);
}

ContentStore *swarm_store(Swarm *s) {
        return s->store;
}
