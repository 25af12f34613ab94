/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>

#include "daemon-util.h"
#include "log.h"
#include "peer-conn.h"
#include "peer-ext.h"
#include "random-util.h"

#define RBUF_SIZE (64U * 1024U)
#define READ_BUDGET (1U << 20)          /* bytes read per wake-up before yielding */
/* Our cancelled requests whose answer (the block, or with the fast extension a reject) may still
 * come. In the endgame every block that arrives cancels its duplicates on up to two other
 * connections, a whole pipeline's worth within a round trip: 64 was too few (a late answer past the
 * ring closed the connection as "a block we did not ask for", measured in bench/p2p). Twice the most
 * we keep in flight. */
#define CANCELED_MAX (2U * PEER_CONN_OUT_MAX)
#define OUR_UT_METADATA 1               /* the id we give ut_metadata in our extension handshake */
/* A hash request below the piece layer makes us re-read and hash the pieces it covers: one piece at
 * most per request (libtorrent asks for one piece's blocks after a failed check), and at most
 * HASH_REREADS_PER_SEC such requests per connection, so that a peer cannot keep the loop hashing. */
#define HASH_REREADS_PER_SEC 8U
#define CLIENT_NAME "mc " MC_VERSION

struct PeerConn {
        sd_event *event;
        sd_event_source *io, *timer;
        int fd;
        bool incoming, connected, handshake_sent, ready, dead;
        unsigned n_busy;                /* callbacks on the stack: free later */
        bool freed;
        PeerConnConfig config;
        PeerConnCallbacks cb;
        void *userdata;
        struct sockaddr_storage sa;
        char address[PEER_CONN_ADDR_MAX];

        ContentStore *store;
        const TorrentGeometry *g;
        void *sink_file;
        void *sink_conn;
        ContentStoreWatch watch;
        PeerDecoder *decoder;

        uint8_t rbuf[RBUF_SIZE];
        size_t rbuf_off, rbuf_len;
        bool paused;                    /* not reading: the sink holds too much */

        uint64_t started, last_rx, last_tx;

        /* The peer. */
        uint8_t reserved[8];
        bool fast, extended;
        uint8_t *bitfield;              /* NULL until known */
        bool seed, have_seen;
        bool peer_choking, peer_interested;
        uint8_t peer_ut_metadata;
        uint32_t peer_reqq;

        /* Us. */
        bool am_interested;

        /* Our requests in flight, and recently cancelled ones (their answers may still come). */
        PeerRequest out[PEER_CONN_OUT_MAX];
        size_t n_out;
        PeerRequest canceled[CANCELED_MAX];
        size_t canceled_next;

        /* The peer's requests queued on the sink: the cumulative sink offset at which each block
         * ends, oldest first, so that those fully handed to the kernel can be popped. */
        uint64_t *in_ends;
        size_t in_head, in_n;
        uint64_t out_total;             /* bytes ever queued on the sink, less cancelled ones */

        uint64_t reread_window;         /* the second of the count below */
        unsigned rereads;

        PeerConnStats stats;
};

static void conn_really_free(PeerConn *c);

static void busy_enter(PeerConn *c) {
        c->n_busy++;
}
/* Returns true when the connection is gone (closed or freed) and the caller must stop. */
static bool busy_leave(PeerConn *c) {
        assert(c->n_busy > 0);
        if (--c->n_busy == 0 && c->freed) {
                conn_really_free(c);
                return true;
        }
        return false;
}
#define GONE(c) ((c)->dead || (c)->freed)

/* Stops all I/O; the memory stays until peer_conn_free(). */
static void conn_shutdown(PeerConn *c) {
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        if (c->sink_conn) {
                c->config.sink->ops->detach(c->sink_conn);
                c->sink_conn = NULL;
        }
        if (c->store)
                content_store_unwatch(c->store, &c->watch);
        if (c->fd >= 0) {
                close(c->fd);
                c->fd = -1;
        }
}

static void conn_close(PeerConn *c, int error, const char *reason) {
        if (GONE(c))
                return;
        c->dead = true;
        conn_shutdown(c);
        if (c->cb.closed) {
                busy_enter(c);
                c->cb.closed(c, error, reason, c->userdata);
                busy_leave(c);  /* the caller checks GONE() */
        }
}

static void conn_really_free(PeerConn *c) {
        conn_shutdown(c);
        if (c->sink_file)
                c->config.sink->ops->file_unref(c->sink_file);
        content_store_unref(c->store);
        peer_decoder_free(c->decoder);
        sd_event_unref(c->event);
        free(c->bitfield);
        free(c->in_ends);
        free(c);
}

PeerConn *peer_conn_free(PeerConn *c) {
        if (!c)
                return NULL;
        c->dead = true;
        conn_shutdown(c);
        c->freed = true;
        if (c->n_busy == 0)
                conn_really_free(c);
        return NULL;
}

/* Sending. */

