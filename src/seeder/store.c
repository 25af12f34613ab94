/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "daemon-util.h"
#include "log.h"
#include "store.h"

/* The largest manifest read back: the .torrent of the largest content (TORRENT_LENGTH_MAX in 4 MiB
 * pieces: 8M pieces of 32 bytes) is 256 MiB; a seeder's inputs are far smaller, and a bigger file in
 * the store is not one we wrote. */
#define MANIFEST_FILE_MAX (UINT64_C(256) << 20)

struct Store {
        char *path;
        int dir_fd;
        int lock_fd;
        StoreContent *contents;
        size_t n_contents, allocated;
};

static void content_done(StoreContent *c) {
        c->manifest = manifest_free(c->manifest);
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_contents; i++)
                content_done(s->contents + i);
        free(s->contents);
        if (s->dir_fd >= 0)
                close(s->dir_fd);
        if (s->lock_fd >= 0)
                close(s->lock_fd);
        free(s->path);
        free(s);
        return NULL;
}

const char *store_path(const Store *s) {
        return s->path;
}

int store_dir_fd(const Store *s) {
        return s->dir_fd;
}

size_t store_n_contents(const Store *s) {
        return s->n_contents;
}

const StoreContent *store_content(const Store *s, size_t i) {
        assert(i < s->n_contents);
        return s->contents + i;
}

/* A linear search: a seeder holds the inputs of its tasks, hundreds of contents rather than millions,
 * and the list is touched per command, not per packet. */
static ssize_t find_index(const Store *s, const char *id) {
        for (size_t i = 0; i < s->n_contents; i++)
                if (streq(s->contents[i].id, id))
                        return (ssize_t) i;
        return -1;
}

const StoreContent *store_find(const Store *s, const char *id) {
        ssize_t i = find_index(s, id);
        return i < 0 ? NULL : s->contents + i;
}

static int append(Store *s, StoreContent *c) {
        if (s->n_contents == s->allocated) {
                size_t n = MAX(s->allocated * 2, (size_t) 16);
                StoreContent *p = reallocarray(s->contents, n, sizeof(StoreContent));
                if (!p)
                        return -ENOMEM;
                s->contents = p;
                s->allocated = n;
        }
        s->contents[s->n_contents++] = *c;
        return 0;
}

