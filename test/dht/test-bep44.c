/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bep44.h"
#include "dht-test.h"
#include "hex.h"

static void unhex(const char *s, uint8_t *out, size_t n) {
        ASSERT_EQ(hex_decode(s, out, n), 0);
}

/* The test vectors of BEP 44. */
static void test_vectors(void) {
        uint8_t k[32], sig[64], t[20], expect[20];
        const char *v = "12:Hello World!";

        unhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548", k, 32);
        unhex("305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff"
              "1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01", sig, 64);
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 1, v, strlen(v)), 0);
        /* Any change breaks it: seq, value, salt, signature, key. */
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 2, v, strlen(v)), -EBADMSG);
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 1, "12:Hello World?", strlen(v)), -EBADMSG);
        ASSERT_EQ(bep44_verify(k, sig, "foobar", 6, 1, v, strlen(v)), -EBADMSG);
        sig[10] ^= 1;
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 1, v, strlen(v)), -EBADMSG);
        sig[10] ^= 1;
        k[0] ^= 1;
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 1, v, strlen(v)), -EBADMSG);
        k[0] ^= 1;

        bep44_mutable_target(k, NULL, 0, t);
        unhex("4a533d47ec9c7d95b1ad75f576cffc641853b750", expect, 20);
        ASSERT(memcmp(t, expect, 20) == 0);
        bep44_mutable_target(k, "foobar", 6, t);
        unhex("411eba73b6f087ca51a3795d9c8c938d365e32c1", expect, 20);
        ASSERT(memcmp(t, expect, 20) == 0);
        bep44_immutable_target(v, strlen(v), t);
        unhex("e5f96f6f38320f0f33959cb4d3d656452117aadb", expect, 20);
        ASSERT(memcmp(t, expect, 20) == 0);
}

static void test_sign(void) {
        uint8_t seed[32], k[32], k2[32], sig[64], buf[2048];
        EVP_PKEY *key, *key2;
        size_t len;

        memset(seed, 7, sizeof(seed));
        ASSERT_EQ(bep44_key_from_seed(seed, &key), 0);
        ASSERT_EQ(bep44_key_from_seed(seed, &key2), 0);
        ASSERT_EQ(bep44_key_public(key, k), 0);
        ASSERT_EQ(bep44_key_public(key2, k2), 0);
        ASSERT(memcmp(k, k2, 32) == 0); /* deterministic from the seed */
        EVP_PKEY_free(key2);

        ASSERT_EQ(bep44_sign(key, "task/abc", 8, 42, "d1:ai1ee", 8, sig), 0);
        ASSERT_EQ(bep44_verify(k, sig, "task/abc", 8, 42, "d1:ai1ee", 8), 0);
        ASSERT_EQ(bep44_verify(k, sig, "task/abd", 8, 42, "d1:ai1ee", 8), -EBADMSG);
        ASSERT_EQ(bep44_verify(k, sig, NULL, 0, 42, "d1:ai1ee", 8), -EBADMSG);

        ASSERT_EQ(bep44_key_generate(&key2), 0);
        ASSERT_EQ(bep44_key_public(key2, k2), 0);
        ASSERT_EQ(bep44_verify(k2, sig, "task/abc", 8, 42, "d1:ai1ee", 8), -EBADMSG);
        EVP_PKEY_free(key2);

        ASSERT_EQ(bep44_signed_buffer("ab", 2, -3, "i1e", 3, buf, sizeof(buf), &len), 0);
        ASSERT(len == strlen("4:salt2:ab3:seqi-3e1:vi1e") && memcmp(buf, "4:salt2:ab3:seqi-3e1:vi1e", len) == 0);

        /* Bounds: 1000 bytes of value, 64 of salt. */
        memset(buf, 'x', sizeof(buf));
        ASSERT_EQ(bep44_sign(key, buf, 65, 1, "i1e", 3, sig), -E2BIG);
        ASSERT_EQ(bep44_sign(key, NULL, 0, 1, buf, 1001, sig), -E2BIG);
        ASSERT_EQ(bep44_verify(k, sig, buf, 65, 1, "i1e", 3), -EBADMSG);

        /* A key that is not a point on the curve verifies nothing. */
        memset(k2, 0xff, 32);
        ASSERT_EQ(bep44_verify(k2, sig, NULL, 0, 1, "i1e", 3), -EBADMSG);
        EVP_PKEY_free(key);
}

int main(void) {
        test_vectors();
        test_sign();
        return 0;
}
