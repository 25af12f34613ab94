/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "daemon-util.h"
#include "input-cache.h"
#include "list.h"
#include "log.h"
#include "manifest.h"

/* Manifests are at most 2 MiB (docs/api.md). */
#define TORRENT_FILE_MAX (2U << 20)

struct InputCacheEntry {
        InputCache *cache;
        char id[TORRENT_ID_HEX_SIZE];
        char *path, *torrent;
        uint64_t length;
        unsigned pins;
        bool counted;                   /* on disk (or reserved for a download): counts at length */
        bool complete;
        uint64_t last_used;             /* CLOCK_REALTIME, usec; the file's mtime for what was found at start */
        ContentStore *store;            /* what the server serves of it (NULL: nothing) */
        LIST_FIELDS(InputCacheEntry);
};

struct InputCache {
        char *dir;
        int dir_fd;
        uint64_t max_bytes, bytes;
        InputServer *server;
        InputCacheEntry *entries;
};

static bool id_hex_valid(const char *s) {
        uint8_t id[TORRENT_ID_SIZE];
        char back[TORRENT_ID_HEX_SIZE];

        if (torrent_id_from_hex(s, id) < 0)
                return false;
        torrent_id_to_hex(id, back);
        return streq(back, s);          /* lowercase only: one name per content */
}

static InputCacheEntry *find(InputCache *c, const char *id) {
        for (InputCacheEntry *e = c->entries; e; e = e->next)
                if (streq(e->id, id))
                        return e;
        return NULL;
}

static InputCacheEntry *entry_new(InputCache *c, const char *id, uint64_t length) {
        InputCacheEntry *e = calloc(1, sizeof(*e));

        if (!e)
                return NULL;
        e->cache = c;
        snprintf(e->id, sizeof(e->id), "%s", id);
        e->length = length;
        e->last_used = realtime_usec();
        if (asprintf(&e->path, "%s/%s", c->dir, id) < 0 || asprintf(&e->torrent, "%s/%s.torrent", c->dir, id) < 0) {
                free(e->path);
                free(e);
                return NULL;
        }
        LIST_PREPEND(c->entries, e);
        return e;
}

static void entry_unserve(InputCacheEntry *e) {
        if (!e->store)
                return;
        if (e->cache->server)
                (void) input_server_remove(e->cache->server, e->store);
        e->store = content_store_unref(e->store);
}

static void entry_free(InputCacheEntry *e) {
        InputCache *c = e->cache;

        entry_unserve(e);
        if (e->counted)
                c->bytes -= e->length;
        LIST_REMOVE(c->entries, e);
        free(e->path);
        free(e->torrent);
        free(e);
}

static void unlink_files(InputCache *c, const char *id) {
        char name[TORRENT_ID_HEX_SIZE + 16];

        (void) unlinkat(c->dir_fd, id, 0);
        snprintf(name, sizeof(name), ".%s.part", id);
        (void) unlinkat(c->dir_fd, name, 0);
        snprintf(name, sizeof(name), ".%s.state", id);
        (void) unlinkat(c->dir_fd, name, 0);
        snprintf(name, sizeof(name), "%s.torrent", id);
        (void) unlinkat(c->dir_fd, name, 0);
}

static int read_torrent(InputCache *c, const char *id, Manifest **ret) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int fd = -1;
        uint8_t want[TORRENT_ID_SIZE];
        char name[TORRENT_ID_HEX_SIZE + 16];
        struct stat st;
        ssize_t n;

        snprintf(name, sizeof(name), "%s.torrent", id);
        fd = openat(c->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t) st.st_size > TORRENT_FILE_MAX)
                return -EBADMSG;
        buf = malloc((size_t) st.st_size);
        if (!buf)
                return -ENOMEM;
        n = read(fd, buf, (size_t) st.st_size);
        if (n != st.st_size)
                return n < 0 ? -errno : -EIO;
        if (torrent_id_from_hex(id, want) < 0)
                return -EINVAL;
        return manifest_parse_torrent(buf, (size_t) n, want, MANIFEST_CANONICAL, ret, NULL);
}

