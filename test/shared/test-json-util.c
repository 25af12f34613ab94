/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* json_parse_strict() must accept exactly one well-formed JSON document and refuse everything else
 * with a reason, and the typed getters must never hand back json-c's silent defaults. */

#include "json-util.h"
#include "tests.h"

static int parse(const char *text, json_object **ret, const char **ret_error) {
        return json_parse_strict(text, strlen(text), ret, ret_error);
}

static bool accepts(const char *text) {
        json_object *o = NULL;
        int r = parse(text, &o, NULL);
        json_object_put(o);
        return r == 0;
}

static bool refuses(const char *text) {
        json_object *o = (json_object *) 0x1; /* must stay untouched on failure */
        const char *error = NULL;
        int r = parse(text, &o, &error);
        if (r == 0) {
                json_object_put(o);
                return false;
        }
        return r == -EINVAL && error && *error && o == (json_object *) 0x1;
}

static void test_documents(void) {
        ASSERT_TRUE(accepts("{}"));
        ASSERT_TRUE(accepts("[]"));
        ASSERT_TRUE(accepts(" \t\r\n{\"a\": [1, 2.5, \"x\", true, false, null]} \n"));
        ASSERT_TRUE(accepts("\"\\u00e9\\ud83d\\ude00\""));
        ASSERT_TRUE(accepts("\"caf\xc3\xa9\""));
}

static void test_top_level_scalars(void) {
        /* RFC 8259: any value is a document, numbers included (which only end at the end of the text). */
        ASSERT_TRUE(accepts("123"));
        ASSERT_TRUE(accepts("-1.5e3"));
        ASSERT_TRUE(accepts("0"));
        ASSERT_TRUE(accepts("123 "));
        ASSERT_TRUE(accepts("true"));
        ASSERT_TRUE(accepts("null"));
        ASSERT_TRUE(accepts("\"s\""));

        json_object *o = NULL;
        ASSERT_INT_EQ(parse("42", &o, NULL), 0);
        ASSERT_TRUE(json_object_is_type(o, json_type_int));
        ASSERT_INT_EQ(json_object_get_int64(o), 42);
        json_object_put(o);
}

static void test_trailing_garbage(void) {
        ASSERT_TRUE(refuses("{} x"));
        ASSERT_TRUE(refuses("{}{}"));
        ASSERT_TRUE(refuses("[1]]"));
        ASSERT_TRUE(refuses("1 2"));
        ASSERT_TRUE(refuses("{\"a\":1},"));
        ASSERT_TRUE(refuses("true false"));
        ASSERT_TRUE(refuses("nullx"));
}

static void test_incomplete(void) {
        ASSERT_TRUE(refuses(""));
        ASSERT_TRUE(refuses("   "));
        ASSERT_TRUE(refuses("{"));
        ASSERT_TRUE(refuses("{\"a\":"));
        ASSERT_TRUE(refuses("[1, 2"));
        ASSERT_TRUE(refuses("\"abc"));
        ASSERT_TRUE(refuses("tru"));
        ASSERT_TRUE(refuses("-"));
}

static void test_not_json(void) {
        /* json-c's strict mode still lets a few harmless liberties through (single-quoted keys, raw
         * control characters in strings, "1."), which are not tested here. */
        ASSERT_TRUE(refuses("[1,]"));
        ASSERT_TRUE(refuses("{\"a\":1,}"));
        ASSERT_TRUE(refuses("/* c */ {}"));
        ASSERT_TRUE(refuses("NaN"));
        ASSERT_TRUE(refuses("Infinity"));
        ASSERT_TRUE(refuses("{a: 1}"));
        ASSERT_TRUE(refuses("[01]"));
        ASSERT_TRUE(refuses("TRUE"));
        ASSERT_TRUE(refuses("\"\\x41\""));
        ASSERT_TRUE(refuses("['a']"));
}

static void test_non_finite_numbers(void) {
        ASSERT_TRUE(refuses("NaN"));
        ASSERT_TRUE(refuses("[NaN]"));
        ASSERT_TRUE(refuses("{\"a\": -Infinity}"));
        ASSERT_TRUE(refuses("{\"a\": [1, {\"b\": 1e400}]}"));
        ASSERT_TRUE(refuses("-1e400"));
        ASSERT_TRUE(accepts("[1e300, -1e-400, 0.0]"));
}

