/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* BEP 44 item arithmetic: targets, the signed buffer, ed25519 signing and verification (OpenSSL
 * libcrypto). Values are bencoded values of at most BEP44_VALUE_MAX bytes, salts at most
 * BEP44_SALT_MAX bytes. */

#include <openssl/evp.h>

#include "krpc.h"

/* Immutable: SHA-1 of the bencoded value. */
void bep44_immutable_target(const void *v, size_t n, uint8_t ret[DHT_ID_SIZE]);
/* Mutable: SHA-1 of the public key followed by the salt. */
void bep44_mutable_target(const uint8_t k[BEP44_KEY_SIZE], const void *salt, size_t salt_len, uint8_t ret[DHT_ID_SIZE]);

/* The buffer that is signed: ["4:salt" <salt as string>] "3:seqi" <seq> "e1:v" <v>. */
int bep44_signed_buffer(const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n,
                        uint8_t *buf, size_t size, size_t *ret_len);

/* 0 when sig is k's signature over the item, -EBADMSG otherwise. */
int bep44_verify(const uint8_t k[BEP44_KEY_SIZE], const uint8_t sig[BEP44_SIG_SIZE],
                 const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n);
int bep44_sign(EVP_PKEY *key, const void *salt, size_t salt_len, int64_t seq, const void *v, size_t n,
               uint8_t ret_sig[BEP44_SIG_SIZE]);

/* Ed25519 key helpers. */
int bep44_key_generate(EVP_PKEY **ret);
int bep44_key_from_seed(const uint8_t seed[32], EVP_PKEY **ret);
int bep44_key_public(EVP_PKEY *key, uint8_t ret[BEP44_KEY_SIZE]);

void sha1(const void *p, size_t n, uint8_t ret[DHT_ID_SIZE]);

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
#define _cleanup_pkey_ _cleanup_(EVP_PKEY_freep)
