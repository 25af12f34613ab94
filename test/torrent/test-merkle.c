/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* BEP 52 trees: the streaming hasher against a naive tree built from the definition, at the edges
 * (empty, 1 byte, one block, one block + 1, one piece, one piece + 1, many pieces, files smaller than
 * one piece that pad only to a power of two), whatever the chunking; piece and piece-layer checks. */

#include <fcntl.h>
#include <sys/stat.h>

#include "content.h"
#include "torrent-test.h"

/* Our hashes of data against the naive tree. */
static void check_size(size_t size, uint32_t piece_length) {
        _cleanup_free_ uint8_t *data = test_data(size, size ^ piece_length);
        TorrentGeometry g;
        ContentHash c;
        NaiveTree t;

        ASSERT_INT_EQ(content_hash_buffer(data, size, piece_length, &c), 0);
        g = c.geometry;
        ASSERT_UINT_EQ(g.length, size);
        ASSERT_UINT_EQ(g.piece_length, piece_length ?: content_piece_length(size));
        ASSERT_UINT_EQ(g.n_pieces, (size + g.piece_length - 1) / g.piece_length);
        if (size == 0) {
                ASSERT_TRUE(!c.has_root);
                ASSERT_NULL(c.piece_layer);
                return;
        }
        ASSERT_TRUE(c.has_root);

        naive_tree_build(&t, data, size, pow2_ceil_u64((size + TORRENT_BLOCK_SIZE - 1) / TORRENT_BLOCK_SIZE));
        ASSERT_UINT_EQ(t.n_levels, g.height + 1);
        ASSERT_TRUE(memcmp(c.root, naive_node(&t, g.height, 0), SHA256_SIZE) == 0);
        if (size > g.piece_length) {
                ASSERT_TRUE(g.has_piece_layer && c.piece_layer);
                /* The piece layer is the naive tree's level at piece_level; past the real pieces
                 * it holds the padding the definition gives. */
                ASSERT_TRUE(memcmp(c.piece_layer, t.levels[g.piece_level], (size_t) g.n_pieces * SHA256_SIZE) == 0);
                for (uint64_t i = g.n_pieces; i < t.counts[g.piece_level]; i++)
                        ASSERT_TRUE(memcmp(naive_node(&t, g.piece_level, i), merkle_pad_hash(g.piece_level), SHA256_SIZE) == 0);
                ASSERT_INT_EQ(merkle_piece_layer_verify(&g, c.piece_layer, g.n_pieces, c.root), 0);
        } else {
                ASSERT_TRUE(!g.has_piece_layer);
                ASSERT_NULL(c.piece_layer);
        }

        /* Every piece verifies against its expected node; a flipped bit does not. */
        for (uint32_t p = 0; p < g.n_pieces; p++) {
                const uint8_t *expected = g.has_piece_layer ? c.piece_layer + p * SHA256_SIZE : c.root;
                uint8_t *piece = data + (size_t) p * g.piece_length;
                uint32_t n = torrent_piece_size(&g, p);

                ASSERT_INT_EQ(merkle_piece_verify(&g, p, piece, n, expected), 0);
                piece[n - 1] ^= 1;
                ASSERT_INT_EQ(merkle_piece_verify(&g, p, piece, n, expected), -EBADMSG);
                piece[n - 1] ^= 1;
        }
        naive_tree_free(&t);
        content_hash_done(&c);
}

static void test_edges(void) {
        const size_t B = TORRENT_BLOCK_SIZE;

        check_size(0, 0);
        check_size(1, 0);
        check_size(B - 1, 0);
        check_size(B, 0);
        check_size(B + 1, 0);
        check_size(2 * B, 0);
        check_size(3 * B, 0);
        check_size(3 * B + 1, 0);
        check_size(100000, 0);
        /* Pieces of 64 KiB (4 blocks): one piece, one piece + 1, a file smaller than a piece whose
         * 3 blocks pad to 4 leaves, a single short block in a large piece. */
        check_size(4 * B, 4 * B);
        check_size(4 * B + 1, 4 * B);
        check_size(3 * B - 5, 4 * B);
        check_size(1, 4 * B);
        check_size(5 * B - 1, 4 * B);
        /* Many pieces: 100 pieces and a bit; a power of two of pieces exactly; one more. */
        check_size(100 * 2 * B + 7, 2 * B);
        check_size(64 * B, B);
        check_size(64 * B + 1, B);
        /* Large pieces: 4 MiB pieces, 2.5 pieces. */
        check_size((size_t) 10 << 20, 4 << 20);
}

