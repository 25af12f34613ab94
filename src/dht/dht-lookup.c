/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Iterative lookups (Kademlia as BEP 5 has it): keep the candidates sorted by distance to the target,
 * query the closest not yet asked with at most alpha queries in flight, learn closer nodes from every
 * answer, and stop when the K closest candidates that did not fail have all answered. get_peers and
 * get lookups also collect peers and items on the way; announce and put then write to the K closest
 * answering nodes with the tokens they gave. The operations of the public API are built from these. */

#include "dht-internal.h"
#include "log.h"

static void lookup_step(Lookup *l);
static void op_finish(Op *op);

static int on_kick(sd_event_source *es, void *userdata) {
        Dht *d = userdata;

        for (Op *op = d->ops, *next; op; op = next) {
                next = op->next;
                if (!op->started && (d->ready || op->internal))
                        op_start(op);
        }
        return 0;
}

Op *op_new(Dht *d, OpType type, DhtCallback cb, void *userdata) {
        Op *op;

        if (d->killed)
                return NULL;
        if (!d->kick && sd_event_add_defer(d->event, &d->kick, on_kick, d) < 0)
                return NULL;
        op = calloc(1, sizeof(Op));
        if (!op)
                return NULL;
        op->dht = d;
        op->type = type;
        op->cb = cb;
        op->userdata = userdata;
        LIST_PREPEND(d->ops, op);
        (void) sd_event_source_set_enabled(d->kick, SD_EVENT_ONESHOT);
        return op;
}

void dht_op_became_ready(Dht *d) {
        if (d->kick)
                (void) sd_event_source_set_enabled(d->kick, SD_EVENT_ONESHOT);
}

static void op_unlink(Op *op) {
        Dht *d = op->dht;

        if (LIST_IS_LINKED(d->ops, op))
                LIST_REMOVE(d->ops, op);
}

static void lookup_forget_pending(Lookup *l) {
        for (size_t i = 0; i < l->n; i++)
                if (l->c[i].p) {
                        pending_forget(l->c[i].p);
                        l->c[i].p = NULL;
                }
        l->in_flight = 0;
}

static void op_free(Op *op) {
        for (unsigned i = 0; i < op->n_lookups; i++) {
                if (op->lookups[i])
                        lookup_forget_pending(op->lookups[i]);
                free(op->lookups[i]);
        }
        free(op->peers);
        free(op->item);
        free(op);
}

static void op_complete(Op *op, int error) {
        Dht *d = op->dht;
        DhtItem item = {};
        DhtResult r = {
                .error = error,
                .peers = op->peers,
                .n_peers = op->n_peers,
                .n_stored = op->n_stored,
                .rounds = op->rounds,
                .queries = op->queries,
                .responses = op->responses,
                .rejected = op->rejected,
        };

        if (op->type == OP_GET && op->have_item) {
                const StoredItem *it = op->item;
                memcpy(item.target, it->target, DHT_ID_SIZE);
                item.v = it->v;
                item.v_len = it->v_len;
                item.is_mutable = it->is_mutable;
                memcpy(item.k, it->k, sizeof(item.k));
                memcpy(item.sig, it->sig, sizeof(item.sig));
                item.seq = it->seq;
                item.salt = it->salt;
                item.salt_len = it->salt_len;
                r.item = &item;
        }
        memcpy(r.id, op->ping_id, DHT_ID_SIZE);

        op_unlink(op);
        if (op->cb)
                op->cb(d, &r, op->userdata);
        op_free(op);
}

static void op_finish(Op *op) {
        int error = 0;

        switch (op->type) {
        case OP_GET_PEERS:
                error = op->n_peers > 0 ? 0 : op->responses > 0 ? -ENOENT : -EHOSTUNREACH;
                break;
        case OP_GET:
                error = op->have_item ? 0 : op->responses > 0 ? -ENOENT : -EHOSTUNREACH;
                break;
        case OP_ANNOUNCE:
        case OP_PUT:
                error = op->n_stored > 0 ? 0 : op->n_stale > 0 ? -ESTALE : -EHOSTUNREACH;
                break;
        case OP_FIND_NODE:
                error = op->responses > 0 ? 0 : -EHOSTUNREACH;
                break;
        default:
                error = op->error;
        }
        op_complete(op, error);
}

void op_cancel_all(Dht *d) {
        while (d->ops)
                op_complete(d->ops, -ECANCELED);
        d->kick = sd_event_source_disable_unref(d->kick);
}

