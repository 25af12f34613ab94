/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Rows of text cells printed as aligned columns, the header first. */

#include <stddef.h>

typedef struct Table Table;

Table *table_new(const char *const *header, size_t n_columns);
Table *table_free(Table *t);
/* Adds a row of n_columns cells (NULL prints "-"). -ENOMEM. */
int table_add(Table *t, const char *const *cells);
void table_print(const Table *t);

static inline void table_freep(Table **t) {
        table_free(*t);
}
