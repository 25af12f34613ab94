/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Minimal helpers for C unit tests: each test is a function; main() calls RUN_TEST() on each.
 * A failed ASSERT_*() prints where and why and marks the current test failed (the test function
 * returns at once); TESTS_DONE() prints the summary and gives main()'s exit status.
 *
 *     static void test_foo(void) { ASSERT_INT_EQ(foo(1), 2); ASSERT_STREQ(bar(), "x"); }
 *     int main(void) { RUN_TEST(test_foo); return TESTS_DONE(); }
 */

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static unsigned tests_failed_ __attribute__((unused)) = 0, tests_run_ __attribute__((unused)) = 0;
static bool test_current_failed_ __attribute__((unused)) = false;

#define TEST_FAIL_(...)                                                                 \
        do {                                                                            \
                fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                         \
                fprintf(stderr, __VA_ARGS__);                                           \
                fputc('\n', stderr);                                                    \
                test_current_failed_ = true;                                            \
                return;                                                                 \
        } while (0)

#define ASSERT_TRUE(expr)                                                               \
        do {                                                                            \
                if (!(expr))                                                            \
                        TEST_FAIL_("assertion failed: %s", #expr);                      \
        } while (0)

#define ASSERT_INT_EQ(a, b)                                                             \
        do {                                                                            \
                intmax_t a_ = (intmax_t) (a), b_ = (intmax_t) (b);                      \
                if (a_ != b_)                                                           \
                        TEST_FAIL_("%s == %s: %jd != %jd", #a, #b, a_, b_);             \
        } while (0)

#define ASSERT_UINT_EQ(a, b)                                                            \
        do {                                                                            \
                uintmax_t a_ = (uintmax_t) (a), b_ = (uintmax_t) (b);                   \
                if (a_ != b_)                                                           \
                        TEST_FAIL_("%s == %s: %ju != %ju", #a, #b, a_, b_);             \
        } while (0)

#define ASSERT_STREQ(a, b)                                                              \
        do {                                                                            \
                const char *a_ = (a), *b_ = (b);                                        \
                if (!a_ || !b_ || strcmp(a_, b_) != 0)                                  \
                        TEST_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b,                \
                                   a_ ? a_ : "(null)", b_ ? b_ : "(null)");             \
        } while (0)

#define ASSERT_NULL(p)                                                                  \
        do {                                                                            \
                if ((p) != NULL)                                                        \
                        TEST_FAIL_("%s is not NULL", #p);                               \
        } while (0)

#define RUN_TEST(fn)                                                                    \
        do {                                                                            \
                test_current_failed_ = false;                                           \
                tests_run_++;                                                           \
                fn();                                                                   \
                if (test_current_failed_) {                                             \
                        tests_failed_++;                                                \
                        printf("FAIL %s\n", #fn);                                       \
                } else                                                                  \
                        printf("ok %s\n", #fn);                                         \
                fflush(stdout);                                                         \
        } while (0)

#define TESTS_DONE()                                                                    \
        (printf("# %u/%u passed\n", tests_run_ - tests_failed_, tests_run_),            \
         tests_failed_ > 0 ? 1 : 0)
