/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bencode.h"
#include "dht-test.h"

static int decode(const char *s, size_t *ret_n, BeNode *nodes, size_t n_nodes) {
        return be_decode(s, strlen(s), NULL, nodes, n_nodes, ret_n);
}

static void roundtrip(const char *s) {
        BeNode nodes[64];
        uint8_t out[256];
        BeWriter w;
        size_t n, len;

        ASSERT_EQ(decode(s, &n, nodes, 64), 0);
        be_writer_init(&w, out, sizeof(out));
        be_put_node(&w, &nodes[0]);
        ASSERT_EQ(be_writer_finish(&w, &len), 0);
        ASSERT_EQ(len, strlen(s));
        ASSERT(memcmp(out, s, len) == 0);
}

static void rejected(const char *s, int error) {
        BeNode nodes[64];
        size_t n = 4242;
        int r = decode(s, &n, nodes, 64);
        if (r != error)
                fprintf(stderr, "\"%s\": got %d, expected %d\n", s, r, error);
        ASSERT_EQ(r, error);
        ASSERT_EQ(n, 4242U); /* untouched */
}

static void test_valid(void) {
        BeNode nodes[16];
        const BeNode *v;
        size_t n;

        roundtrip("i0e");
        roundtrip("i-1e");
        roundtrip("i9223372036854775807e");
        roundtrip("i-9223372036854775808e");
        roundtrip("0:");
        roundtrip("4:spam");
        roundtrip("le");
        roundtrip("de");
        roundtrip("l4:spami42ee");
        roundtrip("d3:bar4:spam3:fooi42ee");
        roundtrip("d1:ad1:bl1:ci1eeee");
        roundtrip("d0:i1e1:ai2ee"); /* the empty key sorts first */
        roundtrip("d1:a0:2:aai1ee");  /* a shorter key sorts before its extensions */

        ASSERT_EQ(decode("d3:bar4:spam3:fooi42ee", &n, nodes, 16), 0);
        ASSERT_EQ(n, 5U);
        ASSERT_EQ(nodes[0].type, BE_DICT);
        ASSERT_EQ(nodes[0].count, 2U);
        ASSERT_EQ(nodes[0].span, 5U);
        v = be_dict_get(&nodes[0], "foo");
        ASSERT(v && v->type == BE_INT && v->i == 42);
        v = be_dict_get_type(&nodes[0], "bar", BE_STR);
        ASSERT(v && be_str_eq(v, "spam"));
        ASSERT(!be_dict_get(&nodes[0], "baz"));
        ASSERT(!be_dict_get_type(&nodes[0], "foo", BE_STR));
}

static void test_malformed(void) {
        rejected("", -EBADMSG);
        rejected("i", -EBADMSG);
        rejected("ie", -EBADMSG);
        rejected("i-e", -EBADMSG);
        rejected("i-0e", -EBADMSG);
        rejected("i01e", -EBADMSG);
        rejected("i-01e", -EBADMSG);
        rejected("i1", -EBADMSG);
        rejected("i1x", -EBADMSG);
        rejected("i9223372036854775808e", -EBADMSG); /* overflow */
        rejected("i-9223372036854775809e", -EBADMSG);
        rejected("i99999999999999999999e", -EBADMSG);
        rejected("i+1e", -EBADMSG);
        rejected("i 1e", -EBADMSG);
        rejected("1:", -EBADMSG);          /* truncated string */
        rejected("5:abc", -EBADMSG);
        rejected("01:a", -EBADMSG);        /* leading zero in length */
        rejected("-1:a", -EBADMSG);
        rejected("4294967296:a", -EBADMSG); /* huge length */
        rejected("99999999999999999999:a", -EBADMSG);
        rejected("1a", -EBADMSG);
        rejected("l", -EBADMSG);
        rejected("li1e", -EBADMSG);
        rejected("d", -EBADMSG);
        rejected("d1:a", -EBADMSG);        /* key without value */
        rejected("d1:ae", -EBADMSG);
        rejected("di1ei2ee", -EBADMSG);    /* non-string key */
        rejected("dlei1ee", -EBADMSG);
        rejected("d1:bi1e1:ai2ee", -EBADMSG); /* unsorted */
        rejected("d1:ai1e1:ai2ee", -EBADMSG); /* duplicate */
        rejected("d2:aai1e1:ai2ee", -EBADMSG);
        rejected("e", -EBADMSG);
        rejected("i1ei2e", -EBADMSG);      /* trailing data */
        rejected("lee", -EBADMSG);
        rejected("x", -EBADMSG);
        rejected("l\0e", -EBADMSG);
}

