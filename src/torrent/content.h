/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* From a file's bytes to its BitTorrent v2 hashes: the pieces root and the piece layer.
 *
 * The piece length is a function of the size alone (content_piece_length()), so that the whole
 * manifest, and with it the content id, is a function of the bytes alone: whoever hashes the same
 * file gets the same id. The rule, frozen because ids depend on it:
 *
 *     the smallest power of two >= 16 KiB that cuts the file in at most 2048 pieces, capped at 4 MiB
 *
 * so files up to 32 MiB have 16 KiB pieces, larger ones 1025-2048 pieces up to 8 GiB, and beyond
 * that 4 MiB pieces (a 100 GiB file: 25600 pieces, an 800 KiB piece layer). More pieces would only
 * grow the piece layer; larger pieces would make a corrupt piece costlier to fetch again.
 *
 * ContentHasher takes the bytes in chunks of any size, in order, and keeps one block and one piece's
 * worth of tree state (O(log) memory) plus the piece layer (32 bytes per piece).
 * content_hash_fd() streams a file through it in 4 MiB preads (without moving the file offset) done by
 * a short-lived reader thread, two buffers ahead of the hashing: about the speed of OpenSSL's SHA-256
 * over memory, ~1.3 GB/s per core with SHA extensions. Call it off the event loop. */

#include "merkle.h"

#define CONTENT_PIECES_TARGET 2048U
#define CONTENT_PIECE_LENGTH_MAX (UINT32_C(4) << 20)

uint32_t content_piece_length(uint64_t length);

typedef struct ContentHash {
        TorrentGeometry geometry;
        bool has_root;                  /* false only for an empty file, which has no tree */
        uint8_t root[SHA256_SIZE];      /* the pieces root */
        uint8_t *piece_layer;           /* geometry.n_pieces hashes when geometry.has_piece_layer, else NULL */
} ContentHash;

void content_hash_done(ContentHash *c);

typedef struct ContentHasher {
        TorrentGeometry g;
        uint64_t fed;                   /* bytes taken so far */
        uint8_t block[TORRENT_BLOCK_SIZE];
        size_t block_fill;
        MerkleBuilder piece;            /* leaves of the current piece */
        uint32_t pieces_done;
        uint8_t *piece_layer;
        uint8_t single_root[SHA256_SIZE];
        int error;                      /* sticky */
} ContentHasher;

/* piece_length 0: content_piece_length(length). Errors as torrent_geometry_init(), or -ENOMEM. */
int content_hasher_init(ContentHasher *h, uint64_t length, uint32_t piece_length);
/* -EFBIG when more than length bytes are fed. Errors are sticky. */
int content_hasher_feed(ContentHasher *h, const void *data, size_t size);
/* Moves the result into *ret (which the caller frees with content_hash_done()). -ENODATA when fewer
 * than length bytes were fed. The hasher is released either way. */
int content_hasher_finish(ContentHasher *h, ContentHash *ret);
void content_hasher_done(ContentHasher *h);

int content_hash_buffer(const void *data, size_t size, uint32_t piece_length, ContentHash *ret);
/* Hashes the regular file fd from offset 0 to its size at the start. -ESTALE when it shrinks or grows
 * meanwhile, -EINVAL when it is not a regular file, other errors of pread() and the hasher. */
int content_hash_fd(int fd, uint32_t piece_length, ContentHash *ret);
