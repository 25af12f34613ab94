/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

/* Writes data to dir/name so that a crash leaves either the old file or the whole new one, and a
 * return of 0 means it is on disk: a temporary file dir/.name.tmp, fsync, rename, fsync of the
 * directory. Whoever reads dir must skip (or remove) names starting with '.': those are temporary
 * files a crash left behind. Negative errno on failure (the temporary file removed). */
int write_file_atomic(const char *dir, const char *name, const void *data, size_t size);

/* Reads the first line of a small file (a /proc or /sys attribute, a pid file) without its newline;
 * an empty file gives "". */
int read_one_line_file(const char *path, char **ret);
/* Writes s to an existing file in one write(2), as /proc and /sys attributes want. */
int write_string_file(const char *path, const char *s);
