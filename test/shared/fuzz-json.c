/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for json_parse_strict() and the typed getters, which every daemon uses on what it
 * receives. Properties: never crash or leak; a refusal is -EINVAL (or -E2BIG) with a reason; what is
 * accepted has only finite numbers, serialises (json_to_string) to text that is accepted again as an
 * equal value, and the getters answer with their documented codes; and whatever the text, accepted
 * or not, the parse leaves nothing behind: a fixed document of escapes parsed right after it is
 * always the same value (the parser's state is kept from one text to the next, which once carried a
 * refused text's surrogate into the next body). */

#include <math.h>

#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_getters(json_object *o) {
        const char *s;
        int64_t i;
        bool b;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return;
        json_object_object_foreach(o, k, v) {
                r = json_get_string(o, k, &s);
                if (r != 0 && r != -ENOENT && r != -EINVAL)
                        abort();
                if (r == 0 && (!v || !json_object_is_type(v, json_type_string) || !s))
                        abort();
                r = json_get_int64(o, k, &i);
                if (r != 0 && r != -ENOENT && r != -EINVAL && r != -ERANGE)
                        abort();
                if (r == 0 && (i == INT64_MIN || !json_object_is_type(v, json_type_int)))
                        abort();
                r = json_get_bool(o, k, &b);
                if (r != 0 && r != -ENOENT && r != -EINVAL)
                        abort();
        }
}

/* Parsed after every input: escapes in a key and in values, a surrogate pair among them. */
static void check_nothing_left_behind(void) {
        static const char text[] = "{\"\\u006b\": [\"\\u0041\\u00e9\", \"\\ud83d\\ude00\", 1]}";
        _cleanup_json_ json_object *o = NULL;
        json_object *a;
        int r;

        r = json_parse_strict(text, strlen(text), &o, NULL);
        if (r == -ENOMEM)
                return;
        if (r < 0 || !(a = json_object_object_get(o, "k")) || json_object_array_length(a) != 3 ||
            !streq(json_object_get_string(json_object_array_get_idx(a, 0)), "A\xc3\xa9") ||
            !streq(json_object_get_string(json_object_array_get_idx(a, 1)), "\xf0\x9f\x98\x80") ||
            json_object_get_int64(json_object_array_get_idx(a, 2)) != 1) {
                fprintf(stderr, "the document parsed after this input came out as %s\n", o ? json_to_string(o) : "(refused)");
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ json_object *o = NULL, *again = NULL;
        const char *why = NULL, *text;
        int r;

        r = json_parse_strict((const char *) data, size, &o, &why);
        check_nothing_left_behind();
        if (r < 0) {
                if ((r != -EINVAL && r != -E2BIG && r != -ENOMEM) || (r == -EINVAL && !why))
                        abort();
                return 0;
        }
        check_getters(o);

        text = json_to_string(o);
        if (!text)
                abort();
        r = json_parse_strict(text, strlen(text), &again, &why);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                fprintf(stderr, "re-parse of \"%s\" failed: %s\n", text, why);
                abort();
        }
        if (!json_object_equal(o, again)) {
                fprintf(stderr, "re-parse of \"%s\" differs\n", text);
                abort();
        }
        return 0;
}
