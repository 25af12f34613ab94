/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "content-import.h"
#include "file-util.h"
#include "hex.h"
#include "random-util.h"

/* The bounce buffer of the last-resort copy, and the longest single copy_file_range() call (so that a
 * huge file is copied in steps, each of which a signal can interrupt). */
#define COPY_BUFFER_SIZE (1U << 20)
#define COPY_RANGE_STEP (UINT64_C(64) << 20)

/* copy_file_range() cannot copy between these files (another filesystem, on kernels before 5.3 or
 * after 5.18; a filesystem or kernel without it): read and write instead. */
static bool copy_range_unsupported(int e) {
        return e == EXDEV || e == EOPNOTSUPP || e == ENOSYS || e == EINVAL;
}

/* O_TMPFILE is not supported by this filesystem (or kernel). */
static bool tmpfile_unsupported(int e) {
        return e == EOPNOTSUPP || e == EISDIR || e == EINVAL;
}

void content_import_done(ContentImport *c) {
        if (!c)
                return;
        c->manifest = manifest_free(c->manifest);
}

bool content_id_name_valid(const char *s) {
        size_t n = strspn(s, "0123456789abcdef");

        return n == 2 * TORRENT_ID_SIZE && (s[n] == 0 || streq(s + n, ".torrent"));
}

/* The checks of a source, on its fstat() and fstatfs(). */
static int check_source(int fd, struct stat *ret, const char **ret_reason) {
        struct statfs sfs;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode)) {
                *ret_reason = "it is a directory; a content is one file";
                return -EISDIR;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_reason = "it is not a regular file (a FIFO, socket or device has no fixed bytes to hash)";
                return -EBADFD;
        }
        /* /proc and /sys files say size 0 (or 4096) whatever they hold, and /proc/PID/mem would read
         * another process's memory: their bytes are not a file's. */
        if (fstatfs(fd, &sfs) < 0)
                return -errno;
        if (sfs.f_type == PROC_SUPER_MAGIC || sfs.f_type == SYSFS_MAGIC) {
                *ret_reason = "it is a file of /proc or /sys, whose size says nothing about its bytes";
                return -EMEDIUMTYPE;
        }
        if ((uint64_t) st.st_size > TORRENT_LENGTH_MAX) {
                *ret_reason = "it is larger than a content may be (32 TiB)";
                return -EFBIG;
        }
        *ret = st;
        return 0;
}

int content_open_source(const char *path, const char **ret_reason) {
        _cleanup_close_ int fd = -1;
        const char *reason = NULL;
        struct stat st;
        int r, flags;

        assert(path);

        /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. */
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = check_source(fd, &st, &reason);
        if (r < 0) {
                if (ret_reason)
                        *ret_reason = reason;
                return r;
        }
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static bool cancelled(const atomic_bool *cancel) {
        return cancel && atomic_load(cancel);
}

static int copy_by_reading(int src, int dst, uint64_t from, uint64_t size, const atomic_bool *cancel) {
        _cleanup_free_ uint8_t *buf = malloc(COPY_BUFFER_SIZE);

        if (!buf)
                return -ENOMEM;
        for (uint64_t off = from; off < size;) {
                if (off % COPY_RANGE_STEP == 0 && cancelled(cancel))
                        return -ECANCELED;
                ssize_t n = pread(src, buf, (size_t) MIN((uint64_t) COPY_BUFFER_SIZE, size - off), (off_t) off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ESTALE;         /* shrank */
                for (ssize_t done = 0; done < n;) {
                        ssize_t w = pwrite(dst, buf + done, (size_t) (n - done), (off_t) (off + (uint64_t) done));
                        if (w < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        done += w;
                }
                off += (uint64_t) n;
        }
        return 0;
}

/* Copies [0, size) of src to dst. Returns 1 when the copy is a reflink, 0 when the bytes were
 * copied, -ESTALE when src turned out shorter. */
static int copy_content(int src, int dst, uint64_t size, const atomic_bool *cancel) {
        loff_t in = 0, out = 0;

        if (size == 0)
                return 0;
        if (ioctl(dst, FICLONE, src) >= 0)
                return 1;
        /* EOPNOTSUPP / EINVAL: the filesystem cannot share extents (ext4, tmpfs); EXDEV: another
         * filesystem. Anything else the copies below will meet again and report. */

        while ((uint64_t) in < size) {
                ssize_t n;

                if (cancelled(cancel))
                        return -ECANCELED;
                n = copy_file_range(src, &in, dst, &out, (size_t) MIN(size - (uint64_t) in, COPY_RANGE_STEP), 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        /* Not across these filesystems, or not by this kernel: copy by hand what is left. */
                        if (copy_range_unsupported(errno))
                                return copy_by_reading(src, dst, (uint64_t) in, size, cancel);
                        return -errno;
                }
                if (n == 0)
                        return -ESTALE;
        }
        return 0;
}

/* The source as it was when the copy began, still: same size and modification time, and nothing
 * beyond its end (a file that grew and was cut back in between would show its new mtime). */
static int check_unchanged(int fd, const struct stat *before) {
        struct stat st;
        uint8_t b;
        ssize_t n;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size != before->st_size || st.st_mtim.tv_sec != before->st_mtim.tv_sec ||
            st.st_mtim.tv_nsec != before->st_mtim.tv_nsec)
                return -ESTALE;
        n = pread(fd, &b, 1, st.st_size);
        if (n < 0)
                return -errno;
        return n > 0 ? -ESTALE : 0;
}

/* An unnamed file in the directory, or a hidden named one where O_TMPFILE is not supported. *ret_name
 * is NULL for the unnamed one. */
static int open_temporary(int dir_fd, char **ret_name) {
        int fd;

        fd = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
                *ret_name = NULL;
                return fd;
        }
        if (!tmpfile_unsupported(errno))
                return -errno;
        for (int attempt = 0; attempt < 16; attempt++) {
                uint8_t rnd[8];
                char hex[2 * sizeof(rnd) + 1], *name;

                random_bytes(rnd, sizeof(rnd));
                if (asprintf(&name, ".import.%s", hex_encode(rnd, sizeof(rnd), hex)) < 0)
                        return -ENOMEM;
                fd = openat(dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd >= 0) {
                        *ret_name = name;
                        return fd;
                }
                free(name);
                if (errno != EEXIST)
                        return -errno;
        }
        return -EEXIST;
}

/* Gives the temporary file the name id, unless that exists already: 0 linked, 1 existed. */
static int link_into_place(int dir_fd, int fd, const char *tmp_name, const char *id) {
        char proc[64];

        if (tmp_name) {
                if (renameat2(dir_fd, tmp_name, dir_fd, id, RENAME_NOREPLACE) >= 0)
                        return 0;
                if (errno == EEXIST)
                        return 1;
                if (errno != EINVAL && errno != ENOSYS)
                        return -errno;
                /* No RENAME_NOREPLACE here: link() does not replace either. */
                if (linkat(dir_fd, tmp_name, dir_fd, id, 0) < 0)
                        return errno == EEXIST ? 1 : -errno;
                return 0;
        }
        /* linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH; the /proc link does not. */
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, dir_fd, id, AT_SYMLINK_FOLLOW) < 0)
                return errno == EEXIST ? 1 : -errno;
        return 0;
}

