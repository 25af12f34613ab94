/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Quantities as people write them on a command line. */

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mcctl.h"

int parse_cpus(const char *s, int64_t *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end != 0 || !isfinite(v) || v <= 0 || v > 1e6)
                return -EINVAL;
        *ret = (int64_t) llround(v * 1e9);
        return 0;
}

int parse_bytes(const char *s, int64_t *ret) {
        static const struct { char suffix; int shift; } units[] = {
                { 'K', 10 }, { 'M', 20 }, { 'G', 30 }, { 'T', 40 },
        };
        char *end;
        long long v;
        int shift = 0;

        if (s[0] < '0' || s[0] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        if (*end != 0) {
                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if (*end == units[i].suffix || *end == units[i].suffix + ('a' - 'A'))
                                shift = units[i].shift;
                /* "256M", "256MB", "256MiB" */
                if (shift == 0 || !(streq(end + 1, "") || streq(end + 1, "B") || streq(end + 1, "iB")))
                        return -EINVAL;
        }
        if (v < 0 || v > (INT64_MAX >> shift))
                return -ERANGE;
        *ret = (int64_t) v << shift;
        return 0;
}
