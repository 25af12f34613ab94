/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Tiny helpers for the agent's C tests. */

#include <stdio.h>
#include <stdlib.h>

#include "daemon-util.h"
#include "macro.h"

#define ASSERT(expr)                                                                    \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,      \
                                __LINE__, #expr);                                       \
                        abort();                                                        \
                }                                                                       \
        } while (0)

#define RUN_TEST(f)                                                                     \
        do {                                                                            \
                uint64_t _t = now_usec();                                               \
                f();                                                                    \
                fprintf(stderr, "ok %s (%" PRIu64 " ms)\n", #f, (now_usec() - _t) / 1000); \
        } while (0)
