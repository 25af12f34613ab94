/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Peer and item storage (expiry, bounds), write tokens (rotation), per-address rate limit. */

#include "dht-test.h"
#include "hashmap.h"
#include "random-util.h"
#include "ratelimit.h"
#include "storage.h"
#include "token.h"

#define SEC USEC_PER_SEC

static DhtAddr addr_n(unsigned n) {
        DhtAddr a = { .family = AF_INET, .port = (uint16_t) (1000 + n) };
        a.ip[0] = 10;
        a.ip[2] = (uint8_t) (n >> 8);
        a.ip[3] = (uint8_t) n;
        return a;
}

static void test_peers(void) {
        StorageLimits lim = { .max_infohashes = 3, .max_peers_per_infohash = 4, .max_peers = 10, .max_items = 2 };
        uint8_t ih[5][20];
        DhtAddr out[16], a;
        PeerStore s;
        uint64_t now = 100 * SEC;

        for (unsigned i = 0; i < 5; i++)
                random_bytes(ih[i], 20);
        ASSERT_EQ(peer_store_init(&s, &lim), 0);

        for (unsigned i = 0; i < 6; i++) {
                a = addr_n(i);
                ASSERT_EQ(peer_store_add(&s, ih[0], &a, now + i), 0);
        }
        /* at most 4 per info-hash, the newest kept */
        ASSERT_EQ(peer_store_get(&s, ih[0], AF_INET, now + 10, out, 16), 4U);
        ASSERT_EQ(s.n_peers, 4U);
        ASSERT_EQ(peer_store_get(&s, ih[0], AF_INET6, now + 10, out, 16), 0U);
        ASSERT_EQ(peer_store_get(&s, ih[0], AF_INET, now + 10, out, 2), 2U);
        /* the same peer again refreshes, does not duplicate */
        a = addr_n(5);
        ASSERT_EQ(peer_store_add(&s, ih[0], &a, now + 20), 0);
        ASSERT_EQ(s.n_peers, 4U);

        /* at most 3 info-hashes */
        a = addr_n(50);
        ASSERT_EQ(peer_store_add(&s, ih[1], &a, now), 0);
        ASSERT_EQ(peer_store_add(&s, ih[2], &a, now), 0);
        ASSERT_EQ(peer_store_add(&s, ih[3], &a, now), -ENOSPC);

        /* expiry after 30 minutes */
        ASSERT_EQ(peer_store_get(&s, ih[1], AF_INET, now + PEER_TTL_USEC - 1, out, 16), 1U);
        ASSERT_EQ(peer_store_get(&s, ih[1], AF_INET, now + PEER_TTL_USEC, out, 16), 0U);
        peer_store_expire(&s, now + PEER_TTL_USEC + 10);
        ASSERT_EQ(hashmap_size(s.map), 1U); /* ih[0] was refreshed at now + 20 */
        ASSERT_EQ(s.n_peers, 1U);
        ASSERT_EQ(peer_store_add(&s, ih[3], &a, now + PEER_TTL_USEC + 1), 0);
        peer_store_done(&s);
}

static void test_items(void) {
        StorageLimits lim = { .max_infohashes = 3, .max_peers_per_infohash = 4, .max_peers = 10, .max_items = 2 };
        StoredItem it = { .v_len = 3 };
        ItemStore s;
        uint64_t now = 100 * SEC;

        ASSERT_EQ(item_store_init(&s, &lim), 0);
        memcpy(it.v, "i1e", 3);
        memset(it.target, 1, 20);
        ASSERT_EQ(item_store_put(&s, &it, now), 0);
        memset(it.target, 2, 20);
        ASSERT_EQ(item_store_put(&s, &it, now + SEC), 0);
        memset(it.target, 3, 20);
        ASSERT_EQ(item_store_put(&s, &it, now), -ENOSPC);
        memset(it.target, 1, 20);
        ASSERT(item_store_get(&s, it.target, now + ITEM_TTL_USEC - 1));
        ASSERT(!item_store_get(&s, it.target, now + ITEM_TTL_USEC));
        /* a full store makes room by expiring */
        memset(it.target, 3, 20);
        ASSERT_EQ(item_store_put(&s, &it, now + ITEM_TTL_USEC), 0);
        item_store_expire(&s, now + ITEM_TTL_USEC + SEC + 1);
        ASSERT_EQ(hashmap_size(s.map), 1U);
        item_store_done(&s);
}

static void test_tokens(void) {
        TokenSecrets t;
        uint8_t target[20], tok[TOKEN_SIZE], other[20];
        DhtAddr a = addr_n(1), b = addr_n(2);
        uint64_t now = 10 * SEC;

        random_bytes(target, 20);
        random_bytes(other, 20);
        token_init(&t, now);
        token_make(&t, &a, target, tok);
        ASSERT(token_check(&t, &a, target, tok, sizeof(tok)));
        ASSERT(!token_check(&t, &b, target, tok, sizeof(tok)));        /* another address */
        ASSERT(!token_check(&t, &a, other, tok, sizeof(tok)));         /* another target */
        ASSERT(!token_check(&t, &a, target, tok, sizeof(tok) - 1));
        /* still good after one rotation (5 min), not after two (10 min) */
        token_rotate_if_due(&t, now + TOKEN_ROTATE_USEC - 1);
        ASSERT(token_check(&t, &a, target, tok, sizeof(tok)));
        token_rotate_if_due(&t, now + TOKEN_ROTATE_USEC);
        ASSERT(token_check(&t, &a, target, tok, sizeof(tok)));
        token_rotate_if_due(&t, now + 2 * TOKEN_ROTATE_USEC);
        ASSERT(!token_check(&t, &a, target, tok, sizeof(tok)));
        /* a long silence invalidates everything at once */
        token_make(&t, &a, target, tok);
        token_rotate_if_due(&t, now + 20 * TOKEN_ROTATE_USEC);
        ASSERT(!token_check(&t, &a, target, tok, sizeof(tok)));
}

static void test_ratelimit(void) {
        RateLimit *rl = malloc(sizeof(RateLimit));
        DhtAddr a = addr_n(1), b = addr_n(2);
        uint64_t now = 10 * SEC;
        unsigned allowed = 0;

        ratelimit_init(rl, 10, 20);
        for (unsigned i = 0; i < 100; i++)
                allowed += ratelimit_allow(rl, &a, now);
        ASSERT_EQ(allowed, 20U); /* the burst */
        /* another address has its own budget (barring a slot collision, 1 in 2048) */
        ASSERT(ratelimit_allow(rl, &b, now));
        /* 10 per second refill */
        allowed = 0;
        for (unsigned i = 0; i < 100; i++)
                allowed += ratelimit_allow(rl, &a, now + SEC);
        ASSERT_EQ(allowed, 10U);
        free(rl);
}

int main(void) {
        test_peers();
        test_items();
        test_tokens();
        test_ratelimit();
        return 0;
}
