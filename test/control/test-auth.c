/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Tokens: the file format, refusal of a file others can read, and who a header identifies. */

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "tests.h"

static char *write_file(const char *text, mode_t mode) {
        static char path[] = "/tmp/mc-test-auth-XXXXXX";
        int fd;

        strcpy(path, "/tmp/mc-test-auth-XXXXXX");
        fd = mkstemp(path);
        if (fd < 0)
                return NULL;
        if (write(fd, text, strlen(text)) != (ssize_t) strlen(text) || fchmod(fd, mode) < 0) {
                close(fd);
                return NULL;
        }
        close(fd);
        return path;
}

/* auth_new() on a tokens file of text with mode, removed afterwards; -EIO when it could not be written. */
static int auth_from_file(const char *text, mode_t mode, const char *control_token, Auth **ret) {
        char *path = write_file(text, mode);
        int r;

        if (!path)
                return -EIO;
        r = auth_new(path, control_token, false, ret);
        unlink(path);
        return r;
}

/* header identifies kind and, unless AUTH_NONE, name. */
static void assert_identity(const Auth *a, const char *header, AuthKind kind, const char *name) {
        AuthIdentity id = auth_check_header(a, header);

        if (id.kind != kind)
                TEST_FAIL_("\"%s\": kind %d, expected %d", header, (int) id.kind, (int) kind);
        if (kind != AUTH_NONE && (!id.name || !streq(id.name, name)))
                TEST_FAIL_("\"%s\": name %s, expected %s", header, id.name ?: "(null)", name);
}

static void test_parse_line(void) {
        AuthKind kind;
        char *name = NULL, *token = NULL;

        ASSERT_INT_EQ(auth_parse_line("   # comment\n", &kind, &name, &token), 0);
        ASSERT_INT_EQ(auth_parse_line("\n", &kind, &name, &token), 0);
        ASSERT_INT_EQ(auth_parse_line("user alice s3cret-token\n", &kind, &name, &token), 1);
        ASSERT_INT_EQ(kind, AUTH_USER);
        ASSERT_STREQ(name, "alice");
        ASSERT_STREQ(token, "s3cret-token");
        free(name);
        free(token);
        ASSERT_INT_EQ(auth_parse_line("agent node-b tok\n", &kind, &name, &token), 1);
        ASSERT_INT_EQ(kind, AUTH_AGENT);
        free(name);
        free(token);
        ASSERT_INT_EQ(auth_parse_line("admin root tok\n", &kind, &name, &token), -EINVAL);
        ASSERT_INT_EQ(auth_parse_line("user alice\n", &kind, &name, &token), -EINVAL);
        ASSERT_INT_EQ(auth_parse_line("user alice tok extra\n", &kind, &name, &token), -EINVAL);
        ASSERT_INT_EQ(auth_parse_line("agent ../node tok\n", &kind, &name, &token), -EINVAL);
}

static void test_file_and_headers(void) {
        _cleanup_(auth_freep) Auth *a = NULL;

        ASSERT_INT_EQ(auth_from_file("# tokens\nuser alice alice-token-0123456789\nagent node-a node-a-token-0123456789\n",
                                     0600, "seed-token-0123456789", &a), 0);
        ASSERT_UINT_EQ(auth_n_tokens(a), 3);

        assert_identity(a, "Bearer alice-token-0123456789", AUTH_USER, "alice");
        assert_identity(a, "bearer node-a-token-0123456789", AUTH_AGENT, "node-a");
        assert_identity(a, "Bearer seed-token-0123456789", AUTH_USER, "default");

        /* Prefixes, extensions, other schemes and empty tokens identify nobody. */
        ASSERT_INT_EQ(auth_check_header(a, "Bearer alice-token-012345678").kind, AUTH_NONE);
        ASSERT_INT_EQ(auth_check_header(a, "Bearer alice-token-01234567890").kind, AUTH_NONE);
        ASSERT_INT_EQ(auth_check_header(a, "Basic alice-token-0123456789").kind, AUTH_NONE);
        ASSERT_INT_EQ(auth_check_header(a, "Bearer ").kind, AUTH_NONE);
        ASSERT_INT_EQ(auth_check_header(a, NULL).kind, AUTH_NONE);
}

static void test_file_readable_by_others_is_refused(void) {
        Auth *a = NULL;

        ASSERT_INT_EQ(auth_from_file("user alice alice-token-0123456789\n", 0644, NULL, &a), -EPERM);
        ASSERT_NULL(a);
}

/* 0640 is taken when the group is this process's own (the packaged root:mc-control), and only then;
 * a group that may write is refused whatever it is. */
