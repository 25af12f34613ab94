/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The lease watch (lease-watch.h): when a lease is due, from the renewal counts a replica reads and its
 * own clock only. */

#include <stdlib.h>

#include "json-util.h"
#include "lease-watch.h"
#include "tests.h"

#define MS 1000ULL

/* The task ids of the due leases, comma-separated, in a static buffer. */
static const char *due(LeaseWatch *w, uint64_t now, int64_t default_ttl_ms, int64_t grace_ms) {
        static char buf[256];
        _cleanup_json_ json_object *a = NULL;
        json_object *v;

        buf[0] = 0;
        if (lease_watch_due(w, now, default_ttl_ms, grace_ms, &a) < 0)
                return "(error)";
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *e = json_object_array_get_idx(a, i);
                if (!json_object_object_get_ex(e, "task_id", &v))
                        return "(no task_id)";
                if (i > 0)
                        strcat(buf, ",");
                strcat(buf, json_object_get_string(v));
        }
        return buf;
}

static void test_count_standing_still(void) {
        _cleanup_(lease_watch_freep) LeaseWatch *w = NULL;
        LeaseSeen s[] = {
                { "b", 1, 0, 3000 },
                { "a", 7, 4, 1000 },
        };

        ASSERT_INT_EQ(lease_watch_new(&w), 0);
        ASSERT_STREQ(due(w, 0, 5000, 500), "");

        /* First seen at 10 s: nothing is due before its TTL plus the grace. */
        ASSERT_INT_EQ(lease_watch_update(w, s, 2, 10000 * MS), 0);
        ASSERT_UINT_EQ(lease_watch_size(w), 2);
        ASSERT_STREQ(due(w, 10000 * MS, 5000, 500), "");
        ASSERT_STREQ(due(w, 11499 * MS, 5000, 500), "");
        ASSERT_STREQ(due(w, 11500 * MS, 5000, 500), "a");
        /* Seen again unchanged: the instant stays the first one. */
        ASSERT_INT_EQ(lease_watch_update(w, s, 2, 12000 * MS), 0);
        ASSERT_STREQ(due(w, 13499 * MS, 5000, 500), "a");
        ASSERT_STREQ(due(w, 13500 * MS, 5000, 500), "a,b");

        /* A renewal (the count moved) starts "a" anew from when it was seen. */
        s[1].renewals = 5;
        ASSERT_INT_EQ(lease_watch_update(w, s, 2, 14000 * MS), 0);
        ASSERT_STREQ(due(w, 15000 * MS, 5000, 500), "b");
        ASSERT_STREQ(due(w, 15500 * MS, 5000, 500), "a,b");
}

static void test_new_lease_and_forgetting(void) {
        _cleanup_(lease_watch_freep) LeaseWatch *w = NULL;
        LeaseSeen s[] = { { "t", 1, 9, 1000 } };

        ASSERT_INT_EQ(lease_watch_new(&w), 0);
        ASSERT_INT_EQ(lease_watch_update(w, s, 1, 1000 * MS), 0);
        /* The task leased again (new token), with the same count by chance: a new lease, a new start. */
        s[0].lease_token = 2;
        ASSERT_INT_EQ(lease_watch_update(w, s, 1, 1900 * MS), 0);
        ASSERT_STREQ(due(w, 2000 * MS, 5000, 0), "");
        ASSERT_STREQ(due(w, 2900 * MS, 5000, 0), "t");

        /* Gone from the read (finished, expired): forgotten, never due. */
        ASSERT_INT_EQ(lease_watch_update(w, NULL, 0, 3000 * MS), 0);
        ASSERT_UINT_EQ(lease_watch_size(w), 0);
        ASSERT_STREQ(due(w, 100000 * MS, 5000, 0), "");
        /* Back again (claimed anew): counted from now, not from before. */
        ASSERT_INT_EQ(lease_watch_update(w, s, 1, 4000 * MS), 0);
        ASSERT_STREQ(due(w, 4999 * MS, 5000, 0), "");
}

static void test_unknown_ttl_and_answer(void) {
        _cleanup_(lease_watch_freep) LeaseWatch *w = NULL;
        _cleanup_json_ json_object *a = NULL;
        LeaseSeen s[] = { { "x", 3, 2, 0 } };
        json_object *e, *v;

        ASSERT_INT_EQ(lease_watch_new(&w), 0);
        ASSERT_INT_EQ(lease_watch_update(w, s, 1, 0), 0);
        /* No TTL recorded with the lease: the replica's own. */
        ASSERT_STREQ(due(w, 5999 * MS, 5000, 1000), "");
        ASSERT_STREQ(due(w, 6000 * MS, 5000, 1000), "x");

        /* What mc_lease_watch() takes: the lease as seen, for the conditional expiry. */
        ASSERT_INT_EQ(lease_watch_due(w, 6000 * MS, 5000, 1000, &a), 0);
        ASSERT_UINT_EQ(json_object_array_length(a), 1);
        e = json_object_array_get_idx(a, 0);
        ASSERT_TRUE(json_object_object_get_ex(e, "lease_token", &v));
        ASSERT_INT_EQ(json_object_get_int64(v), 3);
        ASSERT_TRUE(json_object_object_get_ex(e, "renewals", &v));
        ASSERT_INT_EQ(json_object_get_int64(v), 2);
        ASSERT_STREQ(json_to_string(a), "[{\"task_id\":\"x\",\"lease_token\":3,\"renewals\":2}]");
}

static void test_many_in_any_order(void) {
        _cleanup_(lease_watch_freep) LeaseWatch *w = NULL;
        LeaseSeen s[200];
        char ids[200][8];

        ASSERT_INT_EQ(lease_watch_new(&w), 0);
        for (int i = 0; i < 200; i++) {
                snprintf(ids[i], sizeof(ids[i]), "t%03d", (i * 7919) % 200);
                s[i] = (LeaseSeen) { ids[i], 1, 0, 1000 };
        }
        ASSERT_INT_EQ(lease_watch_update(w, s, 200, 0), 0);
        /* Every other one renewed, seen in another order. */
        for (int i = 0; i < 200; i++)
                if (ids[i][3] % 2 == 0)
                        s[i].renewals = 1;
        ASSERT_INT_EQ(lease_watch_update(w, s + 100, 100, 500 * MS), 0);
        ASSERT_INT_EQ(lease_watch_update(w, s, 200, 500 * MS), 0);
        ASSERT_UINT_EQ(lease_watch_size(w), 200);

        _cleanup_json_ json_object *a = NULL;
        ASSERT_INT_EQ(lease_watch_due(w, 1000 * MS, 5000, 0, &a), 0);
        /* The first 100 were forgotten by the read of the other 100 alone, and are new again. */
        size_t n = json_object_array_length(a);
        ASSERT_TRUE(n > 0 && n < 100);
        for (size_t i = 0; i < n; i++) {
                json_object *v;
                ASSERT_TRUE(json_object_object_get_ex(json_object_array_get_idx(a, i), "renewals", &v));
                ASSERT_INT_EQ(json_object_get_int64(v), 0);
        }
}

int main(void) {
        RUN_TEST(test_count_standing_still);
        RUN_TEST(test_new_lease_and_forgetting);
        RUN_TEST(test_unknown_ttl_and_answer);
        RUN_TEST(test_many_in_any_order);
        return TESTS_DONE();
}
