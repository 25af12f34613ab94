/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>

#include "strv.h"

size_t strv_length(char *const *l) {
        size_t n = 0;
        while (l && l[n])
                n++;
        return n;
}

bool strv_contains(char *const *l, const char *s) {
        assert(s);
        for (char *const *u = l; u && *u; u++)
                if (streq(*u, s))
                        return true;
        return false;
}

int strv_extend(char ***l, const char *value) {
        size_t n = strv_length(*l);
        char **nl;
        char *v;

        assert(l);
        assert(value);
        v = strdup(value);
        if (!v)
                return -ENOMEM;
        nl = realloc(*l, sizeof(char *) * (n + 2));
        if (!nl) {
                free(v);
                return -ENOMEM;
        }
        nl[n] = v;
        nl[n + 1] = NULL;
        *l = nl;
        return 0;
}

int strv_extendf(char ***l, const char *format, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int n;

        va_start(ap, format);
        n = vasprintf(&s, format, ap);
        va_end(ap);
        if (n < 0)
                return -ENOMEM;
        return strv_extend(l, s);
}

char **strv_split_separators(const char *s, const char *separators) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        const char *p = s;

        assert(separators);

        if (!l)
                return NULL;
        while (p && *p) {
                size_t n;
                _cleanup_free_ char *w = NULL;

                p += strspn(p, separators);
                n = strcspn(p, separators);
                if (n == 0)
                        break;
                w = strndup(p, n);
                if (!w || strv_extend(&l, w) < 0)
                        return NULL;
                p += n;
        }
        return TAKE_PTR(l);
}

char **strv_split(const char *s) {
        return strv_split_separators(s, ", \t\n");
}

char *strv_join(char *const *l, const char *sep) {
        size_t n = 1;
        char *s, *p;

        assert(sep);
        for (char *const *u = l; u && *u; u++)
                n += strlen(*u) + strlen(sep);
        s = p = malloc(n);
        if (!s)
                return NULL;
        *p = 0;
        for (char *const *u = l; u && *u; u++)
                p = stpcpy(stpcpy(p, u == l ? "" : sep), *u);
        return s;
}
