/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* NULL-terminated arrays of strings ("strv", as systemd calls them): argv-like lists of hosts, URLs,
 * command words and environment entries. A NULL list is an empty one everywhere. */

#include "macro.h"

static inline void strv_free(char **l) {
        if (!l)
                return;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
}
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

size_t strv_length(char *const *l);
bool strv_contains(char *const *l, const char *s);
/* Appends a copy of value (or of the formatted string); the list is unchanged on failure. */
int strv_extend(char ***l, const char *value);
int strv_extendf(char ***l, const char *format, ...) _printf_(2, 3);
/* Splits on commas and whitespace, dropping empty words; NULL only when out of memory. */
char **strv_split(const char *s);
/* The same on any of the characters of separators. */
char **strv_split_separators(const char *s, const char *separators);
/* The words joined with sep between them; "" for an empty list; NULL when out of memory. */
char *strv_join(char *const *l, const char *sep);