static void test_bounds(void) {
        char deep[300];
        BeNode nodes[64], many[4];
        BeLimits lim = { .max_depth = 4, .max_nodes = 64, .max_str = 3 };
        size_t n;

        /* Depth: 100 nested lists exceed the default limit of 32. */
        memset(deep, 'l', 100);
        memset(deep + 100, 'e', 100);
        deep[200] = 0;
        rejected(deep, -E2BIG);
        ASSERT_EQ(be_decode("lllleeee", 8, &lim, nodes, 64, &n), 0);
        ASSERT_EQ(be_decode("llllleeeee", 10, &lim, nodes, 64, &n), -E2BIG);
        /* String length. */
        ASSERT_EQ(be_decode("3:abc", 5, &lim, nodes, 64, &n), 0);
        ASSERT_EQ(be_decode("4:abcd", 6, &lim, nodes, 64, &n), -E2BIG);
        /* Node count: the array given, or the limit. */
        ASSERT_EQ(be_decode("li1ei2ei3ee", 11, NULL, many, 4, &n), 0);
        ASSERT_EQ(be_decode("li1ei2ei3ei4ee", 14, NULL, many, 4, &n), -E2BIG);
        /* Unbalanced deep input is still rejected without reading past the end. */
        rejected("llllllllllllllllllll", -EBADMSG);
}

static void test_writer(void) {
        uint8_t buf[64], small[4];
        BeWriter w;
        size_t len;

        be_writer_init(&w, buf, sizeof(buf));
        be_put_dict(&w);
        be_put_cstr(&w, "a");
        be_put_int(&w, -5);
        be_put_cstr(&w, "b");
        be_put_list(&w);
        be_put_str(&w, "xy", 2);
        be_put_raw(&w, "d1:ki1ee", 8);
        be_put_end(&w);
        be_put_end(&w);
        ASSERT_EQ(be_writer_finish(&w, &len), 0);
        ASSERT_EQ(len, strlen("d1:ai-5e1:bl2:xyd1:ki1eeee"));
        ASSERT(memcmp(buf, "d1:ai-5e1:bl2:xyd1:ki1eeee", len) == 0);

        /* Unsorted keys, duplicate keys, non-string keys, unbalanced, overflow, invalid raw values. */
        be_writer_init(&w, buf, sizeof(buf));
        be_put_dict(&w);
        be_put_cstr(&w, "b");
        be_put_int(&w, 1);
        be_put_cstr(&w, "a");
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_dict(&w);
        be_put_cstr(&w, "a");
        be_put_int(&w, 1);
        be_put_cstr(&w, "a");
        be_put_int(&w, 1);
        be_put_end(&w);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_dict(&w);
        be_put_int(&w, 1);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_list(&w);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_dict(&w);
        be_put_cstr(&w, "a");
        be_put_end(&w);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, small, sizeof(small));
        be_put_cstr(&w, "toolong");
        ASSERT_EQ(be_writer_finish(&w, &len), -ENOBUFS);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_raw(&w, "i01e", 4);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);

        be_writer_init(&w, buf, sizeof(buf));
        be_put_int(&w, 1);
        be_put_int(&w, 2);
        ASSERT_EQ(be_writer_finish(&w, &len), -EINVAL);
}

int main(void) {
        test_valid();
        test_malformed();
        test_bounds();
        test_writer();
        return 0;
}
