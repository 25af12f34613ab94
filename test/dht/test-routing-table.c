/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>

#include "dht-test.h"
#include "hashmap.h"
#include "random-util.h"
#include "routing-table.h"

#define SEC USEC_PER_SEC

static DhtAddr addr_n(unsigned n) {
        DhtAddr a = { .family = AF_INET, .port = (uint16_t) (1000 + n) };
        a.ip[0] = 10;
        a.ip[2] = (uint8_t) (n >> 8);
        a.ip[3] = (uint8_t) n;
        return a;
}

/* An id sharing exactly prefix bits with self (then random). */
static void id_with_prefix(const uint8_t *self, unsigned prefix, uint8_t *ret) {
        random_bytes(ret, DHT_ID_SIZE);
        for (unsigned b = 0; b <= prefix && b < 160; b++) {
                unsigned byte = b / 8, mask = 0x80U >> (b % 8);
                unsigned bit = (self[byte] & mask) ^ (b == prefix ? mask : 0);
                ret[byte] = (uint8_t) ((ret[byte] & ~mask) | bit);
        }
}

static void test_split_and_closest(void) {
        RoutingTable rt;
        uint8_t self[20], id[20];
        RtNode out[8];
        uint64_t now = 1000 * SEC;
        size_t n;

        random_bytes(self, 20);
        ASSERT_EQ(rt_init(&rt, self, now), 0);
        ASSERT_EQ(rt_heard_from(&rt, self, &(DhtAddr) { .family = AF_INET, .port = 1 }, now, 0, NULL, NULL), RT_IGNORED);

        /* 8 far nodes (prefix 0) fill bucket 0; then the table splits for near ones. */
        for (unsigned i = 0; i < 8; i++) {
                id_with_prefix(self, 0, id);
                ASSERT_EQ(rt_heard_from(&rt, id, &(DhtAddr) { .family = AF_INET, .port = (uint16_t) (100 + i) }, now, 0, NULL, NULL), RT_ADDED);
        }
        ASSERT_EQ(rt.n_buckets, 1U);
        id_with_prefix(self, 5, id);
        ASSERT_EQ(rt_heard_from(&rt, id, &(DhtAddr) { .family = AF_INET, .port = 200 }, now, 0, NULL, NULL), RT_ADDED);
        ASSERT(rt.n_buckets >= 2);
        ASSERT_EQ(rt_bucket_index(&rt, id), rt.n_buckets - 1);
        /* A ninth far node cannot split bucket 0 (it is not ours): it is cached. */
        id_with_prefix(self, 0, id);
        ASSERT_EQ(rt_heard_from(&rt, id, &(DhtAddr) { .family = AF_INET, .port = 300 }, now, 0, NULL, NULL), RT_CACHED);
        ASSERT_EQ(rt.buckets[0].n, 8);
        ASSERT_EQ(rt.buckets[0].n_repl, 1);

        /* Many near nodes: buckets keep splitting, each bucket holds at most K. */
        for (unsigned i = 0; i < 200; i++) {
                id_with_prefix(self, 1 + i % 40, id);
                rt_heard_from(&rt, id, &(DhtAddr) { .family = AF_INET, .port = (uint16_t) (1000 + i) }, now, 0, NULL, NULL);
        }
        for (unsigned b = 0; b < rt.n_buckets; b++) {
                ASSERT(rt.buckets[b].n <= RT_K);
                for (unsigned j = 0; j < rt.buckets[b].n; j++)
                        ASSERT_EQ(rt_bucket_index(&rt, rt.buckets[b].nodes[j].id), b);
        }

        /* closest: sorted by XOR distance, at most max, and the right ones. */
        random_bytes(id, 20);
        n = rt_closest(&rt, id, now, out, 8);
        ASSERT_EQ(n, 8U);
        for (size_t i = 1; i < n; i++)
                ASSERT(dht_id_cmp_distance(id, out[i - 1].id, out[i].id) < 0);
        for (unsigned b = 0; b < rt.n_buckets; b++)
                for (unsigned j = 0; j < rt.buckets[b].n; j++) {
                        bool in = false;
                        for (size_t i = 0; i < n; i++)
                                in = in || dht_id_eq(out[i].id, rt.buckets[b].nodes[j].id);
                        if (!in)
                                ASSERT(dht_id_cmp_distance(id, rt.buckets[b].nodes[j].id, out[n - 1].id) > 0);
                }

        /* the self-lookup target is inside the last bucket */
        rt_random_id_in_bucket(&rt, rt.n_buckets - 1, id);
        ASSERT_EQ(rt_bucket_index(&rt, id), rt.n_buckets - 1);
        rt_random_id_in_bucket(&rt, 0, id);
        ASSERT_EQ(rt_bucket_index(&rt, id), 0U);
        rt_random_id_in_bucket(&rt, 3, id);
        ASSERT_EQ(rt_bucket_index(&rt, id), 3U);
        rt_done(&rt);
}

