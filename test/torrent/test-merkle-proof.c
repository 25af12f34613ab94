/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* BEP 52 hash requests: every valid request over several trees is answered the same from the full
 * block tree and from the piece layer (with the blocks it needs), matches the naive tree, and
 * verifies; corrupted answers and invalid requests are refused. */

#include "content.h"
#include "merkle-proof.h"
#include "torrent-test.h"

static size_t n_checked;

/* The answer as BEP 52 describes it, from the naive tree. */
static size_t naive_answer(const NaiveTree *t, const TorrentHashRequest *req, uint8_t *out) {
        size_t o = 0;
        unsigned k = log2_u64(req->length);

        for (uint32_t i = 0; i < req->length; i++, o++)
                memcpy(out + o * 32, naive_node(t, req->base, req->index + i), 32);
        for (unsigned j = k; j <= req->proof_layers; j++, o++)
                memcpy(out + o * 32, naive_node(t, req->base + j, (req->index >> j) ^ 1), 32);
        return o;
}

static void check_request(const ContentHash *c, const NaiveTree *t, const MerkleTree *full, const MerkleTree *seeder,
                          const TorrentHashRequest *req) {
        const TorrentGeometry *g = &c->geometry;
        uint8_t expected[(TORRENT_HASHES_MAX + 40) * 32], *got = malloc(sizeof(expected)), node[32];
        size_t n_expected, n, count;
        uint64_t index, first_block = 0, n_blocks = 0;
        uint32_t first_piece, n_pieces;
        unsigned level;

        ASSERT_INT_EQ(merkle_request_check(g, req), 0);
        n_expected = naive_answer(t, req, expected);
        ASSERT_INT_EQ(merkle_hashes_count(req->length, req->proof_layers, &count), 0);
        ASSERT_UINT_EQ(count, n_expected);

        ASSERT_INT_EQ(merkle_tree_get_hashes(full, req, NULL, 0, 0, got, count, &n), 0);
        ASSERT_UINT_EQ(n, n_expected);
        ASSERT_TRUE(memcmp(got, expected, n * 32) == 0);

        /* The seeder's way: blocks only for the pieces it is told to read. */
        if (req->base < merkle_tree_level(seeder)) {
                merkle_request_pieces(g, req, &first_piece, &n_pieces);
                first_block = (uint64_t) first_piece * g->blocks_per_piece;
                n_blocks = MIN(g->n_blocks, (uint64_t) (first_piece + n_pieces) * g->blocks_per_piece) - first_block;
                if (((uint64_t) req->index << req->base) < g->n_blocks) {
                        ASSERT_TRUE(n_pieces > 0);
                        ASSERT_INT_EQ(merkle_tree_get_hashes(seeder, req, NULL, 0, 0, got, count, &n), -ENODATA);
                }
        } else {
                merkle_request_pieces(g, req, &first_piece, &n_pieces);
                ASSERT_UINT_EQ(n_pieces, 0);
        }
        memset(got, 0, count * 32);
        ASSERT_INT_EQ(merkle_tree_get_hashes(seeder, req, n_blocks ? t->levels[0] + first_block * 32 : NULL,
                                             first_block, n_blocks, got, count, &n), 0);
        ASSERT_UINT_EQ(n, n_expected);
        ASSERT_TRUE(memcmp(got, expected, n * 32) == 0);
        if (count > 0)
                ASSERT_INT_EQ(merkle_tree_get_hashes(full, req, NULL, 0, 0, got, count - 1, &n), -ENOBUFS);

        /* What the answer proves. */
        ASSERT_INT_EQ(merkle_hashes_node(g, req, expected, n_expected, &level, &index, node), 0);
        ASSERT_UINT_EQ(level, req->base + MAX(log2_u64(req->length), req->proof_layers + 1));
        ASSERT_UINT_EQ(index, (uint64_t) req->index >> (level - req->base));
        ASSERT_TRUE(memcmp(node, naive_node(t, level, index), 32) == 0);
        if (level == g->height) {
                ASSERT_INT_EQ(merkle_hashes_verify(g, req, expected, n_expected), 0);
                /* Any hash changed, and it fails. */
                for (size_t i = 0; i < n_expected; i += 1 + n_expected / 7) {
                        expected[i * 32 + 5] ^= 0x40;
                        ASSERT_INT_EQ(merkle_hashes_verify(g, req, expected, n_expected), -EBADMSG);
                        expected[i * 32 + 5] ^= 0x40;
                }
                ASSERT_INT_EQ(merkle_hashes_verify(g, req, expected, n_expected - 1), -EBADMSG);
        } else
                ASSERT_INT_EQ(merkle_hashes_verify(g, req, expected, n_expected), -EDOM);
        free(got);
        n_checked++;
}