/* A content found at start: kept (and served) when its manifest is there and agrees with it. */
static void adopt_found(InputCache *c, const char *id, uint64_t mtime_usec) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_(content_store_unrefp) ContentStore *store = NULL;
        InputCacheEntry *e;
        int r;

        if (find(c, id))
                return;
        r = read_torrent(c, id, &m);
        if (r >= 0)
                r = content_store_open_dir(c->dir, m, &store);
        if (r < 0) {
                log_info("Input cache: removing %s, which cannot be kept (%s).", id, strerror(-r));
                unlink_files(c, id);
                return;
        }
        e = entry_new(c, id, m->geometry.length);
        if (!e) {
                log_oom();
                return;
        }
        e->counted = true;
        c->bytes += e->length;
        e->last_used = mtime_usec;
        e->complete = content_store_complete(store);
        if (e->complete)
                (void) chmod(e->path, 0444);
        input_cache_set_store(e, store);
        log_debug("Input cache: %s %s, %" PRIu64 " bytes.", e->complete ? "found" : "found partial", id, e->length);
}

static int scan(InputCache *c) {
        _cleanup_closedir_ DIR *d = NULL;
        struct dirent *de;

        d = fdopendir(fcntl(c->dir_fd, F_DUPFD_CLOEXEC, 3));
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char id[TORRENT_ID_HEX_SIZE] = "";
                const char *n = de->d_name;
                struct stat st;
                size_t l = strlen(n);

                /* <id>, .<id>.part, .<id>.state, <id>.torrent */
                if (l == 64)
                        memcpy(id, n, 64);
                else if ((l == 70 && n[0] == '.' && endswith(n, ".part")) ||
                         (l == 71 && n[0] == '.' && endswith(n, ".state")))
                        memcpy(id, n + 1, 64);
                else if (l == 72 && endswith(n, ".torrent"))
                        memcpy(id, n, 64);
                else {
                        /* A temporary file of write_file_atomic() that a crash left. */
                        if (n[0] == '.' && strstr(n, ".tmp."))
                                (void) unlinkat(c->dir_fd, n, 0);
                        continue;
                }
                if (!id_hex_valid(id) || find(c, id))
                        continue;
                if (fstatat(c->dir_fd, n, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (l == 72) {
                        /* A manifest alone: kept only with its content (that one is looked at when its
                         * own name comes). */
                        struct stat x;
                        char part[80];
                        snprintf(part, sizeof(part), ".%s.part", id);
                        if (fstatat(c->dir_fd, id, &x, AT_SYMLINK_NOFOLLOW) < 0 &&
                            fstatat(c->dir_fd, part, &x, AT_SYMLINK_NOFOLLOW) < 0)
                                (void) unlinkat(c->dir_fd, n, 0);
                        continue;
                }
                adopt_found(c, id, (uint64_t) st.st_mtim.tv_sec * USEC_PER_SEC + (uint64_t) st.st_mtim.tv_nsec / 1000);
        }
        return 0;
}

static int mkdir_parents(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++)
                if (*s == '/') {
                        *s = 0;
                        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *s = '/';
                }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

int input_cache_new(const InputCacheConfig *config, InputCache **ret) {
        _cleanup_(input_cache_freep) InputCache *c = NULL;
        int r;

        assert(config);
        assert(config->dir);
        assert(ret);
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->dir_fd = -1;
        c->dir = strdup(config->dir);
        if (!c->dir)
                return -ENOMEM;
        c->max_bytes = config->max_bytes;
        c->server = config->server;
        /* 0755: the Docker engine bind-mounts files from here (as root), and exec tasks follow links. */
        r = mkdir_parents(c->dir, 0755);
        if (r < 0)
                return log_error_errno(r, "Cannot create the input cache %s: %m", c->dir);
        c->dir_fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->dir_fd < 0)
                return log_error_errno(errno, "Cannot open the input cache %s: %m", c->dir);
        r = scan(c);
        if (r < 0)
                return log_error_errno(r, "Cannot read the input cache %s: %m", c->dir);
        log_info("Input cache %s: %" PRIu64 " bytes of at most %" PRIu64 ".", c->dir, c->bytes, c->max_bytes);
        *ret = TAKE_PTR(c);
        return 0;
}

