/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for json_parse_strict() and the typed getters, which every daemon uses on what it
 * receives. Properties: never crash or leak; a refusal is -EINVAL (or -E2BIG) with a reason; what is
 * accepted has only finite numbers, serialises (json_to_string) to text that is accepted again as an
 * equal value, and the getters answer with their documented codes. */

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ json_object *o = NULL, *again = NULL;
        const char *why = NULL, *text;
        int r;

        r = json_parse_strict((const char *) data, size, &o, &why);
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