static void check_geometry(size_t size, uint32_t piece_length) {
        _cleanup_free_ uint8_t *data = test_data(size, size);
        _cleanup_(merkle_tree_freep) MerkleTree *full = NULL, *seeder = NULL;
        TorrentGeometry g;
        ContentHash c;
        NaiveTree t;

        ASSERT_INT_EQ(content_hash_buffer(data, size, piece_length, &c), 0);
        g = c.geometry;
        naive_tree_build(&t, data, size, g.n_leaves);

        ASSERT_INT_EQ(merkle_tree_new(&g, 0, t.levels[0], g.n_blocks, &full), 0);
        if (g.has_piece_layer)
                ASSERT_INT_EQ(merkle_tree_new(&g, g.piece_level, c.piece_layer, g.n_pieces, &seeder), 0);
        else
                ASSERT_INT_EQ(merkle_tree_new(&g, g.height, c.root, 1, &seeder), 0);
        ASSERT_TRUE(memcmp(merkle_tree_root(full), c.root, 32) == 0);
        ASSERT_TRUE(memcmp(merkle_tree_root(seeder), c.root, 32) == 0);

        for (unsigned base = 0; base < g.height; base++)
                for (uint32_t length = 1; length <= MIN(g.n_leaves >> base, (uint64_t) TORRENT_HASHES_MAX); length *= 2) {
                        uint64_t n_index = (g.n_leaves >> base) / length;

                        for (uint64_t j = 0; j < n_index; j++) {
                                /* The first two ranges, the last two, one in the middle. */
                                if (j > 1 && j + 2 < n_index && j != n_index / 2)
                                        continue;
                                for (uint32_t p = 0; p < g.height - base; p++) {
                                        TorrentHashRequest req = {
                                                .base = base, .index = (uint32_t) (j * length),
                                                .length = length, .proof_layers = p,
                                        };
                                        memcpy(req.root, c.root, 32);
                                        check_request(&c, &t, full, seeder, &req);
                                        if (test_current_failed_)
                                                goto out;
                                }
                        }
                }
out:
        naive_tree_free(&t);
        content_hash_done(&c);
}

static void test_round_trips(void) {
        const size_t B = TORRENT_BLOCK_SIZE;

        check_geometry(2 * B, 0);                       /* two blocks, one piece */
        check_geometry(3 * B + 1, 0);                   /* 4 blocks in 4 pieces */
        check_geometry(5 * B - 3, 4 * B);               /* 2 pieces of 4 blocks, the second short */
        check_geometry(3 * B, 4 * B);                   /* one piece padded to 4 leaves */
        check_geometry(37 * B + 11, 4 * B);             /* 10 pieces, 64 leaves */
        check_geometry(200 * B, 2 * B);                 /* 100 pieces, 256 leaves */
        check_geometry(1000 * B + 1, B);                /* 1001 pieces of one block, 1024 leaves */
        fprintf(stderr, "%zu requests checked\n", n_checked);
}

static void test_counts(void) {
        size_t n;

        ASSERT_INT_EQ(merkle_hashes_count(2, 0, &n), 0);
        ASSERT_UINT_EQ(n, 2);
        ASSERT_INT_EQ(merkle_hashes_count(2, 1, &n), 0);
        ASSERT_UINT_EQ(n, 3);
        ASSERT_INT_EQ(merkle_hashes_count(4, 1, &n), 0);
        ASSERT_UINT_EQ(n, 4);
        ASSERT_INT_EQ(merkle_hashes_count(4, 2, &n), 0);
        ASSERT_UINT_EQ(n, 5);
        ASSERT_INT_EQ(merkle_hashes_count(512, 10, &n), 0);
        ASSERT_UINT_EQ(n, 514);
        ASSERT_INT_EQ(merkle_hashes_count(1, 3, &n), 0);
        ASSERT_UINT_EQ(n, 5);
        ASSERT_INT_EQ(merkle_hashes_count(8192, 0, &n), 0);
        ASSERT_UINT_EQ(n, 8192);
        n = 42;
        ASSERT_INT_EQ(merkle_hashes_count(0, 0, &n), -EDOM);
        ASSERT_INT_EQ(merkle_hashes_count(3, 0, &n), -EDOM);
        ASSERT_INT_EQ(merkle_hashes_count(16384, 0, &n), -EDOM);
        ASSERT_INT_EQ(merkle_hashes_count(2, 64, &n), -EDOM);
        ASSERT_UINT_EQ(n, 42);
}

