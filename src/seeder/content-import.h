/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Taking a file into the seeder's store: a private copy, hashed, named by its content id.
 *
 *     content_import(store_dir_fd, "/var/lib/mc-seeder/contents", src_fd, &result, &reason);
 *
 * The copy is made first and the copy is hashed, so that the id always describes the stored bytes,
 * whatever the user does to the original meanwhile. The copy is a reflink (FICLONE) where the
 * filesystem can share extents, else copy_file_range(2) (which lets the kernel copy in place), else
 * read and write. Never a hard link: the user could then change the content under its id.
 *
 * Crash safety: the copy is an unnamed file (O_TMPFILE; a hidden ".import.*" name where the
 * filesystem lacks O_TMPFILE), fsynced, made read-only (0444), and only then linked as DIR/<id>;
 * the manifest DIR/<id>.torrent follows with write_file_atomic(). A content is complete when both
 * names exist: the daemon drops, when it starts, hidden leftovers and a content without its manifest.
 *
 * Refused, each with its own errno and a sentence in *ret_reason:
 *   -EISDIR   a directory
 *   -EBADFD   not a regular file (a FIFO, a socket, a device)
 *   -EMEDIUMTYPE  a file of /proc or /sys, whose size says nothing about its bytes
 *   -ESTALE   the file changed size (or changed) while it was copied
 *   -EFBIG    larger than TORRENT_LENGTH_MAX
 * and the errors of reading, writing and syncing (-EIO, -ENOSPC, ...).
 *
 * Blocking and slow (it copies and hashes the whole file): call it off the event loop. It touches
 * nothing but its arguments, so several may run at once on different threads. */

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "manifest.h"

typedef struct ContentImport {
        char id[TORRENT_ID_HEX_SIZE];
        uint64_t size;
        bool existed;           /* the store had this content already (same id, so same bytes) */
        bool reflinked;         /* the copy shares the original's extents */
        Manifest *manifest;     /* owned by the caller after success */
} ContentImport;

void content_import_done(ContentImport *c);

/* dir_fd and dir_path name the same directory (the path for write_file_atomic()). src_fd is read
 * with pread only; its offset does not move. On failure *ret is untouched and *ret_reason (may be
 * NULL) says why for the errors listed above (NULL for others: use strerror). cancel (may be NULL)
 * is looked at between steps of the copy and before hashing: -ECANCELED once it is true. */
int content_import(int dir_fd, const char *dir_path, int src_fd, ContentImport *ret, const char **ret_reason,
                   const atomic_bool *cancel);

/* Opens path for content_import() without blocking on a FIFO or a device (O_NONBLOCK, cleared once
 * fstat() showed a regular file). Returns the fd or a negative errno, with the refusals of
 * content_import() (a symbolic link is followed, as the user named it). */
int content_open_source(const char *path, const char **ret_reason);

/* "<64 hex>" and "<64 hex>.torrent": the names of the store. */
bool content_id_name_valid(const char *s);