static Candidate *lookup_find_pending(Lookup *l, Pending *p) {
        for (size_t i = 0; i < l->n; i++)
                if (l->c[i].p == p)
                        return &l->c[i];
        return NULL;
}

/* Inserts a node into the sorted candidate list (unless known, or too far when the list is full). */
static void lookup_add(Lookup *l, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr, uint8_t depth) {
        Dht *d = l->op->dht;
        const uint8_t *target = l->op->target;
        size_t pos;

        if (dht_id_eq(id, d->id) || addr->port == 0)
                return;
        for (size_t i = 0; i < l->n; i++)
                if (dht_id_eq(l->c[i].id, id) || dht_addr_eq(&l->c[i].addr, addr)) {
                        if (dht_id_eq(l->c[i].id, id))
                                l->c[i].depth = MIN(l->c[i].depth, depth);
                        return;
                }
        if (l->n == LOOKUP_MAX_CANDIDATES) {
                Candidate *last = &l->c[l->n - 1];
                if (dht_id_cmp_distance(target, id, last->id) >= 0)
                        return;
                if (last->p) {
                        pending_forget(last->p);
                        if (last->state == CAND_IN_FLIGHT)
                                l->in_flight--;
                }
                l->n--;
        }
        pos = l->n;
        while (pos > 0 && dht_id_cmp_distance(target, id, l->c[pos - 1].id) < 0)
                pos--;
        memmove(&l->c[pos + 1], &l->c[pos], (l->n - pos) * sizeof(Candidate));
        l->c[pos] = (Candidate) { .addr = *addr, .state = CAND_NEW, .depth = depth };
        memcpy(l->c[pos].id, id, DHT_ID_SIZE);
        l->n++;
}

static void op_add_peer(Op *op, const DhtAddr *a) {
        DhtAddr *n;

        for (size_t i = 0; i < op->n_peers; i++)
                if (dht_addr_eq(&op->peers[i], a))
                        return;
        if (op->n_peers >= LOOKUP_MAX_PEERS)
                return;
        n = realloc(op->peers, (op->n_peers + 1) * sizeof(DhtAddr));
        if (!n)
                return;
        op->peers = n;
        op->peers[op->n_peers++] = *a;
}

/* Returns true when the lookup can stop (an immutable item was found and verified). */
static bool op_take_item(Op *op, const KrpcMsg *m) {
        uint8_t t[DHT_ID_SIZE];
        StoredItem *it;

        if (!m->v.p || m->v.n > BEP44_VALUE_MAX)
                return false;
        if (!op->item) {
                op->item = calloc(1, sizeof(StoredItem));
                if (!op->item)
                        return false;
        }
        it = op->item;

        if (!op->want_mutable) {
                if (m->has_k)
                        return false;
                bep44_immutable_target(m->v.p, m->v.n, t);
                if (!dht_id_eq(t, op->target)) {
                        op->rejected++;
                        return false;
                }
                *it = (StoredItem) { .v_len = m->v.n };
                memcpy(it->target, t, DHT_ID_SIZE);
                memcpy(it->v, m->v.p, m->v.n);
                op->have_item = true;
                return op->type == OP_GET;
        }

        if (!m->has_k || !m->has_sig || !m->has_seq)
                return false;
        if (memcmp(m->k, op->k, BEP44_KEY_SIZE) != 0) {
                op->rejected++; /* someone else's key under our target */
                return false;
        }
        if (op->have_item && m->seq <= it->seq)
                return false;
        if (bep44_verify(m->k, m->sig, op->salt, op->salt_len, m->seq, m->v.p, m->v.n) < 0) {
                op->rejected++; /* forged, or stored under the wrong salt */
                return false;
        }
        *it = (StoredItem) { .is_mutable = true, .seq = m->seq, .v_len = m->v.n, .salt_len = op->salt_len };
        memcpy(it->target, op->target, DHT_ID_SIZE);
        memcpy(it->k, m->k, BEP44_KEY_SIZE);
        memcpy(it->sig, m->sig, BEP44_SIG_SIZE);
        memcpy(it->salt, op->salt, op->salt_len);
        memcpy(it->v, m->v.p, m->v.n);
        op->have_item = true;
        return false;
}