static int send_bytes(PeerConn *c, const void *p, size_t n) {
        int r;

        if (GONE(c) || !c->sink_conn)
                return -ENOTCONN;
        r = c->config.sink->ops->queue_message(c->sink_conn, p, n);
        if (r < 0)
                return r;
        c->out_total += n;
        c->last_tx = now_usec();
        return 0;
}

static int send_msg(PeerConn *c, const PeerMsg *m) {
        uint8_t buf[64];
        _cleanup_free_ uint8_t *big = NULL;
        size_t n = peer_msg_encoded_size(m);
        uint8_t *p = buf;
        int r;

        if (n == 0)
                return -EINVAL;
        if (n > sizeof(buf)) {
                p = big = malloc(n);
                if (!big)
                        return -ENOMEM;
        }
        r = peer_msg_encode(m, p, n);
        if (r < 0)
                return r;
        return send_bytes(c, p, (size_t) r);
}

static int send_simple(PeerConn *c, PeerMsgType t) {
        return send_msg(c, &(PeerMsg) { .type = t });
}

static int send_reject(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length, const char *why) {
        c->stats.requests_rejected++;
        /* Once per connection in the log: a peer that insists gets rejected many times. */
        if (c->stats.requests_rejected == 1)
                log_debug("Peer %s: rejecting request %" PRIu32 "+%" PRIu32 "/%" PRIu32 ": %s", c->address, index, begin, length, why);
        if (!c->fast)
                return 0;       /* without the fast extension a request can only be ignored */
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_REJECT, .index = index, .begin = begin, .length = length });
}

static void in_pop_sent(PeerConn *c) {
        uint64_t sent = c->out_total - c->config.sink->ops->queued_bytes(c->sink_conn);
        while (c->in_n > 0 && c->in_ends[c->in_head] <= sent) {
                c->in_head = (c->in_head + 1) % c->config.max_requests;
                c->in_n--;
        }
}

static bool sink_full(PeerConn *c) {
        return c->sink_conn && c->config.sink->ops->queued_bytes(c->sink_conn) > c->config.read_pause_bytes;
}

/* Callbacks from the store and the sink. */

static void on_store_piece(ContentStoreWatch *w, uint32_t index) {
        PeerConn *c = (PeerConn *) ((uint8_t *) w - offsetof(PeerConn, watch));
        int r;

        if (GONE(c) || !c->ready || (c->bitfield && bitfield_get(c->bitfield, index)))
                return;
        /* Not closed from here (the store is walking its watchers): a failed sink reports through
         * `failed` anyway. */
        r = send_msg(c, &(PeerMsg) { .type = PEER_MSG_HAVE, .index = index });
        (void) r;
}

static int process_rbuf(PeerConn *c);

static void on_sink_drained(void *userdata) {
        PeerConn *c = userdata;

        if (GONE(c) || !c->paused)
                return;
        /* Back-pressure over: take what is buffered, then the socket again. */
        c->paused = false;
        busy_enter(c);
        (void) process_rbuf(c);
        if (!GONE(c) && !c->paused && c->io)
                sd_event_source_set_enabled(c->io, SD_EVENT_ON);
        busy_leave(c);
}

static void on_sink_failed(int error, void *userdata) {
        PeerConn *c = userdata;
        busy_enter(c);
        conn_close(c, error, "sending failed");
        busy_leave(c);
}

/* The handshake and what follows it. */

static int send_handshake(PeerConn *c) {
        PeerHandshake h = {};
        uint8_t buf[PEER_HANDSHAKE_SIZE];
        int r;

        peer_reserved_set(h.reserved, PEER_RESERVED_EXTENSION);
        peer_reserved_set(h.reserved, PEER_RESERVED_FAST);
        peer_reserved_set(h.reserved, PEER_RESERVED_V2);
        torrent_id_short(content_store_manifest(c->store)->id, h.info_hash);
        memcpy(h.peer_id, c->config.peer_id, PEER_ID_SIZE);
        r = peer_handshake_encode(&h, buf, sizeof(buf));
        if (r < 0)
                return r;
        c->handshake_sent = true;
        return send_bytes(c, buf, (size_t) r);
}

static int send_ext_handshake(PeerConn *c) {
        const Manifest *m = content_store_manifest(c->store);
        PeerExtHandshake h = { .reqq = c->config.max_requests, .metadata_size = (uint32_t) m->info_size };
        uint8_t buf[1024];
        size_t len;
        int r;

        strncpy(h.v, CLIENT_NAME, sizeof(h.v) - 1);
        r = peer_ext_handshake_add(&h, "ut_metadata", OUR_UT_METADATA);
        if (r < 0)
                return r;
        r = peer_ext_handshake_encode(&h, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_EXTENDED, .ext_id = 0, .data = buf, .size = len });
}

static int send_have_state(PeerConn *c) {
        uint32_t n = c->g->n_pieces, have = content_store_n_have(c->store);

        if (c->fast && (have == n || have == 0))
                return send_simple(c, have == n ? PEER_MSG_HAVE_ALL : PEER_MSG_HAVE_NONE);
        if (have == 0)
                return 0;       /* BEP 3: a peer with nothing may skip the bitfield */
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_BITFIELD, .data = content_store_bitfield(c->store),
                                        .size = bitfield_size(n) });
}

