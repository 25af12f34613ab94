/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers on json-c: cleanup, strict parsing of a whole document, and typed getters that
 * return negative errno instead of json-c's silent defaults. */

#include <json-c/json.h>

#include "macro.h"

static inline void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

/* Parses exactly one JSON document (trailing garbage is an error), with json-c's strict mode and a
 * depth limit. On failure returns -EINVAL and, if ret_error is non-NULL, a static description. */
int json_parse_strict(const char *text, size_t size, json_object **ret, const char **ret_error);

/* Typed member access. Return -ENOENT when missing (or JSON null), -EINVAL on a wrong type. */
int json_get_string(json_object *o, const char *key, const char **ret);
int json_get_int64(json_object *o, const char *key, int64_t *ret);
int json_get_bool(json_object *o, const char *key, bool *ret);

/* Adds a member, taking ownership of value; returns -ENOMEM if value is NULL. */
int json_add(json_object *o, const char *key, json_object *value);
int json_add_string(json_object *o, const char *key, const char *value);
int json_add_int64(json_object *o, const char *key, int64_t value);

const char *json_to_string(json_object *o); /* plain, no slash escaping; owned by o */