static void lookup_complete(Lookup *l) {
        Op *op = l->op;
        unsigned considered = 0;

        for (size_t i = 0; i < l->n && considered < DHT_K; i++)
                if (l->c[i].state == CAND_RESPONDED) {
                        considered++;
                        op->rounds = MAX(op->rounds, (unsigned) l->c[i].depth);
                }
        lookup_forget_pending(l);
        l->done = true;
        if (--op->n_running == 0)
                op_finish(op);
}

static void on_write_reply(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata) {
        Lookup *l = userdata;
        Op *op = l->op;
        Candidate *c = lookup_find_pending(l, p);

        if (c)
                c->p = NULL;
        if (reply && reply->kind == KRPC_RESPONSE) {
                op->n_stored++;
                op->responses++;
        } else if (reply && reply->kind == KRPC_ERROR) {
                op->responses++;
                if (reply->error_code == KRPC_ERR_SEQ_TOO_LOW || reply->error_code == KRPC_ERR_CAS_MISMATCH)
                        op->n_stale++;
                log_debug("DHT: write refused with error %" PRIi64 ".", reply->error_code);
        }
        if (--l->writes_in_flight == 0)
                lookup_complete(l);
}

static void lookup_write(Lookup *l) {
        Op *op = l->op;
        Dht *d = op->dht;
        unsigned considered = 0;

        l->writing = true;
        for (size_t i = 0; i < l->n && considered < DHT_K; i++) {
                Candidate *c = &l->c[i];
                KrpcMsg q = {};

                if (c->state != CAND_RESPONDED)
                        continue;
                considered++;
                if (c->token_len == 0)
                        continue;
                q.token = (KrpcBytes) { .p = c->token, .n = c->token_len };
                if (op->type == OP_ANNOUNCE) {
                        q.method = KRPC_ANNOUNCE_PEER;
                        q.has_target = true;
                        memcpy(q.target, op->target, DHT_ID_SIZE);
                        q.has_port = true;
                        q.port = op->port ?: l->sock->bound.port;
                        q.implied_port = op->port == 0;
                } else {
                        const StoredItem *it = op->item;
                        q.method = KRPC_PUT;
                        q.v = (KrpcBytes) { .p = it->v, .n = it->v_len };
                        if (it->is_mutable) {
                                q.has_k = q.has_sig = q.has_seq = true;
                                memcpy(q.k, it->k, BEP44_KEY_SIZE);
                                memcpy(q.sig, it->sig, BEP44_SIG_SIZE);
                                q.seq = it->seq;
                                if (it->salt_len > 0) {
                                        q.has_salt = true;
                                        q.salt = (KrpcBytes) { .p = it->salt, .n = it->salt_len };
                                }
                                q.has_cas = op->has_cas;
                                q.cas = op->cas;
                        }
                }
                if (dht_send_query(d, l->sock, &c->addr, c->id, &q, 2, on_write_reply, l, &c->p) >= 0) {
                        l->writes_in_flight++;
                        op->queries++;
                }
        }
        if (l->writes_in_flight == 0)
                lookup_complete(l);
}

static void lookup_converged(Lookup *l) {
        lookup_forget_pending(l);
        if (l->op->type == OP_ANNOUNCE || l->op->type == OP_PUT)
                lookup_write(l);
        else
                lookup_complete(l);
}

static void lookup_merge_nodes(Lookup *l, const KrpcMsg *m, uint8_t depth) {
        KrpcBytes nodes = l->sock->family == AF_INET ? m->nodes : m->nodes6;
        size_t entry = DHT_ID_SIZE + dht_compact_len(l->sock->family);

        if (!nodes.p)
                return;
        for (size_t off = 0; off + entry <= nodes.n; off += entry) {
                DhtAddr a;
                if (dht_addr_from_compact(nodes.p + off + DHT_ID_SIZE, entry - DHT_ID_SIZE, &a) < 0)
                        continue;
                lookup_add(l, nodes.p + off, &a, (uint8_t) MIN(depth + 1, 255));
        }
}

