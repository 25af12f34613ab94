/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>

#include "json-check.h"
#include "json-util.h"

int check_fail(CheckError *e, const char *field, const char *format, ...) {
        va_list ap;

        snprintf(e->field, sizeof(e->field), "%s", field ?: "");
        va_start(ap, format);
        vsnprintf(e->message, sizeof(e->message), format, ap);
        va_end(ap);
        return -EINVAL;
}

int check_parse_object(const char *body, size_t size, json_object **ret, CheckError *e) {
        const char *why = NULL;
        json_object *o = NULL;
        int r;

        if (size == 0)
                return check_fail(e, NULL, "Request body is empty; a JSON object is expected.");
        r = json_parse_strict(body, size, &o, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return check_fail(e, NULL, "Request body is not valid JSON: %s.", why ?: "parse error");
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return check_fail(e, NULL, "Request body must be a JSON object.");
        }
        *ret = o;
        return 0;
}

int check_known_keys(json_object *o, const char *const *allowed, const char *prefix, CheckError *e) {
        json_object_object_foreach(o, key, value) {
                bool known = false;
                (void) value;
                for (const char *const *a = allowed; *a; a++)
                        if (streq(key, *a)) {
                                known = true;
                                break;
                        }
                if (!known) {
                        char field[128];
                        snprintf(field, sizeof(field), "%s%.100s", prefix ?: "", key);
                        return check_fail(e, field, "Unknown field \"%s%.100s\".", prefix ?: "", key);
                }
        }
        return 0;
}

bool check_string_value(json_object *v, size_t max_len) {
        const char *s = json_object_get_string(v);
        size_t len = (size_t) json_object_get_string_len(v);
        return strlen(s) == len && len <= max_len;
}

int check_string(json_object *o, const char *key, bool required, size_t max_len, bool (*valid)(const char *),
                 const char *what, const char **ret, CheckError *e) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !v) {
                if (required)
                        return check_fail(e, key, "Field \"%s\" is required.", key);
                return -ENOENT;
        }
        if (!json_object_is_type(v, json_type_string))
                return check_fail(e, key, "Field \"%s\" must be a string.", key);
        if (!check_string_value(v, max_len))
                return check_fail(e, key, "Field \"%s\" must be at most %zu bytes and contain no NUL.", key, max_len);
        if (json_object_get_string_len(v) == 0 && required)
                return check_fail(e, key, "Field \"%s\" must not be empty.", key);
        if (valid && !valid(json_object_get_string(v)))
                return check_fail(e, key, "Field \"%s\" is not a valid %s.", key, what ?: "value");
        *ret = json_object_get_string(v);
        return 0;
}

int check_int(json_object *o, const char *key, bool required, int64_t min, int64_t max, int64_t *ret, CheckError *e) {
        int64_t i;
        int r;

        r = json_get_int64(o, key, &i);
        if (r == -ENOENT) {
                if (required)
                        return check_fail(e, key, "Field \"%s\" is required.", key);
                return -ENOENT;
        }
        if (r == -EINVAL)
                return check_fail(e, key, "Field \"%s\" must be an integer.", key);
        if (r < 0 || i < min || i > max)
                return check_fail(e, key, "Field \"%s\" must be between %" PRIi64 " and %" PRIi64 ".", key, min, max);
        *ret = i;
        return 0;
}

int check_bool(json_object *o, const char *key, bool required, bool *ret, CheckError *e) {
        int r = json_get_bool(o, key, ret);

        if (r == -ENOENT) {
                if (required)
                        return check_fail(e, key, "Field \"%s\" is required.", key);
                return -ENOENT;
        }
        if (r < 0)
                return check_fail(e, key, "Field \"%s\" must be true or false.", key);
        return 0;
}

static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool all_chars(const char *s, const char *extra) {
        for (; *s; s++)
                if (!is_alnum(*s) && !strchr(extra, *s))
                        return false;
        return true;
}

bool valid_label_key(const char *s) {
        size_t l = strlen(s);
        return l >= 1 && l <= 63 && is_alnum(s[0]) && all_chars(s, "._/-");
}

bool valid_env_name(const char *s) {
        size_t l = strlen(s);
        return l >= 1 && l <= 128 && (s[0] == '_' || (is_alnum(s[0]) && !(s[0] >= '0' && s[0] <= '9'))) &&
               all_chars(s, "_");
}

bool valid_image(const char *s) {
        size_t l = strlen(s);
        return l >= 1 && l <= 255 && is_alnum(s[0]) && all_chars(s, "._/:@-") && !strstr(s, "..") && !strstr(s, "//");
}

bool valid_runtime(const char *s) {
        size_t l = strlen(s);
        return l >= 1 && l <= 64 && is_alnum(s[0]) && all_chars(s, "._-");
}

bool valid_content_id(const char *s) {
        if (strlen(s) != 64)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
                        return false;
        return true;
}
