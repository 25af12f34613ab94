/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "content-store.h"
#include "file-util.h"
#include "hex.h"

#define STATE_MAGIC "mc-content-state 1"

struct ContentStore {
        unsigned n_ref;
        Manifest *manifest;
        int fd;
        int dir_fd;                     /* -1 for a file given by path */
        char *path;                     /* final path */
        char id_hex[TORRENT_ID_HEX_SIZE];
        bool complete;
        uint8_t *have;                  /* present (verified, written) */
        uint8_t *durable;               /* named by the state file */
        uint32_t n_have, n_durable;
        uint64_t unflushed;
        MerkleTree *tree;
        ContentStoreWatch *watches;
};

int manifest_dup(const Manifest *m, Manifest **ret) {
        _cleanup_(manifest_freep) Manifest *c = NULL;
        int r;

        assert(m);
        assert(ret);
        r = manifest_parse_info(m->info, m->info_size, m->id, 0, &c, NULL);
        if (r < 0)
                return r;
        if (m->piece_layer) {
                r = manifest_set_piece_layer(c, m->piece_layer, m->geometry.n_pieces);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int store_new(const Manifest *m, ContentStore **ret) {
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        size_t bsize = bitfield_size(m->geometry.n_pieces);
        int r;

        /* Without the piece layer nothing beyond a one-piece file can be verified. */
        if (m->geometry.has_piece_layer && !m->piece_layer)
                return -ENODATA;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->n_ref = 1;
        s->fd = s->dir_fd = -1;
        r = manifest_dup(m, &s->manifest);
        if (r < 0)
                return r;
        s->have = calloc(1, bsize ?: 1);
        s->durable = calloc(1, bsize ?: 1);
        if (!s->have || !s->durable)
                return -ENOMEM;
        torrent_id_to_hex(m->id, s->id_hex);
        *ret = TAKE_PTR(s);
        return 0;
}

static void mark_all(ContentStore *s) {
        uint32_t n = s->manifest->geometry.n_pieces;
        for (uint32_t i = 0; i < n; i++) {
                bitfield_set(s->have, i);
                bitfield_set(s->durable, i);
        }
        s->n_have = s->n_durable = n;
        s->complete = true;
}

int content_store_open_file(const char *path, const Manifest *m, ContentStore **ret) {
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        struct stat st;
        int r;

        assert(path);
        assert(m);
        assert(ret);
        r = store_new(m, &s);
        if (r < 0)
                return r;
        s->path = strdup(path);
        if (!s->path)
                return -ENOMEM;
        s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (s->fd < 0)
                return -errno;
        if (fstat(s->fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size != m->geometry.length)
                return -EBADFD;
        mark_all(s);
        *ret = TAKE_PTR(s);
        return 0;
}

static int state_name(const ContentStore *s, char *buf, size_t size) {
        return snprintf(buf, size, ".%s.state", s->id_hex) < (int) size ? 0 : -ENAMETOOLONG;
}
static int part_name(const ContentStore *s, char *buf, size_t size) {
        return snprintf(buf, size, ".%s.part", s->id_hex) < (int) size ? 0 : -ENAMETOOLONG;
}

/* Reads the state file into s->have/durable; -ENOENT when there is none, -EBADMSG when it is not
 * for this content. */
static int state_load(ContentStore *s) {
        uint32_t n = s->manifest->geometry.n_pieces;
        size_t bsize = bitfield_size(n);
        char name[100], id[TORRENT_ID_HEX_SIZE + 1];
        _cleanup_free_ char *line = NULL;
        char *bits;
        _cleanup_fclose_ FILE *f = NULL;
        unsigned pieces;
        size_t len = 0;
        int fd;

        if (state_name(s, name, sizeof(name)) < 0)
                return -ENAMETOOLONG;
        fd = openat(s->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        f = fdopen(fd, "r");
        if (!f) {
                close(fd);
                return -errno;
        }
        /* Four lines: the magic, "id HEX", "pieces N", "have HEX-BITFIELD". */
        if (getline(&line, &len, f) < 0 || !streq(line, STATE_MAGIC "\n"))
                return -EBADMSG;
        if (getline(&line, &len, f) < 0 || sscanf(line, "id %64s", id) != 1 || !streq(id, s->id_hex))
                return -EBADMSG;
        if (getline(&line, &len, f) < 0 || sscanf(line, "pieces %u", &pieces) != 1 || pieces != n)
                return -EBADMSG;
        if (getline(&line, &len, f) < 0 || !startswith(line, "have "))
                return -EBADMSG;
        bits = line + 5;
        bits[strcspn(bits, "\n")] = 0;
        if (strlen(bits) != 2 * bsize || (bsize > 0 && hex_decode(bits, s->durable, bsize) < 0))
                return -EBADMSG;
        if (n % 8 && (s->durable[bsize - 1] & (0xff >> (n % 8))))
                return -EBADMSG;
        s->n_durable = 0;
        for (uint32_t i = 0; i < n; i++)
                s->n_durable += bitfield_get(s->durable, i);
        memcpy(s->have, s->durable, bsize);
        s->n_have = s->n_durable;
        return 0;
}

static int state_save(ContentStore *s) {
        size_t bsize = bitfield_size(s->manifest->geometry.n_pieces);
        _cleanup_free_ char *text = NULL, *hex = NULL, *path = NULL;
        char name[100];
        int r, len;

        hex = malloc(2 * bsize + 1);
        if (!hex)
                return -ENOMEM;
        hex_encode(s->durable, bsize, hex);
        len = asprintf(&text, STATE_MAGIC "\nid %s\npieces %" PRIu32 "\nhave %s\n", s->id_hex,
                       s->manifest->geometry.n_pieces, hex);
        if (len < 0)
                return -ENOMEM;
        r = state_name(s, name, sizeof(name));
        if (r < 0)
                return r;
        /* write_file_atomic() takes a path; the directory's path is the final path's. */
        if (asprintf(&path, "%.*s/%s", (int) (strrchr(s->path, '/') - s->path), s->path, name) < 0)
                return -ENOMEM;
        return write_file_atomic(path, text, (size_t) len, 0644, WRITE_FILE_SYNC);
}

static int open_partial(ContentStore *s) {
        uint64_t length = s->manifest->geometry.length;
        char name[100];
        struct stat st;
        int r;

        r = part_name(s, name, sizeof(name));
        if (r < 0)
                return r;
        s->fd = openat(s->dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (s->fd < 0)
                return -errno;
        if (fstat(s->fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;

        r = state_load(s);
        if (r < 0 || (uint64_t) st.st_size != length) {
                /* Nothing on disk is known good: start over. */
                size_t bsize = bitfield_size(s->manifest->geometry.n_pieces);
                memset(s->have, 0, bsize ?: 1);
                memset(s->durable, 0, bsize ?: 1);
                s->n_have = s->n_durable = 0;
                if (ftruncate(s->fd, 0) < 0)
                        return -errno;
        }
        /* Reserve the blocks now, so that a full disk fails the download before it starts rather
         * than in the middle. Filesystems without fallocate get a sparse file. */
        if (length > 0 && fallocate(s->fd, 0, 0, (off_t) length) < 0 && errno != EOPNOTSUPP)
                return -errno;
        if (ftruncate(s->fd, (off_t) length) < 0)
                return -errno;
        return 0;
}

static int finish_rename(ContentStore *s) {
        char name[100];
        int r;

        r = part_name(s, name, sizeof(name));
        if (r < 0)
                return r;
        if (fsync(s->fd) < 0)
                return -errno;
        if (renameat(s->dir_fd, name, s->dir_fd, s->id_hex) < 0)
                return -errno;
        r = state_name(s, name, sizeof(name));
        if (r < 0)
                return r;
        (void) unlinkat(s->dir_fd, name, 0);
        if (fsync(s->dir_fd) < 0)
                return -errno;
        s->complete = true;
        return 0;
}

int content_store_open_dir(const char *dir, const Manifest *m, ContentStore **ret) {
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        struct stat st;
        int r;

        assert(dir);
        assert(m);
        assert(ret);
        r = store_new(m, &s);
        if (r < 0)
                return r;
        if (asprintf(&s->path, "%s/%s", dir, s->id_hex) < 0) {
                s->path = NULL;
                return -ENOMEM;
        }
        s->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dir_fd < 0)
                return -errno;

        s->fd = openat(s->dir_fd, s->id_hex, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (s->fd >= 0) {
                if (fstat(s->fd, &st) < 0)
                        return -errno;
                if (S_ISREG(st.st_mode) && (uint64_t) st.st_size == m->geometry.length) {
                        mark_all(s);
                        *ret = TAKE_PTR(s);
                        return 0;
                }
                /* Not ours (the name is taken by something else): never overwritten by a rename
                 * we did not check; refuse. */
                return -EEXIST;
        }
        if (errno != ENOENT)
                return -errno;

        r = open_partial(s);
        if (r < 0)
                return r;
        if (s->n_have == m->geometry.n_pieces) {
                /* Complete on disk but not renamed (a crash in between), or the empty file. */
                r = finish_rename(s);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

ContentStore *content_store_ref(ContentStore *s) {
        if (s)
                s->n_ref++;
        return s;
}

ContentStore *content_store_unref(ContentStore *s) {
        if (!s || --s->n_ref > 0)
                return NULL;
        assert(!s->watches);
        if (s->fd >= 0)
                close(s->fd);
        if (s->dir_fd >= 0)
                close(s->dir_fd);
        merkle_tree_free(s->tree);
        manifest_free(s->manifest);
        free(s->have);
        free(s->durable);
        free(s->path);
        free(s);
        return NULL;
}

const Manifest *content_store_manifest(const ContentStore *s) {
        return s->manifest;
}
const TorrentGeometry *content_store_geometry(const ContentStore *s) {
        return &s->manifest->geometry;
}
bool content_store_has_piece(const ContentStore *s, uint32_t index) {
        return index < s->manifest->geometry.n_pieces && bitfield_get(s->have, index);
}
const uint8_t *content_store_bitfield(const ContentStore *s) {
        return s->have;
}
uint32_t content_store_n_have(const ContentStore *s) {
        return s->n_have;
}
uint32_t content_store_n_durable(const ContentStore *s) {
        return s->n_durable;
}
bool content_store_complete(const ContentStore *s) {
        return s->complete;
}
int content_store_fd(const ContentStore *s) {
        return s->fd;
}
const char *content_store_path(const ContentStore *s) {
        return s->path;
}
uint64_t content_store_unflushed(const ContentStore *s) {
        return s->unflushed;
}

int content_store_read(ContentStore *s, uint64_t offset, void *buf, size_t size) {
        const TorrentGeometry *g = &s->manifest->geometry;
        ssize_t n;

        if (offset > g->length || size > g->length - offset)
                return -ERANGE;
        if (size == 0)
                return 0;
        for (uint64_t p = offset / g->piece_length; p <= (offset + size - 1) / g->piece_length; p++)
                if (!bitfield_get(s->have, (uint32_t) p))
                        return -ENODATA;
        n = pread(s->fd, buf, size, (off_t) offset);
        if (n < 0)
                return -errno;
        return (size_t) n == size ? 0 : -EIO;
}

static const uint8_t *piece_expected(const ContentStore *s, uint32_t index) {
        const Manifest *m = s->manifest;
        return m->geometry.has_piece_layer ? m->piece_layer + (size_t) index * SHA256_SIZE : m->root;
}

int content_store_write_piece(const ContentStore *s, uint32_t index, const void *data, size_t size) {
        const TorrentGeometry *g = &s->manifest->geometry;
        const uint8_t *p = data;
        uint64_t off;
        int r;

        /* Any thread: the manifest is immutable and pwrite() needs no lock. */
        if (index >= g->n_pieces)
                return -ERANGE;
        if (s->dir_fd < 0)
                return -EROFS;          /* a file given to serve, read-only */
        r = merkle_piece_verify(g, index, data, size, piece_expected(s, index));
        if (r < 0)
                return r;
        off = (uint64_t) index * g->piece_length;
        while (size > 0) {
                ssize_t n = pwrite(s->fd, p, size, (off_t) off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p += n;
                off += (uint64_t) n;
                size -= (size_t) n;
        }
        return 0;
}

int content_store_piece_written(ContentStore *s, uint32_t index) {
        const TorrentGeometry *g = &s->manifest->geometry;

        if (index >= g->n_pieces)
                return -ERANGE;
        if (bitfield_get(s->have, index))
                return -EALREADY;
        bitfield_set(s->have, index);
        s->n_have++;
        s->unflushed += torrent_piece_size(g, index);
        for (ContentStoreWatch *w = s->watches, *next; w; w = next) {
                next = w->next;
                w->piece(w, index);
        }
        return 0;
}

int content_store_put_piece(ContentStore *s, uint32_t index, const void *data, size_t size) {
        int r;

        if (index >= s->manifest->geometry.n_pieces)
                return -ERANGE;
        if (bitfield_get(s->have, index))
                return -EALREADY;
        r = content_store_write_piece(s, index, data, size);
        if (r < 0)
                return r;
        return content_store_piece_written(s, index);
}

int content_store_durable_begin(ContentStore *s, uint8_t **ret_snapshot) {
        size_t bsize = bitfield_size(s->manifest->geometry.n_pieces) ?: 1;
        uint8_t *snap;

        assert(ret_snapshot);
        snap = malloc(bsize);
        if (!snap)
                return -ENOMEM;
        memcpy(snap, s->have, bsize);
        s->unflushed = 0;
        *ret_snapshot = snap;
        return 0;
}

int content_store_durable_commit(ContentStore *s, const uint8_t *snapshot) {
        uint32_t n = s->manifest->geometry.n_pieces, k = 0;
        size_t bsize = bitfield_size(n);

        if (s->complete || s->dir_fd < 0)
                return 0;
        for (size_t i = 0; i < bsize; i++)
                s->durable[i] |= snapshot[i];
        for (uint32_t i = 0; i < n; i++)
                k += bitfield_get(s->durable, i);
        if (k == s->n_durable)
                return 0;
        s->n_durable = k;
        /* A whole content is renamed into place by content_store_flush() (a last fsync first). */
        return k < n ? state_save(s) : 0;
}

int content_store_flush(ContentStore *s) {
        size_t bsize = bitfield_size(s->manifest->geometry.n_pieces);
        int r;

        if (s->complete || s->dir_fd < 0)
                return 0;
        if (s->n_have != s->n_durable) {
                if (fdatasync(s->fd) < 0)
                        return -errno;
                memcpy(s->durable, s->have, bsize);
                s->n_durable = s->n_have;
                s->unflushed = 0;
                if (s->n_have < s->manifest->geometry.n_pieces) {
                        r = state_save(s);
                        if (r < 0)
                                return r;
                }
        }
        if (s->n_have == s->manifest->geometry.n_pieces)
                return finish_rename(s);
        return 0;
}

int content_store_remove_partial(ContentStore *s) {
        char name[100];
        int r = 0;

        if (s->complete || s->dir_fd < 0)
                return 0;
        if (part_name(s, name, sizeof(name)) >= 0 && unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                r = -errno;
        if (state_name(s, name, sizeof(name)) >= 0 && unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        return r;
}

int content_store_tree(ContentStore *s, const MerkleTree **ret) {
        const Manifest *m = s->manifest;
        const TorrentGeometry *g = &m->geometry;
        int r;

        if (!s->tree) {
                if (!m->has_root)
                        return -EINVAL;
                if (g->has_piece_layer)
                        r = merkle_tree_new(g, g->piece_level, m->piece_layer, g->n_pieces, &s->tree);
                else
                        r = merkle_tree_new(g, g->height, m->root, 1, &s->tree);
                if (r < 0)
                        return r;
        }
        *ret = s->tree;
        return 0;
}

void content_store_watch(ContentStore *s, ContentStoreWatch *w) {
        assert(w->piece);
        LIST_PREPEND(s->watches, w);
}

void content_store_unwatch(ContentStore *s, ContentStoreWatch *w) {
        if (LIST_IS_LINKED(s->watches, w))
                LIST_REMOVE(s->watches, w);
}