static int conn_set_store(PeerConn *c, ContentStore *store) {
        const Manifest *m = content_store_manifest(store);
        int r;

        c->store = content_store_ref(store);
        c->g = content_store_geometry(store);
        peer_decoder_set_geometry(c->decoder, c->g, m->root);
        c->bitfield = calloc(1, bitfield_size(c->g->n_pieces) ?: 1);
        if (!c->bitfield)
                return -ENOMEM;
        r = c->config.sink->ops->file_new(c->config.sink->impl, content_store_fd(store), &c->sink_file);
        if (r < 0)
                return r;
        return 0;
}

static int on_handshake(PeerConn *c, const PeerHandshake *h) {
        uint8_t ours[PEER_INFO_HASH_SIZE];
        int r;

        if (c->incoming) {
                ContentStore *s = c->cb.lookup ? c->cb.lookup(c, h->info_hash, c->userdata) : NULL;
                if (GONE(c))
                        return -ECANCELED;
                if (!s) {
                        conn_close(c, -ENOENT, "unknown info-hash");
                        return -ENOENT;
                }
                r = conn_set_store(c, s);
                if (r < 0)
                        goto fail;
        }
        torrent_id_short(content_store_manifest(c->store)->id, ours);
        if (memcmp(h->info_hash, ours, sizeof(ours)) != 0) {
                conn_close(c, -EPROTO, "handshake for another info-hash");
                return -EPROTO;
        }
        if (memcmp(h->peer_id, c->config.peer_id, PEER_ID_SIZE) == 0) {
                conn_close(c, -ELOOP, "connected to ourselves");
                return -ELOOP;
        }
        memcpy(c->reserved, h->reserved, sizeof(c->reserved));
        c->fast = peer_reserved_get(h->reserved, PEER_RESERVED_FAST);
        c->extended = peer_reserved_get(h->reserved, PEER_RESERVED_EXTENSION);

        if (!c->handshake_sent) {
                r = send_handshake(c);
                if (r < 0)
                        goto fail;
        }
        /* The bitfield first (BEP 3 wants it as the first message), then the extension handshake. */
        r = send_have_state(c);
        if (r >= 0 && c->extended)
                r = send_ext_handshake(c);
        if (r >= 0)
                r = send_simple(c, PEER_MSG_UNCHOKE);
        if (r < 0)
                goto fail;
        content_store_watch(c->store, &c->watch);
        c->ready = true;
        if (c->cb.ready) {
                c->cb.ready(c, c->userdata);
                if (GONE(c))
                        return -ECANCELED;
        }
        return 0;
fail:
        conn_close(c, r, "cannot start the session");
        return r;
}

/* Messages. */

static int violation(PeerConn *c, const char *reason) {
        conn_close(c, -EPROTO, reason);
        return -EPROTO;
}

/* libtorrent 2.0 pads a v2 torrent's last file with a pad file up to the piece boundary, and asks
 * for the last block of the file as a whole 16 KiB block that runs into that padding. It takes (and
 * sends) such a block as the file's bytes followed by zeros, so we serve it the same way: a request
 * in the last piece that starts inside the file and stays within the piece length. */
static bool padded_tail_request(PeerConn *c, const PeerMsg *m) {
        uint32_t last = c->g->n_pieces - 1;
        return c->g->n_pieces > 0 && m->index == last && m->length > 0 && m->length <= PEER_BLOCK_MAX &&
               m->begin < torrent_piece_size(c->g, last) &&
               (uint64_t) m->begin + m->length <= c->g->piece_length &&
               content_store_has_piece(c->store, last);
}

static int send_padded_tail(PeerConn *c, const PeerMsg *m) {
        uint8_t buf[PEER_PIECE_HEADER_SIZE + PEER_BLOCK_MAX] = {};
        uint32_t real = MIN(m->length, torrent_piece_size(c->g, m->index) - m->begin);
        uint64_t offset = (uint64_t) m->index * c->g->piece_length + m->begin;
        int r;

        in_pop_sent(c);
        if (c->in_n >= c->config.max_requests)
                return send_reject(c, m->index, m->begin, m->length, "too many requests queued");
        r = peer_piece_header_encode(m->index, m->begin, m->length, buf, sizeof(buf));
        if (r < 0)
                return r;
        r = content_store_read(c->store, offset, buf + PEER_PIECE_HEADER_SIZE, real);
        if (r < 0)
                return send_reject(c, m->index, m->begin, m->length, "cannot read the tail");
        r = send_bytes(c, buf, PEER_PIECE_HEADER_SIZE + m->length);
        if (r < 0)
                return r;
        c->in_ends[(c->in_head + c->in_n) % c->config.max_requests] = c->out_total;
        c->in_n++;
        c->stats.blocks_sent++;
        c->stats.bytes_sent += real;
        return 0;
}