static void test_known_roots(void) {
        uint8_t zero[TORRENT_BLOCK_SIZE] = {}, h[SHA256_SIZE], h2[SHA256_SIZE], pair[64] = {};
        ContentHash c;

        /* One block: the root is the block's hash, short or not. */
        ASSERT_INT_EQ(content_hash_buffer("a", 1, 0, &c), 0);
        ASSERT_INT_EQ(sha256("a", 1, h), 0);
        ASSERT_TRUE(memcmp(c.root, h, SHA256_SIZE) == 0);
        content_hash_done(&c);

        ASSERT_INT_EQ(content_hash_buffer(zero, sizeof(zero), 0, &c), 0);
        ASSERT_INT_EQ(sha256(zero, sizeof(zero), h), 0);
        ASSERT_TRUE(memcmp(c.root, h, SHA256_SIZE) == 0);
        content_hash_done(&c);

        /* Two blocks, the second of 1 byte: H(H(block) || H(byte)), no zero-byte padding of data. */
        uint8_t two[TORRENT_BLOCK_SIZE + 1] = {};
        ASSERT_INT_EQ(content_hash_buffer(two, sizeof(two), 0, &c), 0);
        ASSERT_INT_EQ(sha256(zero, TORRENT_BLOCK_SIZE, pair), 0);
        ASSERT_INT_EQ(sha256(zero, 1, pair + 32), 0);
        ASSERT_INT_EQ(sha256(pair, 64, h2), 0);
        ASSERT_TRUE(memcmp(c.root, h2, SHA256_SIZE) == 0);
        content_hash_done(&c);

        /* Padding: level 0 is 32 zero bytes, level 1 is SHA-256 of 64 zero bytes. */
        memset(pair, 0, sizeof(pair));
        ASSERT_INT_EQ(sha256(pair, 64, h), 0);
        ASSERT_TRUE(memcmp(merkle_pad_hash(0), pair, SHA256_SIZE) == 0);
        ASSERT_TRUE(memcmp(merkle_pad_hash(1), h, SHA256_SIZE) == 0);
}

/* The same bytes fed in chunks of every awkward size give the same hashes. */
static void test_chunking(void) {
        const size_t size = 7 * TORRENT_BLOCK_SIZE + 1234;
        _cleanup_free_ uint8_t *data = test_data(size, 7);
        static const size_t chunks[] = { 1, 7, 1000, TORRENT_BLOCK_SIZE - 1, TORRENT_BLOCK_SIZE, TORRENT_BLOCK_SIZE + 1, 100000 };
        ContentHash ref;

        ASSERT_INT_EQ(content_hash_buffer(data, size, 2 * TORRENT_BLOCK_SIZE, &ref), 0);
        for (size_t i = 0; i < ELEMENTSOF(chunks); i++) {
                _cleanup_free_ ContentHasher *h = malloc(sizeof(ContentHasher));
                ContentHash c;

                ASSERT_INT_EQ(content_hasher_init(h, size, 2 * TORRENT_BLOCK_SIZE), 0);
                for (size_t off = 0; off < size; off += chunks[i])
                        ASSERT_INT_EQ(content_hasher_feed(h, data + off, MIN(chunks[i], size - off)), 0);
                ASSERT_INT_EQ(content_hasher_finish(h, &c), 0);
                ASSERT_TRUE(memcmp(c.root, ref.root, SHA256_SIZE) == 0);
                ASSERT_TRUE(memcmp(c.piece_layer, ref.piece_layer, (size_t) ref.geometry.n_pieces * SHA256_SIZE) == 0);
                content_hash_done(&c);
        }
        content_hash_done(&ref);
}

