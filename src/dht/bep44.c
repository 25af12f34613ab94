/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <openssl/sha.h>

#include "bep44.h"

void sha1(const void *p, size_t n, uint8_t ret[DHT_ID_SIZE]) {
        SHA1(p, n, ret);
}

void bep44_immutable_target(const void *v, size_t n, uint8_t ret[DHT_ID_SIZE]) {
        sha1(v, n, ret);
}

void bep44_mutable_target(const uint8_t k[BEP44_KEY_SIZE], const void *salt, size_t salt_len, uint8_t ret[DHT_ID_SIZE]) {
        uint8_t buf[BEP44_KEY_SIZE + BEP44_SALT_MAX];

        salt_len = MIN(salt_len, (size_t) BEP44_SALT_MAX);
        memcpy(buf, k, BEP44_KEY_SIZE);
        if (salt_len > 0)
                memcpy(buf + BEP44_KEY_SIZE, salt, salt_len);
        sha1(buf, BEP44_KEY_SIZE + salt_len, ret);
}

int bep44_signed_buffer(const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n,
                        uint8_t *buf, size_t size, size_t *ret_len) {
        size_t len = 0;
        int l;

        if (salt_len > BEP44_SALT_MAX || n > BEP44_VALUE_MAX)
                return -E2BIG;
        if (salt_len > 0) {
                l = snprintf((char *) buf, size, "4:salt%zu:", salt_len);
                if (l < 0 || (size_t) l + salt_len >= size)
                        return -ENOBUFS;
                memcpy(buf + l, salt, salt_len);
                len = (size_t) l + salt_len;
        }
        l = snprintf((char *) buf + len, size - len, "3:seqi%" PRIi64 "e1:v", seq);
        if (l < 0 || len + (size_t) l + n > size)
                return -ENOBUFS;
        len += (size_t) l;
        memcpy(buf + len, v, n);
        *ret_len = len + n;
        return 0;
}

int bep44_verify(const uint8_t k[BEP44_KEY_SIZE], const uint8_t sig[BEP44_SIG_SIZE],
                 const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n) {
        uint8_t buf[BEP44_VALUE_MAX + BEP44_SALT_MAX + 64];
        EVP_MD_CTX *ctx = NULL;
        EVP_PKEY *pkey = NULL;
        size_t len;
        int r;

        r = bep44_signed_buffer(salt, salt_len, seq, v, n, buf, sizeof(buf), &len);
        if (r < 0)
                return -EBADMSG;
        pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, k, BEP44_KEY_SIZE);
        if (!pkey)
                return -EBADMSG; /* not a valid point */
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                r = -ENOMEM;
        else if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1 ||
                 EVP_DigestVerify(ctx, sig, BEP44_SIG_SIZE, buf, len) != 1)
                r = -EBADMSG;
        else
                r = 0;
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(pkey);
        return r;
}

int bep44_sign(EVP_PKEY *key, const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n,
               uint8_t ret_sig[BEP44_SIG_SIZE]) {
        uint8_t buf[BEP44_VALUE_MAX + BEP44_SALT_MAX + 64], sig[BEP44_SIG_SIZE];
        size_t len, siglen = sizeof(sig);
        EVP_MD_CTX *ctx;
        int r;

        r = bep44_signed_buffer(salt, salt_len, seq, v, n, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) != 1 ||
            EVP_DigestSign(ctx, sig, &siglen, buf, len) != 1 || siglen != sizeof(sig))
                r = -EIO;
        EVP_MD_CTX_free(ctx);
        if (r < 0)
                return r;
        memcpy(ret_sig, sig, sizeof(sig));
        return 0;
}

int bep44_key_generate(EVP_PKEY **ret) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        if (!k)
                return -EIO;
        *ret = k;
        return 0;
}

int bep44_key_from_seed(const uint8_t seed[32], EVP_PKEY **ret) {
        EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
        if (!k)
                return -EINVAL;
        *ret = k;
        return 0;
}

int bep44_key_public(EVP_PKEY *key, uint8_t ret[BEP44_KEY_SIZE]) {
        size_t len = BEP44_KEY_SIZE;

        if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519)
                return -EINVAL;
        if (EVP_PKEY_get_raw_public_key(key, ret, &len) != 1 || len != BEP44_KEY_SIZE)
                return -EINVAL;
        return 0;
}
