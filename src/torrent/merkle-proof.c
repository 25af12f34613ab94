/* SPDX-License-Identifier: LGPL-2.1-or-later */


#include "merkle-proof.h"

struct MerkleTree {
        TorrentGeometry g;
        unsigned level;                 /* the lowest level held */
        uint8_t *levels[MERKLE_LEVELS_MAX + 1];         /* levels[l - level]: the real nodes of level l */
        uint64_t counts[MERKLE_LEVELS_MAX + 1];
};

int merkle_hashes_count(uint32_t length, uint32_t proof_layers, size_t *ret) {
        unsigned k;

        assert(ret);
        if (!is_pow2_u64(length) || length > TORRENT_HASHES_MAX || proof_layers >= 64)
                return -EDOM;
        k = log2_u64(length);
        /* Uncles sit at levels base + k .. base + proof_layers. */
        *ret = length + (proof_layers >= k ? proof_layers - k + 1 : 0);
        return 0;
}

int merkle_request_check(const TorrentGeometry *g, const TorrentHashRequest *req) {
        size_t count;

        assert(g && req);
        if (merkle_hashes_count(req->length, req->proof_layers, &count) < 0)
                return -EDOM;
        if (g->n_blocks == 0 || req->base >= g->height)
                return -EDOM;
        if (req->index % req->length != 0)
                return -EDOM;
        if ((uint64_t) req->index + req->length > g->n_leaves >> req->base)
                return -EDOM;
        if (req->proof_layers >= g->height - req->base)
                return -EDOM;
        return 0;
}

void merkle_request_pieces(const TorrentGeometry *g, const TorrentHashRequest *req, uint32_t *ret_first,
                           uint32_t *ret_n) {
        uint64_t start, end;
        unsigned pl = g->piece_level;

        assert(g && req && ret_first && ret_n);
        if (!g->has_piece_layer) {
                /* One piece (or none): the seeder's tree is the root alone. */
                *ret_first = 0;
                *ret_n = g->n_pieces > 0 && req->base < g->height ? 1 : 0;
                return;
        }
        if (req->base >= pl) {
                *ret_first = 0;
                *ret_n = 0;
                return;
        }
        /* The leaves under the base range, widened to whole pieces: the uncles below the piece level
         * lie within the piece that holds the range (or there are none, if the range spans pieces). */
        start = ((uint64_t) req->index << req->base) >> pl;
        end = ((((uint64_t) req->index + req->length) << req->base) + g->blocks_per_piece - 1) >> pl;
        end = MIN(end, (uint64_t) g->n_pieces);
        *ret_first = (uint32_t) start;
        *ret_n = end > start ? (uint32_t) (end - start) : 0;
}

MerkleTree *merkle_tree_free(MerkleTree *t) {
        if (!t)
                return NULL;
        for (unsigned i = 0; i < ELEMENTSOF(t->levels); i++)
                free(t->levels[i]);
        free(t);
        return NULL;
}