static void test_hasher_errors(void) {
        _cleanup_free_ ContentHasher *h = malloc(sizeof(ContentHasher));
        ContentHash c;

        /* More bytes than announced: refused, and the error sticks. */
        ASSERT_INT_EQ(content_hasher_init(h, 10, 0), 0);
        ASSERT_INT_EQ(content_hasher_feed(h, "0123456789x", 11), -EFBIG);
        ASSERT_INT_EQ(content_hasher_feed(h, "0", 1), -EFBIG);
        ASSERT_INT_EQ(content_hasher_finish(h, &c), -EFBIG);
        /* Fewer. */
        ASSERT_INT_EQ(content_hasher_init(h, 10, 0), 0);
        ASSERT_INT_EQ(content_hasher_feed(h, "01234", 5), 0);
        ASSERT_INT_EQ(content_hasher_finish(h, &c), -ENODATA);
        /* Bad geometry. */
        ASSERT_INT_EQ(content_hasher_init(h, 10, 1000), -EDOM);
        ASSERT_INT_EQ(content_hasher_init(h, TORRENT_LENGTH_MAX + 1, 0), -EFBIG);
}

static void test_file(void) {
        char path[] = "/tmp/test-merkle-XXXXXX";
        const size_t size = 3 * 1024 * 1024 + 5;       /* one pread chunk is 4 MiB: also a short one */
        _cleanup_free_ uint8_t *data = test_data(size, 3);
        _cleanup_close_ int fd = mkstemp(path), dir = -EBADF;
        ContentHash a, b;

        ASSERT_TRUE(fd >= 0);
        unlink(path);
        ASSERT_TRUE(write(fd, data, size) == (ssize_t) size);
        ASSERT_INT_EQ(content_hash_fd(fd, 0, &a), 0);
        ASSERT_INT_EQ(content_hash_buffer(data, size, 0, &b), 0);
        ASSERT_TRUE(memcmp(a.root, b.root, SHA256_SIZE) == 0);
        ASSERT_UINT_EQ(a.geometry.piece_length, content_piece_length(size));
        ASSERT_TRUE(memcmp(a.piece_layer, b.piece_layer, (size_t) a.geometry.n_pieces * SHA256_SIZE) == 0);
        content_hash_done(&a);
        content_hash_done(&b);

        /* The file offset is not used (pread), and an empty file has no root. */
        ASSERT_INT_EQ(ftruncate(fd, 0), 0);
        ASSERT_INT_EQ(content_hash_fd(fd, 0, &a), 0);
        ASSERT_TRUE(!a.has_root);

        dir = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ASSERT_TRUE(dir >= 0);
        ASSERT_INT_EQ(content_hash_fd(dir, 0, &a), -EINVAL);
}

static void test_piece_length_rule(void) {
        const uint64_t K = 1024, M = K * K, G = M * K;

        ASSERT_UINT_EQ(content_piece_length(0), 16 * K);
        ASSERT_UINT_EQ(content_piece_length(1), 16 * K);
        ASSERT_UINT_EQ(content_piece_length(32 * M), 16 * K);          /* 2048 pieces */
        ASSERT_UINT_EQ(content_piece_length(32 * M + 1), 32 * K);      /* 1025 pieces */
        ASSERT_UINT_EQ(content_piece_length(100 * M), 64 * K);
        ASSERT_UINT_EQ(content_piece_length(G), 512 * K);
        ASSERT_UINT_EQ(content_piece_length(8 * G), 4 * M);
        ASSERT_UINT_EQ(content_piece_length(8 * G + 1), 4 * M);        /* capped: 2049 pieces */
        ASSERT_UINT_EQ(content_piece_length(100 * G), 4 * M);
        for (uint64_t s = 1; s < 64 * G; s = s * 3 + 1) {
                uint32_t p = content_piece_length(s);
                ASSERT_TRUE(is_pow2_u64(p) && p >= 16 * K && p <= 4 * M);
                ASSERT_TRUE(p == 4 * M || (s + p - 1) / p <= CONTENT_PIECES_TARGET);
                ASSERT_TRUE(p == 16 * K || (s + p / 2 - 1) / (p / 2) > CONTENT_PIECES_TARGET);
        }
}

