/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <math.h>
#include <pthread.h>

#include "json-util.h"
#include "utf8.h"

#define JSON_MAX_DEPTH 32

/* json-c turns "\u0000" into a NUL inside a string (and cuts object keys there), so a C consumer
 * would see "abc" where the client sent "abc\u0000xyz". A backslash escapes only when it is not
 * itself escaped, i.e. when it ends an odd run of backslashes. */
static bool has_nul_escape(const char *text, size_t size) {
        for (size_t i = 0; i + 6 <= size; i++) {
                size_t run = 1;

                if (text[i] != '\\' || memcmp(text + i + 1, "u0000", 5) != 0)
                        continue;
                while (run <= i && text[i - run] == '\\')
                        run++;
                if (run % 2 == 1)
                        return true;
        }
        return false;
}

/* json-c accepts NaN, Infinity and numbers that overflow a double (1e400): none of them is JSON. */
static bool numbers_are_finite(json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_double:
                return isfinite(json_object_get_double(o));
        case json_type_array:
                for (size_t i = 0, n = json_object_array_length(o); i < n; i++)
                        if (!numbers_are_finite(json_object_array_get_idx(o, i)))
                                return false;
                return true;
        case json_type_object: {
                json_object_object_foreach(o, key, value) {
                        (void) key;
                        if (!numbers_are_finite(value))
                                return false;
                }
                return true;
        }
        default:
                return true;
        }
}

/* One tokener per thread, reset between texts: a new one is allocated and zeroed with its whole parse
 * stack, which was a twentieth of mc-control's CPU per push. Kept in thread-specific data, whose
 * destructor frees it when a thread that parsed ends.
 *
 * Only a tokener that parsed a whole document is kept. json_tokener_reset() (json-c 0.16 to 0.18)
 * clears the parse stack and the error, not the high surrogate of a \uD800-\uDBFF escape that waits
 * for its low half: a text refused there left it set, and the next text's first \u escape came out
 * behind a U+FFFD, so that one client's bad body changed another's strings. After a whole document
 * every string has ended, and with it any surrogate; a refused text costs a new tokener. */
static pthread_key_t tokener_key;
static pthread_once_t tokener_once = PTHREAD_ONCE_INIT;
static bool tokener_key_ok = false;

static void tokener_free(void *p) {
        json_tokener_free(p);
}

static void tokener_key_make(void) {
        tokener_key_ok = pthread_key_create(&tokener_key, tokener_free) == 0;
}

static json_tokener *tokener_get(void) {
        json_tokener *tok;

        (void) pthread_once(&tokener_once, tokener_key_make);
        tok = tokener_key_ok ? pthread_getspecific(tokener_key) : NULL;
        if (!tok)
                return json_tokener_new_ex(JSON_MAX_DEPTH);
        (void) pthread_setspecific(tokener_key, NULL);
        json_tokener_reset(tok);
        return tok;
}

static void tokener_put(json_tokener *tok, enum json_tokener_error err) {
        if (err == json_tokener_success && tokener_key_ok && !pthread_getspecific(tokener_key) &&
            pthread_setspecific(tokener_key, tok) == 0)
                return;
        json_tokener_free(tok);
}

int json_parse_strict(const char *text, size_t size, json_object **ret, const char **ret_error) {
        json_tokener *tok;
        json_object *o;
        enum json_tokener_error err;
        size_t consumed;

        if (size > INT32_MAX)
                return -E2BIG;
        if (memchr(text, 0, size)) {
                if (ret_error)
                        *ret_error = "NUL byte in JSON text";
                return -EINVAL;
        }
        if (has_nul_escape(text, size)) {
                if (ret_error)
                        *ret_error = "\\u0000 in a JSON string";
                return -EINVAL;
        }
        if (!utf8_is_valid((const unsigned char *) text, size)) {
                if (ret_error)
                        *ret_error = "invalid UTF-8 in JSON text";
                return -EINVAL;
        }
        tok = tokener_get();
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, text, (int) size);
        err = json_tokener_get_error(tok);
        consumed = json_tokener_get_parse_end(tok);
        if (err == json_tokener_continue) {
                /* All text was consumed but the value may go on: a top-level number or literal
                 * ("123", "true") ends only at the end of the text, which json-c is told with an
                 * explicit terminator. Anything still unfinished (an open "{") is then an error. */
                o = json_tokener_parse_ex(tok, "", 1);
                err = json_tokener_get_error(tok);
                consumed = size;
                if (err != json_tokener_success) {
                        json_object_put(o);
                        tokener_put(tok, err);
                        if (ret_error)
                                *ret_error = "unexpected end of JSON text";
                        return -EINVAL;
                }
        }
        tokener_put(tok, err);
        if (err != json_tokener_success) {
                if (ret_error)
                        *ret_error = json_tokener_error_desc(err);
                return -EINVAL;
        }
        for (size_t i = consumed; i < size; i++)
                if (!strchr(" \t\r\n", text[i])) {
                        json_object_put(o);
                        if (ret_error)
                                *ret_error = "trailing characters after the JSON value";
                        return -EINVAL;
                }
        if (!numbers_are_finite(o)) {
                json_object_put(o);
                if (ret_error)
                        *ret_error = "number out of range (NaN, Infinity or beyond a double)";
                return -EINVAL;
        }
        *ret = o;
        return 0;
}

int json_get_string(json_object *o, const char *key, const char **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !v)
                return -ENOENT;
        if (!json_object_is_type(v, json_type_string))
                return -EINVAL;
        *ret = json_object_get_string(v);
        return 0;
}

int json_get_int64(json_object *o, const char *key, int64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !v)
                return -ENOENT;
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        /* json-c keeps numbers above INT64_MAX as unsigned and clamps them when read as signed;
         * numbers below INT64_MIN are clamped at parse time with errno set. Either way: out of range. */
        errno = 0;
        int64_t i = json_object_get_int64(v);
        if (errno == ERANGE || (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t) INT64_MAX) ||
            i == INT64_MIN)
                return -ERANGE;
        *ret = i;
        return 0;
}

int json_get_bool(json_object *o, const char *key, bool *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !v)
                return -ENOENT;
        if (!json_object_is_type(v, json_type_boolean))
                return -EINVAL;
        *ret = json_object_get_boolean(v);
        return 0;
}

int json_add(json_object *o, const char *key, json_object *value) {
        if (!value)
                return -ENOMEM;
        if (json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

int json_add_string(json_object *o, const char *key, const char *value) {
        if (!value) /* json-c represents null as a NULL object */
                return json_object_object_add(o, key, NULL) < 0 ? -ENOMEM : 0;
        return json_add(o, key, json_object_new_string(value));
}

int json_add_int64(json_object *o, const char *key, int64_t value) {
        return json_add(o, key, json_object_new_int64(value));
}

const char *json_to_string(json_object *o) {
        return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}
