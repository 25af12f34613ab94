/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The seeder's store: STATE_DIRECTORY/contents/ holds, per content,
 *
 *     <id>            the file, read-only (0444), a private copy (content-import.h)
 *     <id>.torrent    its manifest, the .torrent {info, piece layers}
 *
 * and nothing else that counts: a content is in the store when both names exist. Names starting
 * with '.' are temporary files of an import or of write_file_atomic(). STATE_DIRECTORY/seeder.lock is
 * held (flock) by whoever writes the store: the daemon for as long as it runs, or `mc-seeder add`
 * and `remove` when no daemon does, so that two writers never meet.
 *
 * In memory, the store is the list of its contents in the order they were added, each with its
 * parsed manifest (checked canonical and against its id when loaded, and its file's size against the
 * manifest's length: a store damaged behind our back loses the content rather than serving wrong
 * bytes under its id). The bytes are not hashed again at start: that would cost a full read of
 * every content at every restart.
 *
 * A writer opening the store with STORE_CLEAN first drops what a crash can leave: temporary files, a
 * content without its manifest, a manifest without its content, and a pair that does not agree. */

#include <stdbool.h>
#include <stdint.h>

#include "content-import.h"

typedef struct Store Store;

typedef struct StoreContent {
        char id[TORRENT_ID_HEX_SIZE];
        uint64_t size;
        uint64_t added_usec;            /* CLOCK_REALTIME: when its manifest was written */
        Manifest *manifest;
} StoreContent;

typedef enum StoreFlags {
        STORE_WRITE = 1 << 0,   /* create contents/, take seeder.lock (-EBUSY when another writer has it) */
        STORE_CLEAN = 1 << 1,   /* drop leftovers first (needs STORE_WRITE) */
        STORE_WAIT  = 1 << 2,   /* wait for the lock instead of -EBUSY */
} StoreFlags;

/* Opens state_dir/contents and loads it. Without STORE_WRITE a missing contents/ is an empty store.
 * Errors: -EBUSY (see above), -EACCES and the like from the directories (not logged: the caller
 * knows what the user asked for). Dropped leftovers and damaged contents are logged. */
int store_open(const char *state_dir, StoreFlags flags, Store **ret);
Store *store_free(Store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(Store *, store_free);

/* state_dir/contents, and an O_PATH-free descriptor of it (for content_import()). */
const char *store_path(const Store *s);
int store_dir_fd(const Store *s);

size_t store_n_contents(const Store *s);
/* The i-th content, in the order added (i < store_n_contents()). */
const StoreContent *store_content(const Store *s, size_t i);
const StoreContent *store_find(const Store *s, const char *id);

/* Records what content_import() stored (taking its manifest). Returns 0 when new, 1 when the store
 * had it already (the manifest is freed then). */
int store_insert(Store *s, ContentImport *c);
/* Removes a content: its manifest first (from then on it is not in the store), then its file.
 * -ENOENT when the store has no such content. */
int store_remove(Store *s, const char *id);

/* The .torrent of a content, malloc()ed. -ENOENT when unknown. */
int store_torrent(const Store *s, const char *id, uint8_t **ret, size_t *ret_size);