static void on_lookup_reply(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata) {
        Lookup *l = userdata;
        Op *op = l->op;
        Candidate *c = lookup_find_pending(l, p);
        uint8_t depth;
        bool stop = false;

        if (!c)
                return; /* cannot happen: dropped candidates forget their transaction */
        if (c->state == CAND_IN_FLIGHT)
                l->in_flight--;
        if (error == -ETIME) {
                /* Slow or gone: free the slot for the next candidate, but take a late answer. */
                c->state = CAND_STALLED;
                lookup_step(l);
                return;
        }
        c->p = NULL;
        c->state = CAND_FAILED;
        depth = c->depth;
        if (reply && reply->kind == KRPC_RESPONSE) {
                op->responses++;
                if (dht_id_eq(c->id, reply->id)) {
                        c->state = CAND_RESPONDED;
                        c->token_len = (uint8_t) MIN(reply->token.n, sizeof(c->token));
                        if (reply->token.p)
                                memcpy(c->token, reply->token.p, c->token_len);
                }
                /* c may move in the array from here on */
                lookup_merge_nodes(l, reply, depth);
                if (op->type == OP_GET_PEERS)
                        for (size_t i = 0; i < reply->n_values; i++) {
                                DhtAddr a;
                                if (dht_addr_from_compact(reply->values[i].p, reply->values[i].n, &a) >= 0)
                                        op_add_peer(op, &a);
                        }
                if (op->type == OP_GET)
                        stop = op_take_item(op, reply);
        }
        if (stop) {
                lookup_complete(l);
                return;
        }
        lookup_step(l);
}

static int lookup_query(Lookup *l, Candidate *c) {
        Op *op = l->op;
        KrpcMsg q = { .method = l->method, .has_target = true };
        int r;

        memcpy(q.target, op->target, DHT_ID_SIZE);
        r = dht_send_query(op->dht, l->sock, &c->addr, c->id, &q, 1 | QUERY_STALL, on_lookup_reply, l, &c->p);
        if (r < 0)
                return r;
        c->state = CAND_IN_FLIGHT;
        l->in_flight++;
        op->queries++;
        return 0;
}

static void lookup_step(Lookup *l) {
        Dht *d = l->op->dht;
        unsigned considered = 0, responded = 0;
        bool all_responded = true;

        if (l->done || l->writing)
                return;
        for (size_t i = 0; i < l->n; i++)
                responded += l->c[i].state == CAND_RESPONDED;
        for (size_t i = 0; i < l->n && considered < DHT_K; i++) {
                Candidate *c = &l->c[i];

                if (c->state == CAND_FAILED)
                        continue;
                if (c->state == CAND_STALLED) {
                        /* Once others answer, a stalled node no longer holds the lookup up; while
                         * nobody has, it may still be the slow answer we need. */
                        if (responded == 0)
                                all_responded = false;
                        continue;
                }
                if (c->state == CAND_NEW && l->in_flight < d->t.alpha && lookup_query(l, c) < 0) {
                        c->state = CAND_FAILED;
                        continue;
                }
                considered++;
                if (c->state != CAND_RESPONDED)
                        all_responded = false;
        }
        /* Done when the K closest that did not fail (or stall) have all answered; queries still out
         * to farther nodes cannot change that answer. */
        if (all_responded)
                lookup_converged(l);
}

static void op_start_lookups(Op *op, KrpcMethod method) {
        Dht *d = op->dht;
        RtNode seeds[2 * DHT_K];

        for (unsigned i = 0; i < d->n_sock; i++) {
                DhtSocket *s = &d->sock[i];
                size_t n = rt_closest(&s->rt, op->target, dht_now(d), seeds, ELEMENTSOF(seeds));
                Lookup *l;

                if (n == 0)
                        continue;
                l = calloc(1, sizeof(Lookup));
                if (!l)
                        continue;
                l->op = op;
                l->sock = s;
                l->method = method;
                for (size_t j = 0; j < n; j++)
                        lookup_add(l, seeds[j].id, &seeds[j].addr, 1);
                op->lookups[op->n_lookups++] = l;
                op->n_running++;
        }
        if (op->n_running == 0) {
                op_finish(op);
                return;
        }
        /* Stepping the last lookup may finish and free the op (the others cannot: it still runs). */
        unsigned n = op->n_lookups;
        Lookup *ls[2] = { op->lookups[0], op->lookups[1] };
        for (unsigned i = 0; i < n; i++)
                lookup_step(ls[i]);
}

static void on_ping_reply(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata) {
        Op *op = userdata;

        op->queries = 1;
        if (reply && reply->kind == KRPC_RESPONSE) {
                op->responses = 1;
                memcpy(op->ping_id, reply->id, DHT_ID_SIZE);
                op->error = 0;
        } else
                op->error = reply ? -EREMOTEIO : -ETIMEDOUT;
        op_finish(op);
}

