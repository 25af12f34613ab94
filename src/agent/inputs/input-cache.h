/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* InputCache: the contents an agent keeps for its tasks' inputs, in one directory (INPUT_CACHE_DIR,
 * $STATE_DIRECTORY/inputs by default), by content id only (never a name a peer or a task chose):
 *
 *     <id>            a complete, verified content, mode 0444 (what tasks see, read-only)
 *     .<id>.part      a download in progress, at its full size from the start (fallocate)
 *     .<id>.state     which pieces of the .part are durable (src/torrent/content-store.h)
 *     <id>.torrent    its manifest, as the control gave it
 *
 * Every content on disk is counted at its full length, complete or not (a .part is allocated whole),
 * and the total stays within max_bytes (CACHE_MAX_BYTES): before a download starts,
 * input_cache_reserve() evicts the least recently used contents that no task pins, and says -ENOSPC
 * when even that is not enough. A task pins each of its inputs from its claim to its end, so that a
 * content in use (or about to be) is never evicted. Partial downloads stay (a later fetch resumes
 * them) and are evicted like the rest.
 *
 * What the cache holds is served to other agents (input-server.h): the contents found at start, and
 * each download's store from its start on. */

#include "content-store.h"
#include "input-server.h"
#include "macro.h"
#include "manifest.h"

typedef struct InputCache InputCache;
typedef struct InputCacheEntry InputCacheEntry;

typedef struct InputCacheConfig {
        const char *dir;
        uint64_t max_bytes;
        InputServer *server;            /* NULL: nothing is served */
} InputCacheConfig;

/* Creates the directory if needed and takes stock of it: complete and partial contents with their
 * manifests are kept (and served), anything of ours without its manifest is removed. */
int input_cache_new(const InputCacheConfig *config, InputCache **ret);
InputCache *input_cache_free(InputCache *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(InputCache *, input_cache_free);

const char *input_cache_dir(const InputCache *c);
/* Bytes counted against the limit now. */
uint64_t input_cache_bytes(const InputCache *c);
uint64_t input_cache_max_bytes(const InputCache *c);

/* The entry of id_hex (64 lowercase hex digits), created when new, with one more pin. length is the
 * content's size as the control said (the claim answer); -EINVAL for a bad id, -EBADMSG when an entry
 * already on disk has another length (not the same content, which cannot be for a valid id). */
int input_cache_pin(InputCache *c, const char *id_hex, uint64_t length, InputCacheEntry **ret);
/* One pin less; the entry becomes the most recently used. */
void input_cache_unpin(InputCacheEntry *e);

const char *input_cache_entry_id(const InputCacheEntry *e);
uint64_t input_cache_entry_length(const InputCacheEntry *e);
bool input_cache_entry_complete(const InputCacheEntry *e);
/* DIR/<id>: the complete file. */
const char *input_cache_entry_path(const InputCacheEntry *e);
/* DIR/<id>.torrent. */
const char *input_cache_entry_torrent(const InputCacheEntry *e);

/* DIR/<id>.torrent, parsed and checked against the id (-ENOENT when there is none). */
int input_cache_read_manifest(InputCacheEntry *e, Manifest **ret);

/* Makes room for e at its full length (a no-op when it is counted already): evicts unpinned contents,
 * least recently used first. -ENOSPC when the pinned ones leave too little room, -EFBIG when e alone is
 * larger than the limit. */
int input_cache_reserve(InputCache *c, InputCacheEntry *e);
/* The download's store (served from now on, in place of any earlier one of the content). */
void input_cache_set_store(InputCacheEntry *e, ContentStore *store);
/* The download completed: the file becomes read-only (0444) and the entry complete. */
int input_cache_completed(InputCacheEntry *e);
/* A download that failed on the disk (ENOSPC): its partial files go, it counts no more. */
void input_cache_drop_partial(InputCacheEntry *e);
