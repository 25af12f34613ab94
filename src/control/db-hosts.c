/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "db-hosts.h"

char *db_hosts_rotate(const char *list, unsigned k) {
        size_t n = 1, len, head;
        const char *p;
        char *out;

        assert(list);

        for (p = list; (p = strchr(p, ',')); p++)
                n++;
        if (n < 2 || k % n == 0)
                return NULL;
        /* p: the first entry of the result; the k entries before it (and their commas) go last. */
        for (p = list, k %= n; k > 0; k--)
                p = strchr(p, ',') + 1;
        len = strlen(list);
        head = (size_t) (p - list);             /* the entries moved, with the comma after them */
        out = malloc(len + 1);
        if (!out)
                return NULL;
        memcpy(out, p, len - head);
        out[len - head] = ',';
        memcpy(out + len - head + 1, list, head - 1);
        out[len] = 0;
        return out;
}
