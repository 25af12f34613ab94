/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The small helpers every daemon leans on: atomic file writes (modes, no-replace, no temporary file
 * left behind), UTF-8 validation and cutting, hex, string lists and intrusive lists. */

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/stat.h>

#include "file-util.h"
#include "hex.h"
#include "list.h"
#include "siphash.h"
#include "spawn-util.h"
#include "strv.h"
#include "tests.h"
#include "tls-client.h"
#include "utf8.h"

static char dir[] = "/tmp/mc-test-shared-util-XXXXXX";

static size_t count_entries(void) {
        DIR *d = opendir(dir);
        struct dirent *e;
        size_t n = 0;

        if (!d)
                return SIZE_MAX;
        while ((e = readdir(d)))
                if (!streq(e->d_name, ".") && !streq(e->d_name, ".."))
                        n++;
        closedir(d);
        return n;
}

static void test_write_file_atomic(void) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        struct stat st;
        mode_t old = umask(0077);

        ASSERT_TRUE(asprintf(&path, "%s/f", dir) >= 0);
        ASSERT_INT_EQ(write_file_atomic(path, "one\n", 4, 0644, WRITE_FILE_SYNC), 0);
        umask(old);
        /* The mode asked for, whatever the umask. */
        ASSERT_INT_EQ(stat(path, &st), 0);
        ASSERT_UINT_EQ(st.st_mode & 07777, 0644);
        ASSERT_INT_EQ(read_one_line_file(path, &line), 0);
        ASSERT_STREQ(line, "one");

        /* Replaced whole; no-replace refuses and leaves the first. */
        ASSERT_INT_EQ(write_file_atomic(path, "two", 3, 0600, 0), 0);
        free(line);
        line = NULL;
        ASSERT_INT_EQ(read_one_line_file(path, &line), 0);
        ASSERT_STREQ(line, "two");
        ASSERT_INT_EQ(write_file_atomic(path, "three", 5, 0600, WRITE_FILE_NO_REPLACE), -EEXIST);
        free(line);
        line = NULL;
        ASSERT_INT_EQ(read_one_line_file(path, &line), 0);
        ASSERT_STREQ(line, "two");
        /* No temporary file is left, whichever way it went. */
        ASSERT_UINT_EQ(count_entries(), 1);

        ASSERT_INT_EQ(write_file_atomic("/nonexistent-dir-of-mc/x", "", 0, 0600, 0), -ENOENT);
        ASSERT_INT_EQ(write_file_atomic("/tmp/", "", 0, 0600, 0), -EINVAL);
        ASSERT_INT_EQ(unlink(path), 0);
}

static void test_read_one_line_file(void) {
        _cleanup_free_ char *path = NULL, *line = NULL;

        ASSERT_TRUE(asprintf(&path, "%s/empty", dir) >= 0);
        ASSERT_INT_EQ(write_file_atomic(path, "", 0, 0600, 0), 0);
        ASSERT_INT_EQ(read_one_line_file(path, &line), 0);
        ASSERT_STREQ(line, "");
        ASSERT_INT_EQ(unlink(path), 0);
        ASSERT_INT_EQ(read_one_line_file(path, &line), -ENOENT);
}

static void test_read_full_file(void) {
        _cleanup_free_ char *path = NULL, *a = NULL, *b = NULL, *c = NULL, *big = NULL;
        size_t n = 0;

        ASSERT_TRUE(asprintf(&path, "%s/full", dir) >= 0);
        ASSERT_INT_EQ(write_file_atomic(path, "one\ntwo\0three", 13, 0600, 0), 0);
        ASSERT_INT_EQ(read_full_file(path, 13, &a, &n), 0);
        ASSERT_UINT_EQ(n, 13);
        ASSERT_TRUE(memcmp(a, "one\ntwo\0three", 14) == 0);        /* NUL-terminated after the data */
        ASSERT_INT_EQ(read_full_file(path, 12, &b, NULL), -EFBIG);
        ASSERT_TRUE(!b);
        /* A /proc file reports a size of 0 and is read to its end all the same. */
        ASSERT_INT_EQ(read_full_file("/proc/self/mountinfo", 1U << 22, &c, &n), 0);
        ASSERT_TRUE(n > 0 && strlen(c) == n);
        /* Larger than the first buffer. */
        big = malloc(100000);
        ASSERT_TRUE(big);
        memset(big, 'x', 100000);
        ASSERT_INT_EQ(write_file_atomic(path, big, 100000, 0600, 0), 0);
        free(a);
        a = NULL;
        ASSERT_INT_EQ(read_full_file(path, 100000, &a, &n), 0);
        ASSERT_UINT_EQ(n, 100000);
        ASSERT_INT_EQ(unlink(path), 0);
        ASSERT_INT_EQ(read_full_file(path, 10, &b, NULL), -ENOENT);
}

