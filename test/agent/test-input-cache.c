/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The input cache (src/agent/inputs/input-cache.h) on a real directory: pins, the limit, eviction of
 * the least recently used unpinned contents, -ENOSPC and -EFBIG, and what a new cache keeps of a
 * directory a previous run left (complete and partial contents with their manifests; nothing without
 * one). */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "agent-test.h"
#include "content-store.h"
#include "content.h"
#include "file-util.h"
#include "input-cache.h"
#include "manifest.h"
#include "random-util.h"

#define LEN (64U * 1024U)       /* 4 pieces of 16 KiB */

typedef struct Content {
        uint8_t data[LEN];
        Manifest *m;
        char id[TORRENT_ID_HEX_SIZE];
} Content;

static void content_make(Content *c) {
        ContentHash h = {};

        random_bytes(c->data, sizeof(c->data));
        ASSERT(content_hash_buffer(c->data, sizeof(c->data), 0, &h) >= 0);
        ASSERT(manifest_from_content(&h, &c->m) >= 0);
        content_hash_done(&h);
        torrent_id_to_hex(c->m->id, c->id);
}

static void write_torrent(const char *dir, Content *c) {
        _cleanup_free_ uint8_t *t = NULL;
        _cleanup_free_ char *path = NULL;
        size_t size;

        ASSERT(manifest_to_torrent(c->m, NULL, &t, &size) >= 0);
        ASSERT(asprintf(&path, "%s/%s.torrent", dir, c->id) >= 0);
        ASSERT(write_file_atomic(path, t, size, 0644, 0) >= 0);
}

/* What a download does: the manifest, then the pieces (first n), then completion when all came. */
static void download(InputCache *cache, InputCacheEntry *e, Content *c, uint32_t n) {
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;

        write_torrent(input_cache_dir(cache), c);
        ASSERT(content_store_open_dir(input_cache_dir(cache), c->m, &s) >= 0);
        input_cache_set_store(e, s);
        for (uint32_t i = 0; i < n; i++)
                ASSERT(content_store_put_piece(s, i, c->data + (size_t) i * 16384, 16384) >= 0);
        ASSERT(content_store_flush(s) >= 0);
        if (n == 4)
                ASSERT(input_cache_completed(e) >= 0);
}

static bool exists(const char *dir, const char *fmt, const char *id) {
        char name[128];
        struct stat st;
        _cleanup_free_ char *p = NULL;

        snprintf(name, sizeof(name), fmt, id);
        ASSERT(asprintf(&p, "%s/%s", dir, name) >= 0);
        return stat(p, &st) == 0;
}

static void test_pins_and_eviction(void) {
        char tmpl[] = "/tmp/test-input-cache-XXXXXX";
        const char *dir = mkdtemp(tmpl);
        _cleanup_(input_cache_freep) InputCache *cache = NULL;
        Content c[4];
        InputCacheEntry *e[4], *again;
        struct stat st;

        ASSERT(dir);
        for (int i = 0; i < 4; i++)
                content_make(&c[i]);
        ASSERT(input_cache_new(&(InputCacheConfig) { .dir = dir, .max_bytes = 3 * LEN }, &cache) >= 0);
        ASSERT(input_cache_bytes(cache) == 0);
        ASSERT(input_cache_pin(cache, "not-an-id", LEN, &again) == -EINVAL);

        for (int i = 0; i < 3; i++) {
                ASSERT(input_cache_pin(cache, c[i].id, LEN, &e[i]) >= 0);
                ASSERT(input_cache_reserve(cache, e[i]) >= 0);
                download(cache, e[i], &c[i], 4);
                ASSERT(input_cache_entry_complete(e[i]));
        }
        ASSERT(input_cache_bytes(cache) == 3 * LEN);
        ASSERT(stat(input_cache_entry_path(e[0]), &st) == 0 && (st.st_mode & 0777) == 0444);
        /* The same content pinned again: the same entry; another length: not the same content. */
        ASSERT(input_cache_pin(cache, c[0].id, LEN, &again) >= 0 && again == e[0]);
        input_cache_unpin(again);
        ASSERT(input_cache_pin(cache, c[0].id, LEN + 1, &again) == -EBADMSG);

        /* All pinned: no room for a fourth. */
        ASSERT(input_cache_pin(cache, c[3].id, LEN, &e[3]) >= 0);
        ASSERT(input_cache_reserve(cache, e[3]) == -ENOSPC);
        /* c[1] then c[0] let go (c[0] more recently): c[1] is the one evicted; c[2] stays pinned. */
        input_cache_unpin(e[1]);
        usleep(2000);
        input_cache_unpin(e[0]);
        ASSERT(input_cache_reserve(cache, e[3]) >= 0);
        ASSERT(!exists(dir, "%s", c[1].id) && !exists(dir, "%s.torrent", c[1].id));
        ASSERT(exists(dir, "%s", c[0].id) && exists(dir, "%s", c[2].id));
        ASSERT(input_cache_bytes(cache) == 3 * LEN);
        /* A partial download counts whole. */
        download(cache, e[3], &c[3], 2);
        ASSERT(input_cache_bytes(cache) == 3 * LEN);
        ASSERT(exists(dir, ".%s.part", c[3].id) && !exists(dir, "%s", c[3].id));

        /* Larger than the whole cache. */
        {
                InputCacheEntry *big;
                char id[TORRENT_ID_HEX_SIZE];
                memset(id, 'a', 64);
                id[64] = 0;
                ASSERT(input_cache_pin(cache, id, 4 * LEN, &big) >= 0);
                ASSERT(input_cache_reserve(cache, big) == -EFBIG);
                input_cache_unpin(big);
        }
        input_cache_unpin(e[2]);
        input_cache_unpin(e[3]);
        cache = input_cache_free(cache);

        /* A new run takes stock: c[0] and c[2] complete, c[3] partial, all three with manifests. A
         * content without its manifest and a manifest alone go. */
        {
                _cleanup_free_ char *orphan = NULL;
                ASSERT(asprintf(&orphan, "%s/%s", dir, c[1].id) >= 0);
                ASSERT(write_file_atomic(orphan, c[1].data, LEN, 0444, 0) >= 0);
                write_torrent(dir, &c[1]);
                ASSERT(unlink(orphan) == 0);    /* a lone manifest */
        }
        {
                char lone[TORRENT_ID_HEX_SIZE];
                _cleanup_free_ char *p = NULL;
                memset(lone, 'b', 64);
                lone[64] = 0;
                ASSERT(asprintf(&p, "%s/%s", dir, lone) >= 0);
                ASSERT(write_file_atomic(p, "x", 1, 0444, 0) >= 0);     /* a content without one */
                ASSERT(input_cache_new(&(InputCacheConfig) { .dir = dir, .max_bytes = 3 * LEN }, &cache) >= 0);
                ASSERT(!exists(dir, "%s", lone));
        }
        ASSERT(!exists(dir, "%s.torrent", c[1].id));
        ASSERT(input_cache_bytes(cache) == 3 * LEN);
        ASSERT(input_cache_pin(cache, c[0].id, LEN, &again) >= 0 && input_cache_entry_complete(again));
        input_cache_unpin(again);
        ASSERT(input_cache_pin(cache, c[3].id, LEN, &again) >= 0 && !input_cache_entry_complete(again));
        input_cache_unpin(again);
        cache = input_cache_free(cache);

        {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
                ASSERT(system(cmd) == 0);
        }
        for (int i = 0; i < 4; i++)
                manifest_free(c[i].m);
}

int main(void) {
        RUN_TEST(test_pins_and_eviction);
        return 0;
}