static int on_request(PeerConn *c, const PeerMsg *m) {
        uint64_t offset;
        int r;

        if (m->reject && padded_tail_request(c, m))
                return send_padded_tail(c, m);
        if (m->reject)
                return send_reject(c, m->index, m->begin, m->length, "not a block of the content");
        if (!content_store_has_piece(c->store, m->index))
                return send_reject(c, m->index, m->begin, m->length, "piece not here");
        /* The owner's sharing policy (a seed sending each piece once first: seed-ledger.h); a
         * decline needs a reject to say so, hence the fast extension. */
        if (c->fast && c->cb.serve && !c->cb.serve(c, m->index, c->userdata)) {
                c->stats.requests_declined++;
                return send_reject(c, m->index, m->begin, m->length, "declined: another peer holds the piece");
        }
        in_pop_sent(c);
        if (c->in_n >= c->config.max_requests)
                return send_reject(c, m->index, m->begin, m->length, "too many requests queued");

        offset = (uint64_t) m->index * c->g->piece_length + m->begin;
        r = c->config.sink->ops->queue_block(c->sink_conn, c->sink_file, offset, m->length, m->index, m->begin);
        if (r < 0)
                return r;
        c->out_total += PEER_PIECE_HEADER_SIZE + m->length;
        c->in_ends[(c->in_head + c->in_n) % c->config.max_requests] = c->out_total;
        c->in_n++;
        c->last_tx = now_usec();
        c->stats.blocks_sent++;
        c->stats.bytes_sent += m->length;
        return 0;
}

static int on_cancel(PeerConn *c, const PeerMsg *m) {
        uint64_t size = PEER_PIECE_HEADER_SIZE + (uint64_t) m->length;
        uint64_t sent;
        int r;

        r = c->config.sink->ops->cancel(c->sink_conn, m->index, m->begin, m->length);
        if (r <= 0)
                return 0;       /* already sent, or never asked: nothing to answer */
        /* The block's bytes never go out: every later block ends that much earlier. Which ring
         * entry was it? The first not yet sent with an end past the cancelled block's... the ring
         * has no identities, so drop the newest entry and shift: the count is what matters. */
        c->out_total -= size;
        sent = c->out_total - c->config.sink->ops->queued_bytes(c->sink_conn);
        if (c->in_n > 0) {
                c->in_n--;
                for (size_t i = 0; i < c->in_n; i++) {
                        uint64_t *e = &c->in_ends[(c->in_head + i) % c->config.max_requests];
                        if (*e > sent)
                                *e = *e >= size ? *e - size : 0;
                }
        }
        c->stats.blocks_sent--;
        c->stats.bytes_sent -= m->length;
        /* BEP 6: a cancelled request still gets its answer, a reject. */
        if (!c->fast)
                return 0;
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_REJECT, .index = m->index, .begin = m->begin, .length = m->length });
}

static void hash_blocks(const uint8_t *data, size_t size, uint8_t *out) {
        for (size_t off = 0, i = 0; off < size; off += TORRENT_BLOCK_SIZE, i++)
                if (sha256(data + off, MIN((size_t) TORRENT_BLOCK_SIZE, size - off), out + i * SHA256_SIZE) < 0)
                        memset(out + i * SHA256_SIZE, 0, SHA256_SIZE);
}

static int on_hash_request(PeerConn *c, const PeerMsg *m) {
        PeerMsg reply = { .type = PEER_MSG_HASHES, .hash = m->hash };
        _cleanup_free_ uint8_t *hashes = NULL, *blocks = NULL, *data = NULL;
        const MerkleTree *tree;
        uint32_t first = 0, n_pieces = 0;
        uint64_t first_block = 0, n_blocks = 0;
        size_t count, n;
        int r;

        if (m->reject || merkle_hashes_count(m->hash.length, m->hash.proof_layers, &count) < 0 ||
            count > c->config.hashes_max || content_store_tree(c->store, &tree) < 0)
                goto reject;
        merkle_request_pieces(c->g, &m->hash, &first, &n_pieces);
        if (n_pieces > 0) {
                uint64_t from = (uint64_t) first * c->g->piece_length;
                uint64_t to = MIN(c->g->length, (uint64_t) (first + n_pieces) * c->g->piece_length);

                uint64_t now = now_usec() / USEC_PER_SEC;

                if (to - from > c->g->piece_length)
                        goto reject;
                if (now != c->reread_window) {
                        c->reread_window = now;
                        c->rereads = 0;
                }
                if (++c->rereads > HASH_REREADS_PER_SEC)
                        goto reject;
                data = malloc(to - from);
                n_blocks = (to - from + TORRENT_BLOCK_SIZE - 1) / TORRENT_BLOCK_SIZE;
                blocks = malloc(n_blocks * SHA256_SIZE);
                if (!data || !blocks)
                        goto reject;
                /* -ENODATA when we lack one of the pieces: a partial content may. */
                if (content_store_read(c->store, from, data, to - from) < 0)
                        goto reject;
                hash_blocks(data, to - from, blocks);
                first_block = from / TORRENT_BLOCK_SIZE;
        }
        hashes = malloc(count * SHA256_SIZE);
        if (!hashes)
                goto reject;
        r = merkle_tree_get_hashes(tree, &m->hash, blocks, first_block, n_blocks, hashes, count, &n);
        if (r < 0)
                goto reject;
        reply.hashes = hashes;
        reply.n_hashes = n;
        c->stats.hash_requests++;
        return send_msg(c, &reply);
reject:
        c->stats.hash_rejects++;
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_HASH_REJECT, .hash = m->hash });
}