static void test_utf8(void) {
        _cleanup_free_ char *a = utf8_sanitize("h\xc3\xa9llo", 6), *b = utf8_sanitize("a\0b", 3),
                            *c = utf8_sanitize("\xed\xa0\x80", 3);

        ASSERT_TRUE(utf8_is_valid("caf\xc3\xa9", 5));
        ASSERT_TRUE(utf8_is_valid("\xf0\x9f\x98\x80", 4));
        ASSERT_TRUE(!utf8_is_valid("\xc0\xaf", 2));             /* overlong */
        ASSERT_TRUE(!utf8_is_valid("\xed\xa0\x80", 3));         /* surrogate */
        ASSERT_TRUE(!utf8_is_valid("\xf4\x90\x80\x80", 4));     /* beyond U+10FFFF */
        ASSERT_TRUE(!utf8_is_valid("\xe2\x82", 2));             /* cut */
        ASSERT_UINT_EQ(utf8_char_len("\xe2\x82\xac", 3), 3);
        ASSERT_UINT_EQ(utf8_char_len("\xe2\x82\xac", 2), 0);
        ASSERT_STREQ(a, "h\xc3\xa9llo");
        ASSERT_STREQ(b, "a\xef\xbf\xbd" "b");
        ASSERT_STREQ(c, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");

        /* "x€y": cutting inside the euro sign keeps it out whole. */
        ASSERT_UINT_EQ(utf8_prefix_len("x\xe2\x82\xacy", 5, 3), 1);
        ASSERT_UINT_EQ(utf8_prefix_len("x\xe2\x82\xacy", 5, 4), 4);
        ASSERT_UINT_EQ(utf8_prefix_len("abc", 3, 10), 3);
        ASSERT_UINT_EQ(utf8_suffix_start("x\xe2\x82\xacy", 5, 2), 4);
        ASSERT_UINT_EQ(utf8_suffix_start("x\xe2\x82\xacy", 5, 4), 1);
        ASSERT_UINT_EQ(utf8_suffix_start("abc", 3, 10), 0);
}

static void test_hex(void) {
        uint8_t b[3] = { 0x00, 0xab, 0xff }, out[3] = { 1, 2, 3 };
        char s[7];

        ASSERT_STREQ(hex_encode(b, sizeof(b), s), "00abff");
        ASSERT_INT_EQ(hex_decode("00ABff", out, sizeof(out)), 0);
        ASSERT_TRUE(memcmp(out, b, sizeof(b)) == 0);
        memset(out, 7, sizeof(out));
        ASSERT_INT_EQ(hex_decode("00abfg", out, sizeof(out)), -EINVAL);
        ASSERT_INT_EQ(hex_decode("00abf", out, sizeof(out)), -EINVAL);
        ASSERT_INT_EQ(hex_decode(NULL, out, sizeof(out)), -EINVAL);
        ASSERT_TRUE(out[0] == 7 && out[1] == 7 && out[2] == 7);  /* untouched on failure */
}

/* The reference's test vectors: key 00..0f, messages 00..(n-1). */
static void test_siphash(void) {
        uint8_t key[16], msg[64];

        for (unsigned i = 0; i < sizeof(key); i++)
                key[i] = (uint8_t) i;
        for (unsigned i = 0; i < sizeof(msg); i++)
                msg[i] = (uint8_t) i;
        ASSERT_TRUE(siphash24(msg, 0, key) == UINT64_C(0x726fdb47dd0e0e31));
        ASSERT_TRUE(siphash24(msg, 8, key) == UINT64_C(0x93f5f5799a932462));
        ASSERT_TRUE(siphash24(msg, 15, key) == UINT64_C(0xa129ca6149be45e5));
        /* Another key, another value. */
        key[0] ^= 1;
        ASSERT_TRUE(siphash24(msg, 15, key) != UINT64_C(0xa129ca6149be45e5));
}

static void test_strv(void) {
        _cleanup_strv_free_ char **l = strv_split(" a,b ,, c\n"), **e = NULL;
        _cleanup_free_ char *j = NULL, *k = NULL;

        ASSERT_TRUE(l);
        ASSERT_UINT_EQ(strv_length(l), 3);
        ASSERT_TRUE(strv_contains(l, "b") && !strv_contains(l, "d") && !strv_contains(NULL, "a"));
        ASSERT_INT_EQ(strv_extendf(&l, "%s-%d", "d", 4), 0);
        j = strv_join(l, ", ");
        ASSERT_STREQ(j, "a, b, c, d-4");
        k = strv_join(e, ",");
        ASSERT_STREQ(k, "");
        ASSERT_UINT_EQ(strv_length(e), 0);

        /* On spaces only: a comma stays in a word (a mount point such as /sys/fs/cgroup/cpu,cpuacct). */
        strv_free(l);
        l = strv_split_separators("  31 23 /sys/fs/cgroup/cpu,cpuacct  rw ", " ");
        ASSERT_UINT_EQ(strv_length(l), 4);
        ASSERT_STREQ(l[2], "/sys/fs/cgroup/cpu,cpuacct");
        ASSERT_TRUE(endswith("leases.json", ".json") && endswith("x", "") && !endswith("x", "xx") && !endswith("a.jso", ".json"));
}

static void test_tls_client(void) {
        _cleanup_strv_free_ char **l = strv_split("http://10.0.0.1:8080,https://10.0.0.2:8080,http://[fd00::1]:80");
        TlsClientSettings none = {}, ca = { .ca_file = (char *) "/etc/mc/tls/ca.crt" };
        TlsClientSettings half = { .cert_file = (char *) "/etc/ssl/certs" };
        _cleanup_free_ char *j = NULL;

        /* Replicas found in the DHT: http:// as announced, https:// once a CA is configured. */
        ASSERT_INT_EQ(tls_client_found_urls(&none, l), 0);
        ASSERT_STREQ(l[0], "http://10.0.0.1:8080");
        ASSERT_INT_EQ(tls_client_found_urls(&ca, l), 0);
        j = strv_join(l, ",");
        ASSERT_STREQ(j, "https://10.0.0.1:8080,https://10.0.0.2:8080,https://[fd00::1]:80");

        ASSERT_INT_EQ(tls_client_settings_check(&none, l), 0);
        ASSERT_INT_EQ(tls_client_settings_check(&half, l), -EINVAL);           /* TLS_CERT without TLS_KEY */
        ca.ca_file = (char *) "/nonexistent/ca.crt";
        ASSERT_INT_EQ(tls_client_settings_check(&ca, l), -ENOENT);
}

typedef struct Item {
        int v;
        LIST_FIELDS(struct Item);
} Item;

static void test_list(void) {
        Item a = { .v = 1 }, b = { .v = 2 }, c = { .v = 3 };
        Item *head = NULL, *tail = NULL;
        int sum = 0;

        LIST_APPEND(head, tail, &a);
        LIST_APPEND(head, tail, &b);
        LIST_APPEND(head, tail, &c);
        ASSERT_TRUE(head == &a && tail == &c && a.next == &b && c.prev == &b);
        LIST_REMOVE_QUEUED(head, tail, &c);
        ASSERT_TRUE(tail == &b && !b.next && !c.prev && !c.next);
        LIST_REMOVE_QUEUED(head, tail, &a);
        ASSERT_TRUE(head == &b && tail == &b && !b.prev);
        ASSERT_TRUE(!LIST_IS_LINKED(head, &a) && LIST_IS_LINKED(head, &b));

        LIST_PREPEND(head, &a);
        LIST_PREPEND(head, &c);
        for (Item *i = head; i; i = i->next)
                sum = sum * 10 + i->v;
        ASSERT_INT_EQ(sum, 312);
        LIST_REMOVE(head, &a);
        ASSERT_TRUE(head == &c && c.next == &b && b.prev == &c);
}

/* The child reads its stdin from our pipe, leads a session of its own, has no signal blocked (ours
 * is), and has none of our descriptors above 2: it exits 7 when all of that holds. Its mask is read
 * with the shell's builtins, before the shell forks anything: dash blocks every signal around a fork,
 * and a child reading its parent's status in that moment (a loaded machine) saw them all blocked. */
static void test_spawn_helper(void) {
        char script[512];
        int in[2], leak[2], status;
        sigset_t ss, old;
        pid_t pid;

        ASSERT_TRUE(pipe(in) == 0);
        ASSERT_TRUE(pipe(leak) == 0);   /* without O_CLOEXEC: only the spawn's closing keeps it from the child */
        snprintf(script, sizeof(script),
                 "b=; while read -r k v; do [ \"$k\" = SigBlk: ] && b=$v; done </proc/$$/status; "
                 "case \"$b\" in ''|*[!0]*) exit 1;; esac; "
                 "read x && [ \"$x\" = hello ] && [ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && "
                 "[ ! -e /proc/$$/fd/%d ] && exit 7; exit 1",
                 leak[1]);
        sigemptyset(&ss);
        sigaddset(&ss, SIGUSR1);
        ASSERT_TRUE(sigprocmask(SIG_BLOCK, &ss, &old) == 0);
        ASSERT_INT_EQ(spawn_helper("/bin/sh", (char *[]) { (char *) "sh", (char *) "-c", script, NULL }, in[0], -1, &pid), 0);
        ASSERT_TRUE(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
        ASSERT_TRUE(write(in[1], "hello\n", 6) == 6);
        close(in[1]);
        ASSERT_TRUE(waitpid(pid, &status, 0) == pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_INT_EQ(WEXITSTATUS(status), 7);
        close(in[0]);
        close(leak[0]);
        close(leak[1]);

        /* A program that cannot run is the spawn's error, not a child's exit status later. */
        ASSERT_INT_EQ(spawn_helper("/nonexistent/mc-helper", (char *[]) { (char *) "x", NULL }, -1, -1, &pid), -ENOENT);
}

int main(void) {
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                return 1;
        }
        RUN_TEST(test_write_file_atomic);
        RUN_TEST(test_read_one_line_file);
        RUN_TEST(test_read_full_file);
        RUN_TEST(test_utf8);
        RUN_TEST(test_hex);
        RUN_TEST(test_siphash);
        RUN_TEST(test_strv);
        RUN_TEST(test_list);
        RUN_TEST(test_tls_client);
        RUN_TEST(test_spawn_helper);
        (void) rmdir(dir);
        return TESTS_DONE();
}
