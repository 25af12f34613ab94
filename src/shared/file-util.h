/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <sys/types.h>

typedef enum WriteFileFlags {
        WRITE_FILE_SYNC       = 1 << 0, /* on disk when it returns: fsync of the file and the directory */
        WRITE_FILE_NO_REPLACE = 1 << 1, /* -EEXIST when path exists, instead of replacing it */
} WriteFileFlags;

/* Writes data to path so that a crash leaves either the old file or the whole new one: a temporary
 * file .NAME.tmp.PID beside it, then rename (or link, with WRITE_FILE_NO_REPLACE). The file gets
 * exactly mode, whatever the umask. Whoever lists such a directory must skip (or remove) names
 * starting with '.': those are temporary files a crash left behind. Negative errno on failure (the
 * temporary file removed). */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode, WriteFileFlags flags);

/* Reads the first line of a small file (a /proc or /sys attribute, a pid file) without its newline;
 * an empty file gives "". */
int read_one_line_file(const char *path, char **ret);
/* Reads a whole file of at most max bytes, NUL-terminated (the size without it in *ret_size, if
 * asked): /proc files report a size of 0, so it reads until the end. -EFBIG when it is larger. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);
/* Writes s to an existing file in one write(2), as /proc and /sys attributes want. */
int write_string_file(const char *path, const char *s);
