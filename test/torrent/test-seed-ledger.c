/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* SeedLedger: a seed declines a piece that another connected peer holds or is being sent, while some
 * piece is held by nobody; the blocks of one piece asked together are declined together, the piece
 * asked again after the window is served; one peer alone is never declined; a peer that leaves takes
 * its pieces with it. The clock is the test's. */

#include "content-store.h"
#include "seed-ledger.h"
#include "tests.h"

#define T0 (1000 * USEC_PER_SEC)
#define W SEED_LEDGER_WINDOW_USEC

static void test_alone(void) {
        _cleanup_(seed_ledger_freep) SeedLedger *l = NULL;
        _cleanup_(seed_ledger_peer_freep) SeedLedgerPeer *a = NULL;

        ASSERT_INT_EQ(seed_ledger_new(10, &l), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &a), 0);
        seed_ledger_peer_bitfield(a, (uint8_t[2]) {});
        for (uint32_t i = 0; i < 10; i++) {
                ASSERT_TRUE(seed_ledger_request(a, i, T0));
                ASSERT_TRUE(seed_ledger_request(a, i, T0));     /* its next block */
        }
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 0);
        ASSERT_UINT_EQ(seed_ledger_holders(l, 3), 1);
        ASSERT_UINT_EQ(seed_ledger_declined(l), 0);
        a = seed_ledger_peer_free(a);
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 10);
        ASSERT_UINT_EQ(seed_ledger_holders(l, 3), 0);
}

static void test_each_piece_once_first(void) {
        _cleanup_(seed_ledger_freep) SeedLedger *l = NULL;
        _cleanup_(seed_ledger_peer_freep) SeedLedgerPeer *a = NULL, *b = NULL, *c = NULL;

        ASSERT_INT_EQ(seed_ledger_new(4, &l), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &a), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &b), 0);

        /* A is sent piece 0: B's request for it is declined, all its blocks within the window. */
        ASSERT_TRUE(seed_ledger_request(a, 0, T0));
        ASSERT_TRUE(!seed_ledger_request(b, 0, T0 + 10));
        ASSERT_TRUE(!seed_ledger_request(b, 0, T0 + 20));
        ASSERT_TRUE(!seed_ledger_request(b, 0, T0 + W - 1));
        ASSERT_UINT_EQ(seed_ledger_declined(l), 3);
        /* A's other blocks of it, and a piece nobody holds, are served. */
        ASSERT_TRUE(seed_ledger_request(a, 0, T0 + 30));
        ASSERT_TRUE(seed_ledger_request(b, 1, T0 + 40));
        ASSERT_UINT_EQ(seed_ledger_holders(l, 0), 1);
        ASSERT_UINT_EQ(seed_ledger_holders(l, 1), 1);
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 2);

        /* Asked again after the window (B could not get it from A): served. */
        ASSERT_TRUE(seed_ledger_request(b, 0, T0 + 10 + W));
        ASSERT_UINT_EQ(seed_ledger_holders(l, 0), 2);

        /* What a peer announces counts like what it is sent: C holds piece 2 (bitfield) and 3
         * (have). */
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &c), 0);
        seed_ledger_peer_bitfield(c, (uint8_t[1]) { 0x20 });
        seed_ledger_peer_have(c, 3);
        seed_ledger_peer_have(c, 3);
        seed_ledger_peer_have(c, 99);                           /* out of range: ignored */
        ASSERT_UINT_EQ(seed_ledger_holders(l, 2), 1);
        ASSERT_UINT_EQ(seed_ledger_holders(l, 3), 1);
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 0);
        /* Every piece is out there now: nothing is declined any more. */
        ASSERT_TRUE(seed_ledger_request(a, 2, T0 + 2 * W));
        ASSERT_TRUE(seed_ledger_request(a, 3, T0 + 2 * W));
        ASSERT_TRUE(seed_ledger_request(a, 99, T0 + 2 * W));    /* not its to judge */

        /* C leaves before sharing anything: piece 2 and 3 are held by A only... */
        c = seed_ledger_peer_free(c);
        ASSERT_UINT_EQ(seed_ledger_holders(l, 2), 1);
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 0);
        /* ...and when A leaves too, B gets them without a decline. */
        a = seed_ledger_peer_free(a);
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 2);
        ASSERT_TRUE(seed_ledger_request(b, 2, T0 + 3 * W));
        ASSERT_TRUE(seed_ledger_request(b, 3, T0 + 3 * W));
        ASSERT_UINT_EQ(seed_ledger_declined(l), 3);
}

static void test_memory(void) {
        _cleanup_(seed_ledger_freep) SeedLedger *l = NULL;
        _cleanup_(seed_ledger_peer_freep) SeedLedgerPeer *a = NULL, *b = NULL;

        ASSERT_INT_EQ(seed_ledger_new(3, &l), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &a), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &b), 0);
        ASSERT_TRUE(seed_ledger_request(a, 0, T0));
        ASSERT_TRUE(seed_ledger_request(a, 1, T0));
        ASSERT_TRUE(!seed_ledger_request(b, 0, T0));
        /* Piece 1 declined in a later window: declined within its own window... */
        ASSERT_TRUE(!seed_ledger_request(b, 1, T0 + 3 * W + 5));
        ASSERT_TRUE(!seed_ledger_request(b, 1, T0 + 4 * W - 1));
        /* ...piece 0, remembered from three windows ago, is served. */
        ASSERT_TRUE(seed_ledger_request(b, 0, T0 + 4 * W - 1));
        /* Long after (past the memory), piece 1 is a fresh question: held by A, declined again. */
        ASSERT_TRUE(!seed_ledger_request(b, 1, T0 + (4 + SEED_LEDGER_GENERATIONS) * W));
        ASSERT_TRUE(seed_ledger_request(b, 1, T0 + (5 + SEED_LEDGER_GENERATIONS) * W));
}

static void test_seed_peer_and_empty(void) {
        _cleanup_(seed_ledger_freep) SeedLedger *l = NULL, *e = NULL;
        _cleanup_(seed_ledger_peer_freep) SeedLedgerPeer *a = NULL, *s = NULL, *x = NULL;

        ASSERT_INT_EQ(seed_ledger_new(5, &l), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &a), 0);
        ASSERT_INT_EQ(seed_ledger_peer_new(l, &s), 0);
        seed_ledger_peer_bitfield(s, NULL);                     /* another seed */
        ASSERT_UINT_EQ(seed_ledger_uncovered(l), 0);
        for (uint32_t i = 0; i < 5; i++)
                ASSERT_TRUE(seed_ledger_request(a, i, T0));
        ASSERT_UINT_EQ(seed_ledger_declined(l), 0);

        ASSERT_INT_EQ(seed_ledger_new(0, &e), 0);               /* the empty file */
        ASSERT_INT_EQ(seed_ledger_peer_new(e, &x), 0);
        seed_ledger_peer_bitfield(x, NULL);
        ASSERT_TRUE(seed_ledger_request(x, 0, T0));
        ASSERT_UINT_EQ(seed_ledger_uncovered(e), 0);
}

int main(void) {
        RUN_TEST(test_alone);
        RUN_TEST(test_each_piece_once_first);
        RUN_TEST(test_memory);
        RUN_TEST(test_seed_peer_and_empty);
        return TESTS_DONE();
}
