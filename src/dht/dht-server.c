/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Answering queries. Every answer is bounded (DHT_RESPONSE_MAX, and at most DHT_VALUES_MAX peers):
 * what we send back to an address we cannot verify stays within a small multiple of what it sent,
 * and the per-address rate limit in dht.c caps the rest. nodes6 is only sent to those that ask for it
 * (BEP 32 "want"). Writes need a token we handed to the same address for the same target. */

#include "dht-internal.h"

void dht_reply_error(Dht *d, DhtSocket *s, const DhtAddr *to, KrpcBytes tid, int code, const char *msg) {
        KrpcMsg m = {
                .kind = KRPC_ERROR,
                .tid = tid,
                .error_code = code,
                .error_msg = { .p = (const uint8_t *) msg, .n = strlen(msg) },
        };

        if (tid.n == 0)
                return;
        (void) dht_send_reply(d, s, to, &m);
}

static void reply_init(Dht *d, const KrpcMsg *q, KrpcMsg *r) {
        *r = (KrpcMsg) {
                .kind = KRPC_RESPONSE,
                .tid = q->tid,
                .has_id = true,
        };
        memcpy(r->id, d->id, DHT_ID_SIZE);
}

typedef struct NodesBuf {
        uint8_t v4[DHT_K * 26];
        uint8_t v6[DHT_K * 38];
} NodesBuf;

static size_t compact_nodes(Dht *d, int family, const uint8_t target[DHT_ID_SIZE], uint8_t *out) {
        DhtSocket *s = dht_socket_for(d, family);
        size_t entry = DHT_ID_SIZE + dht_compact_len(family), n;
        RtNode nodes[DHT_K];

        if (!s)
                return 0;
        n = rt_closest(&s->rt, target, dht_now(d), nodes, DHT_K);
        for (size_t i = 0; i < n; i++) {
                memcpy(out + i * entry, nodes[i].id, DHT_ID_SIZE);
                dht_addr_to_compact(&nodes[i].addr, out + i * entry + DHT_ID_SIZE);
        }
        return n * entry;
}

static void add_nodes(Dht *d, DhtSocket *s, const KrpcMsg *q, const uint8_t target[DHT_ID_SIZE], KrpcMsg *r, NodesBuf *b) {
        bool n4 = q->want_n4, n6 = q->want_n6;

        if (!n4 && !n6) {
                n4 = s->family == AF_INET;
                n6 = s->family == AF_INET6;
        }
        if (n4)
                r->nodes = (KrpcBytes) { .p = b->v4, .n = compact_nodes(d, AF_INET, target, b->v4) };
        if (n6)
                r->nodes6 = (KrpcBytes) { .p = b->v6, .n = compact_nodes(d, AF_INET6, target, b->v6) };
}

/* Sends r, dropping nodes6 and then nodes if that is what it takes to fit. */
static void send_bounded(Dht *d, DhtSocket *s, const DhtAddr *to, KrpcMsg *r) {
        int e = dht_send_reply(d, s, to, r);

        if (e == -ENOBUFS && r->nodes6.p) {
                r->nodes6 = (KrpcBytes) {};
                e = dht_send_reply(d, s, to, r);
        }
        if (e == -ENOBUFS && r->nodes.p) {
                r->nodes = (KrpcBytes) {};
                e = dht_send_reply(d, s, to, r);
        }
        if (e >= 0)
                d->stats.queries_answered++;
}

static void handle_get_peers(Dht *d, DhtSocket *s, const KrpcMsg *q, const DhtAddr *from) {
        uint8_t token[TOKEN_SIZE], compact[DHT_VALUES_MAX][18];
        DhtAddr peers[DHT_VALUES_MAX];
        /* IPv6 peers take 21 bytes each in the list: keep the answer within DHT_RESPONSE_MAX. */
        size_t max = s->family == AF_INET ? DHT_VALUES_MAX : 48, n;
        NodesBuf b;
        KrpcMsg r;

        reply_init(d, q, &r);
        token_make(&d->tokens, from, q->target, token);
        r.token = (KrpcBytes) { .p = token, .n = sizeof(token) };
        n = peer_store_get(&d->peers, q->target, s->family, dht_now(d), peers, max);
        for (size_t i = 0; i < n; i++) {
                dht_addr_to_compact(&peers[i], compact[i]);
                r.values[i] = (KrpcBytes) { .p = compact[i], .n = dht_compact_len(s->family) };
        }
        r.n_values = n;
        add_nodes(d, s, q, q->target, &r, &b);
        send_bounded(d, s, from, &r);
}