static int on_ut_metadata(PeerConn *c, const PeerMsg *m) {
        const Manifest *man = content_store_manifest(c->store);
        uint8_t buf[UT_METADATA_PIECE_SIZE + 128];
        UtMetadataMsg u, reply = {};
        size_t len;
        int r;

        r = ut_metadata_parse(m->data, m->size, &u);
        if (r < 0)
                return violation(c, "malformed ut_metadata message");
        if (u.type != UT_METADATA_REQUEST)
                return 0;       /* we never ask: data or rejects are stray, and harmless */
        if (c->peer_ut_metadata == 0)
                return violation(c, "ut_metadata request from a peer without ut_metadata");
        reply.piece = u.piece;
        if (u.piece < ut_metadata_pieces((uint32_t) man->info_size)) {
                size_t off = (size_t) u.piece * UT_METADATA_PIECE_SIZE;
                reply.type = UT_METADATA_DATA;
                reply.total_size = (uint32_t) man->info_size;
                reply.data = man->info + off;
                reply.size = MIN((size_t) UT_METADATA_PIECE_SIZE, man->info_size - off);
                c->stats.metadata_pieces++;
        } else
                reply.type = UT_METADATA_REJECT;
        r = ut_metadata_encode(&reply, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_EXTENDED, .ext_id = c->peer_ut_metadata, .data = buf, .size = len });
}

static int on_extended(PeerConn *c, const PeerMsg *m) {
        if (!c->extended)
                return violation(c, "extended message without the extension protocol");
        if (m->ext_id == 0) {
                PeerExtHandshake h;
                if (peer_ext_handshake_parse(m->data, m->size, &h) < 0)
                        return violation(c, "malformed extension handshake");
                c->peer_ut_metadata = peer_ext_handshake_id(&h, "ut_metadata");
                if (h.reqq > 0)
                        c->peer_reqq = h.reqq;
                return 0;
        }
        if (m->ext_id == OUR_UT_METADATA)
                return on_ut_metadata(c, m);
        return 0;       /* BEP 10: messages of extensions we did not offer are ignored */
}

static ssize_t out_find(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length) {
        for (size_t i = 0; i < c->n_out; i++)
                if (c->out[i].index == index && c->out[i].begin == begin && (length == 0 || c->out[i].length == length))
                        return (ssize_t) i;
        return -1;
}

static void out_remove(PeerConn *c, size_t i) {
        memmove(c->out + i, c->out + i + 1, (c->n_out - i - 1) * sizeof(PeerRequest));
        c->n_out--;
}

static bool was_canceled(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length) {
        for (size_t i = 0; i < CANCELED_MAX; i++)
                if (c->canceled[i].length > 0 && c->canceled[i].index == index && c->canceled[i].begin == begin &&
                    c->canceled[i].length == length) {
                        c->canceled[i].length = 0;
                        return true;
                }
        return false;
}

static int set_peer_bitfield(PeerConn *c, const PeerMsg *m) {
        size_t bsize = bitfield_size(c->g->n_pieces);

        if (c->have_seen)
                return violation(c, "bitfield after the peer said what it has");
        if ((m->type == PEER_MSG_HAVE_ALL || m->type == PEER_MSG_HAVE_NONE) && !c->fast)
                return violation(c, "have all/none without the fast extension");
        c->have_seen = true;
        memset(c->bitfield, 0, bsize ?: 1);
        if (m->type == PEER_MSG_HAVE_ALL) {
                for (uint32_t i = 0; i < c->g->n_pieces; i++)
                        bitfield_set(c->bitfield, i);
                c->seed = true;
        } else if (m->type == PEER_MSG_BITFIELD) {
                uint32_t n = 0;
                memcpy(c->bitfield, m->data, bsize);
                for (uint32_t i = 0; i < c->g->n_pieces; i++)
                        n += bitfield_get(c->bitfield, i);
                c->seed = n == c->g->n_pieces;
        }
        if (c->cb.bitfield)
                c->cb.bitfield(c, c->userdata);
        return GONE(c) ? -ECANCELED : 0;
}

