/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Cluster key files, public key parsing, the cluster info-hash, and the task record format. */

#include <sys/stat.h>

#include "cluster-key.h"
#include "dht-test.h"
#include "hex.h"
#include "task-record.h"

static void test_key_file(void) {
        char dir[] = "/tmp/test-cluster-XXXXXX", path[256], hex1[65], hex2[65], pubfile[128] = {};
        EVP_PKEY *k1, *k2;
        struct stat st;
        FILE *f;

        ASSERT(mkdtemp(dir));
        ASSERT_EQ(cluster_key_load_or_generate(dir, &k1), 0);
        snprintf(path, sizeof(path), "%s/cluster.key", dir);
        ASSERT_EQ(stat(path, &st), 0);
        ASSERT_EQ(st.st_mode & 07777, 0600U);
        /* the second start loads the same key */
        ASSERT_EQ(cluster_key_load_or_generate(dir, &k2), 0);
        ASSERT_EQ(cluster_key_public_hex(k1, hex1), 0);
        ASSERT_EQ(cluster_key_public_hex(k2, hex2), 0);
        ASSERT(streq(hex1, hex2));
        /* the public half is written for the operator */
        snprintf(path, sizeof(path), "%s/cluster.pub", dir);
        f = fopen(path, "re");
        ASSERT(f && fgets(pubfile, sizeof(pubfile), f));
        fclose(f);
        ASSERT(strncmp(pubfile, hex1, 64) == 0);
        /* writing over an existing key is refused unless asked for */
        snprintf(path, sizeof(path), "%s/cluster.key", dir);
        ASSERT_EQ(cluster_key_write_file(path, k2, false), -EEXIST);
        EVP_PKEY_free(k1);
        EVP_PKEY_free(k2);
        /* garbage is not a key */
        f = fopen(path, "we");
        fputs("not a key\n", f);
        fclose(f);
        ASSERT(cluster_key_load_or_generate(dir, &k1) < 0);
        ASSERT_EQ(cluster_key_load_file("/nonexistent/cluster.key", &k1), -ENOENT);
        unlink(path);
        snprintf(path, sizeof(path), "%s/cluster.pub", dir);
        unlink(path);
        rmdir(dir);
}

static void test_parse_public(void) {
        uint8_t k[32], expect[32];

        ASSERT_EQ(hex_decode("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548", expect, 32), 0);
        ASSERT_EQ(cluster_key_parse_public("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548", k), 0);
        ASSERT(memcmp(k, expect, 32) == 0);
        ASSERT_EQ(cluster_key_parse_public("77FF84905A91936367C01360803104F92432FCD904A43511876DF5CDF3E7E548", k), 0);
        ASSERT(memcmp(k, expect, 32) == 0);
        /* base64 of the same bytes, padded and not, and the URL-safe alphabet */
        ASSERT_EQ(cluster_key_parse_public("d/+EkFqRk2NnwBNggDEE+SQy/NkEpDURh231zfPn5Ug=", k), 0);
        ASSERT(memcmp(k, expect, 32) == 0);
        ASSERT_EQ(cluster_key_parse_public("d/+EkFqRk2NnwBNggDEE+SQy/NkEpDURh231zfPn5Ug", k), 0);
        ASSERT(memcmp(k, expect, 32) == 0);
        ASSERT_EQ(cluster_key_parse_public("d_-EkFqRk2NnwBNggDEE-SQy_NkEpDURh231zfPn5Ug", k), 0);
        ASSERT(memcmp(k, expect, 32) == 0);
        ASSERT(cluster_key_parse_public("d/+EkFqRk2NnwBNggDEE+SQy/NkEpDURh231zfPn5Uh=", k) < 0); /* stray low bits */
        ASSERT(cluster_key_parse_public("77ff", k) < 0);
        ASSERT(cluster_key_parse_public("zzff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548", k) < 0);
        ASSERT(cluster_key_parse_public("", k) < 0);
        ASSERT(cluster_key_parse_public(NULL, k) < 0);
}

static void test_info_hash(void) {
        uint8_t a[20], b[20], c[20];
        cluster_info_hash("prod", a);
        cluster_info_hash("prod", b);
        cluster_info_hash("test", c);
        ASSERT(memcmp(a, b, 20) == 0);
        ASSERT(memcmp(a, c, 20) != 0);
        sha1("mc-control:prod", strlen("mc-control:prod"), b);
        ASSERT(memcmp(a, b, 20) == 0);
}

