/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Rotating the host lists of a connection string (db-hosts.h). */

#include <stdlib.h>

#include "db-hosts.h"
#include "macro.h"
#include "tests.h"

static const char *rotated(const char *list, unsigned k) {
        static char buf[256];
        _cleanup_free_ char *r = db_hosts_rotate(list, k);

        snprintf(buf, sizeof(buf), "%s", r ?: "(same)");
        return buf;
}

static void test_rotate(void) {
        ASSERT_STREQ(rotated("a,b", 1), "b,a");
        ASSERT_STREQ(rotated("a,b", 2), "(same)");
        ASSERT_STREQ(rotated("a,b", 3), "b,a");
        ASSERT_STREQ(rotated("pg-a,pg-b,pg-c", 1), "pg-b,pg-c,pg-a");
        ASSERT_STREQ(rotated("pg-a,pg-b,pg-c", 2), "pg-c,pg-a,pg-b");
        ASSERT_STREQ(rotated("pg-a,pg-b,pg-c", 3), "(same)");
        ASSERT_STREQ(rotated("5432,5433", 1), "5433,5432");
        ASSERT_STREQ(rotated("/run/a,/run/b", 1), "/run/b,/run/a");
}

static void test_nothing_to_rotate(void) {
        ASSERT_STREQ(rotated("", 1), "(same)");
        ASSERT_STREQ(rotated("a", 1), "(same)");
        ASSERT_STREQ(rotated("5432", 7), "(same)");
        ASSERT_STREQ(rotated("a,b", 0), "(same)");
}

static void test_empty_entries(void) {
        /* libpq reads an empty host as its default: it keeps its place among the others. */
        ASSERT_STREQ(rotated("a,,c", 1), ",c,a");
        ASSERT_STREQ(rotated("a,,c", 2), "c,a,");
        ASSERT_STREQ(rotated(",", 1), ",");
}

int main(void) {
        RUN_TEST(test_rotate);
        RUN_TEST(test_nothing_to_rotate);
        RUN_TEST(test_empty_entries);
        return TESTS_DONE();
}
