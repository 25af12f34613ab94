/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

#include "content.h"

#define READ_CHUNK (UINT32_C(4) << 20)

uint32_t content_piece_length(uint64_t length) {
        uint32_t p = TORRENT_PIECE_LENGTH_MIN;

        while (p < CONTENT_PIECE_LENGTH_MAX && length > (uint64_t) p * CONTENT_PIECES_TARGET)
                p *= 2;
        return p;
}

void content_hash_done(ContentHash *c) {
        if (!c)
                return;
        free(c->piece_layer);
        c->piece_layer = NULL;
}

int content_hasher_init(ContentHasher *h, uint64_t length, uint32_t piece_length) {
        TorrentGeometry g;
        int r;

        assert(h);
        r = torrent_geometry_init(&g, length, piece_length > 0 ? piece_length : content_piece_length(length));
        if (r < 0)
                return r;
        *h = (ContentHasher) { .g = g };
        if (g.has_piece_layer) {
                h->piece_layer = malloc((size_t) g.n_pieces * SHA256_SIZE);
                if (!h->piece_layer)
                        return -ENOMEM;
        }
        merkle_builder_init(&h->piece, 0);
        return 0;
}

void content_hasher_done(ContentHasher *h) {
        if (!h)
                return;
        free(h->piece_layer);
        h->piece_layer = NULL;
}

/* A whole block (or the file's short last one) is in p[0..n): hash it into the current piece, and
 * close the piece when it is full or the file ends. */
static int take_block(ContentHasher *h, const uint8_t *p, size_t n, bool last) {
        uint8_t leaf[SHA256_SIZE], node[SHA256_SIZE];
        int r;

        r = sha256(p, n, leaf);
        if (r < 0)
                return r;
        r = merkle_builder_push(&h->piece, leaf);
        if (r < 0)
                return r;
        if (!last && h->piece.pushed < h->g.blocks_per_piece)
                return 0;

        r = merkle_builder_finish(&h->piece, torrent_piece_leaves(&h->g), node);
        if (r < 0)
                return r;
        if (h->g.has_piece_layer)
                memcpy(h->piece_layer + (size_t) h->pieces_done * SHA256_SIZE, node, SHA256_SIZE);
        else
                memcpy(h->single_root, node, SHA256_SIZE);
        h->pieces_done++;
        merkle_builder_init(&h->piece, 0);
        return 0;
}

int content_hasher_feed(ContentHasher *h, const void *data, size_t size) {
        const uint8_t *p = data;
        int r;

        assert(h);
        assert(data || size == 0);
        if (h->error)
                return h->error;
        if (size > h->g.length - h->fed)
                return (h->error = -EFBIG);

        while (size > 0) {
                /* What the current block still needs: a full block, or what is left of the file. */
                size_t want = (size_t) MIN((uint64_t) TORRENT_BLOCK_SIZE, h->g.length - (h->fed - h->block_fill)) - h->block_fill;
                bool last;

                if (h->block_fill == 0 && size >= want) {
                        /* The common case: hash straight from the caller's buffer, no copy. */
                        h->fed += want;
                        last = h->fed == h->g.length;
                        r = take_block(h, p, want, last);
                } else {
                        size_t n = MIN(want, size);

                        memcpy(h->block + h->block_fill, p, n);
                        h->block_fill += n;
                        h->fed += n;
                        p += n;
                        size -= n;
                        if (n < want)
                                break;
                        last = h->fed == h->g.length;
                        r = take_block(h, h->block, h->block_fill, last);
                        h->block_fill = 0;
                        if (r < 0)
                                return (h->error = r);
                        continue;
                }
                if (r < 0)
                        return (h->error = r);
                p += want;
                size -= want;
        }
        return 0;
}

int content_hasher_finish(ContentHasher *h, ContentHash *ret) {
        ContentHash c = {
                .geometry = h->g,
                .has_root = h->g.length > 0,
        };
        int r = h->error;

        assert(h && ret);
        if (r >= 0 && h->fed != h->g.length)
                r = -ENODATA;
        if (r >= 0 && h->g.has_piece_layer)
                r = merkle_layer_root(h->piece_layer, h->g.n_pieces, h->g.piece_level,
                                      h->g.n_leaves >> h->g.piece_level, c.root);
        if (r < 0) {
                content_hasher_done(h);
                return r;
        }
        if (h->g.has_piece_layer)
                c.piece_layer = TAKE_PTR(h->piece_layer);
        else if (c.has_root)
                memcpy(c.root, h->single_root, SHA256_SIZE);
        *ret = c;
        return 0;
}

int content_hash_buffer(const void *data, size_t size, uint32_t piece_length, ContentHash *ret) {
        ContentHasher *h;
        int r;

        /* ContentHasher holds a block: keep it off the caller's stack. */
        h = malloc(sizeof(ContentHasher));
        if (!h)
                return -ENOMEM;
        r = content_hasher_init(h, size, piece_length);
        if (r >= 0) {
                r = content_hasher_feed(h, data, size);
                if (r >= 0)
                        r = content_hasher_finish(h, ret);
        }
        content_hasher_done(h);
        free(h);
        return r;
}