static void test_states_and_replacement(void) {
        RoutingTable rt;
        uint8_t self[20], ids[10][20];
        uint64_t now = 1000 * SEC;
        RtNode ping;
        bool has_ping;
        DhtAddr a;

        random_bytes(self, 20);
        ASSERT_EQ(rt_init(&rt, self, now), 0);
        /* Fill bucket 0 after a first split so that it cannot split again. */
        id_with_prefix(self, 3, ids[9]);
        for (unsigned i = 0; i < 9; i++) {
                id_with_prefix(self, 0, ids[i]);
                a = addr_n(i);
                rt_heard_from(&rt, ids[i], &a, now, 0, NULL, NULL);
        }
        a = addr_n(99);
        rt_heard_from(&rt, ids[9], &a, now, 0, NULL, NULL);
        ASSERT_EQ(rt.buckets[0].n, 8);

        RtNode *n0 = rt_find(&rt, ids[0]);
        ASSERT(n0);
        ASSERT_EQ(rt_node_state(n0, now), RT_GOOD);
        ASSERT_EQ(rt_node_state(n0, now + RT_GOOD_USEC + 1), RT_QUESTIONABLE);

        /* Someone else claiming a live node's id is ignored. */
        a = addr_n(500);
        ASSERT_EQ(rt_heard_from(&rt, ids[0], &a, now, 0, NULL, NULL), RT_IGNORED);
        a = addr_n(0);
        ASSERT(dht_addr_eq(&rt_find(&rt, ids[0])->addr, &a));

        /* Later, all are questionable: a newcomer is cached and the least recently seen is to be pinged. */
        now += RT_GOOD_USEC + SEC;
        rt_find(&rt, ids[3])->last_seen = now - RT_GOOD_USEC - 10 * SEC; /* the oldest */
        a = addr_n(8);
        ASSERT_EQ(rt_heard_from(&rt, ids[8], &a, now, 0, &ping, &has_ping), RT_CACHED);
        ASSERT(has_ping);
        ASSERT(dht_id_eq(ping.id, ids[3]));

        /* It fails twice: bad, and the cached node takes its place. */
        a = addr_n(3);
        rt_failed(&rt, ids[3], &a);
        ASSERT(rt_find(&rt, ids[3]));
        rt_failed(&rt, ids[3], &a);
        ASSERT(!rt_find(&rt, ids[3]));
        ASSERT(rt_find(&rt, ids[8]));
        ASSERT_EQ(rt.buckets[0].n_repl, 0);

        /* A node that failed twice with nobody waiting is bad: not returned by closest, replaced by the next newcomer. */
        a = addr_n(4);
        rt_failed(&rt, ids[4], &a);
        rt_failed(&rt, ids[4], &a);
        ASSERT_EQ(rt_node_state(rt_find(&rt, ids[4]), now), RT_BAD);
        {
                RtNode out[16];
                size_t n = rt_closest(&rt, ids[4], now, out, 16);
                for (size_t i = 0; i < n; i++)
                        ASSERT(!dht_id_eq(out[i].id, ids[4]));
        }
        uint8_t fresh[20];
        id_with_prefix(self, 0, fresh);
        a = addr_n(77);
        ASSERT_EQ(rt_heard_from(&rt, fresh, &a, now, 0, NULL, NULL), RT_ADDED);
        ASSERT(!rt_find(&rt, ids[4]));

        /* Queries from known nodes keep them good; unknown ones are worth a ping only if there is room. */
        n0 = rt_find(&rt, ids[0]);
        a = addr_n(0);
        ASSERT(!rt_heard_query(&rt, ids[0], &a, now));
        ASSERT_EQ(rt_node_state(n0, now), RT_GOOD);

        /* Stale buckets are found and marked refreshed. */
        ASSERT(rt_take_stale_bucket(&rt, now + 20 * 60 * SEC, 15 * 60 * SEC) >= 0);
        rt_done(&rt);
}

int main(void) {
        test_split_and_closest();
        test_states_and_replacement();
        return 0;
}
