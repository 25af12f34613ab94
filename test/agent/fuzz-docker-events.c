/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the JSON-lines reader of Docker's streams (json-lines.c: the event stream and
 * the image pull progress). The first byte chooses how the rest is cut into pieces. Properties: never
 * crash or leak; only objects come out; fed whole or in pieces, the same objects come out and the
 * same verdict, also for a last line without its newline. */

#include "json-lines.h"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Seen {
        unsigned n;
        uint64_t hash;
} Seen;

static void on_event(json_object *event, void *userdata) {
        Seen *s = userdata;
        const char *text = json_to_string(event);

        if (!json_object_is_type(event, json_type_object))
                abort();
        s->n++;
        for (const char *p = text; p && *p; p++)
                s->hash = s->hash * 131 + (uint8_t) *p;
}

static int run(const uint8_t *data, size_t size, size_t piece, Seen *seen) {
        JsonLines s = {};
        int r = 0;

        for (size_t i = 0; i < size && r >= 0; i += piece)
                r = json_lines_feed(&s, data + i, MIN(piece, size - i), on_event, seen);
        if (r >= 0)
                r = json_lines_end(&s, on_event, seen);
        json_lines_done(&s);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Seen whole = {}, cut = {};
        size_t piece;
        int r1, r2;

        if (size < 1)
                return 0;
        piece = data[0] % 16 + 1;
        data++;
        size--;
        r1 = run(data, size, size ?: 1, &whole);
        r2 = run(data, size, piece, &cut);
        if (r1 == -ENOMEM || r2 == -ENOMEM)
                return 0;
        if (r1 != r2 || (r1 >= 0 && (whole.n != cut.n || whole.hash != cut.hash))) {
                fprintf(stderr, "whole: %d, %u events; in pieces of %zu: %d, %u events\n", r1, whole.n, piece, r2, cut.n);
                abort();
        }
        return 0;
}