void op_start(Op *op) {
        Dht *d = op->dht;

        op->started = true;
        switch (op->type) {
        case OP_READY:
                op->error = 0;
                op_finish(op);
                return;
        case OP_PING: {
                DhtSocket *s = dht_socket_for(d, op->ping_addr.family);
                KrpcMsg q = { .method = KRPC_PING };
                int r;

                if (!s) {
                        op->error = -EAFNOSUPPORT;
                        op_finish(op);
                        return;
                }
                r = dht_send_query(d, s, &op->ping_addr, NULL, &q, 2, on_ping_reply, op, NULL);
                if (r < 0) {
                        op->error = r;
                        op_finish(op);
                }
                return;
        }
        case OP_FIND_NODE:
                op_start_lookups(op, KRPC_FIND_NODE);
                return;
        case OP_GET_PEERS:
        case OP_ANNOUNCE:
                op_start_lookups(op, KRPC_GET_PEERS);
                return;
        case OP_GET:
        case OP_PUT:
                op_start_lookups(op, KRPC_GET);
                return;
        }
}

/* The public operations. */

int dht_when_ready(Dht *d, DhtCallback cb, void *userdata) {
        return op_new(d, OP_READY, cb, userdata) ? 0 : -ENOMEM;
}

int dht_ping(Dht *d, const DhtAddr *addr, DhtCallback cb, void *userdata) {
        Op *op = op_new(d, OP_PING, cb, userdata);
        if (!op)
                return -ENOMEM;
        op->ping_addr = *addr;
        op->internal = true; /* a ping needs no routing table */
        return 0;
}

int dht_get_peers(Dht *d, const uint8_t info_hash[DHT_ID_SIZE], DhtCallback cb, void *userdata) {
        Op *op = op_new(d, OP_GET_PEERS, cb, userdata);
        if (!op)
                return -ENOMEM;
        memcpy(op->target, info_hash, DHT_ID_SIZE);
        return 0;
}

int dht_announce(Dht *d, const uint8_t info_hash[DHT_ID_SIZE], uint16_t port, unsigned flags, DhtCallback cb, void *userdata) {
        Op *op;

        if (flags & DHT_REPUBLISH) {
                int r = dht_remember_published(d, info_hash, true, port, NULL);
                if (r < 0)
                        return r;
        }
        op = op_new(d, OP_ANNOUNCE, cb, userdata);
        if (!op)
                return -ENOMEM;
        memcpy(op->target, info_hash, DHT_ID_SIZE);
        op->port = port;
        return 0;
}

int dht_get(Dht *d, const uint8_t target[DHT_ID_SIZE], DhtCallback cb, void *userdata) {
        Op *op = op_new(d, OP_GET, cb, userdata);
        if (!op)
                return -ENOMEM;
        memcpy(op->target, target, DHT_ID_SIZE);
        return 0;
}

int dht_get_mutable(Dht *d, const uint8_t k[BEP44_KEY_SIZE], const void *salt, size_t salt_len, DhtCallback cb, void *userdata) {
        Op *op;

        if (salt_len > BEP44_SALT_MAX)
                return -E2BIG;
        op = op_new(d, OP_GET, cb, userdata);
        if (!op)
                return -ENOMEM;
        op->want_mutable = true;
        memcpy(op->k, k, BEP44_KEY_SIZE);
        if (salt_len > 0)
                memcpy(op->salt, salt, salt_len);
        op->salt_len = salt_len;
        bep44_mutable_target(k, salt, salt_len, op->target);
        return 0;
}

static int start_put(Dht *d, const StoredItem *it, const int64_t *cas, unsigned flags, DhtCallback cb, void *userdata) {
        Op *op;
        int r;

        if (flags & DHT_REPUBLISH) {
                r = dht_remember_published(d, it->target, false, 0, it);
                if (r < 0)
                        return r;
        }
        op = op_new(d, OP_PUT, cb, userdata);
        if (!op)
                return -ENOMEM;
        op->item = malloc(sizeof(StoredItem));
        if (!op->item) {
                op_unlink(op);
                op_free(op);
                return -ENOMEM;
        }
        *op->item = *it;
        memcpy(op->target, it->target, DHT_ID_SIZE);
        op->want_mutable = it->is_mutable;
        memcpy(op->k, it->k, BEP44_KEY_SIZE);
        memcpy(op->salt, it->salt, it->salt_len);
        op->salt_len = it->salt_len;
        if (cas) {
                op->has_cas = true;
                op->cas = *cas;
        }
        return 0;
}

