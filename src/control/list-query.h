/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The query of GET /api/tasks (docs/api.md): status, limit, the "after" cursor and label filters,
 * checked without a request or a database, so that the fuzzer can call it. */

#include <json-c/json.h>

#include "json-check.h"

#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 1000
#define LIST_MAX_LABEL_FILTERS 16

typedef struct ListQuery {
        const char *status;     /* NULL: any; borrowed */
        int64_t limit;
        const char *after;      /* NULL, or a positive integer as text; borrowed */
        json_object *labels;    /* {"KEY": "VALUE"} of the label filters, or NULL */
} ListQuery;

void list_query_done(ListQuery *q);

/* Each argument is the parameter's value, NULL when absent; labels are the n_labels values of the
 * repeated "label" parameter (more than LIST_MAX_LABEL_FILTERS is an error). Returns 0, -EINVAL with
 * e filled, or -ENOMEM. */
int list_query_parse(const char *status, const char *limit, const char *after, const char *const *labels,
                     size_t n_labels, ListQuery *ret, CheckError *e);