static int on_message(PeerConn *c, const PeerMsg *m) {
        ssize_t i;

        if (m->type == PEER_MSG_HANDSHAKE)
                return on_handshake(c, &m->handshake);
        if (!c->ready)
                return violation(c, "message before the handshake");

        switch (m->type) {
        case PEER_MSG_KEEPALIVE:
        case PEER_MSG_PORT:
        case PEER_MSG_SUGGEST:
        case PEER_MSG_ALLOWED_FAST:
                return 0;
        case PEER_MSG_CHOKE:
                if (c->peer_choking)
                        return 0;
                c->peer_choking = true;
                if (!c->fast) {
                        /* Without the fast extension a choke drops our requests silently. */
                        while (c->n_out > 0) {
                                PeerRequest r = c->out[c->n_out - 1];
                                c->n_out--;
                                if (c->cb.rejected)
                                        c->cb.rejected(c, r.index, r.begin, r.length, c->userdata);
                                if (GONE(c))
                                        return -ECANCELED;
                        }
                }
                if (c->cb.choke)
                        c->cb.choke(c, true, c->userdata);
                return GONE(c) ? -ECANCELED : 0;
        case PEER_MSG_UNCHOKE:
                if (!c->peer_choking)
                        return 0;
                c->peer_choking = false;
                if (c->cb.choke)
                        c->cb.choke(c, false, c->userdata);
                return GONE(c) ? -ECANCELED : 0;
        case PEER_MSG_INTERESTED:
        case PEER_MSG_NOT_INTERESTED:
                c->peer_interested = m->type == PEER_MSG_INTERESTED;
                return 0;
        case PEER_MSG_HAVE:
                c->have_seen = true;
                if (bitfield_get(c->bitfield, m->index))
                        return 0;
                bitfield_set(c->bitfield, m->index);
                if (c->cb.have)
                        c->cb.have(c, m->index, c->userdata);
                return GONE(c) ? -ECANCELED : 0;
        case PEER_MSG_BITFIELD:
        case PEER_MSG_HAVE_ALL:
        case PEER_MSG_HAVE_NONE:
                return set_peer_bitfield(c, m);
        case PEER_MSG_REQUEST:
                return on_request(c, m);
        case PEER_MSG_CANCEL:
                return on_cancel(c, m);
        case PEER_MSG_PIECE:
                i = out_find(c, m->index, m->begin, m->length);
                if (i < 0) {
                        if (was_canceled(c, m->index, m->begin, m->length)) {
                                c->stats.late_blocks++;
                                return 0;
                        }
                        return violation(c, "a block we did not ask for");
                }
                out_remove(c, (size_t) i);
                c->stats.blocks_received++;
                c->stats.bytes_received += m->size;
                if (c->cb.block)
                        c->cb.block(c, m->index, m->begin, m->data, m->size, c->userdata);
                return GONE(c) ? -ECANCELED : 0;
        case PEER_MSG_REJECT:
                if (!c->fast)
                        return violation(c, "reject without the fast extension");
                i = out_find(c, m->index, m->begin, m->length);
                if (i < 0) {
                        if (was_canceled(c, m->index, m->begin, m->length))
                                return 0;
                        return violation(c, "reject of a request we did not make");
                }
                out_remove(c, (size_t) i);
                if (c->cb.rejected)
                        c->cb.rejected(c, m->index, m->begin, m->length, c->userdata);
                return GONE(c) ? -ECANCELED : 0;
        case PEER_MSG_EXTENDED:
                return on_extended(c, m);
        case PEER_MSG_HASH_REQUEST:
                return on_hash_request(c, m);
        case PEER_MSG_HASHES:
        case PEER_MSG_HASH_REJECT:
                return violation(c, "hashes we did not ask for");
        default:
                return violation(c, "unexpected message");
        }
}

/* Feeds buffered bytes to the decoder until they are used up, the connection pauses or ends. */
static int process_rbuf(PeerConn *c) {
        while (c->rbuf_off < c->rbuf_len && !GONE(c)) {
                size_t used = 0;
                PeerMsg m;
                int r;

                if (c->ready && sink_full(c)) {
                        /* The peer asks faster than it reads: wait for the sink before reading on. */
                        c->paused = true;
                        if (c->io)
                                sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
                        return 0;
                }
                r = peer_decoder_feed(c->decoder, c->rbuf + c->rbuf_off, c->rbuf_len - c->rbuf_off, &used, &m);
                c->rbuf_off += used;
                if (r < 0) {
                        conn_close(c, r, peer_decoder_error(c->decoder) ?: "malformed stream");
                        return r;
                }
                if (r == 0)
                        break;
                r = on_message(c, &m);
                if (GONE(c))
                        return -ECANCELED;
                if (r < 0) {
                        conn_close(c, r, "cannot answer");
                        return r;
                }
        }
        if (c->rbuf_off == c->rbuf_len)
                c->rbuf_off = c->rbuf_len = 0;
        return 0;
}

