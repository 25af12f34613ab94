/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* PiecePicker: rarest first, one piece per peer, the active limit, abandoned blocks going back,
 * declined pieces leaving their peer, endgame duplicates with the peers to cancel, bad pieces
 * fetched again, senders named; the byte-wise scans at the ends of the bitfield. */

#include "content-store.h"
#include "piece-picker.h"
#include "torrent-test.h"

#define KIB 1024U

static int peer_a, peer_b, peer_c;
#define A ((void *) &peer_a)
#define B ((void *) &peer_b)
#define C ((void *) &peer_c)

static uint8_t zeros[TORRENT_BLOCK_SIZE];

static void bits(uint8_t *bf, size_t size, const uint32_t *set, size_t n) {
        memset(bf, 0, size);
        for (size_t i = 0; i < n; i++)
                bitfield_set(bf, set[i]);
}

static void test_rarest_first(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        uint8_t a[2], b[2], c[2];
        PickedBlock blk[4];

        /* 10 pieces of one block. Availability: piece 7 held by one peer, 3 by two, the rest by
         * three. */
        ASSERT_INT_EQ(torrent_geometry_init(&g, 10 * 16 * KIB, 16 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 16, &p), 0);
        bits(a, sizeof(a), (uint32_t[]) { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 10);
        bits(b, sizeof(b), (uint32_t[]) { 0, 1, 2, 3, 4, 5, 6, 8, 9 }, 9);
        bits(c, sizeof(c), (uint32_t[]) { 0, 1, 2, 4, 5, 6, 8, 9 }, 8);
        piece_picker_peer_add(p, a);
        piece_picker_peer_add(p, b);
        piece_picker_peer_add(p, c);
        ASSERT_UINT_EQ(piece_picker_availability(p, 7), 1);
        ASSERT_UINT_EQ(piece_picker_availability(p, 3), 2);
        ASSERT_UINT_EQ(piece_picker_availability(p, 0), 3);

        ASSERT_UINT_EQ(piece_picker_pick(p, A, a, blk, 1), 1);
        ASSERT_UINT_EQ(blk[0].piece, 7);
        ASSERT_UINT_EQ(blk[0].begin, 0);
        ASSERT_UINT_EQ(blk[0].length, 16 * KIB);
        ASSERT_UINT_EQ(piece_picker_pick(p, A, a, blk, 1), 1);
        ASSERT_UINT_EQ(blk[0].piece, 3);
        /* B lacks 7; 3 is taken: one of the common ones. */
        ASSERT_UINT_EQ(piece_picker_pick(p, B, b, blk, 1), 1);
        ASSERT_TRUE(blk[0].piece != 7 && blk[0].piece != 3);

        /* A have makes a piece commoner: 8 becomes the rarest for A once C announces nothing new and
         * others have more. */
        piece_picker_peer_remove(p, c);
        ASSERT_UINT_EQ(piece_picker_availability(p, 0), 2);
        piece_picker_peer_have(p, 7);
        ASSERT_UINT_EQ(piece_picker_availability(p, 7), 2);
}

static void test_seeds_and_interest(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        uint8_t have[1] = { 0xf0 }, peer[1] = { 0xf0 };

        ASSERT_INT_EQ(torrent_geometry_init(&g, 6 * 16 * KIB, 16 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, have, 4, &p), 0);
        ASSERT_UINT_EQ(piece_picker_missing(p), 2);
        ASSERT_TRUE(!piece_picker_interesting(p, peer));        /* it has only what we have */
        ASSERT_TRUE(piece_picker_interesting(p, NULL));         /* a seed */
        piece_picker_peer_add(p, NULL);
        ASSERT_UINT_EQ(piece_picker_availability(p, 5), 1);
        piece_picker_peer_remove(p, NULL);
        ASSERT_UINT_EQ(piece_picker_availability(p, 5), 0);
}

static void test_one_piece_per_peer_and_active_limit(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        PickedBlock blk[64];
        size_t n;

        /* 4 pieces of 4 blocks; at most 2 pieces assembled at once. */
        ASSERT_INT_EQ(torrent_geometry_init(&g, 4 * 64 * KIB, 64 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 2, &p), 0);
        piece_picker_peer_add(p, NULL);
        piece_picker_peer_add(p, NULL);

        n = piece_picker_pick(p, A, NULL, blk, 2);
        ASSERT_UINT_EQ(n, 2);
        ASSERT_UINT_EQ(blk[0].piece, blk[1].piece);
        ASSERT_UINT_EQ(blk[1].begin, 16 * KIB);
        /* B starts its own piece rather than sharing A's. */
        n = piece_picker_pick(p, B, NULL, blk + 2, 1);
        ASSERT_UINT_EQ(n, 1);
        ASSERT_TRUE(blk[2].piece != blk[0].piece);
        ASSERT_UINT_EQ(piece_picker_active(p), 2);
        /* A continues its piece first, then, the limit reached, takes the rest of B's. */
        n = piece_picker_pick(p, A, NULL, blk + 3, 10);
        ASSERT_UINT_EQ(n, 2 + 3);
        ASSERT_UINT_EQ(blk[3].piece, blk[0].piece);
        ASSERT_UINT_EQ(blk[5].piece, blk[2].piece);
        ASSERT_UINT_EQ(piece_picker_active(p), 2);
        /* Nothing left unrequested and pieces not started: not endgame yet, nothing for C. */
        ASSERT_TRUE(!piece_picker_endgame(p));
        ASSERT_UINT_EQ(piece_picker_pick(p, C, NULL, blk + 8, 10), 0);

        /* A is gone: its blocks come back, to C. */
        piece_picker_forget_peer(p, A);
        n = piece_picker_pick(p, C, NULL, blk + 8, 10);
        ASSERT_UINT_EQ(n, 4 + 3);
}

static void complete_piece(PiecePicker *p, void *peer, const PickedBlock *b, size_t n, uint32_t piece, int *ret_last) {
        *ret_last = 0;
        for (size_t i = 0; i < n; i++)
                if (b[i].piece == piece)
                        *ret_last = piece_picker_block_received(p, peer, piece, b[i].begin, zeros, b[i].length, NULL, NULL);
}

static void test_endgame(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        PickedBlock a[16], b[16], c[16];
        void *others[ENDGAME_DUPLICATES];
        size_t na, nb, nc, n_others;
        int last;

        /* 2 pieces of 2 blocks, the last one short (16 KiB + 100 bytes). */
        ASSERT_INT_EQ(torrent_geometry_init(&g, 32 * KIB + 16 * KIB + 100, 32 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 8, &p), 0);
        for (int i = 0; i < 3; i++)
                piece_picker_peer_add(p, NULL);

        na = piece_picker_pick(p, A, NULL, a, 16);
        ASSERT_UINT_EQ(na, 4);  /* everything: A owns both pieces */
        for (size_t i = 0; i < na; i++)
                if (a[i].piece == 1 && a[i].begin == 16 * KIB)
                        ASSERT_UINT_EQ(a[i].length, 100);
        ASSERT_TRUE(piece_picker_endgame(p));

        /* Endgame: B and C get duplicates, each block at most ENDGAME_DUPLICATES times in all. */
        nb = piece_picker_pick(p, B, NULL, b, 16);
        ASSERT_UINT_EQ(nb, 4);
        nc = piece_picker_pick(p, C, NULL, c, 16);
        ASSERT_UINT_EQ(nc, 4);
        ASSERT_UINT_EQ(piece_picker_pick(p, C, NULL, c + nc, 16), 0);  /* not twice to one peer */

        /* B delivers piece 0's first block: A and C are to be cancelled. */
        ASSERT_INT_EQ(piece_picker_block_received(p, B, 0, 0, zeros, 16 * KIB, others, &n_others), 0);
        ASSERT_UINT_EQ(n_others, 2);
        ASSERT_TRUE((others[0] == A && others[1] == C) || (others[0] == C && others[1] == A));
        /* A's copy arrives anyway: a duplicate. */
        ASSERT_INT_EQ(piece_picker_block_received(p, A, 0, 0, zeros, 16 * KIB, others, &n_others), -EALREADY);
        /* A block nobody asked A for, and a wrong size. */
        ASSERT_INT_EQ(piece_picker_block_received(p, A, 1, 32 * KIB, zeros, 100, NULL, NULL), -ENOENT);
        ASSERT_INT_EQ(piece_picker_block_received(p, C, 1, 16 * KIB, zeros, 16 * KIB, NULL, NULL), -EBADMSG);

        ASSERT_INT_EQ(piece_picker_block_received(p, C, 0, 16 * KIB, zeros, 16 * KIB, NULL, NULL), 1);
        ASSERT_TRUE(piece_picker_piece_data(p, 0) != NULL);
        {
                void *senders[4];
                size_t ns = piece_picker_piece_senders(p, 0, senders, 4);
                ASSERT_UINT_EQ(ns, 2);
        }
        piece_picker_piece_done(p, 0, true);
        ASSERT_UINT_EQ(piece_picker_missing(p), 1);

        /* Piece 1 arrives from A alone, fails verification, and is picked again. */
        complete_piece(p, A, a, na, 1, &last);
        ASSERT_INT_EQ(last, 1);
        {
                void *senders[4];
                ASSERT_UINT_EQ(piece_picker_piece_senders(p, 1, senders, 4), 1);
                ASSERT_TRUE(senders[0] == A);
        }
        piece_picker_piece_done(p, 1, false);
        ASSERT_UINT_EQ(piece_picker_missing(p), 1);
        ASSERT_UINT_EQ(piece_picker_active(p), 0);
        /* Late duplicates for the dropped piece are refused, not stored. */
        ASSERT_INT_EQ(piece_picker_block_received(p, B, 1, 0, zeros, 16 * KIB, NULL, NULL), -ENOENT);
        nb = piece_picker_pick(p, B, NULL, b, 16);
        ASSERT_UINT_EQ(nb, 2);
        ASSERT_UINT_EQ(b[0].piece, 1);
        complete_piece(p, B, b, nb, 1, &last);
        ASSERT_INT_EQ(last, 1);
        piece_picker_piece_done(p, 1, true);
        ASSERT_UINT_EQ(piece_picker_missing(p), 0);
        ASSERT_UINT_EQ(piece_picker_pick(p, C, NULL, c, 16), 0);
}

static void test_abandon(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        PickedBlock a[8], b[8];

        ASSERT_INT_EQ(torrent_geometry_init(&g, 64 * KIB, 64 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 1, &p), 0);
        piece_picker_peer_add(p, NULL);
        ASSERT_UINT_EQ(piece_picker_pick(p, A, NULL, a, 8), 4);
        /* A rejects block 2: B (no piece of its own possible, limit 1) gets exactly that block. */
        piece_picker_block_abandon(p, A, 0, 2 * 16 * KIB);
        ASSERT_UINT_EQ(piece_picker_pick(p, B, NULL, b, 8), 1);
        ASSERT_UINT_EQ(b[0].begin, 2 * 16 * KIB);
}

static void test_empty_and_single(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL, *q = NULL;
        PickedBlock b[4];

        ASSERT_INT_EQ(torrent_geometry_init(&g, 0, 16 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 1, &p), 0);
        ASSERT_UINT_EQ(piece_picker_missing(p), 0);
        ASSERT_UINT_EQ(piece_picker_pick(p, A, NULL, b, 4), 0);

        ASSERT_INT_EQ(torrent_geometry_init(&g, 1, 16 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 1, &q), 0);
        piece_picker_peer_add(q, NULL);
        ASSERT_UINT_EQ(piece_picker_pick(q, A, NULL, b, 4), 1);
        ASSERT_UINT_EQ(b[0].length, 1);
        ASSERT_INT_EQ(piece_picker_block_received(q, A, 0, 0, zeros, 1, NULL, NULL), 1);
}

static void test_declined(void) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *p = NULL;
        uint8_t all_but[1], b_has[1];
        PickedBlock blk[16];
        uint32_t first;
        size_t n;

        /* 4 pieces of 2 blocks. A is a seed that declines what it is asked first (another peer
         * holds it); B holds that piece. */
        ASSERT_INT_EQ(torrent_geometry_init(&g, 4 * 32 * KIB, 32 * KIB), 0);
        ASSERT_INT_EQ(piece_picker_new(&g, NULL, 8, &p), 0);
        piece_picker_peer_add(p, NULL);
        n = piece_picker_pick(p, A, NULL, blk, 2);
        ASSERT_UINT_EQ(n, 2);
        first = blk[0].piece;
        ASSERT_UINT_EQ(blk[1].piece, first);
        ASSERT_UINT_EQ(piece_picker_active(p), 1);

        /* The first block declined: the piece stays active (its second block is still asked of A)
         * but is A's no longer; A, offering everything but it, gets another piece, not the rest of
         * it. */
        piece_picker_block_declined(p, A, first, 0);
        ASSERT_UINT_EQ(piece_picker_active(p), 1);
        bits(all_but, sizeof(all_but), (uint32_t[]) { 0, 1, 2, 3 }, 4);
        all_but[0] &= (uint8_t) ~(0x80 >> first);
        n = piece_picker_pick(p, A, all_but, blk, 2);
        ASSERT_UINT_EQ(n, 2);
        ASSERT_TRUE(blk[0].piece != first && blk[1].piece == blk[0].piece);
        ASSERT_UINT_EQ(piece_picker_active(p), 2);

        /* The second block declined: nothing received or asked, the piece is dropped (no memory
         * held while waiting), and B, which holds it, starts it as a new piece, rarest first. */
        piece_picker_block_declined(p, A, first, 16 * KIB);
        ASSERT_UINT_EQ(piece_picker_active(p), 1);
        bits(b_has, sizeof(b_has), (uint32_t[]) { first }, 1);
        piece_picker_peer_add(p, b_has);
        n = piece_picker_pick(p, B, b_has, blk, 16);
        ASSERT_UINT_EQ(n, 2);
        ASSERT_UINT_EQ(blk[0].piece, first);
        ASSERT_UINT_EQ(blk[1].piece, first);

        /* A late decline of a piece now B's changes nothing. */
        piece_picker_block_declined(p, A, first, 0);
        ASSERT_UINT_EQ(piece_picker_active(p), 2);
        ASSERT_UINT_EQ(piece_picker_pick(p, C, b_has, blk, 16), 0);
}

