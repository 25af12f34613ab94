/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file-util.h"
#include "macro.h"

static int write_all(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t w = write(fd, p, size);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                size -= (size_t) w;
        }
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode, WriteFileFlags flags) {
        _cleanup_free_ char *dir = NULL, *tmp = NULL;
        _cleanup_close_ int dfd = -1;
        const char *base;
        int fd, r;

        assert(path);
        assert(data || size == 0);

        base = strrchr(path, '/');
        dir = base ? strndup(path, (size_t) (base - path)) : strdup(".");
        base = base ? base + 1 : path;
        if (!dir || isempty(base))
                return dir ? -EINVAL : -ENOMEM;
        if (isempty(dir)) {
                free(dir);
                dir = strdup("/");
                if (!dir)
                        return -ENOMEM;
        }
        /* The pid keeps two writers of one file (replicas creating one key) out of each other's way. */
        if (asprintf(&tmp, "%s/.%s.tmp.%d", dir, base, (int) getpid()) < 0)
                return -ENOMEM;

        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        r = write_all(fd, data, size);
        /* open() applied the umask; the caller's mode is what it asked for (a key stays 0600 and a
         * public file 0644 whatever the umask). */
        if (r == 0 && fchmod(fd, mode) < 0)
                r = -errno;
        if (r == 0 && (flags & WRITE_FILE_SYNC) && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0) {
                if (flags & WRITE_FILE_NO_REPLACE)
                        r = link(tmp, path) < 0 ? -errno : 0;  /* EEXIST rather than replacing */
                else
                        r = rename(tmp, path) < 0 ? -errno : 0;
        }
        if (r < 0 || (flags & WRITE_FILE_NO_REPLACE))
                (void) unlink(tmp);
        if (r < 0)
                return r;
        if (flags & WRITE_FILE_SYNC) {
                /* The rename itself, durable. */
                dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 || fsync(dfd) < 0)
                        return -errno;
        }
        return 0;
}

int read_one_line_file(const char *path, char **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t n = 0;
        ssize_t l;

        f = fopen(path, "re");
        if (!f)
                return -errno;
        l = getline(&line, &n, f);
        if (l < 0) {
                /* An empty file; getline() may have allocated a buffer all the same. */
                if (ferror(f))
                        return -EIO;
                free(line);
                line = strdup("");
                if (!line)
                        return -ENOMEM;
        } else
                line[strcspn(line, "\n")] = 0;
        *ret = TAKE_PTR(line);
        return 0;
}

int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, a = 0;

        assert(path);
        assert(ret);

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        for (;;) {
                ssize_t k;

                if (a - n < 2) {
                        char *nb;
                        a = MIN(MAX(a * 2, (size_t) 4096), max + 2);
                        if (a - n < 2)
                                return -EFBIG;
                        nb = realloc(buf, a);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                }
                k = read(fd, buf + n, a - n - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max)
                        return -EFBIG;
        }
        if (!buf && !(buf = malloc(1)))
                return -ENOMEM;
        buf[n] = 0;
        if (ret_size)
                *ret_size = n;
        *ret = TAKE_PTR(buf);
        return 0;
}

int write_string_file(const char *path, const char *s) {
        _cleanup_close_ int fd = -1;
        size_t n = strlen(s);
        ssize_t w;

        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        w = write(fd, s, n);
        if (w < 0)
                return -errno;
        if ((size_t) w != n)
                return -EIO;
        return 0;
}