static int on_readable(PeerConn *c) {
        size_t total = 0;

        while (total < READ_BUDGET && !GONE(c) && !c->paused) {
                ssize_t n;

                assert(c->rbuf_off == 0 && c->rbuf_len == 0);
                n = recv(c->fd, c->rbuf, sizeof(c->rbuf), MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        conn_close(c, -errno, "receiving failed");
                        return -errno;
                }
                if (n == 0) {
                        conn_close(c, 0, "the peer closed the connection");
                        return 0;
                }
                c->last_rx = now_usec();
                c->rbuf_len = (size_t) n;
                total += (size_t) n;
                (void) process_rbuf(c);
        }
        return 0;
}

static int start_session(PeerConn *c);

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PeerConn *c = userdata;

        busy_enter(c);
        if (!c->connected) {
                int err = 0;
                socklen_t len = sizeof(err);

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err != 0)
                        conn_close(c, -err, "connecting failed");
                else {
                        int r = start_session(c);
                        if (r < 0)
                                conn_close(c, r, "cannot start the session");
                }
        } else
                (void) on_readable(c);
        busy_leave(c);
        return 0;
}

static uint64_t next_deadline(PeerConn *c) {
        if (!c->ready)
                return c->started + c->config.handshake_timeout_usec;
        return MIN(c->last_rx + c->config.idle_timeout_usec, c->last_tx + c->config.keepalive_usec);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        PeerConn *c = userdata;
        uint64_t now = now_usec();

        busy_enter(c);
        if (!c->ready && now >= c->started + c->config.handshake_timeout_usec)
                conn_close(c, -ETIMEDOUT, c->connected ? "no handshake in time" : "connecting timed out");
        else if (c->ready && now >= c->last_rx + c->config.idle_timeout_usec)
                conn_close(c, -ETIMEDOUT, "the peer went silent");
        else if (c->ready && now >= c->last_tx + c->config.keepalive_usec)
                (void) send_msg(c, &(PeerMsg) { .type = PEER_MSG_KEEPALIVE });
        if (!GONE(c)) {
                sd_event_source_set_time(c->timer, next_deadline(c));
                sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        }
        busy_leave(c);
        return 0;
}

static int start_session(PeerConn *c) {
        int r;

        c->connected = true;
        r = c->config.sink->ops->attach(c->config.sink->impl, c->fd,
                                        &(PeerSinkCallbacks) { .drained = on_sink_drained, .failed = on_sink_failed },
                                        c, &c->sink_conn);
        if (r >= 0)
                r = sd_event_source_set_io_events(c->io, EPOLLIN);
        if (r >= 0 && !c->incoming)
                r = send_handshake(c);
        return r;
}

static int conn_new(sd_event *e, int fd, bool incoming, const PeerConnConfig *config, const PeerConnCallbacks *cb,
                    void *userdata, PeerConn **ret) {
        PeerConn *c;
        uint8_t zero[PEER_ID_SIZE] = {};
        int r;

        assert(config->sink);
        c = calloc(1, sizeof(*c));
        if (!c) {
                close(fd);
                return -ENOMEM;
        }
        c->fd = fd;
        c->event = sd_event_ref(e);
        c->incoming = incoming;
        c->config = *config;
        c->cb = *cb;
        c->userdata = userdata;
        c->peer_choking = true;
        c->peer_reqq = 250;
        c->watch.piece = on_store_piece;
        if (c->config.max_requests == 0)
                c->config.max_requests = PEER_CONN_MAX_REQUESTS_DEFAULT;
        if (c->config.handshake_timeout_usec == 0)
                c->config.handshake_timeout_usec = 10 * USEC_PER_SEC;
        if (c->config.idle_timeout_usec == 0)
                c->config.idle_timeout_usec = 120 * USEC_PER_SEC;
        if (c->config.keepalive_usec == 0)
                c->config.keepalive_usec = 60 * USEC_PER_SEC;
        if (c->config.read_pause_bytes == 0)
                c->config.read_pause_bytes = (uint64_t) c->config.max_requests * (PEER_BLOCK_MAX + PEER_PIECE_HEADER_SIZE) + (1U << 20);
        if (c->config.hashes_max == 0)
                c->config.hashes_max = 1024;
        if (memcmp(c->config.peer_id, zero, PEER_ID_SIZE) == 0) {
                memcpy(c->config.peer_id, "-MC0100-", 8);
                random_bytes(c->config.peer_id + 8, PEER_ID_SIZE - 8);
        }
        c->started = c->last_rx = c->last_tx = now_usec();
        c->in_ends = calloc(c->config.max_requests, sizeof(uint64_t));
        if (!c->in_ends) {
                r = -ENOMEM;
                goto fail;
        }
        r = peer_decoder_new(&(PeerDecoderConfig) { .handshake = true }, &c->decoder);
        if (r < 0)
                goto fail;
        r = sd_event_add_io(e, &c->io, fd, incoming ? EPOLLIN : EPOLLOUT, on_io, c);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(e, &c->timer, CLOCK_MONOTONIC, next_deadline(c), 100 * USEC_PER_MSEC, on_timer, c);
        if (r < 0)
                goto fail;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        *ret = c;
        return 0;
fail:
        peer_conn_free(c);
        return r;
}