static void handle_announce(Dht *d, DhtSocket *s, const KrpcMsg *q, const DhtAddr *from) {
        DhtAddr peer = *from;
        KrpcMsg r;

        if (!token_check(&d->tokens, from, q->target, q->token.p, q->token.n)) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_PROTOCOL, "invalid token");
                return;
        }
        if (!q->implied_port)
                peer.port = q->port;
        if (peer_store_add(&d->peers, q->target, &peer, dht_now(d)) < 0) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_SERVER, "storage full");
                return;
        }
        reply_init(d, q, &r);
        send_bounded(d, s, from, &r);
}

static void handle_get(Dht *d, DhtSocket *s, const KrpcMsg *q, const DhtAddr *from) {
        uint8_t token[TOKEN_SIZE];
        const StoredItem *it;
        NodesBuf b;
        KrpcMsg r;

        reply_init(d, q, &r);
        token_make(&d->tokens, from, q->target, token);
        r.token = (KrpcBytes) { .p = token, .n = sizeof(token) };
        it = item_store_get(&d->items, q->target, dht_now(d));
        if (it && it->is_mutable) {
                r.has_seq = true;
                r.seq = it->seq;
                /* A querier that already has this seq (or newer) gets only the seq. */
                if (!q->has_seq || it->seq > q->seq) {
                        r.has_k = r.has_sig = true;
                        memcpy(r.k, it->k, BEP44_KEY_SIZE);
                        memcpy(r.sig, it->sig, BEP44_SIG_SIZE);
                        r.v = (KrpcBytes) { .p = it->v, .n = it->v_len };
                }
        } else if (it)
                r.v = (KrpcBytes) { .p = it->v, .n = it->v_len };
        add_nodes(d, s, q, q->target, &r, &b);
        send_bounded(d, s, from, &r);
}

static void handle_put(Dht *d, DhtSocket *s, const KrpcMsg *q, const DhtAddr *from) {
        const StoredItem *old;
        StoredItem it = {};
        KrpcMsg r;

        if (q->v.n > BEP44_VALUE_MAX) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_TOO_BIG, "message (v field) too big");
                return;
        }
        if (q->has_salt && q->salt.n > BEP44_SALT_MAX) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_SALT_TOO_BIG, "salt (salt field) too big");
                return;
        }
        if (q->has_k) {
                it.is_mutable = true;
                memcpy(it.k, q->k, BEP44_KEY_SIZE);
                memcpy(it.sig, q->sig, BEP44_SIG_SIZE);
                it.seq = q->seq;
                if (q->has_salt && q->salt.n > 0) {
                        memcpy(it.salt, q->salt.p, q->salt.n);
                        it.salt_len = q->salt.n;
                }
                bep44_mutable_target(it.k, it.salt, it.salt_len, it.target);
        } else
                bep44_immutable_target(q->v.p, q->v.n, it.target);
        memcpy(it.v, q->v.p, q->v.n);
        it.v_len = q->v.n;

        if (!token_check(&d->tokens, from, it.target, q->token.p, q->token.n)) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_PROTOCOL, "invalid token");
                return;
        }
        if (it.is_mutable) {
                if (bep44_verify(it.k, it.sig, it.salt, it.salt_len, it.seq, it.v, it.v_len) < 0) {
                        dht_reply_error(d, s, from, q->tid, KRPC_ERR_INVALID_SIG, "invalid signature");
                        return;
                }
                old = item_store_get(&d->items, it.target, dht_now(d));
                if (old && old->is_mutable) {
                        if (q->has_cas && q->cas != old->seq) {
                                dht_reply_error(d, s, from, q->tid, KRPC_ERR_CAS_MISMATCH, "CAS mismatch, re-read value and try again");
                                return;
                        }
                        if (it.seq < old->seq) {
                                dht_reply_error(d, s, from, q->tid, KRPC_ERR_SEQ_TOO_LOW, "sequence number less than current");
                                return;
                        }
                }
        }
        if (item_store_put(&d->items, &it, dht_now(d)) < 0) {
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_SERVER, "storage full");
                return;
        }
        reply_init(d, q, &r);
        send_bounded(d, s, from, &r);
}

void dht_handle_query(Dht *d, DhtSocket *s, const KrpcMsg *q, const DhtAddr *from) {
        NodesBuf b;
        KrpcMsg r;

        switch (q->method) {
        case KRPC_PING:
                reply_init(d, q, &r);
                send_bounded(d, s, from, &r);
                break;
        case KRPC_FIND_NODE:
                reply_init(d, q, &r);
                add_nodes(d, s, q, q->target, &r, &b);
                send_bounded(d, s, from, &r);
                break;
        case KRPC_GET_PEERS:
                handle_get_peers(d, s, q, from);
                break;
        case KRPC_ANNOUNCE_PEER:
                handle_announce(d, s, q, from);
                break;
        case KRPC_GET:
                handle_get(d, s, q, from);
                break;
        case KRPC_PUT:
                handle_put(d, s, q, from);
                break;
        default:
                dht_reply_error(d, s, from, q->tid, KRPC_ERR_METHOD_UNKNOWN, "Method Unknown");
        }
}