static void test_nul_escape(void) {
        /* "\u0000" would cut the string (or key) short for every C consumer. */
        ASSERT_TRUE(refuses("[\"abc\\u0000xyz\"]"));
        ASSERT_TRUE(refuses("{\"a\\u0000b\": 1}"));
        ASSERT_TRUE(refuses("[\"\\\\\\u0000\"]"));    /* \\ then \u0000 */
        ASSERT_TRUE(accepts("[\"\\\\u0000\"]"));        /* an escaped backslash, then text */
        ASSERT_TRUE(accepts("[\"\\u0001\"]"));
}

static void test_invalid_utf8(void) {
        ASSERT_TRUE(refuses("\"\xff\""));
        ASSERT_TRUE(refuses("\"\xc3\""));
        ASSERT_TRUE(refuses("{\"\xed\xa0\x80\": 1}"));  /* an encoded surrogate */
        ASSERT_TRUE(refuses("\"\xc0\xaf\""));               /* overlong "/" */
        ASSERT_TRUE(refuses("\"\xf4\x90\x80\x80\""));       /* beyond U+10FFFF */
        ASSERT_TRUE(accepts("\"\xf0\x9f\x98\x80\xe2\x82\xac\""));  /* U+1F600, U+20AC */
}

static void test_nul_byte(void) {
        static const char text[] = "{\"a\": \"b\0c\"}";
        json_object *o = NULL;
        const char *error = NULL;

        ASSERT_INT_EQ(json_parse_strict(text, sizeof(text) - 1, &o, &error), -EINVAL);
        ASSERT_NULL(o);
        ASSERT_TRUE(error && strstr(error, "NUL"));
        /* A NUL right after a complete document is not "the end" either. */
        ASSERT_INT_EQ(json_parse_strict("{}\0", 3, &o, NULL), -EINVAL);
        ASSERT_NULL(o);
        /* The size is what counts, not a terminator: a prefix of a longer buffer is parsed alone. */
        ASSERT_INT_EQ(json_parse_strict("[1][2]", 3, &o, NULL), 0);
        ASSERT_TRUE(json_object_is_type(o, json_type_array));
        json_object_put(o);
}

static char *nested(unsigned depth) {
        char *s = malloc(depth * 2 + 1);
        if (!s)
                abort();
        memset(s, '[', depth);
        memset(s + depth, ']', depth);
        s[depth * 2] = 0;
        return s;
}

static void test_deep_nesting(void) {
        _cleanup_free_ char *ok = nested(32), *deep = nested(33), *very_deep = nested(100000);

        ASSERT_TRUE(accepts(ok));
        ASSERT_TRUE(refuses(deep));
        ASSERT_TRUE(refuses(very_deep));
}

/* The tokener is kept between calls (one per thread): what a refused or unfinished text left in it must
 * not leak into the next document, nor the depth of a deep one. */
static void test_reuse_after_failure(void) {
        _cleanup_free_ char *deep = nested(33), *ok = nested(32);
        json_object *o = NULL;

        ASSERT_TRUE(refuses("{\"a\": [1, 2"));
        ASSERT_INT_EQ(parse("{\"b\": 3}", &o, NULL), 0);
        ASSERT_TRUE(json_object_is_type(o, json_type_object));
        ASSERT_INT_EQ(json_object_object_length(o), 1);
        ASSERT_INT_EQ(json_object_get_int64(json_object_object_get(o, "b")), 3);
        json_object_put(o);

        ASSERT_TRUE(refuses("[\"x\", {\"y\":"));
        ASSERT_TRUE(accepts("12"));
        ASSERT_TRUE(refuses(deep));
        ASSERT_TRUE(accepts(ok));
        ASSERT_TRUE(refuses("{} x"));
        ASSERT_INT_EQ(parse("[true]", &o, NULL), 0);
        ASSERT_TRUE(json_object_is_type(o, json_type_array) && json_object_array_length(o) == 1);
        json_object_put(o);

        /* A text refused inside the \u escape that follows a high surrogate: json_tokener_reset() does
         * not clear the surrogate json-c keeps, and the next text's first \u escape came out behind a
         * U+FFFD (found by fuzz-task-spec: one request's bad body changed the next one's strings). */
        ASSERT_TRUE(refuses("\"\\ud800\\u00zz\""));
        ASSERT_INT_EQ(parse("\"\\u0041\\u00e9\"", &o, NULL), 0);
        ASSERT_STREQ(json_object_get_string(o), "A\xc3\xa9");
        json_object_put(o);
        ASSERT_TRUE(refuses("{\"k\": \"\\ud83d\\u12\"}"));
        ASSERT_INT_EQ(parse("{\"\\u0042\": \"\\u0043\"}", &o, NULL), 0);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(o, "B")), "C");
        json_object_put(o);
}

