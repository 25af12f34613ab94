/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "hashmap.h"
#include "random-util.h"
#include "routing-table.h"

int rt_init(RoutingTable *rt, const uint8_t self[DHT_ID_SIZE], uint64_t now) {
        *rt = (RoutingTable) {};
        memcpy(rt->self, self, DHT_ID_SIZE);
        rt->buckets = calloc(1, sizeof(RtBucket));
        if (!rt->buckets)
                return -ENOMEM;
        rt->n_buckets = 1;
        rt->buckets[0].last_changed = now;
        return 0;
}

void rt_done(RoutingTable *rt) {
        free(rt->buckets);
        rt->buckets = NULL;
        rt->n_buckets = 0;
}

RtNodeState rt_node_state(const RtNode *n, uint64_t now) {
        if (n->fails >= RT_BAD_FAILS)
                return RT_BAD;
        if (n->last_seen + RT_GOOD_USEC > now)
                return RT_GOOD;
        return RT_QUESTIONABLE;
}

unsigned rt_bucket_index(const RoutingTable *rt, const uint8_t id[DHT_ID_SIZE]) {
        return MIN(dht_id_common_prefix(rt->self, id), rt->n_buckets - 1);
}

static RtNode *bucket_find(RtBucket *b, const uint8_t id[DHT_ID_SIZE]) {
        for (unsigned i = 0; i < b->n; i++)
                if (dht_id_eq(b->nodes[i].id, id))
                        return &b->nodes[i];
        return NULL;
}

RtNode *rt_find(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE]) {
        return bucket_find(&rt->buckets[rt_bucket_index(rt, id)], id);
}

static void repl_remove(RtBucket *b, unsigned i) {
        b->repl[i] = b->repl[--b->n_repl];
}

static void repl_add(RtBucket *b, const RtNode *n) {
        unsigned oldest = 0;

        for (unsigned i = 0; i < b->n_repl; i++) {
                if (dht_id_eq(b->repl[i].id, n->id)) {
                        b->repl[i] = *n;
                        return;
                }
                if (b->repl[i].last_seen < b->repl[oldest].last_seen)
                        oldest = i;
        }
        if (b->n_repl < RT_K)
                b->repl[b->n_repl++] = *n;
        else
                b->repl[oldest] = *n;
}

static int split_last(RoutingTable *rt, uint64_t now) {
        RtBucket *nb, *old;
        unsigned l = rt->n_buckets - 1, j = 0, jr = 0;

        if (rt->n_buckets >= RT_MAX_BUCKETS)
                return -E2BIG;
        nb = realloc(rt->buckets, (rt->n_buckets + 1) * sizeof(RtBucket));
        if (!nb)
                return -ENOMEM;
        rt->buckets = nb;
        rt->n_buckets++;
        old = &rt->buckets[l];
        nb = &rt->buckets[l + 1];
        *nb = (RtBucket) { .last_changed = now };

        for (unsigned i = 0; i < old->n; i++) {
                if (dht_id_common_prefix(rt->self, old->nodes[i].id) > l)
                        nb->nodes[nb->n++] = old->nodes[i];
                else
                        old->nodes[j++] = old->nodes[i];
        }
        old->n = (uint8_t) j;
        for (unsigned i = 0; i < old->n_repl; i++) {
                if (dht_id_common_prefix(rt->self, old->repl[i].id) > l)
                        nb->repl[nb->n_repl++] = old->repl[i];
                else
                        old->repl[jr++] = old->repl[i];
        }
        old->n_repl = (uint8_t) jr;
        return 0;
}

RtResult rt_heard_from(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr, uint64_t now,
                       uint32_t rtt_usec, RtNode *ret_ping, bool *ret_has_ping) {
        RtNode fresh = {
                .addr = *addr,
                .last_seen = now,
                .rtt_usec = rtt_usec,
        };
        RtBucket *b;
        RtNode *n;
        unsigned idx;

        if (ret_has_ping)
                *ret_has_ping = false;
        if (dht_id_eq(id, rt->self))
                return RT_IGNORED;
        memcpy(fresh.id, id, DHT_ID_SIZE);

        for (;;) {
                idx = rt_bucket_index(rt, id);
                b = &rt->buckets[idx];

                n = bucket_find(b, id);
                if (n) {
                        if (!dht_addr_eq(&n->addr, addr)) {
                                /* Another address claims a live node's id: keep the one we know. */
                                if (rt_node_state(n, now) != RT_BAD)
                                        return RT_IGNORED;
                                n->addr = *addr;
                        }
                        n->last_seen = now;
                        n->fails = 0;
                        n->rtt_usec = rtt_usec;
                        b->last_changed = now;
                        return RT_UPDATED;
                }
                if (b->n < RT_K) {
                        b->nodes[b->n++] = fresh;
                        b->last_changed = now;
                        for (unsigned i = 0; i < b->n_repl; i++)
                                if (dht_id_eq(b->repl[i].id, id)) {
                                        repl_remove(b, i);
                                        break;
                                }
                        return RT_ADDED;
                }
                if (idx == rt->n_buckets - 1 && split_last(rt, now) >= 0)
                        continue;
                break;
        }

        /* Full: a bad node makes room. */
        for (unsigned i = 0; i < b->n; i++)
                if (rt_node_state(&b->nodes[i], now) == RT_BAD) {
                        b->nodes[i] = fresh;
                        b->last_changed = now;
                        return RT_ADDED;
                }

        repl_add(b, &fresh);
        if (ret_ping) {
                RtNode *q = NULL;
                for (unsigned i = 0; i < b->n; i++)
                        if (rt_node_state(&b->nodes[i], now) == RT_QUESTIONABLE &&
                            (!q || b->nodes[i].last_seen < q->last_seen))
                                q = &b->nodes[i];
                if (q && q->last_pinged + 10 * USEC_PER_SEC <= now) {
                        q->last_pinged = now;
                        *ret_ping = *q;
                        if (ret_has_ping)
                                *ret_has_ping = true;
                }
        }
        return RT_CACHED;
}

