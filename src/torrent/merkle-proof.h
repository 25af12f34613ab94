/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* BEP 52 hash requests and their answers: a peer asks for `length` consecutive nodes of one level
 * (the `base` layer, 0 = blocks) of a file's tree, starting at `index`, plus `proof_layers` layers of
 * uncle hashes that tie them to a node it already trusts (usually the root):
 *
 *   answer = the length base hashes, then for each level from the top of the base range's subtree
 *            up to base + proof_layers, the sibling of the range's ancestor (bottom up);
 *   count  = length + max(0, proof_layers - (log2(length) - 1))
 *
 * (the first log2(length) - 1 proof layers can be computed from the base hashes themselves). The
 * answer's hashes establish the ancestor at level base + max(log2(length), proof_layers + 1).
 *
 * A request is valid when length is a power of two (BEP 52 says at least 2; libtorrent asks for 1
 * for the last chunk of a piece layer with 512k + 1 pieces, so 1 is accepted) of at most
 * TORRENT_HASHES_MAX (libtorrent's cap), index is a multiple of length, the range lies within the
 * level (padding included), base is below the root and the proof stops below the root.
 *
 * MerkleTree holds a file's tree from one level up (the piece layer, which a seeder keeps, or all the
 * block hashes) and answers requests at or above that level. For a request below it, the caller
 * hashes the blocks of the pieces merkle_request_pieces() names (a seeder reads them from disk)
 * and passes their block hashes along. */

#include "merkle.h"

#define TORRENT_HASHES_MAX 8192U

typedef struct TorrentHashRequest {
        uint8_t root[SHA256_SIZE];      /* the file's pieces root */
        uint32_t base, index, length, proof_layers;
} TorrentHashRequest;

/* The number of hashes in the answer to a request with these fields; -EDOM when length is not a
 * power of two in [1, TORRENT_HASHES_MAX] or proof_layers is beyond any tree (>= 64). */
int merkle_hashes_count(uint32_t length, uint32_t proof_layers, size_t *ret);
/* 0 when req is a valid request for the file of geometry g, -EDOM otherwise (answer with a reject). */
int merkle_request_check(const TorrentGeometry *g, const TorrentHashRequest *req);
/* The pieces whose blocks a seeder's tree (built from the piece layer, or from the root alone for a file
 * of one piece) needs to answer the valid request req: *ret_n is 0 when the tree alone will do. */
void merkle_request_pieces(const TorrentGeometry *g, const TorrentHashRequest *req, uint32_t *ret_first,
                           uint32_t *ret_n);

typedef struct MerkleTree MerkleTree;

/* The tree from level `level` up, given that level's merkle_level_nodes(g, level) real nodes. level 0
 * gives the whole tree, g->piece_level the seeder's tree. -EINVAL for an empty file, a level above
 * the root or a wrong count. */
int merkle_tree_new(const TorrentGeometry *g, unsigned level, const uint8_t *nodes, size_t n, MerkleTree **ret);
MerkleTree *merkle_tree_free(MerkleTree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(MerkleTree *, merkle_tree_free);
const uint8_t *merkle_tree_root(const MerkleTree *t);
unsigned merkle_tree_level(const MerkleTree *t);
/* Node index of level `level` (padding past the real nodes). -ENODATA below the tree's level,
 * -ERANGE past the level's end. */
int merkle_tree_node(const MerkleTree *t, unsigned level, uint64_t index, uint8_t ret[SHA256_SIZE]);

/* Writes the answer to req into ret (room for max hashes) and its count into *ret_n. blocks holds the
 * hashes of blocks [first_block, first_block + n_blocks) and is needed only for a request below the
 * tree's level (else NULL, 0, 0). -EDOM for an invalid request, -ENOENT when req->root is not this
 * tree's root, -ENODATA when blocks do not cover what the answer needs, -ENOBUFS when max is short.
 * ret is untouched on failure. */
int merkle_tree_get_hashes(const MerkleTree *t, const TorrentHashRequest *req, const uint8_t *blocks,
                           uint64_t first_block, uint64_t n_blocks, uint8_t *ret, size_t max, size_t *ret_n);

/* Checks the shape of an answer (n hashes for req, which must be valid for g) and computes the node
 * it establishes: level *ret_level, index *ret_index. The caller compares it with a node it trusts.
 * -EDOM for an invalid request, -EBADMSG for a wrong count. */
int merkle_hashes_node(const TorrentGeometry *g, const TorrentHashRequest *req, const uint8_t *hashes, size_t n,
                       unsigned *ret_level, uint64_t *ret_index, uint8_t ret_node[SHA256_SIZE]);
/* Same, for an answer whose proof reaches the root: 0 when it hashes to req->root, -EBADMSG when not
 * (or a wrong count), -EDOM when the request is invalid or its proof stops below the root. */
int merkle_hashes_verify(const TorrentGeometry *g, const TorrentHashRequest *req, const uint8_t *hashes, size_t n);