InputCache *input_cache_free(InputCache *c) {
        if (!c)
                return NULL;
        while (c->entries)
                entry_free(c->entries);
        if (c->dir_fd >= 0)
                close(c->dir_fd);
        free(c->dir);
        free(c);
        return NULL;
}

const char *input_cache_dir(const InputCache *c) {
        return c->dir;
}

uint64_t input_cache_bytes(const InputCache *c) {
        return c->bytes;
}

uint64_t input_cache_max_bytes(const InputCache *c) {
        return c->max_bytes;
}

int input_cache_pin(InputCache *c, const char *id_hex, uint64_t length, InputCacheEntry **ret) {
        InputCacheEntry *e;

        assert(c);
        assert(ret);
        if (!id_hex || !id_hex_valid(id_hex))
                return -EINVAL;
        e = find(c, id_hex);
        if (e && e->length != length)
                return -EBADMSG;
        if (!e) {
                e = entry_new(c, id_hex, length);
                if (!e)
                        return -ENOMEM;
        }
        e->pins++;
        e->last_used = realtime_usec();
        *ret = e;
        return 0;
}

void input_cache_unpin(InputCacheEntry *e) {
        if (!e)
                return;
        assert(e->pins > 0);
        e->pins--;
        e->last_used = realtime_usec();
        if (e->complete)
                /* Recorded in the file, so that the order survives a restart. */
                (void) utimensat(e->cache->dir_fd, e->id, NULL, 0);
        if (e->pins == 0 && !e->counted && !e->store)
                entry_free(e);
}

const char *input_cache_entry_id(const InputCacheEntry *e) {
        return e->id;
}

uint64_t input_cache_entry_length(const InputCacheEntry *e) {
        return e->length;
}

bool input_cache_entry_complete(const InputCacheEntry *e) {
        return e->complete;
}

const char *input_cache_entry_path(const InputCacheEntry *e) {
        return e->path;
}

const char *input_cache_entry_torrent(const InputCacheEntry *e) {
        return e->torrent;
}

static void evict(InputCacheEntry *e) {
        InputCache *c = e->cache;

        log_info("Input cache: evicting %s (%" PRIu64 " bytes%s), unused since %.3f.", e->id, e->length,
                 e->complete ? "" : ", partial", (double) e->last_used / 1e6);
        entry_unserve(e);
        unlink_files(c, e->id);
        entry_free(e);
}

int input_cache_read_manifest(InputCacheEntry *e, Manifest **ret) {
        assert(e);
        assert(ret);
        return read_torrent(e->cache, e->id, ret);
}

int input_cache_reserve(InputCache *c, InputCacheEntry *e) {
        assert(c);
        assert(e);
        if (e->counted)
                return 0;
        if (e->length > c->max_bytes)
                return -EFBIG;
        while (c->bytes + e->length > c->max_bytes) {
                InputCacheEntry *victim = NULL;

                for (InputCacheEntry *x = c->entries; x; x = x->next)
                        if (x != e && x->pins == 0 && x->counted && (!victim || x->last_used < victim->last_used))
                                victim = x;
                if (!victim)
                        return -ENOSPC;
                evict(victim);
        }
        e->counted = true;
        c->bytes += e->length;
        return 0;
}

void input_cache_set_store(InputCacheEntry *e, ContentStore *store) {
        int r;

        assert(e);
        assert(store);
        if (e->store == store)
                return;
        entry_unserve(e);
        e->store = content_store_ref(store);
        if (e->cache->server) {
                r = input_server_add(e->cache->server, store);
                if (r < 0)
                        log_warning_errno(r, "Cannot serve %s to other agents: %m", e->id);
        }
}

int input_cache_completed(InputCacheEntry *e) {
        assert(e);
        e->complete = true;
        e->counted = true;
        if (chmod(e->path, 0444) < 0)
                return log_warning_errno(errno, "Cannot make %s read-only: %m", e->path);
        return 0;
}

void input_cache_drop_partial(InputCacheEntry *e) {
        InputCache *c = e->cache;

        assert(e);
        if (e->complete)
                return;
        entry_unserve(e);
        unlink_files(c, e->id);
        if (e->counted) {
                c->bytes -= e->length;
                e->counted = false;
        }
}
