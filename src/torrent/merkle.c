/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>

#include "merkle.h"

uint64_t pow2_ceil_u64(uint64_t x) {
        assert(x >= 1 && x <= UINT64_C(1) << 63);
        return x == 1 ? 1 : UINT64_C(1) << (64 - __builtin_clzll(x - 1));
}

unsigned log2_u64(uint64_t x) {
        assert(is_pow2_u64(x));
        return (unsigned) __builtin_ctzll(x);
}

int torrent_geometry_init(TorrentGeometry *g, uint64_t length, uint32_t piece_length) {
        TorrentGeometry t = {
                .length = length,
                .piece_length = piece_length,
        };

        assert(g);
        if (!is_pow2_u64(piece_length) || piece_length < TORRENT_PIECE_LENGTH_MIN ||
            piece_length > TORRENT_PIECE_LENGTH_MAX)
                return -EDOM;
        if (length > TORRENT_LENGTH_MAX)
                return -EFBIG;

        t.blocks_per_piece = piece_length / TORRENT_BLOCK_SIZE;
        t.piece_level = log2_u64(t.blocks_per_piece);
        t.n_blocks = (length + TORRENT_BLOCK_SIZE - 1) / TORRENT_BLOCK_SIZE;
        t.n_pieces = (uint32_t) ((length + piece_length - 1) / piece_length);
        t.n_leaves = t.n_blocks > 0 ? pow2_ceil_u64(t.n_blocks) : 0;
        t.height = t.n_leaves > 0 ? log2_u64(t.n_leaves) : 0;
        t.has_piece_layer = length > piece_length;
        *g = t;
        return 0;
}

uint32_t torrent_piece_size(const TorrentGeometry *g, uint32_t index) {
        uint64_t start = (uint64_t) index * g->piece_length;

        if (index >= g->n_pieces)
                return 0;
        return (uint32_t) MIN((uint64_t) g->piece_length, g->length - start);
}

uint64_t torrent_piece_leaves(const TorrentGeometry *g) {
        return g->has_piece_layer ? g->blocks_per_piece : g->n_leaves;
}

uint64_t merkle_level_nodes(const TorrentGeometry *g, unsigned level) {
        assert(level < 64);
        return (g->n_blocks + (UINT64_C(1) << level) - 1) >> level;
}

static pthread_once_t pad_once = PTHREAD_ONCE_INIT;
static uint8_t pad_table[MERKLE_LEVELS_MAX + 1][SHA256_SIZE];
static bool pad_ok;

static void pad_init(void) {
        memset(pad_table[0], 0, SHA256_SIZE);
        for (unsigned i = 1; i <= MERKLE_LEVELS_MAX; i++)
                if (sha256_pair(pad_table[i - 1], pad_table[i - 1], pad_table[i]) < 0)
                        return;
        pad_ok = true;
}

const uint8_t *merkle_pad_hash(unsigned level) {
        assert(level <= MERKLE_LEVELS_MAX);
        if (pthread_once(&pad_once, pad_init) != 0 || !pad_ok)
                return NULL;
        return pad_table[level];
}

void merkle_builder_init(MerkleBuilder *b, unsigned level) {
        assert(b);
        assert(level <= MERKLE_LEVELS_MAX);
        b->level = level;
        b->pushed = 0;
}

int merkle_builder_push(MerkleBuilder *b, const uint8_t node[SHA256_SIZE]) {
        uint8_t carry[SHA256_SIZE];
        unsigned i = 0;
        int r;

        /* Like incrementing a binary counter: each set low bit is a pending left sibling. */
        if (b->level + (64 - (unsigned) __builtin_clzll(b->pushed | 1)) > MERKLE_LEVELS_MAX)
                return -E2BIG;
        memcpy(carry, node, SHA256_SIZE);
        for (; b->pushed & (UINT64_C(1) << i); i++) {
                r = sha256_pair(b->stack[i], carry, carry);
                if (r < 0)
                        return r;
        }
        memcpy(b->stack[i], carry, SHA256_SIZE);
        b->pushed++;
        return 0;
}

