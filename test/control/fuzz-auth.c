/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the tokens file ("KIND NAME TOKEN" lines) and the Authorization header.
 * Properties: never crash or leak; a file is either refused (always when it holds a NUL byte) or
 * yields entries whose tokens each authenticate; any header (the input as one string) gives an identity or none. */

#include "auth.h"
#include "json-check.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(auth_freep) Auth *a = NULL;
        _cleanup_free_ char *text = NULL;
        FILE *f;
        int r = 0;

        log_set_max_level(LOG_CRIT);
        if (auth_new(NULL, NULL, false, &a) < 0)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;

        if (size > 0) {
                f = fmemopen(text, size, "r");
                if (!f)
                        return 0;
                r = auth_load_stream(a, f, "fuzz");
                fclose(f);
                if (r < 0 && r != -EINVAL && r != -ENOMEM)
                        abort();
                /* A NUL byte would hide the rest of its line: the file is refused. */
                if (r >= 0 && memchr(data, 0, size))
                        abort();
        }

        /* Each line's token, as a client would send it, must authenticate as that line's entry. */
        for (char *line = text, *next; line && line < text + size; line = next) {
                AuthKind kind;
                char *name = NULL, *token = NULL, header[600];
                AuthIdentity id;

                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (auth_parse_line(line, &kind, &name, &token) <= 0)
                        continue;
                if (isempty(token) || strlen(token) > 512 || strpbrk(token, " \t\n") || !id_is_valid(name))
                        abort();
                snprintf(header, sizeof(header), "Bearer %s", token);
                id = auth_check_header(a, header);
                if (r >= 0 && id.kind == AUTH_NONE)
                        abort();
                free(name);
                free(token);
        }

        (void) auth_check_header(a, text);
        return 0;
}
