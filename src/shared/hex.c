/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "hex.h"

char *hex_encode(const void *p, size_t n, char *out) {
        static const char digits[] = "0123456789abcdef";
        const uint8_t *b = p;

        assert(p || n == 0);
        assert(out);
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = digits[b[i] >> 4];
                out[2 * i + 1] = digits[b[i] & 15];
        }
        out[2 * n] = 0;
        return out;
}

static int hex_digit(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int hex_decode(const char *s, void *ret, size_t n) {
        uint8_t *out = ret;

        if (!s || strlen(s) != 2 * n)
                return -EINVAL;
        /* Checked whole first, so that ret stays untouched on failure. */
        for (size_t i = 0; i < 2 * n; i++)
                if (hex_digit(s[i]) < 0)
                        return -EINVAL;
        for (size_t i = 0; i < n; i++)
                out[i] = (uint8_t) (hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
        return 0;
}