/* Reading and hashing overlap: a reader thread fills one buffer while the caller's thread hashes the
 * other. From the page cache this is what makes a file hash at the speed of SHA-256 over memory
 * (pread's copy and the page cache lookups cost a quarter of that speed when done in line); from a
 * disk, the reads proceed while the CPU hashes. */
typedef struct Reader {
        int fd;
        uint64_t size;
        uint8_t *buf[2];
        size_t len[2];
        bool full[2];
        bool stop;                      /* the hashing side gave up */
        int error;                      /* the reading side's, once set no more buffers come */
        pthread_mutex_t lock;
        pthread_cond_t cond;
} Reader;

static int read_chunk(Reader *r, uint8_t *buf, uint64_t off, size_t want) {
        size_t got = 0;

        while (got < want) {
                ssize_t n = pread(r->fd, buf + got, want - got, (off_t) (off + got));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ESTALE; /* the file shrank */
                got += (size_t) n;
        }
        return 0;
}

static void *reader_thread(void *userdata) {
        Reader *r = userdata;
        uint64_t off = 0;
        int error = 0;

        for (unsigned i = 0; off < r->size; i ^= 1) {
                size_t want = (size_t) MIN((uint64_t) READ_CHUNK, r->size - off);
                bool stop;

                pthread_mutex_lock(&r->lock);
                while (r->full[i] && !r->stop)
                        pthread_cond_wait(&r->cond, &r->lock);
                stop = r->stop;
                pthread_mutex_unlock(&r->lock);
                if (stop)
                        return NULL;

                error = read_chunk(r, r->buf[i], off, want);

                pthread_mutex_lock(&r->lock);
                if (error < 0)
                        r->error = error;
                else {
                        r->len[i] = want;
                        r->full[i] = true;
                }
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
                if (error < 0)
                        return NULL;
                off += want;
        }

        /* A file that grew (or was replaced in place) would give the id of a prefix. */
        uint8_t extra;
        ssize_t n;
        do
                n = pread(r->fd, &extra, 1, (off_t) off);
        while (n < 0 && errno == EINTR);
        if (n != 0) {
                pthread_mutex_lock(&r->lock);
                r->error = n < 0 ? -errno : -ESTALE;
                pthread_cond_broadcast(&r->cond);
                pthread_mutex_unlock(&r->lock);
        }
        return NULL;
}

int content_hash_fd(int fd, uint32_t piece_length, ContentHash *ret) {
        _cleanup_free_ uint8_t *buf0 = NULL, *buf1 = NULL;
        _cleanup_free_ ContentHasher *h = NULL;
        Reader rd = {
                .fd = fd,
                .lock = PTHREAD_MUTEX_INITIALIZER,
                .cond = PTHREAD_COND_INITIALIZER,
        };
        pthread_t thread;
        struct stat st;
        uint64_t done = 0;
        int r;

        assert(fd >= 0 && ret);
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        rd.size = (uint64_t) st.st_size;

        h = malloc(sizeof(ContentHasher));
        buf0 = malloc(READ_CHUNK);
        buf1 = malloc(READ_CHUNK);
        if (!h || !buf0 || !buf1)
                return -ENOMEM;
        rd.buf[0] = buf0;
        rd.buf[1] = buf1;
        r = content_hasher_init(h, rd.size, piece_length);
        if (r < 0)
                return r;
        /* A hint only: the kernel may read ahead further. */
        (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        r = -pthread_create(&thread, NULL, reader_thread, &rd);
        if (r < 0) {
                content_hasher_done(h);
                return r;
        }

        for (unsigned i = 0; r >= 0 && done < rd.size; i ^= 1) {
                pthread_mutex_lock(&rd.lock);
                while (!rd.full[i] && rd.error == 0)
                        pthread_cond_wait(&rd.cond, &rd.lock);
                r = rd.full[i] ? 0 : rd.error;
                pthread_mutex_unlock(&rd.lock);
                if (r < 0)
                        break;

                r = content_hasher_feed(h, rd.buf[i], rd.len[i]);
                done += rd.len[i];

                pthread_mutex_lock(&rd.lock);
                rd.full[i] = false;
                if (r < 0)
                        rd.stop = true;
                pthread_cond_broadcast(&rd.cond);
                pthread_mutex_unlock(&rd.lock);
        }
        if (r < 0) {
                pthread_mutex_lock(&rd.lock);
                rd.stop = true;
                pthread_cond_broadcast(&rd.cond);
                pthread_mutex_unlock(&rd.lock);
        }
        (void) pthread_join(thread, NULL);
        /* The reader's last word: the check that the file did not grow. */
        if (r >= 0 && rd.error < 0)
                r = rd.error;
        if (r < 0) {
                content_hasher_done(h);
                return r;
        }
        return content_hasher_finish(h, ret);
}
