/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>

#include "id-util.h"

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

bool id_is_valid(const char *s) {
        size_t l = s ? strlen(s) : 0;

        return l >= 1 && l <= ID_MAX && strchr(ALNUM, s[0]) && strspn(s, ALNUM "._-") == l;
}
