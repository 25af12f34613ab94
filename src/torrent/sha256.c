/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <openssl/evp.h>
#include <pthread.h>

#include "sha256.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *md;              /* kept for the life of the process */
static pthread_key_t ctx_key;
static bool key_ok;

static void ctx_destroy(void *p) {
        EVP_MD_CTX_free(p);
}

static void init_once(void) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);
        key_ok = pthread_key_create(&ctx_key, ctx_destroy) == 0;
}

/* The calling thread's context, created on first use. */
static EVP_MD_CTX *thread_ctx(void) {
        EVP_MD_CTX *ctx;

        if (pthread_once(&once, init_once) != 0 || !md || !key_ok)
                return NULL;
        ctx = pthread_getspecific(ctx_key);
        if (ctx)
                return ctx;
        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return NULL;
        if (pthread_setspecific(ctx_key, ctx) != 0) {
                EVP_MD_CTX_free(ctx);
                return NULL;
        }
        return ctx;
}

static int digest2(const void *a, size_t an, const void *b, size_t bn, uint8_t ret[SHA256_SIZE]) {
        EVP_MD_CTX *ctx = thread_ctx();
        uint8_t out[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        if (!ctx)
                return -ENOMEM;
        /* EVP_DigestInit_ex2() on a context that already holds this digest only resets its state. */
        if (EVP_DigestInit_ex2(ctx, md, NULL) != 1 ||
            EVP_DigestUpdate(ctx, a, an) != 1 ||
            (bn > 0 && EVP_DigestUpdate(ctx, b, bn) != 1) ||
            EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != SHA256_SIZE)
                return -EIO;
        memcpy(ret, out, SHA256_SIZE);
        return 0;
}

int sha256(const void *p, size_t n, uint8_t ret[SHA256_SIZE]) {
        assert(p || n == 0);
        assert(ret);
        return digest2(n > 0 ? p : "", n, NULL, 0, ret);
}

int sha256_pair(const uint8_t left[SHA256_SIZE], const uint8_t right[SHA256_SIZE], uint8_t ret[SHA256_SIZE]) {
        assert(left && right && ret);
        return digest2(left, SHA256_SIZE, right, SHA256_SIZE, ret);
}
