/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "json-lines.h"
#include "json-util.h"

static int one_line(const char *line, size_t n, JsonLineHandler handler, void *userdata) {
        _cleanup_json_ json_object *o = NULL;

        while (n > 0 && strchr(" \t\r", line[n - 1]) && line[n - 1] != 0)
                n--;
        while (n > 0 && strchr(" \t\r", line[0]) && line[0] != 0) {
                line++;
                n--;
        }
        if (n == 0)
                return 0;
        if (json_parse_strict(line, n, &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
                return -EBADMSG;
        handler(o, userdata);
        return 0;
}

int json_lines_feed(JsonLines *s, const void *data, size_t size, JsonLineHandler handler, void *userdata) {
        const char *p = data;
        int r;

        while (size > 0) {
                const char *nl = memchr(p, '\n', size);
                size_t n = nl ? (size_t) (nl - p) : size;

                if (s->line_size + n > JSON_LINE_MAX)
                        return -EBADMSG;
                if (nl && s->line_size == 0)
                        r = one_line(p, n, handler, userdata);          /* the whole line is here */
                else {
                        char *b = realloc(s->line, s->line_size + n + 1);
                        if (!b)
                                return -ENOMEM;
                        memcpy(b + s->line_size, p, n);
                        s->line = b;
                        s->line_size += n;
                        r = 0;
                        if (nl) {
                                r = one_line(s->line, s->line_size, handler, userdata);
                                s->line_size = 0;
                        }
                }
                if (r < 0)
                        return r;
                if (nl)
                        n++;
                p += n;
                size -= n;
        }
        return 0;
}

int json_lines_end(JsonLines *s, JsonLineHandler handler, void *userdata) {
        int r = s->line_size > 0 ? one_line(s->line, s->line_size, handler, userdata) : 0;

        s->line_size = 0;
        return r;
}

void json_lines_done(JsonLines *s) {
        free(s->line);
        *s = (JsonLines) {};
}
