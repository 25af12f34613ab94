/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "config.h"
#include "control.h"
#include "json-util.h"
#include "list-query.h"

void list_query_done(ListQuery *q) {
        json_object_put(q->labels);
        *q = (ListQuery) {};
}

int list_query_parse(const char *status, const char *limit, const char *after, const char *const *labels,
                     size_t n_labels, ListQuery *ret, CheckError *e) {
        _cleanup_json_ json_object *filters = NULL;
        int64_t lim = LIST_LIMIT_DEFAULT;

        if (status && task_status_from_string(status) < 0)
                return check_fail(e, "status", "Unknown status \"%.32s\" (queued, leased, running, "
                                  "succeeded, failed, timed_out, cancelled).", status);

        if (limit && (parse_int64(limit, &lim) < 0 || lim < 1 || lim > LIST_LIMIT_MAX))
                return check_fail(e, "limit", "\"limit\" must be an integer from 1 to %d.", LIST_LIMIT_MAX);

        if (after) {
                int64_t a;
                if (parse_int64(after, &a) < 0 || a < 1)
                        return check_fail(e, "after", "\"after\" must be a cursor from a previous page's \"next\".");
        }

        if (n_labels > LIST_MAX_LABEL_FILTERS)
                return check_fail(e, "label", "At most %d label filters.", LIST_MAX_LABEL_FILTERS);
        if (n_labels > 0) {
                filters = json_object_new_object();
                if (!filters)
                        return -ENOMEM;
                for (size_t i = 0; i < n_labels; i++) {
                        const char *eq = strchr(labels[i], '=');
                        char key[64];

                        if (!eq || eq == labels[i] || (size_t) (eq - labels[i]) >= sizeof(key) || strlen(eq + 1) > 256)
                                return check_fail(e, "label", "Label filter \"%.80s\" must be KEY=VALUE.", labels[i]);
                        memcpy(key, labels[i], (size_t) (eq - labels[i]));
                        key[eq - labels[i]] = 0;
                        if (!valid_label_key(key))
                                return check_fail(e, "label", "Label key \"%s\" is invalid.", key);
                        json_add_string(filters, key, eq + 1);
                }
        }

        *ret = (ListQuery) { .status = status, .limit = lim, .after = after, .labels = TAKE_PTR(filters) };
        return 0;
}