static int hash_to_manifest(int fd, Manifest **ret) {
        ContentHash ch = {};
        int r;

        r = content_hash_fd(fd, 0, &ch);
        if (r < 0)
                return r;
        r = manifest_from_content(&ch, ret);
        content_hash_done(&ch);
        return r;
}

int content_import(int dir_fd, const char *dir_path, int src_fd, ContentImport *ret, const char **ret_reason,
                   const atomic_bool *cancel) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_free_ char *tmp_name = NULL, *torrent_path = NULL;
        _cleanup_free_ uint8_t *torrent = NULL;
        _cleanup_close_ int fd = -1;
        const char *reason = NULL;
        char id[TORRENT_ID_HEX_SIZE];
        size_t torrent_size;
        struct stat st;
        bool reflinked = false, existed = false;
        int r;

        assert(dir_fd >= 0);
        assert(dir_path);
        assert(src_fd >= 0);
        assert(ret);

        r = check_source(src_fd, &st, &reason);
        if (r < 0)
                goto fail;

        fd = open_temporary(dir_fd, &tmp_name);
        if (fd < 0) {
                r = fd;
                goto fail;
        }
        r = copy_content(src_fd, fd, (uint64_t) st.st_size, cancel);
        if (r < 0)
                goto fail;
        reflinked = r > 0;
        if (cancelled(cancel)) {
                r = -ECANCELED;
                goto fail;
        }
        /* The copy is ours alone from here: its hash is the id of exactly these bytes. */
        r = hash_to_manifest(fd, &m);
        if (r < 0)
                goto fail;
        /* Checked after hashing, so that a change anywhere in the window of copying and hashing (which
         * is what a user sees as "while it was added") is refused rather than half taken. */
        r = check_unchanged(src_fd, &st);
        if (r < 0)
                goto fail;
        r = manifest_to_torrent(m, NULL, &torrent, &torrent_size);
        if (r < 0)
                goto fail;
        torrent_id_to_hex(m->id, id);

        /* Data first on disk, then the names that make it visible. */
        if (fchmod(fd, 0444) < 0 || fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        r = link_into_place(dir_fd, fd, tmp_name, id);
        if (r < 0)
                goto fail;
        existed = r > 0;
        if (tmp_name) {
                /* Renamed (gone), or not needed: the same bytes are there under the id already. */
                if (existed)
                        (void) unlinkat(dir_fd, tmp_name, 0);
                free(tmp_name);
                tmp_name = NULL;
        }

        if (asprintf(&torrent_path, "%s/%s.torrent", dir_path, id) < 0) {
                r = -ENOMEM;
                goto fail_linked;
        }
        /* A manifest that is there already stays: same id, same bytes, and its time is when the
         * content was added. */
        r = write_file_atomic(torrent_path, torrent, torrent_size, 0444, WRITE_FILE_SYNC | WRITE_FILE_NO_REPLACE);
        if (r < 0 && r != -EEXIST)
                goto fail_linked;
        if (fsync(dir_fd) < 0) {
                r = -errno;
                goto fail_linked;
        }

        *ret = (ContentImport) {
                .size = (uint64_t) st.st_size,
                .existed = existed,
                .reflinked = reflinked,
                .manifest = TAKE_PTR(m),
        };
        memcpy(ret->id, id, sizeof(id));
        return 0;

fail_linked:
        /* A content without its manifest is not complete; the one we linked goes again (one that
         * existed before stays: its manifest may be there). */
        if (!existed)
                (void) unlinkat(dir_fd, id, 0);
fail:
        if (tmp_name)
                (void) unlinkat(dir_fd, tmp_name, 0);
        if (ret_reason)
                *ret_reason = r == -ESTALE ? "the file changed while it was copied and hashed" : reason;
        return r;
}