bool rt_heard_query(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr, uint64_t now) {
        unsigned idx;
        RtBucket *b;
        RtNode *n;

        if (dht_id_eq(id, rt->self))
                return false;
        idx = rt_bucket_index(rt, id);
        b = &rt->buckets[idx];
        n = bucket_find(b, id);
        if (n) {
                if (dht_addr_eq(&n->addr, addr) && rt_node_state(n, now) != RT_BAD)
                        n->last_seen = now;
                return false;
        }
        if (b->n < RT_K || idx == rt->n_buckets - 1)
                return true;
        for (unsigned i = 0; i < b->n; i++)
                if (rt_node_state(&b->nodes[i], now) != RT_GOOD)
                        return true;
        return false;
}

void rt_failed(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr) {
        RtBucket *b = &rt->buckets[rt_bucket_index(rt, id)];

        for (unsigned i = 0; i < b->n_repl; i++)
                if (dht_id_eq(b->repl[i].id, id)) {
                        repl_remove(b, i);
                        break;
                }
        for (unsigned i = 0; i < b->n; i++) {
                RtNode *n = &b->nodes[i];
                unsigned best = 0;

                if (!dht_id_eq(n->id, id) || !dht_addr_eq(&n->addr, addr))
                        continue;
                if (n->fails < UINT8_MAX)
                        n->fails++;
                if (n->fails < RT_BAD_FAILS || b->n_repl == 0)
                        return;
                /* Bad, and someone is waiting: the most recently heard replacement takes its place. */
                for (unsigned j = 1; j < b->n_repl; j++)
                        if (b->repl[j].last_seen > b->repl[best].last_seen)
                                best = j;
                *n = b->repl[best];
                repl_remove(b, best);
                return;
        }
}

size_t rt_closest(const RoutingTable *rt, const uint8_t target[DHT_ID_SIZE], uint64_t now, RtNode *ret, size_t max) {
        size_t n = 0;

        if (max == 0)
                return 0;
        for (unsigned bi = 0; bi < rt->n_buckets; bi++) {
                const RtBucket *b = &rt->buckets[bi];
                for (unsigned i = 0; i < b->n; i++) {
                        const RtNode *c = &b->nodes[i];
                        size_t j;

                        if (rt_node_state(c, now) == RT_BAD)
                                continue;
                        if (n == max && dht_id_cmp_distance(target, c->id, ret[n - 1].id) >= 0)
                                continue;
                        j = n < max ? n++ : n - 1;
                        /* insertion sort into the kept prefix */
                        while (j > 0 && dht_id_cmp_distance(target, c->id, ret[j - 1].id) < 0) {
                                ret[j] = ret[j - 1];
                                j--;
                        }
                        ret[j] = *c;
                }
        }
        return n;
}

size_t rt_count(const RoutingTable *rt, uint64_t now, size_t *ret_good) {
        size_t n = 0, good = 0;

        for (unsigned bi = 0; bi < rt->n_buckets; bi++)
                for (unsigned i = 0; i < rt->buckets[bi].n; i++) {
                        n++;
                        if (rt_node_state(&rt->buckets[bi].nodes[i], now) == RT_GOOD)
                                good++;
                }
        if (ret_good)
                *ret_good = good;
        return n;
}

int rt_take_stale_bucket(RoutingTable *rt, uint64_t now, uint64_t stale_usec) {
        int best = -1;

        for (unsigned i = 0; i < rt->n_buckets; i++)
                if (rt->buckets[i].last_changed + stale_usec <= now &&
                    (best < 0 || rt->buckets[i].last_changed < rt->buckets[best].last_changed))
                        best = (int) i;
        if (best >= 0)
                rt->buckets[best].last_changed = now;
        return best;
}

void rt_random_id_in_bucket(const RoutingTable *rt, unsigned idx, uint8_t ret[DHT_ID_SIZE]) {
        uint8_t r[DHT_ID_SIZE];

        /* Keep the first idx bits of our id; in a bucket other than the last, flip bit idx. */
        random_bytes(r, sizeof(r));
        memset(ret, 0, DHT_ID_SIZE);
        for (unsigned bit = 0; bit < DHT_ID_SIZE * 8; bit++) {
                unsigned byte = bit / 8, mask = 0x80U >> (bit % 8);
                unsigned v;

                if (bit < idx)
                        v = rt->self[byte] & mask;
                else if (bit == idx && idx != rt->n_buckets - 1)
                        v = (rt->self[byte] & mask) ^ mask;
                else
                        v = r[byte] & mask;
                ret[byte] = (uint8_t) ((ret[byte] & ~mask) | v);
        }
}

bool rt_take_node_to_ping(RoutingTable *rt, uint64_t now, uint64_t min_interval, RtNode *ret) {
        RtNode *best = NULL;

        for (unsigned bi = 0; bi < rt->n_buckets; bi++)
                for (unsigned i = 0; i < rt->buckets[bi].n; i++) {
                        RtNode *n = &rt->buckets[bi].nodes[i];
                        if (rt_node_state(n, now) != RT_QUESTIONABLE || n->last_pinged + min_interval > now)
                                continue;
                        if (!best || n->last_seen < best->last_seen)
                                best = n;
                }
        if (!best)
                return false;
        best->last_pinged = now;
        *ret = *best;
        return true;
}
