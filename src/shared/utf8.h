/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* UTF-8 as RFC 3629 defines it: no overlong forms, no encoded surrogates (json-c lets ED A0 80
 * through, PostgreSQL refuses it), nothing beyond U+10FFFF. What we pass on as JSON text, what we
 * read back from peers and what we cut to a size all go through here. */

#include "macro.h"

/* Length (1-4) of the valid character at s[0..n), or 0 when it is not one. NUL is a character. */
size_t utf8_char_len(const void *s, size_t n);
/* Whether all of s[0..n) is valid UTF-8 (NUL bytes allowed). */
bool utf8_is_valid(const void *s, size_t n);

/* A NUL-terminated copy of s[0..n) in which every byte that is not part of a valid character, and
 * every NUL, is replaced by U+FFFD. NULL on allocation failure. */
char *utf8_sanitize(const char *s, size_t n);

/* The length of the longest prefix of s[0..n) of at most max bytes that does not cut a character. */
size_t utf8_prefix_len(const char *s, size_t n, size_t max);
/* The offset from which the last at most max bytes of s[0..n) start without cutting a character. */
size_t utf8_suffix_start(const char *s, size_t n, size_t max);
