/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the query of GET /api/tasks (list_query_parse). The input is a query string
 * as libmicrohttpd hands it over once decoded: KEY=VALUE pairs separated by '&' (status, limit,
 * after, label). Properties: never crash or leak; a refusal is -EINVAL with a field and a message;
 * what is accepted has a limit in range, a positive cursor, and at most 16 valid label filters. */

#include "list-query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(list_query_done) ListQuery q = {};
        _cleanup_free_ char *text = NULL;
        const char *status = NULL, *limit = NULL, *after = NULL, *labels[LIST_MAX_LABEL_FILTERS + 1];
        size_t n = 0;
        CheckError e = {};
        char *p, *pair;
        int r;

        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;

        for (p = text; (pair = strsep(&p, "&"));) {
                char *v = strchr(pair, '=');
                if (v)
                        *v++ = 0;
                if (streq(pair, "status"))
                        status = v ?: "";
                else if (streq(pair, "limit"))
                        limit = v ?: "";
                else if (streq(pair, "after"))
                        after = v ?: "";
                else if (streq(pair, "label") && n < ELEMENTSOF(labels))
                        labels[n++] = v ?: "";
        }

        r = list_query_parse(status, limit, after, labels, n, &q, &e);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EINVAL || isempty(e.field) || isempty(e.message))
                        abort();
                return 0;
        }
        if (q.limit < 1 || q.limit > LIST_LIMIT_MAX || n > LIST_MAX_LABEL_FILTERS ||
            (n > 0 && (!q.labels || json_object_object_length(q.labels) > (int) n)) || (n == 0 && q.labels))
                abort();
        if (q.after && (q.after[0] < '1' || q.after[0] > '9') && q.after[0] != '+' && q.after[0] != '0')
                abort();
        if (q.labels) {
                json_object_object_foreach(q.labels, k, v)
                        if (!valid_label_key(k) || !json_object_is_type(v, json_type_string))
                                abort();
        }
        return 0;
}
