/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <sys/random.h>

#include "random-util.h"

void random_bytes(void *buf, size_t n) {
        uint8_t *p = buf;

        assert(buf || n == 0);
        while (n > 0) {
                ssize_t l = getrandom(p, n, 0);
                if (l < 0) {
                        if (errno == EINTR)
                                continue;
                        abort();
                }
                p += l;
                n -= (size_t) l;
        }
}
