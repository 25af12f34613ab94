/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mcctl-table.h"
#include <stdbool.h>

struct Table {
        size_t n_columns, n_cells;
        char **cells;                   /* row after row, the header first */
};

Table *table_new(const char *const *header, size_t n_columns) {
        Table *t = calloc(1, sizeof(Table));

        if (!t)
                return NULL;
        t->n_columns = n_columns;
        if (table_add(t, header) < 0)
                return table_free(t);
        return t;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

int table_add(Table *t, const char *const *cells) {
        char **c = realloc(t->cells, (t->n_cells + t->n_columns) * sizeof(char *));

        if (!c)
                return -ENOMEM;
        t->cells = c;
        for (size_t i = 0; i < t->n_columns; i++) {
                c[t->n_cells + i] = strdup(cells[i] ?: "-");
                if (!c[t->n_cells + i]) {
                        for (size_t j = 0; j < i; j++)
                                free(c[t->n_cells + j]);
                        return -ENOMEM;
                }
        }
        t->n_cells += t->n_columns;
        return 0;
}

/* Width on a terminal: code points, not bytes (ids and states are ASCII; labels may not be). */
static size_t width(const char *s) {
        size_t n = 0;

        for (; *s; s++)
                n += ((unsigned char) *s & 0xC0) != 0x80;
        return n;
}

void table_print(const Table *t) {
        size_t w[t->n_columns];

        memset(w, 0, sizeof(w));
        for (size_t i = 0; i < t->n_cells; i++)
                if (width(t->cells[i]) > w[i % t->n_columns])
                        w[i % t->n_columns] = width(t->cells[i]);
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                bool last = col == t->n_columns - 1;

                fputs(t->cells[i], stdout);
                if (last)
                        putchar('\n');
                else
                        printf("%*s", (int) (w[col] - width(t->cells[i]) + 2), "");
        }
}