int merkle_builder_finish(MerkleBuilder *b, uint64_t n_nodes, uint8_t ret[SHA256_SIZE]) {
        uint8_t cur[SHA256_SIZE];
        bool have = false;
        unsigned top;
        int r;

        if (!is_pow2_u64(n_nodes) || n_nodes < b->pushed)
                return -EINVAL;
        top = log2_u64(n_nodes);
        if (b->level + top > MERKLE_LEVELS_MAX)
                return -E2BIG;
        if (b->pushed == n_nodes) {
                memcpy(ret, b->stack[top], SHA256_SIZE);
                return 0;
        }
        /* Climb from the lowest pending node: everything right of the pushed nodes is padding. */
        for (unsigned i = 0; i < top; i++) {
                const uint8_t *pad = merkle_pad_hash(b->level + i);
                bool bit = b->pushed & (UINT64_C(1) << i);

                if (!pad)
                        return -EIO;
                if (bit)
                        r = sha256_pair(b->stack[i], have ? cur : pad, cur);
                else if (have)
                        r = sha256_pair(cur, pad, cur);
                else
                        continue;
                if (r < 0)
                        return r;
                have = true;
        }
        if (!have) {
                const uint8_t *pad = merkle_pad_hash(b->level + top);
                if (!pad)
                        return -EIO;
                memcpy(cur, pad, SHA256_SIZE);
        }
        memcpy(ret, cur, SHA256_SIZE);
        return 0;
}

int merkle_data_root(const void *data, size_t size, uint64_t n_leaves, uint8_t ret[SHA256_SIZE]) {
        const uint8_t *p = data;
        MerkleBuilder b;
        int r;

        assert(data || size == 0);
        if (!is_pow2_u64(n_leaves) || (size + TORRENT_BLOCK_SIZE - 1) / TORRENT_BLOCK_SIZE > n_leaves)
                return -EINVAL;
        merkle_builder_init(&b, 0);
        for (size_t off = 0; off < size; off += TORRENT_BLOCK_SIZE) {
                uint8_t h[SHA256_SIZE];

                r = sha256(p + off, MIN((size_t) TORRENT_BLOCK_SIZE, size - off), h);
                if (r < 0)
                        return r;
                r = merkle_builder_push(&b, h);
                if (r < 0)
                        return r;
        }
        return merkle_builder_finish(&b, n_leaves, ret);
}

int merkle_layer_root(const uint8_t *nodes, size_t n, unsigned level, uint64_t n_nodes, uint8_t ret[SHA256_SIZE]) {
        MerkleBuilder b;
        int r;

        assert(nodes || n == 0);
        if (!is_pow2_u64(n_nodes) || n > n_nodes)
                return -EINVAL;
        merkle_builder_init(&b, level);
        for (size_t i = 0; i < n; i++) {
                r = merkle_builder_push(&b, nodes + i * SHA256_SIZE);
                if (r < 0)
                        return r;
        }
        return merkle_builder_finish(&b, n_nodes, ret);
}

int merkle_piece_verify(const TorrentGeometry *g, uint32_t index, const void *data, size_t size,
                        const uint8_t expected[SHA256_SIZE]) {
        uint8_t h[SHA256_SIZE];
        int r;

        assert(g && expected);
        if (index >= g->n_pieces)
                return -ERANGE;
        if (size != torrent_piece_size(g, index))
                return -EBADMSG;
        r = merkle_data_root(data, size, torrent_piece_leaves(g), h);
        if (r < 0)
                return r;
        return memcmp(h, expected, SHA256_SIZE) == 0 ? 0 : -EBADMSG;
}

int merkle_piece_layer_verify(const TorrentGeometry *g, const uint8_t *layer, size_t n_hashes,
                              const uint8_t root[SHA256_SIZE]) {
        uint8_t h[SHA256_SIZE];
        int r;

        assert(g && root);
        if (!g->has_piece_layer)
                return -EINVAL;
        if (n_hashes != g->n_pieces)
                return -EILSEQ;
        r = merkle_layer_root(layer, n_hashes, g->piece_level, g->n_leaves >> g->piece_level, h);
        if (r < 0)
                return r;
        return memcmp(h, root, SHA256_SIZE) == 0 ? 0 : -EILSEQ;
}
