/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A stream of JSON objects, one per line, fed in whatever pieces the transfer delivers: the Docker
 * engine's event stream and its image pull progress. Each line is parsed whole and strictly, like
 * every other input, so the verdict never depends on where the pieces were cut (json-c's incremental
 * tokener ends top-level values and even malformed numbers differently depending on the cuts, and
 * lets invalid UTF-8 through). Blank lines, and blanks around an object, are nothing. */

#include <json-c/json.h>

#include "macro.h"

#define JSON_LINE_MAX (256U * 1024U)

/* Called for each line's object (valid during the call). */
typedef void (*JsonLineHandler)(json_object *o, void *userdata);

/* Starts zeroed. */
typedef struct JsonLines {
        char *line;             /* the start of a line whose end has not come yet */
        size_t line_size;
} JsonLines;

/* -EBADMSG when a line is not one JSON object or is longer than JSON_LINE_MAX. A last line without
 * its "\n" is kept for the next piece. */
int json_lines_feed(JsonLines *s, const void *data, size_t size, JsonLineHandler handler, void *userdata);
/* The stream is over: a last line without "\n" counts (for a body that simply ends). */
int json_lines_end(JsonLines *s, JsonLineHandler handler, void *userdata);
void json_lines_done(JsonLines *s);
