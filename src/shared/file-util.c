/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <unistd.h>

#include "file-util.h"
#include "macro.h"

int write_file_atomic(const char *dir, const char *name, const void *data, size_t size) {
        _cleanup_free_ char *tmp = NULL, *path = NULL;
        _cleanup_close_ int dfd = -1;
        const char *p = data;
        int fd, r = 0;

        if (asprintf(&tmp, "%s/.%s.tmp", dir, name) < 0 || asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        while (size > 0) {
                ssize_t w = write(fd, p, size);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                p += w;
                size -= (size_t) w;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        /* The rename itself, durable. */
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return -errno;
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
