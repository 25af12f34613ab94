/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Assertions for the DHT unit tests: on failure, print the expression and abort. */

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(expr)                                                                            \
        do {                                                                                    \
                if (!(expr)) {                                                                  \
                        fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__, __LINE__,  \
                                __func__, #expr);                                               \
                        abort();                                                                \
                }                                                                               \
        } while (0)

#define ASSERT_EQ(a, b) ASSERT((a) == (b))