static int check_value(const void *v, size_t n) {
        BeNode nodes[512];

        if (n == 0 || n > BEP44_VALUE_MAX)
                return -E2BIG;
        return be_decode(v, n, &be_limits_default, nodes, ELEMENTSOF(nodes), NULL) < 0 ? -EINVAL : 0;
}

int dht_put(Dht *d, const void *v, size_t n, unsigned flags, uint8_t ret_target[DHT_ID_SIZE], DhtCallback cb, void *userdata) {
        StoredItem *it;
        int r;

        r = check_value(v, n);
        if (r < 0)
                return r;
        it = calloc(1, sizeof(StoredItem));
        if (!it)
                return -ENOMEM;
        memcpy(it->v, v, n);
        it->v_len = n;
        bep44_immutable_target(v, n, it->target);
        r = start_put(d, it, NULL, flags, cb, userdata);
        if (r >= 0 && ret_target)
                memcpy(ret_target, it->target, DHT_ID_SIZE);
        free(it);
        return r;
}

int dht_put_mutable(Dht *d, EVP_PKEY *key, const void *salt, size_t salt_len, const void *v, size_t n,
                    int64_t seq, const int64_t *cas, unsigned flags, DhtCallback cb, void *userdata) {
        _cleanup_free_ StoredItem *it = NULL;
        int r;

        r = check_value(v, n);
        if (r < 0)
                return r;
        if (salt_len > BEP44_SALT_MAX)
                return -E2BIG;
        it = calloc(1, sizeof(StoredItem));
        if (!it)
                return -ENOMEM;
        it->is_mutable = true;
        r = bep44_key_public(key, it->k);
        if (r < 0)
                return r;
        memcpy(it->v, v, n);
        it->v_len = n;
        it->seq = seq;
        if (salt_len > 0)
                memcpy(it->salt, salt, salt_len);
        it->salt_len = salt_len;
        r = bep44_sign(key, salt, salt_len, seq, v, n, it->sig);
        if (r < 0)
                return r;
        bep44_mutable_target(it->k, salt, salt_len, it->target);
        return start_put(d, it, cas, flags, cb, userdata);
}

/* Republishing. */

int dht_remember_published(Dht *d, const uint8_t target[DHT_ID_SIZE], bool is_announce, uint16_t port, const StoredItem *item) {
        uint64_t interval = republish_interval(d, is_announce);
        Published *p;
        size_t n = 0;

        for (p = d->published; p; p = p->next, n++)
                if (p->is_announce == is_announce && dht_id_eq(p->target, target))
                        break;
        if (!p) {
                if (n >= 100000)
                        return -ENOSPC;
                p = calloc(1, sizeof(Published));
                if (!p)
                        return -ENOMEM;
                memcpy(p->target, target, DHT_ID_SIZE);
                p->is_announce = is_announce;
                p->next = d->published;
                d->published = p;
        }
        p->port = port;
        p->due = dht_now(d) + interval;
        if (item) {
                if (!p->item)
                        p->item = malloc(sizeof(StoredItem));
                if (!p->item)
                        return -ENOMEM;
                *p->item = *item;
        }
        return 0;
}

int dht_unpublish(Dht *d, const uint8_t target[DHT_ID_SIZE]) {
        int r = -ENOENT;

        for (Published **pp = &d->published; *pp;) {
                Published *p = *pp;
                if (dht_id_eq(p->target, target)) {
                        *pp = p->next;
                        free(p->item);
                        free(p);
                        r = 0;
                } else
                        pp = &p->next;
        }
        return r;
}

void published_free_all(Dht *d) {
        while (d->published) {
                Published *p = d->published;
                d->published = p->next;
                free(p->item);
                free(p);
        }
}

void dht_republish_due(Dht *d, uint64_t now) {
        for (Published *p = d->published; p; p = p->next) {
                if (p->due > now)
                        continue;
                p->due = now + republish_interval(d, p->is_announce);
                if (p->is_announce) {
                        Op *op = op_new(d, OP_ANNOUNCE, NULL, NULL);
                        if (op) {
                                memcpy(op->target, p->target, DHT_ID_SIZE);
                                op->port = p->port;
                        }
                } else if (p->item)
                        (void) start_put(d, p->item, NULL, 0, NULL, NULL);
        }
}
