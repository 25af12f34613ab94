/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* ContentStore: one content on disk, complete or being downloaded, as the peer connections see it:
 * its manifest (a copy), which pieces are verified, reading blocks, and writing verified pieces.
 *
 * A complete content is a file opened read-only (content_store_open_file(), any path: a seeder's
 * input) or DIR/<id hex> (content_store_open_dir()). A download lives in DIR as two hidden files
 * named after the content id, never after anything a peer says:
 *
 *     DIR/.<id>.part    the data, at its final size from the start (fallocate: a full disk says so
 *                       before the first byte arrives), pieces written with pwrite() where they go
 *     DIR/.<id>.state   which pieces are on disk for sure: a bitfield written with
 *                       write_file_atomic(WRITE_FILE_SYNC) after an fdatasync() of the data
 *
 * content_store_put_piece() verifies a piece against the piece layer before writing it (nothing
 * unverified is ever written), and marks it present at once (it can be served from then on: the
 * page cache has it); content_store_flush() makes the present pieces durable (fdatasync, then the
 * state file) -- the caller batches flushes (a timer, a byte count) since each costs a disk sync.
 * When every piece is present, flush renames .part to DIR/<id> and removes the state: the complete
 * name never shows a half-written file. A crash loses at most the pieces written since the last
 * flush; on reopening, the state file's pieces are trusted without re-hashing, since they were
 * fsynced before the state named them (re-hashing a large file on every restart would cost as
 * much as the download on a fast network, and protect only against a disk that lies about fsync).
 * A state file for another content, another piece count, or a .part of the wrong size starts over.
 *
 * Watchers learn of each piece that becomes present (PeerConn sends `have` to its peer that way).
 * The store is reference-counted: a swarm and a server may share it. Everything runs on the
 * caller's thread, but for the halves made for worker threads (content_store_write_piece(), the
 * fdatasync between content_store_durable_begin() and _commit(): a Swarm's PieceVerifier); put_piece
 * and flush block the caller (bounded: one piece, one sync per flush). */

#include "list.h"
#include "manifest.h"
#include "merkle-proof.h"

typedef struct ContentStore ContentStore;

typedef struct ContentStoreWatch ContentStoreWatch;
struct ContentStoreWatch {
        void (*piece)(ContentStoreWatch *w, uint32_t index);
        LIST_FIELDS(ContentStoreWatch);
};

/* A complete file at path, read-only; its size must be the manifest's length (-EBADFD otherwise).
 * The bytes are not re-hashed: the caller hashed them to make the manifest. */
int content_store_open_file(const char *path, const Manifest *m, ContentStore **ret);
/* DIR/<id> when complete, else the partial download (resumed, or created). -ENOSPC when the disk
 * cannot hold the file. */
int content_store_open_dir(const char *dir, const Manifest *m, ContentStore **ret);

ContentStore *content_store_ref(ContentStore *s);
ContentStore *content_store_unref(ContentStore *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(ContentStore *, content_store_unref);

const Manifest *content_store_manifest(const ContentStore *s);
const TorrentGeometry *content_store_geometry(const ContentStore *s);
bool content_store_has_piece(const ContentStore *s, uint32_t index);
/* BEP 3 order (piece 0 in the high bit of byte 0), (n_pieces + 7) / 8 bytes. */
const uint8_t *content_store_bitfield(const ContentStore *s);
uint32_t content_store_n_have(const ContentStore *s);
/* Pieces named by the state file on disk (== n_have for a complete content). */
uint32_t content_store_n_durable(const ContentStore *s);
bool content_store_complete(const ContentStore *s);
/* The data file (read-only use; the store owns it). */
int content_store_fd(const ContentStore *s);
/* The final path (DIR/<id>, or the file given), whether or not it exists yet. */
const char *content_store_path(const ContentStore *s);

/* Reads [offset, offset + size) of present pieces. -ENODATA when a piece in the range is not
 * present, -ERANGE past the end, -EIO on a short read. */
int content_store_read(ContentStore *s, uint64_t offset, void *buf, size_t size);

/* Verifies data (the whole piece) and writes it: 0; -EBADMSG when it does not hash to the piece
 * layer's entry; -EALREADY when present; -ENOSPC, -EIO ... from the disk. */
int content_store_put_piece(ContentStore *s, uint32_t index, const void *data, size_t size);
/* content_store_put_piece() in two halves, so that verifying and writing can run on another
 * thread: content_store_write_piece() verifies and writes (any thread: it reads the manifest and
 * writes the data file, nothing else; -EROFS for a file opened with content_store_open_file()); content_store_piece_written()
 * then marks the piece present, on the store's thread (-EALREADY when it is). */
int content_store_write_piece(const ContentStore *s, uint32_t index, const void *data, size_t size);
int content_store_piece_written(ContentStore *s, uint32_t index);
/* content_store_flush() in halves, for syncing on another thread: _begin() copies the present
 * pieces (*ret_snapshot, to free), then fdatasync(content_store_fd()) runs anywhere, then _commit()
 * on the store's thread makes those pieces durable and writes the state file. The complete content
 * is still renamed into place by content_store_flush(). */
int content_store_durable_begin(ContentStore *s, uint8_t **ret_snapshot);
int content_store_durable_commit(ContentStore *s, const uint8_t *snapshot);
/* Bytes of present pieces not yet durable (or being made durable). */
uint64_t content_store_unflushed(const ContentStore *s);
/* Makes present pieces durable; renames into place when all are there. */
int content_store_flush(ContentStore *s);
/* Deletes the partial files (after a failed download, when asked). No-op for a complete content. */
int content_store_remove_partial(ContentStore *s);

/* The seeder's tree for BEP 52 hash requests (built at first use from the piece layer, or the root
 * for a file of one piece). -EINVAL for an empty file. */
int content_store_tree(ContentStore *s, const MerkleTree **ret);

void content_store_watch(ContentStore *s, ContentStoreWatch *w);
void content_store_unwatch(ContentStore *s, ContentStoreWatch *w);

/* A copy of m (its info and piece layer). */
int manifest_dup(const Manifest *m, Manifest **ret);

static inline bool bitfield_get(const uint8_t *b, uint32_t i) {
        return b[i / 8] & (0x80 >> (i % 8));
}
static inline void bitfield_set(uint8_t *b, uint32_t i) {
        b[i / 8] |= (uint8_t) (0x80 >> (i % 8));
}
static inline void bitfield_clear(uint8_t *b, uint32_t i) {
        b[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
}
static inline size_t bitfield_size(uint32_t n_pieces) {
        return ((size_t) n_pieces + 7) / 8;
}