static void format_address(PeerConn *c) {
        char ip[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;

        if (c->sa.ss_family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) &c->sa;
                inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
                port = ntohs(in->sin_port);
                snprintf(c->address, sizeof(c->address), "%s:%u", ip, port);
        } else if (c->sa.ss_family == AF_INET6) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &c->sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
                port = ntohs(in6->sin6_port);
                snprintf(c->address, sizeof(c->address), "[%s]:%u", ip, port);
        } else
                snprintf(c->address, sizeof(c->address), "?");
}

int peer_conn_connect(sd_event *e, const struct sockaddr *sa, socklen_t salen, ContentStore *store,
                      const PeerConnConfig *config, const PeerConnCallbacks *cb, void *userdata, PeerConn **ret) {
        PeerConn *c;
        int fd, r;

        assert(e);
        assert(sa);
        assert(store);
        assert(ret);
        if (salen > sizeof(struct sockaddr_storage))
                return -EINVAL;
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
                r = -errno;
                close(fd);
                return r;
        }
        r = conn_new(e, fd, false, config, cb, userdata, &c);
        if (r < 0)
                return r;
        memcpy(&c->sa, sa, salen);
        format_address(c);
        r = conn_set_store(c, store);
        if (r < 0) {
                peer_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int peer_conn_accept(sd_event *e, int fd, const PeerConnConfig *config, const PeerConnCallbacks *cb,
                     void *userdata, PeerConn **ret) {
        PeerConn *c;
        socklen_t len = sizeof(struct sockaddr_storage);
        int r;

        assert(e);
        assert(fd >= 0);
        assert(ret);
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                r = -errno;
                close(fd);
                return r;
        }
        r = conn_new(e, fd, true, config, cb, userdata, &c);
        if (r < 0)
                return r;
        (void) getpeername(fd, (struct sockaddr *) &c->sa, &len);
        format_address(c);
        r = start_session(c);
        if (r < 0) {
                peer_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void peer_conn_set_userdata(PeerConn *c, void *userdata) {
        c->userdata = userdata;
}
const char *peer_conn_address(const PeerConn *c) {
        return c->address;
}
const struct sockaddr_storage *peer_conn_sockaddr(const PeerConn *c) {
        return &c->sa;
}
ContentStore *peer_conn_store(const PeerConn *c) {
        return c->store;
}
bool peer_conn_is_ready(const PeerConn *c) {
        return c->ready && !GONE(c);
}
bool peer_conn_fast(const PeerConn *c) {
        return c->fast;
}
const uint8_t *peer_conn_peer_bitfield(const PeerConn *c) {
        return c->have_seen ? c->bitfield : NULL;
}
bool peer_conn_peer_is_seed(const PeerConn *c) {
        return c->seed;
}
bool peer_conn_peer_choking(const PeerConn *c) {
        return c->peer_choking;
}
void peer_conn_get_stats(const PeerConn *c, PeerConnStats *ret) {
        *ret = c->stats;
}

int peer_conn_set_interested(PeerConn *c, bool interested) {
        if (!c->ready || GONE(c))
                return -ENOTCONN;
        if (c->am_interested == interested)
                return 0;
        c->am_interested = interested;
        return send_simple(c, interested ? PEER_MSG_INTERESTED : PEER_MSG_NOT_INTERESTED);
}

unsigned peer_conn_request_room(const PeerConn *c) {
        size_t cap = MIN((size_t) c->peer_reqq, (size_t) PEER_CONN_OUT_MAX);
        if (!c->ready || GONE(c) || c->peer_choking || c->n_out >= cap)
                return 0;
        return (unsigned) (cap - c->n_out);
}

int peer_conn_request(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length) {
        int r;

        if (!c->ready || GONE(c))
                return -ENOTCONN;
        if (c->peer_choking)
                return -EPERM;
        if (peer_conn_request_room(c) == 0)
                return -EBUSY;
        if (index >= c->g->n_pieces || length == 0 || length > PEER_BLOCK_MAX ||
            (uint64_t) begin + length > torrent_piece_size(c->g, index))
                return -EINVAL;
        r = send_msg(c, &(PeerMsg) { .type = PEER_MSG_REQUEST, .index = index, .begin = begin, .length = length });
        if (r < 0)
                return r;
        c->out[c->n_out++] = (PeerRequest) { index, begin, length };
        return 0;
}

int peer_conn_cancel(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length) {
        ssize_t i;

        if (GONE(c))
                return -ENOTCONN;
        i = out_find(c, index, begin, length);
        if (i < 0)
                return 0;
        out_remove(c, (size_t) i);
        c->canceled[c->canceled_next] = (PeerRequest) { index, begin, length };
        c->canceled_next = (c->canceled_next + 1) % CANCELED_MAX;
        return send_msg(c, &(PeerMsg) { .type = PEER_MSG_CANCEL, .index = index, .begin = begin, .length = length });
}

size_t peer_conn_requests(const PeerConn *c, const PeerRequest **ret) {
        *ret = c->out;
        return c->n_out;
}
