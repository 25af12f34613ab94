/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Bytes as hex digits: ids, info-hashes, keys and tokens in logs, files and URLs. */

#include "macro.h"

/* Lowercase hex of p[0..n); out must hold 2 * n + 1 bytes. Returns out. */
char *hex_encode(const void *p, size_t n, char *out);
/* Parses exactly 2 * n hex digits (either case) into ret[0..n); -EINVAL, ret untouched, otherwise. */
int hex_decode(const char *s, void *ret, size_t n);