static void test_invalid_requests(void) {
        const size_t size = 37 * TORRENT_BLOCK_SIZE + 11;      /* 64 leaves, height 6, 4 blocks a piece */
        _cleanup_free_ uint8_t *data = test_data(size, 1);
        _cleanup_(merkle_tree_freep) MerkleTree *t = NULL;
        static const struct {
                uint32_t base, index, length, proof;
        } bad[] = {
                { 0, 0, 0, 0 },         /* no hashes */
                { 0, 0, 3, 0 },         /* not a power of two */
                { 0, 2, 4, 0 },         /* index not a multiple of length */
                { 0, 64, 2, 0 },        /* past the level */
                { 0, 62, 4, 0 },        /* runs past the level */
                { 0, 0, 128, 0 },       /* longer than the level */
                { 6, 0, 1, 0 },         /* the root's level */
                { 7, 0, 1, 0 },
                { 0, 0, 2, 6 },         /* proof up to the root itself */
                { 2, 0, 2, 4 },
                { UINT32_MAX, 0, 2, 0 },
                { 0, UINT32_MAX - 1, 2, 0 },
                { 0, 0, 2, UINT32_MAX },
        };
        uint8_t out[100 * 32];
        ContentHash c;
        size_t n = 4242;

        ASSERT_INT_EQ(content_hash_buffer(data, size, 4 * TORRENT_BLOCK_SIZE, &c), 0);
        ASSERT_INT_EQ(merkle_tree_new(&c.geometry, c.geometry.piece_level, c.piece_layer, c.geometry.n_pieces, &t), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                TorrentHashRequest req = { .base = bad[i].base, .index = bad[i].index, .length = bad[i].length,
                                           .proof_layers = bad[i].proof };
                memcpy(req.root, c.root, 32);
                if (merkle_request_check(&c.geometry, &req) != -EDOM)
                        fprintf(stderr, "bad request %zu accepted\n", i);
                ASSERT_INT_EQ(merkle_request_check(&c.geometry, &req), -EDOM);
                ASSERT_INT_EQ(merkle_tree_get_hashes(t, &req, NULL, 0, 0, out, 100, &n), -EDOM);
                ASSERT_INT_EQ(merkle_hashes_verify(&c.geometry, &req, out, 2), -EDOM);
        }
        ASSERT_UINT_EQ(n, 4242);

        /* Another file's root. */
        TorrentHashRequest req = { .base = 2, .index = 0, .length = 4, .proof_layers = 3 };
        ASSERT_INT_EQ(merkle_tree_get_hashes(t, &req, NULL, 0, 0, out, 100, &n), -ENOENT);
        memcpy(req.root, c.root, 32);
        ASSERT_INT_EQ(merkle_tree_get_hashes(t, &req, NULL, 0, 0, out, 100, &n), 0);
        ASSERT_UINT_EQ(n, 6);  /* 4 + uncles at levels 4 and 5 */
        ASSERT_INT_EQ(merkle_hashes_verify(&c.geometry, &req, out, n), 0);

        /* Trees that cannot be. */
        MerkleTree *x = NULL;
        ASSERT_INT_EQ(merkle_tree_new(&c.geometry, c.geometry.piece_level, c.piece_layer, c.geometry.n_pieces - 1, &x), -EINVAL);
        ASSERT_INT_EQ(merkle_tree_new(&c.geometry, c.geometry.height + 1, c.root, 1, &x), -EINVAL);
        ASSERT_NULL(x);

        /* A one-block file has a tree of one node: nothing to ask. */
        TorrentGeometry g1;
        ASSERT_INT_EQ(torrent_geometry_init(&g1, 100, TORRENT_BLOCK_SIZE), 0);
        req = (TorrentHashRequest) { .base = 0, .index = 0, .length = 1, .proof_layers = 0 };
        ASSERT_INT_EQ(merkle_request_check(&g1, &req), -EDOM);
        content_hash_done(&c);
}

int main(void) {
        RUN_TEST(test_counts);
        RUN_TEST(test_round_trips);
        RUN_TEST(test_invalid_requests);
        return TESTS_DONE();
}