static void test_get_int64(void) {
        _cleanup_json_ json_object *o = NULL;
        int64_t i = 7;

        ASSERT_INT_EQ(parse("{\"max\": 9223372036854775807, \"min1\": -9223372036854775807,"
                            " \"over\": 9223372036854775808, \"huge\": 18446744073709551616,"
                            " \"under\": -9223372036854775809, \"float\": 1.0, \"exp\": 1e3,"
                            " \"str\": \"1\", \"null\": null, \"bool\": true}", &o, NULL), 0);
        ASSERT_INT_EQ(json_get_int64(o, "max", &i), 0);
        ASSERT_INT_EQ(i, INT64_MAX);
        ASSERT_INT_EQ(json_get_int64(o, "min1", &i), 0);
        ASSERT_INT_EQ(i, -INT64_MAX);

        i = 7;
        ASSERT_INT_EQ(json_get_int64(o, "over", &i), -ERANGE);
        ASSERT_INT_EQ(json_get_int64(o, "huge", &i), -ERANGE);
        ASSERT_INT_EQ(json_get_int64(o, "under", &i), -ERANGE);
        ASSERT_INT_EQ(json_get_int64(o, "float", &i), -EINVAL);
        ASSERT_INT_EQ(json_get_int64(o, "exp", &i), -EINVAL);
        ASSERT_INT_EQ(json_get_int64(o, "str", &i), -EINVAL);
        ASSERT_INT_EQ(json_get_int64(o, "bool", &i), -EINVAL);
        ASSERT_INT_EQ(json_get_int64(o, "null", &i), -ENOENT);
        ASSERT_INT_EQ(json_get_int64(o, "missing", &i), -ENOENT);
        ASSERT_INT_EQ(i, 7); /* untouched on failure */
}

static void test_get_string_bool(void) {
        _cleanup_json_ json_object *o = NULL;
        const char *s = "untouched";
        bool b = true;

        ASSERT_INT_EQ(parse("{\"s\": \"v\", \"n\": 1, \"b\": false, \"z\": null, \"sb\": \"true\"}", &o, NULL), 0);
        ASSERT_INT_EQ(json_get_string(o, "s", &s), 0);
        ASSERT_STREQ(s, "v");
        s = "untouched";
        ASSERT_INT_EQ(json_get_string(o, "n", &s), -EINVAL);
        ASSERT_INT_EQ(json_get_string(o, "z", &s), -ENOENT);
        ASSERT_INT_EQ(json_get_string(o, "x", &s), -ENOENT);
        ASSERT_STREQ(s, "untouched");
        ASSERT_INT_EQ(json_get_bool(o, "b", &b), 0);
        ASSERT_TRUE(!b);
        b = true;
        ASSERT_INT_EQ(json_get_bool(o, "sb", &b), -EINVAL);
        ASSERT_INT_EQ(json_get_bool(o, "n", &b), -EINVAL);
        ASSERT_INT_EQ(json_get_bool(o, "z", &b), -ENOENT);
        ASSERT_TRUE(b);
}

static void test_build_and_print(void) {
        _cleanup_json_ json_object *o = json_object_new_object();

        ASSERT_TRUE(o);
        ASSERT_INT_EQ(json_add_string(o, "path", "a/b"), 0);
        ASSERT_INT_EQ(json_add_string(o, "none", NULL), 0);
        ASSERT_INT_EQ(json_add_int64(o, "big", INT64_MIN), 0);
        ASSERT_INT_EQ(json_add(o, "fail", NULL), -ENOMEM);
        ASSERT_STREQ(json_to_string(o), "{\"path\":\"a/b\",\"none\":null,\"big\":-9223372036854775808}");

        /* What we print, we parse back to the same thing. */
        _cleanup_json_ json_object *back = NULL;
        const char *text = json_to_string(o);
        ASSERT_INT_EQ(json_parse_strict(text, strlen(text), &back, NULL), 0);
        ASSERT_TRUE(json_object_equal(o, back));
}

int main(void) {
        RUN_TEST(test_documents);
        RUN_TEST(test_top_level_scalars);
        RUN_TEST(test_trailing_garbage);
        RUN_TEST(test_incomplete);
        RUN_TEST(test_not_json);
        RUN_TEST(test_non_finite_numbers);
        RUN_TEST(test_nul_escape);
        RUN_TEST(test_invalid_utf8);
        RUN_TEST(test_nul_byte);
        RUN_TEST(test_deep_nesting);
        RUN_TEST(test_reuse_after_failure);
        RUN_TEST(test_get_int64);
        RUN_TEST(test_get_string_bool);
        RUN_TEST(test_build_and_print);
        return TESTS_DONE();
}
