/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Merkle tree of one file, as BitTorrent v2 (BEP 52) defines it.
 *
 * The leaves are the SHA-256 hashes of the file's 16 KiB blocks (the last block is hashed as it is,
 * short, never padded with zero bytes). The leaf layer is padded with leaves of 32 zero bytes up to a
 * power of two, and each inner node is SHA-256(left || right); a subtree made only of padding
 * therefore has a fixed hash per level, merkle_pad_hash(). The root is the file's "pieces root".
 *
 * Levels are counted from the leaves: level 0 is the block layer, level L has leaves >> L nodes, the
 * piece layer is the level whose nodes cover one piece (log2 of blocks per piece), and the root is at
 * level `height`. A file of at most one piece has no piece layer in its torrent: its leaves are padded
 * only up to the next power of two, so its root may sit below the piece level. A larger file has
 * at least two pieces and its piece layer is what the .torrent's "piece layers" carries; the last
 * piece's entry covers a full piece's worth of leaves, zero leaves included, and the entries past the
 * last piece (up to a power of two) are the root of blocks_per_piece zero leaves.
 *
 * MerkleBuilder computes a root from leaves (or from the nodes of any level) pushed one at a time in
 * O(height) memory; it is what the file hasher and the piece verification use. */

#include "macro.h"
#include "sha256.h"

#define TORRENT_BLOCK_SIZE 16384U
#define TORRENT_BLOCK_SHIFT 14
/* Piece lengths we accept: powers of two from one block to 64 MiB. */
#define TORRENT_PIECE_LENGTH_MIN TORRENT_BLOCK_SIZE
#define TORRENT_PIECE_LENGTH_MAX (UINT32_C(64) << 20)
/* Files we accept: 2^31 blocks (32 TiB), so that every node index of every level fits the u32
 * fields of the wire's hash messages with room to spare. */
#define TORRENT_LENGTH_MAX (UINT64_C(1) << 45)
#define MERKLE_LEVELS_MAX 32   /* levels above the leaves, for the largest file: 31 */

typedef struct TorrentGeometry {
        uint64_t length;                /* bytes */
        uint32_t piece_length;
        uint32_t blocks_per_piece;
        unsigned piece_level;           /* log2(blocks_per_piece) */
        uint64_t n_blocks;              /* ceil(length / 16 KiB): the real leaves */
        uint32_t n_pieces;              /* ceil(length / piece_length) */
        uint64_t n_leaves;              /* n_blocks rounded up to a power of two (0 for an empty file) */
        unsigned height;                /* log2(n_leaves): the level of the root */
        bool has_piece_layer;           /* length > piece_length */
} TorrentGeometry;

/* Fills g for a file of length bytes cut in pieces of piece_length. -EDOM when piece_length is not a
 * power of two in [TORRENT_PIECE_LENGTH_MIN, TORRENT_PIECE_LENGTH_MAX], -EFBIG when length exceeds
 * TORRENT_LENGTH_MAX. g is untouched on failure. */
int torrent_geometry_init(TorrentGeometry *g, uint64_t length, uint32_t piece_length);
/* Bytes in piece index (the last one may be short); 0 past the end. */
uint32_t torrent_piece_size(const TorrentGeometry *g, uint32_t index);
/* Leaves under one piece's node: blocks_per_piece, or for a file of one piece (or none) its
 * n_leaves, since such a file's tree is padded only to a power of two. */
uint64_t torrent_piece_leaves(const TorrentGeometry *g);
/* Real nodes at a level: those covering at least one block. Nodes at index >= this are padding. */
uint64_t merkle_level_nodes(const TorrentGeometry *g, unsigned level);

static inline bool is_pow2_u64(uint64_t x) {
        return x != 0 && (x & (x - 1)) == 0;
}
/* The smallest power of two >= x (x >= 1, x <= 2^63). */
uint64_t pow2_ceil_u64(uint64_t x);
/* log2 of a power of two. */
unsigned log2_u64(uint64_t x);

/* The hash of a subtree of 2^level zero leaves (level 0: 32 zero bytes). Computed once per process;
 * NULL only when OpenSSL fails. level < MERKLE_LEVELS_MAX + 1. */
const uint8_t *merkle_pad_hash(unsigned level);

/* The root of the block hashes of data[0..size), padded with zero leaves to n_leaves leaves (a power
 * of two holding all the blocks). This is a piece's node with n_leaves = torrent_piece_leaves(). */
int merkle_data_root(const void *data, size_t size, uint64_t n_leaves, uint8_t ret[SHA256_SIZE]);

/* The root over n nodes of level `level`, padded with merkle_pad_hash(level) to n_nodes (a power of
 * two >= n). With the piece layer and n_nodes = n_leaves >> piece_level this is the pieces root. */
int merkle_layer_root(const uint8_t *nodes, size_t n, unsigned level, uint64_t n_nodes, uint8_t ret[SHA256_SIZE]);

/* Whether a piece's data hashes to its expected node: the piece layer entry, or the pieces root for a
 * file of one piece. size must be the piece's size. Returns 0, -EBADMSG on a mismatch (or a wrong
 * size), -ERANGE for an index past the end. */
int merkle_piece_verify(const TorrentGeometry *g, uint32_t index, const void *data, size_t size,
                        const uint8_t expected[SHA256_SIZE]);

/* Whether the piece layer (g->n_pieces hashes) hashes up to root. 0, or -EILSEQ when it does not,
 * -EINVAL when g has no piece layer. */
int merkle_piece_layer_verify(const TorrentGeometry *g, const uint8_t *layer, size_t n_hashes,
                              const uint8_t root[SHA256_SIZE]);

/* Incremental root: push nodes of one level left to right, then finish to the root of n_nodes
 * (a power of two >= the number pushed) nodes of that level, the rest being padding. */
typedef struct MerkleBuilder {
        unsigned level;                 /* of the pushed nodes */
        uint64_t pushed;
        uint8_t stack[MERKLE_LEVELS_MAX + 1][SHA256_SIZE];      /* stack[i]: a pending node 2^i wide */
} MerkleBuilder;

void merkle_builder_init(MerkleBuilder *b, unsigned level);
int merkle_builder_push(MerkleBuilder *b, const uint8_t node[SHA256_SIZE]);
/* n_nodes >= pushed, a power of two; -EINVAL otherwise. With nothing pushed the result is the padding
 * of that width (an empty file has no root at all: callers do not ask). */
int merkle_builder_finish(MerkleBuilder *b, uint64_t n_nodes, uint8_t ret[SHA256_SIZE]);