static void test_task_record(void) {
        uint8_t buf[BEP44_VALUE_MAX];
        char salt[BEP44_SALT_MAX + 1], longid[129];
        TaskRecordData d;
        size_t n, sl;
        const char *expect =
                "d7:attempti2e3:fmti1e2:id3:t-111:lease_tokeni7e4:node6:node-b6:status7:running10:updated_ati1700000000000000ee";

        ASSERT_EQ(task_record_encode(&(TaskRecord) { .id = "t-1", .status = "running", .attempt = 2, .lease_token = 7,
                                                     .node = "node-b", .updated_at_usec = 1700000000000000 },
                                     buf, sizeof(buf), &n), 0);
        ASSERT(n == strlen(expect) && memcmp(buf, expect, n) == 0);
        ASSERT_EQ(task_record_decode(buf, n, &d), 0);
        ASSERT(streq(d.id, "t-1") && streq(d.status, "running") && streq(d.node, "node-b"));
        ASSERT(d.attempt == 2 && d.lease_token == 7 && d.updated_at_usec == 1700000000000000);

        /* not leased: no node */
        ASSERT_EQ(task_record_encode(&(TaskRecord) { .id = "t-2", .status = "queued", .updated_at_usec = 1 }, buf, sizeof(buf), &n), 0);
        ASSERT_EQ(task_record_decode(buf, n, &d), 0);
        ASSERT(d.node[0] == 0 && d.lease_token == 0);

        /* invalid input is refused */
        ASSERT(task_record_encode(&(TaskRecord) { .id = "t-2", .status = "exploded" }, buf, sizeof(buf), &n) < 0);
        ASSERT(task_record_encode(&(TaskRecord) { .id = "../x", .status = "queued" }, buf, sizeof(buf), &n) < 0);
        ASSERT(task_record_encode(&(TaskRecord) { .id = "", .status = "queued" }, buf, sizeof(buf), &n) < 0);
        ASSERT(task_record_encode(&(TaskRecord) { .id = "a", .status = "queued", .attempt = -1 }, buf, sizeof(buf), &n) < 0);

        /* the reader accepts only the format */
#define BAD(s) ASSERT_EQ(task_record_decode(s, strlen(s), &d), -EBADMSG)
        BAD("i1e");
        BAD("de");
        BAD("d7:attempti2e3:fmti2e2:id3:t-111:lease_tokeni7e6:status7:running10:updated_ati1ee");   /* fmt 2 */
        BAD("d7:attempti2e3:fmti1e2:id3:t-111:lease_tokeni7e6:status5:weird10:updated_ati1ee");    /* status */
        BAD("d7:attempti2e3:fmti1e2:id3:../11:lease_tokeni7e6:status6:queued10:updated_ati1ee");   /* id */
        BAD("d7:attempti-2e3:fmti1e2:id3:t-111:lease_tokeni7e6:status6:queued10:updated_ati1ee");  /* attempt */
        BAD("d7:attempti2e3:fmti1e2:id3:t-111:lease_tokeni7e6:status6:queued10:updated_ati1e1:zi1ee"); /* unknown key */
        BAD("d7:attempti2e3:fmti1e2:id3:t-111:lease_tokeni7e4:node2:a\0" "6:status6:queued10:updated_ati1ee");
        BAD("d3:fmti1e2:id3:t-111:lease_tokeni7e6:status6:queued10:updated_ati1ee");               /* missing attempt */

        /* salts: short ids as they are, long ones hashed, within 64 bytes */
        ASSERT_EQ(task_record_salt("abc", salt, &sl), 0);
        ASSERT(sl == 8 && streq(salt, "task/abc"));
        memset(longid, 'a', 128);
        longid[128] = 0;
        ASSERT_EQ(task_record_salt(longid, salt, &sl), 0);
        ASSERT(sl == 46 && strncmp(salt, "task/~", 6) == 0);
        memset(longid, 'b', 59);
        longid[59] = 0;
        ASSERT_EQ(task_record_salt(longid, salt, &sl), 0);
        ASSERT(sl == 64 && strncmp(salt, "task/bbb", 8) == 0);
        longid[59] = 'b';
        longid[60] = 0;
        ASSERT_EQ(task_record_salt(longid, salt, &sl), 0);
        ASSERT(sl == 46);

        /* the largest record fits in BEP 44's 1000 bytes */
        {
                char node[256];
                memset(longid, 'x', 128);
                longid[128] = 0;
                memset(node, 'n', 255);
                node[255] = 0;
                ASSERT_EQ(task_record_encode(&(TaskRecord) { .id = longid, .status = "succeeded", .attempt = INT64_MAX,
                                                             .lease_token = INT64_MAX, .node = node, .updated_at_usec = INT64_MIN },
                                             buf, sizeof(buf), &n), 0);
                ASSERT(n < BEP44_VALUE_MAX);
                ASSERT_EQ(task_record_decode(buf, n, &d), 0);
        }
}

int main(void) {
        test_key_file();
        test_parse_public();
        test_info_hash();
        test_task_record();
        return 0;
}