static void test_file_readable_by_own_group(void) {
        Auth *a = NULL;
        gid_t other = getegid() == 65534 ? 65533 : 65534;
        char *path = write_file("user alice alice-token-0123456789\n", 0640);

        ASSERT_TRUE(path);
        ASSERT_INT_EQ(auth_new(path, NULL, false, &a), 0);
        ASSERT_INT_EQ(auth_check_header(a, "Bearer alice-token-0123456789").kind, AUTH_USER);
        a = auth_free(a);

        ASSERT_INT_EQ(chmod(path, 0660), 0);
        ASSERT_INT_EQ(auth_new(path, NULL, false, &a), -EPERM);
        ASSERT_NULL(a);

        /* Tests run as root, which may give the file away. */
        ASSERT_INT_EQ(chmod(path, 0640), 0);
        ASSERT_INT_EQ(chown(path, (uid_t) -1, other), 0);
        ASSERT_INT_EQ(auth_new(path, NULL, false, &a), -EPERM);
        ASSERT_NULL(a);
        unlink(path);
}

static void test_malformed_file_is_refused(void) {
        Auth *a = NULL;

        ASSERT_INT_EQ(auth_from_file("user alice\n", 0600, NULL, &a), -EINVAL);
        ASSERT_NULL(a);
}

/* Thousands of entries, as with one agent token per node: each token names its own entry, and a token
 * one character off, or a stored token's prefix, names nobody. */
static void test_many_tokens(void) {
        _cleanup_(auth_freep) Auth *a = NULL;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f;
        char header[128], name[64];

        f = open_memstream(&text, &size);
        ASSERT_TRUE(f);
        for (unsigned i = 0; i < 3000; i++)
                fprintf(f, "%s node-%u token-of-node-%u-0123456789\n", i % 100 == 0 ? "user" : "agent", i, i);
        ASSERT_INT_EQ(fclose(f), 0);

        ASSERT_INT_EQ(auth_new(NULL, NULL, false, &a), 0);
        f = fmemopen(text, size, "r");
        ASSERT_TRUE(f);
        ASSERT_INT_EQ(auth_load_stream(a, f, "many"), 0);
        fclose(f);
        ASSERT_UINT_EQ(auth_n_tokens(a), 3000);

        for (unsigned i = 0; i < 3000; i++) {
                snprintf(header, sizeof(header), "Bearer token-of-node-%u-0123456789", i);
                snprintf(name, sizeof(name), "node-%u", i);
                assert_identity(a, header, i % 100 == 0 ? AUTH_USER : AUTH_AGENT, name);

                snprintf(header, sizeof(header), "Bearer token-of-node-%u-0123456788", i);
                ASSERT_INT_EQ(auth_check_header(a, header).kind, AUTH_NONE);
                snprintf(header, sizeof(header), "Bearer token-of-node-%u-012345678", i);
                ASSERT_INT_EQ(auth_check_header(a, header).kind, AUTH_NONE);
        }
}

/* Two entries with one token (an operator's mistake, logged): the first in the file counts, also for
 * CONTROL_TOKEN, which comes after the file's entries. */
static void test_same_token_twice(void) {
        _cleanup_(auth_freep) Auth *a = NULL;

        ASSERT_INT_EQ(auth_from_file("agent node-a shared-token-0123456789\n"
                                     "user bob bob-token-0123456789\n"
                                     "user alice shared-token-0123456789\n"
                                     "user carol shared-token-0123456789\n",
                                     0600, "bob-token-0123456789", &a), 0);
        ASSERT_UINT_EQ(auth_n_tokens(a), 5);

        assert_identity(a, "Bearer shared-token-0123456789", AUTH_AGENT, "node-a");
        assert_identity(a, "Bearer bob-token-0123456789", AUTH_USER, "bob");
}

static void test_disabled(void) {
        _cleanup_(auth_freep) Auth *a = NULL;

        ASSERT_INT_EQ(auth_new(NULL, NULL, true, &a), 0);
        ASSERT_INT_EQ(auth_check_header(a, NULL).kind, AUTH_DISABLED);
}

int main(void) {
        RUN_TEST(test_parse_line);
        RUN_TEST(test_file_and_headers);
        RUN_TEST(test_file_readable_by_others_is_refused);
        RUN_TEST(test_file_readable_by_own_group);
        RUN_TEST(test_malformed_file_is_refused);
        RUN_TEST(test_many_tokens);
        RUN_TEST(test_same_token_twice);
        RUN_TEST(test_disabled);
        return TESTS_DONE();
}