static int read_at(int dir_fd, const char *name, uint8_t **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ uint8_t *buf = NULL;
        struct stat st;
        size_t done = 0;

        fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if ((uint64_t) st.st_size > MANIFEST_FILE_MAX)
                return -EFBIG;
        buf = malloc(MAX((size_t) st.st_size, (size_t) 1));
        if (!buf)
                return -ENOMEM;
        while (done < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + done, (size_t) st.st_size - done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ENODATA;
                done += (size_t) n;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = done;
        return 0;
}

/* Drops name (and logs why); on a read-only store it is only skipped. */
static void drop(Store *s, bool writable, const char *name, const char *why) {
        if (!writable) {
                log_debug("Store: skipping %s: %s.", name, why);
                return;
        }
        if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Store: cannot remove %s/%s (%s): %m", s->path, name, why);
        else
                log_notice("Store: removed %s/%s: %s.", s->path, name, why);
}

/* Loads content id (its manifest, which exists). Returns 0 loaded, 1 dropped (damaged or incomplete). */
static int load_one(Store *s, bool writable, const char *id) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        char torrent_name[TORRENT_ID_HEX_SIZE + sizeof(".torrent")];
        uint8_t idb[TORRENT_ID_SIZE];
        const char *reason = NULL;
        struct stat st, mst;
        size_t size = 0;
        int r;

        snprintf(torrent_name, sizeof(torrent_name), "%s.torrent", id);
        if (fstatat(s->dir_fd, id, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return -errno;
                drop(s, writable, torrent_name, "a manifest without its content");
                return 1;
        }
        if (fstatat(s->dir_fd, torrent_name, &mst, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return -errno;
                drop(s, writable, id, "a content without its manifest (an import that did not finish)");
                return 1;
        }
        r = read_at(s->dir_fd, torrent_name, &buf, &size);
        if (r == -ENOMEM)
                return r;
        if (r >= 0)
                r = torrent_id_from_hex(id, idb);
        if (r >= 0)
                r = manifest_parse_torrent(buf, size, idb, MANIFEST_CANONICAL, &m, &reason);
        if (r < 0 || !S_ISREG(st.st_mode) || (uint64_t) st.st_size != m->geometry.length) {
                _cleanup_free_ char *why = NULL;

                if (r == -ENOMEM)
                        return r;
                if (asprintf(&why, "its manifest %s", r < 0 ? (reason ?: strerror(-r)) :
                             "gives another length than the file has") < 0)
                        return -ENOMEM;
                log_warning("Store: content %s is damaged: %s.", id, why);
                drop(s, writable, torrent_name, why);
                drop(s, writable, id, why);
                return 1;
        }

        StoreContent c = {
                .size = (uint64_t) st.st_size,
                .added_usec = (uint64_t) mst.st_mtim.tv_sec * USEC_PER_SEC + (uint64_t) mst.st_mtim.tv_nsec / 1000,
                .manifest = m,
        };
        memcpy(c.id, id, TORRENT_ID_HEX_SIZE);
        r = append(s, &c);
        if (r < 0)
                return r;
        TAKE_PTR(m);
        return 0;
}

static int by_added(const void *a, const void *b) {
        const StoreContent *x = a, *y = b;

        if (x->added_usec != y->added_usec)
                return x->added_usec < y->added_usec ? -1 : 1;
        return strcmp(x->id, y->id);
}

static int load(Store *s, bool writable) {
        _cleanup_close_ int fd = -1;
        DIR *d;
        struct dirent *de;
        int r = 0;

        fd = fcntl(s->dir_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d)
                return -errno;
        TAKE_FD(fd);
        for (;;) {
                char id[TORRENT_ID_HEX_SIZE];
                const char *n;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                r = -errno;
                        break;
                }
                n = de->d_name;
                if (streq(n, ".") || streq(n, ".."))
                        continue;
                if (n[0] == '.') {
                        /* An import or a manifest write that a crash interrupted. */
                        drop(s, writable, n, "a temporary file left by an interrupted write");
                        continue;
                }
                if (!content_id_name_valid(n)) {
                        log_notice("Store: ignoring %s/%s, which is not a name of the store.", s->path, n);
                        continue;
                }
                if (strlen(n) == 2 * TORRENT_ID_SIZE) {
                        char tn[TORRENT_ID_HEX_SIZE + sizeof(".torrent")];
                        struct stat st;

                        /* The manifest's entry loads the pair; alone, the content is a leftover. */
                        snprintf(tn, sizeof(tn), "%s.torrent", n);
                        if (fstatat(s->dir_fd, tn, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
                                drop(s, writable, n, "a content without its manifest (an import that did not finish)");
                        continue;
                }
                memcpy(id, n, 2 * TORRENT_ID_SIZE);
                id[2 * TORRENT_ID_SIZE] = 0;
                r = load_one(s, writable, id);
                if (r < 0)
                        break;
                r = 0;
        }
        closedir(d);
        if (r < 0)
                return r;
        if (s->n_contents > 1)
                qsort(s->contents, s->n_contents, sizeof(StoreContent), by_added);
        return 0;
}

/* contents/ created by root for a store whose state directory belongs to the service user (`mc-seeder
 * add` run by root before the daemon ever ran) must be the user's, or the daemon could not write it. */
static int make_contents_dir(int state_fd) {
        struct stat st;

        if (mkdirat(state_fd, "contents", 0750) < 0) {
                if (errno == EEXIST)
                        return 0;
                return -errno;
        }
        if (geteuid() == 0 && fstat(state_fd, &st) >= 0 && st.st_uid != 0)
                if (fchownat(state_fd, "contents", st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
                        return -errno;
        return 0;
}

static int take_lock(int state_fd, StoreFlags flags) {
        _cleanup_close_ int fd = -1;

        fd = openat(state_fd, "seeder.lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (flock(fd, LOCK_EX | LOCK_NB) >= 0)
                return TAKE_FD(fd);
        if (errno != EWOULDBLOCK)
                return -errno;
        if (!(flags & STORE_WAIT))
                return -EBUSY;
        log_info("Waiting for the store lock (an `mc-seeder add` or `remove` is running).");
        while (flock(fd, LOCK_EX) < 0)
                if (errno != EINTR)
                        return -errno;
        return TAKE_FD(fd);
}

int store_open(const char *state_dir, StoreFlags flags, Store **ret) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_close_ int state_fd = -1;
        bool writable = flags & STORE_WRITE;
        int r;

        assert(state_dir);
        assert(ret);
        assert(!(flags & STORE_CLEAN) || writable);

        s = calloc(1, sizeof(Store));
        if (!s)
                return -ENOMEM;
        s->dir_fd = s->lock_fd = -1;
        if (asprintf(&s->path, "%s/contents", state_dir) < 0) {
                s->path = NULL;
                return -ENOMEM;
        }

        state_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (state_fd < 0) {
                if (errno == ENOENT && !writable) {
                        *ret = TAKE_PTR(s);
                        return 0;
                }
                return -errno;
        }
        if (writable) {
                r = take_lock(state_fd, flags);
                if (r < 0)
                        return r;
                s->lock_fd = r;
                r = make_contents_dir(state_fd);
                if (r < 0)
                        return r;
        }
        s->dir_fd = openat(state_fd, "contents", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd < 0) {
                if (errno == ENOENT && !writable) {
                        *ret = TAKE_PTR(s);
                        return 0;
                }
                return -errno;
        }
        r = load(s, flags & STORE_CLEAN);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

int store_insert(Store *s, ContentImport *c) {
        StoreContent n = {};
        int r;

        assert(c->manifest);
        if (store_find(s, c->id)) {
                content_import_done(c);
                return 1;
        }
        memcpy(n.id, c->id, sizeof(n.id));
        n.size = c->size;
        n.added_usec = realtime_usec();
        n.manifest = c->manifest;
        r = append(s, &n);
        if (r < 0)
                return r;
        c->manifest = NULL;
        return 0;
}

int store_remove(Store *s, const char *id) {
        char torrent_name[TORRENT_ID_HEX_SIZE + sizeof(".torrent")];
        ssize_t i = find_index(s, id);

        if (i < 0)
                return -ENOENT;
        assert(s->dir_fd >= 0);
        snprintf(torrent_name, sizeof(torrent_name), "%s.torrent", id);
        if (unlinkat(s->dir_fd, torrent_name, 0) < 0 && errno != ENOENT)
                return -errno;
        /* Gone from the store now; the file after it (a crash in between leaves a content without
         * its manifest, which the next start drops). */
        if (unlinkat(s->dir_fd, id, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Store: cannot remove %s/%s: %m", s->path, id);
        (void) fsync(s->dir_fd);
        content_done(s->contents + i);
        memmove(s->contents + i, s->contents + i + 1, (s->n_contents - (size_t) i - 1) * sizeof(StoreContent));
        s->n_contents--;
        return 0;
}

int store_torrent(const Store *s, const char *id, uint8_t **ret, size_t *ret_size) {
        const StoreContent *c = store_find(s, id);

        if (!c)
                return -ENOENT;
        return manifest_to_torrent(c->manifest, NULL, ret, ret_size);
}