static void test_geometry(void) {
        TorrentGeometry g = { .length = 42 };

        ASSERT_INT_EQ(torrent_geometry_init(&g, 100, 1000), -EDOM);
        ASSERT_INT_EQ(torrent_geometry_init(&g, 100, 8192), -EDOM);
        ASSERT_INT_EQ(torrent_geometry_init(&g, 100, 128 << 20), -EDOM);
        ASSERT_INT_EQ(torrent_geometry_init(&g, TORRENT_LENGTH_MAX + 1, 16384), -EFBIG);
        ASSERT_UINT_EQ(g.length, 42); /* untouched */

        ASSERT_INT_EQ(torrent_geometry_init(&g, TORRENT_LENGTH_MAX, TORRENT_PIECE_LENGTH_MIN), 0);
        ASSERT_UINT_EQ(g.height, 31);
        ASSERT_INT_EQ(torrent_geometry_init(&g, 5 * 65536 + 1, 65536), 0);
        ASSERT_UINT_EQ(g.n_blocks, 21);
        ASSERT_UINT_EQ(g.n_pieces, 6);
        ASSERT_UINT_EQ(g.n_leaves, 32);
        ASSERT_UINT_EQ(g.height, 5);
        ASSERT_UINT_EQ(g.piece_level, 2);
        ASSERT_UINT_EQ(torrent_piece_size(&g, 5), 1);
        ASSERT_UINT_EQ(torrent_piece_size(&g, 6), 0);
        ASSERT_UINT_EQ(torrent_piece_leaves(&g), 4);
        ASSERT_UINT_EQ(merkle_level_nodes(&g, 2), 6);
        ASSERT_UINT_EQ(merkle_level_nodes(&g, 5), 1);
        ASSERT_INT_EQ(torrent_geometry_init(&g, 3 * 16384, 65536), 0);
        ASSERT_UINT_EQ(torrent_piece_leaves(&g), 4);
        ASSERT_TRUE(!g.has_piece_layer);
}

static void test_piece_checks(void) {
        const size_t size = 5 * 32768 + 100;
        _cleanup_free_ uint8_t *data = test_data(size, 11);
        ContentHash c;
        TorrentGeometry g;

        ASSERT_INT_EQ(content_hash_buffer(data, size, 32768, &c), 0);
        g = c.geometry;
        ASSERT_INT_EQ(merkle_piece_verify(&g, 6, data, 1, c.piece_layer), -ERANGE);
        ASSERT_INT_EQ(merkle_piece_verify(&g, 5, data + 5 * 32768, 99, c.piece_layer + 5 * 32), -EBADMSG);
        ASSERT_INT_EQ(merkle_piece_verify(&g, 5, data + 5 * 32768, 100, c.piece_layer + 5 * 32), 0);
        /* The right data checked against another piece's hash. */
        ASSERT_INT_EQ(merkle_piece_verify(&g, 0, data, 32768, c.piece_layer + 32), -EBADMSG);

        ASSERT_INT_EQ(merkle_piece_layer_verify(&g, c.piece_layer, g.n_pieces - 1, c.root), -EILSEQ);
        c.piece_layer[40] ^= 1;
        ASSERT_INT_EQ(merkle_piece_layer_verify(&g, c.piece_layer, g.n_pieces, c.root), -EILSEQ);
        content_hash_done(&c);

        ASSERT_INT_EQ(torrent_geometry_init(&g, 100, 32768), 0);
        ASSERT_INT_EQ(merkle_piece_layer_verify(&g, c.root, 1, c.root), -EINVAL);
}

static void test_builder(void) {
        MerkleBuilder b;
        uint8_t h[SHA256_SIZE], leaf[SHA256_SIZE] = { 1 };

        merkle_builder_init(&b, 0);
        ASSERT_INT_EQ(merkle_builder_push(&b, leaf), 0);
        ASSERT_INT_EQ(merkle_builder_push(&b, leaf), 0);
        ASSERT_INT_EQ(merkle_builder_push(&b, leaf), 0);
        ASSERT_INT_EQ(merkle_builder_finish(&b, 2, h), -EINVAL);
        ASSERT_INT_EQ(merkle_builder_finish(&b, 3, h), -EINVAL);
        ASSERT_INT_EQ(merkle_builder_finish(&b, 4, h), 0);

        /* Nothing pushed: the padding of that width. */
        merkle_builder_init(&b, 3);
        ASSERT_INT_EQ(merkle_builder_finish(&b, 4, h), 0);
        ASSERT_TRUE(memcmp(h, merkle_pad_hash(5), SHA256_SIZE) == 0);
}

int main(void) {
        RUN_TEST(test_edges);
        RUN_TEST(test_known_roots);
        RUN_TEST(test_chunking);
        RUN_TEST(test_hasher_errors);
        RUN_TEST(test_file);
        RUN_TEST(test_piece_length_rule);
        RUN_TEST(test_geometry);
        RUN_TEST(test_piece_checks);
        RUN_TEST(test_builder);
        return TESTS_DONE();
}
