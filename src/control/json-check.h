/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Strict checking of request bodies: each helper either yields a value or fills a CheckError that names
 * the offending field and says what is wrong, which the API returns as {"error", "field"} with 400. */

#include <json-c/json.h>

#include "id-util.h"
#include "macro.h"

typedef struct CheckError {
        char field[128];
        char message[256];
} CheckError;

int check_fail(CheckError *e, const char *field, const char *format, ...) _printf_(3, 4);

/* Parses the body as one JSON object. */
int check_parse_object(const char *body, size_t size, json_object **ret, CheckError *e);
/* Rejects members not in allowed (NULL-terminated). prefix is prepended to field names ("resources."). */
int check_known_keys(json_object *o, const char *const *allowed, const char *prefix, CheckError *e);

/* Returns 0 and sets *ret, -ENOENT when absent (and !required), or fails with -EINVAL. */
int check_string(json_object *o, const char *key, bool required, size_t max_len, bool (*valid)(const char *),
                 const char *what, const char **ret, CheckError *e);
int check_int(json_object *o, const char *key, bool required, int64_t min, int64_t max, int64_t *ret, CheckError *e);
int check_bool(json_object *o, const char *key, bool required, bool *ret, CheckError *e);

/* A string without NUL bytes (json-c allows \u0000 inside strings) and at most max_len bytes. */
bool check_string_value(json_object *v, size_t max_len);

/* Identifier syntaxes. */
bool valid_label_key(const char *s);    /* [A-Za-z0-9][A-Za-z0-9._/-]{0,62} */
bool valid_env_name(const char *s);     /* [A-Za-z_][A-Za-z0-9_]{0,127} */
bool valid_image(const char *s);        /* a Docker image reference */
bool valid_runtime(const char *s);      /* [A-Za-z0-9][A-Za-z0-9._-]{0,63} */
bool valid_content_id(const char *s);   /* 64 lowercase hex digits */