int merkle_tree_new(const TorrentGeometry *g, unsigned level, const uint8_t *nodes, size_t n, MerkleTree **ret) {
        _cleanup_(merkle_tree_freep) MerkleTree *t = NULL;
        int r;

        assert(g && ret);
        assert(nodes || n == 0);
        if (g->n_blocks == 0 || level > g->height || n != merkle_level_nodes(g, level))
                return -EINVAL;

        t = calloc(1, sizeof(MerkleTree));
        if (!t)
                return -ENOMEM;
        t->g = *g;
        t->level = level;
        t->counts[0] = n;
        t->levels[0] = malloc(n * SHA256_SIZE);
        if (!t->levels[0])
                return -ENOMEM;
        memcpy(t->levels[0], nodes, n * SHA256_SIZE);

        for (unsigned l = level; l < g->height; l++) {
                unsigned i = l - level;
                uint64_t parents = (t->counts[i] + 1) / 2;
                const uint8_t *pad = merkle_pad_hash(l);

                if (!pad)
                        return -EIO;
                t->levels[i + 1] = malloc(parents * SHA256_SIZE);
                if (!t->levels[i + 1])
                        return -ENOMEM;
                t->counts[i + 1] = parents;
                for (uint64_t p = 0; p < parents; p++) {
                        const uint8_t *left = t->levels[i] + 2 * p * SHA256_SIZE;
                        const uint8_t *right = 2 * p + 1 < t->counts[i] ? left + SHA256_SIZE : pad;

                        r = sha256_pair(left, right, t->levels[i + 1] + p * SHA256_SIZE);
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(t);
        return 0;
}

const uint8_t *merkle_tree_root(const MerkleTree *t) {
        return t->levels[t->g.height - t->level];
}

unsigned merkle_tree_level(const MerkleTree *t) {
        return t->level;
}

int merkle_tree_node(const MerkleTree *t, unsigned level, uint64_t index, uint8_t ret[SHA256_SIZE]) {
        const uint8_t *pad;

        assert(t && ret);
        if (level < t->level)
                return -ENODATA;
        if (level > t->g.height || index >= t->g.n_leaves >> level)
                return -ERANGE;
        if (index < t->counts[level - t->level]) {
                memcpy(ret, t->levels[level - t->level] + index * SHA256_SIZE, SHA256_SIZE);
                return 0;
        }
        pad = merkle_pad_hash(level);
        if (!pad)
                return -EIO;
        memcpy(ret, pad, SHA256_SIZE);
        return 0;
}

/* A node below the tree's level, from the caller's block hashes. */
static int node_from_blocks(const MerkleTree *t, unsigned level, uint64_t index, const uint8_t *blocks,
                            uint64_t first_block, uint64_t n_blocks, uint8_t ret[SHA256_SIZE]) {
        uint64_t start = index << level, end = MIN((index + 1) << level, t->g.n_blocks);
        MerkleBuilder b;
        int r;

        if (start >= t->g.n_blocks) {
                const uint8_t *pad = merkle_pad_hash(level);
                if (!pad)
                        return -EIO;
                memcpy(ret, pad, SHA256_SIZE);
                return 0;
        }
        if (!blocks || start < first_block || end > first_block + n_blocks)
                return -ENODATA;
        merkle_builder_init(&b, 0);
        for (uint64_t i = start; i < end; i++) {
                r = merkle_builder_push(&b, blocks + (i - first_block) * SHA256_SIZE);
                if (r < 0)
                        return r;
        }
        return merkle_builder_finish(&b, UINT64_C(1) << level, ret);
}

static int get_node(const MerkleTree *t, unsigned level, uint64_t index, const uint8_t *blocks,
                    uint64_t first_block, uint64_t n_blocks, uint8_t ret[SHA256_SIZE]) {
        if (level >= t->level)
                return merkle_tree_node(t, level, index, ret);
        return node_from_blocks(t, level, index, blocks, first_block, n_blocks, ret);
}

int merkle_tree_get_hashes(const MerkleTree *t, const TorrentHashRequest *req, const uint8_t *blocks,
                           uint64_t first_block, uint64_t n_blocks, uint8_t *ret, size_t max, size_t *ret_n) {
        _cleanup_free_ uint8_t *out = NULL;
        size_t count, o = 0;
        unsigned k;
        int r;

        assert(t && req && ret && ret_n);
        if (merkle_request_check(&t->g, req) < 0)
                return -EDOM;
        if (memcmp(req->root, merkle_tree_root(t), SHA256_SIZE) != 0)
                return -ENOENT;
        (void) merkle_hashes_count(req->length, req->proof_layers, &count);
        if (count > max)
                return -ENOBUFS;

        out = malloc(count * SHA256_SIZE);
        if (!out)
                return -ENOMEM;
        for (uint32_t i = 0; i < req->length; i++, o++) {
                r = get_node(t, req->base, (uint64_t) req->index + i, blocks, first_block, n_blocks, out + o * SHA256_SIZE);
                if (r < 0)
                        return r;
        }
        k = log2_u64(req->length);
        for (unsigned j = k; j <= req->proof_layers; j++, o++) {
                uint64_t ancestor = (uint64_t) req->index >> j;

                r = get_node(t, req->base + j, ancestor ^ 1, blocks, first_block, n_blocks, out + o * SHA256_SIZE);
                if (r < 0)
                        return r;
        }
        assert(o == count);
        memcpy(ret, out, count * SHA256_SIZE);
        *ret_n = count;
        return 0;
}

int merkle_hashes_node(const TorrentGeometry *g, const TorrentHashRequest *req, const uint8_t *hashes, size_t n,
                       unsigned *ret_level, uint64_t *ret_index, uint8_t ret_node[SHA256_SIZE]) {
        _cleanup_free_ uint8_t *work = NULL;
        uint8_t cur[SHA256_SIZE];
        size_t count, width;
        uint64_t index;
        unsigned k, level;
        int r;

        assert(g && req && ret_level && ret_index && ret_node);
        assert(hashes || n == 0);
        if (merkle_request_check(g, req) < 0)
                return -EDOM;
        (void) merkle_hashes_count(req->length, req->proof_layers, &count);
        if (n != count)
                return -EBADMSG;

        /* The base range's own subtree, reduced in place in a copy. */
        width = req->length;
        work = malloc(width * SHA256_SIZE);
        if (!work)
                return -ENOMEM;
        memcpy(work, hashes, width * SHA256_SIZE);
        for (; width > 1; width /= 2)
                for (size_t i = 0; i < width / 2; i++) {
                        r = sha256_pair(work + 2 * i * SHA256_SIZE, work + (2 * i + 1) * SHA256_SIZE, work + i * SHA256_SIZE);
                        if (r < 0)
                                return r;
                }
        memcpy(cur, work, SHA256_SIZE);

        k = log2_u64(req->length);
        level = req->base + k;
        index = (uint64_t) req->index >> k;
        for (unsigned j = k; j <= req->proof_layers; j++) {
                const uint8_t *uncle = hashes + (req->length + (j - k)) * SHA256_SIZE;

                r = (index & 1) ? sha256_pair(uncle, cur, cur) : sha256_pair(cur, uncle, cur);
                if (r < 0)
                        return r;
                index >>= 1;
                level++;
        }
        *ret_level = level;
        *ret_index = index;
        memcpy(ret_node, cur, SHA256_SIZE);
        return 0;
}

int merkle_hashes_verify(const TorrentGeometry *g, const TorrentHashRequest *req, const uint8_t *hashes, size_t n) {
        uint8_t node[SHA256_SIZE];
        uint64_t index;
        unsigned level;
        int r;

        r = merkle_hashes_node(g, req, hashes, n, &level, &index, node);
        if (r < 0)
                return r;
        if (level != g->height)
                return -EDOM;
        assert(index == 0);
        return memcmp(node, req->root, SHA256_SIZE) == 0 ? 0 : -EBADMSG;
}
