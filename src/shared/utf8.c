/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "utf8.h"

#define REPLACEMENT_CHARACTER "\xEF\xBF\xBD"

static bool is_continuation(uint8_t c) {
        return (c & 0xC0) == 0x80;
}

size_t utf8_char_len(const void *s, size_t n) {
        const uint8_t *p = s;
        uint32_t cp;
        size_t len;

        if (n == 0)
                return 0;
        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xC2 && p[0] <= 0xDF)
                len = 2, cp = p[0] & 0x1F;
        else if (p[0] >= 0xE0 && p[0] <= 0xEF)
                len = 3, cp = p[0] & 0x0F;
        else if (p[0] >= 0xF0 && p[0] <= 0xF4)
                len = 4, cp = p[0] & 0x07;
        else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if (!is_continuation(p[i]))
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3F);
        }
        /* Overlong forms, surrogates, beyond Unicode. */
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) ||
            cp > 0x10FFFF)
                return 0;
        return len;
}

bool utf8_is_valid(const void *s, size_t n) {
        const uint8_t *p = s;

        for (size_t i = 0; i < n;) {
                size_t l = utf8_char_len(p + i, n - i);
                if (l == 0)
                        return false;
                i += l;
        }
        return true;
}

char *utf8_sanitize(const char *s, size_t n) {
        const uint8_t *p = (const uint8_t *) s;
        char *out, *o;

        /* Worst case: every byte becomes a 3-byte replacement character. */
        if (n > (SIZE_MAX - 1) / 3)
                return NULL;
        out = o = malloc(n * 3 + 1);
        if (!out)
                return NULL;
        for (size_t i = 0; i < n;) {
                size_t l = p[i] == 0 ? 0 : utf8_char_len(p + i, n - i);
                if (l == 0) {
                        memcpy(o, REPLACEMENT_CHARACTER, 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(o, p + i, l);
                        o += l;
                        i += l;
                }
        }
        *o = 0;
        return out;
}

size_t utf8_prefix_len(const char *s, size_t n, size_t max) {
        if (n <= max)
                return n;
        while (max > 0 && is_continuation((uint8_t) s[max]))
                max--;
        return max;
}

size_t utf8_suffix_start(const char *s, size_t n, size_t max) {
        size_t start;

        if (n <= max)
                return 0;
        start = n - max;
        while (start < n && is_continuation((uint8_t) s[start]))
                start++;
        return start;
}