/* n pieces, n not a multiple of 8: the last byte of a bitfield has padding bits, which the scans (a
 * byte, or eight, at a time) must never take for pieces. From a seed, one block at a time, every
 * piece comes once, none past the last, then nothing. Each picker starts its scan at a random piece:
 * over many, the first pick (all pieces tie) is not always the same; a rarer piece, rare, is always
 * first. */
static void check_scans(uint32_t n, uint32_t rare) {
        TorrentGeometry g;
        _cleanup_(piece_picker_freep) PiecePicker *all = NULL;
        _cleanup_free_ uint8_t *have_all = NULL, *offered = NULL, *picked = NULL, *others = NULL;
        size_t size = bitfield_size(n);
        PickedBlock blk[1];
        uint32_t first = UINT32_MAX;
        bool ties_vary = false;

        assert(n % 8 != 0 && rare < n);
        ASSERT_INT_EQ(torrent_geometry_init(&g, (uint64_t) n * 16 * KIB, 16 * KIB), 0);
        ASSERT_TRUE(have_all = calloc(1, size));
        ASSERT_TRUE(offered = malloc(size));
        ASSERT_TRUE(picked = calloc(1, size));
        ASSERT_TRUE(others = calloc(1, size));

        /* Everything had: a seed (NULL, every bit set) offers nothing, padding included. */
        for (uint32_t i = 0; i < n; i++)
                bitfield_set(have_all, i);
        ASSERT_INT_EQ(piece_picker_new(&g, have_all, 32, &all), 0);
        ASSERT_TRUE(!piece_picker_interesting(all, NULL));
        memset(offered, 0xff, size);                    /* a peer's padding bits set: still nothing */
        ASSERT_TRUE(!piece_picker_interesting(all, offered));

        /* Every piece but rare held by one more peer. */
        for (uint32_t i = 0; i < n; i++)
                if (i != rare)
                        bitfield_set(others, i);
        for (unsigned run = 0; run < 64; run++) {
                _cleanup_(piece_picker_freep) PiecePicker *p = NULL;

                ASSERT_INT_EQ(piece_picker_new(&g, NULL, n + 1, &p), 0);
                piece_picker_peer_add(p, NULL);
                if (run % 2)
                        piece_picker_peer_add(p, others);
                memset(picked, 0, size);
                for (uint32_t k = 0; k < n; k++) {
                        ASSERT_UINT_EQ(piece_picker_pick(p, A, NULL, blk, 1), 1);
                        ASSERT_TRUE(blk[0].piece < n);
                        ASSERT_TRUE(!bitfield_get(picked, blk[0].piece));
                        bitfield_set(picked, blk[0].piece);
                        if (k == 0 && run % 2)
                                ASSERT_UINT_EQ(blk[0].piece, rare);
                        if (k == 0 && !(run % 2)) {
                                if (first == UINT32_MAX)
                                        first = blk[0].piece;
                                else if (blk[0].piece != first)
                                        ties_vary = true;
                        }
                }
                ASSERT_UINT_EQ(piece_picker_pick(p, A, NULL, blk, 1), 0);
                ASSERT_UINT_EQ(piece_picker_active(p), n);
        }
        ASSERT_TRUE(ties_vary);
}

static void test_scans_at_the_bitfield_ends(void) {
        check_scans(21, 18);            /* three bytes: a byte at a time */
        check_scans(1003, 517);         /* 126 bytes: eight at a time, where nothing is to be had */
        check_scans(1003, 1001);        /* the rare piece in the last byte */
        check_scans(1003, 3);
}

int main(void) {
        RUN_TEST(test_rarest_first);
        RUN_TEST(test_seeds_and_interest);
        RUN_TEST(test_one_piece_per_peer_and_active_limit);
        RUN_TEST(test_endgame);
        RUN_TEST(test_abandon);
        RUN_TEST(test_declined);
        RUN_TEST(test_empty_and_single);
        RUN_TEST(test_scans_at_the_bitfield_ends);
        return TESTS_DONE();
}
