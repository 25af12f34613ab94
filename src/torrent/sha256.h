/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SHA-256 through OpenSSL's EVP interface, for the Merkle trees and content ids of BitTorrent v2.
 *
 * The digest is fetched from the default provider once per process and each thread keeps one reusable
 * EVP_MD_CTX (freed when the thread exits), so hashing the many 64-byte inner nodes of a tree costs
 * no allocation and no provider lookup per call: the one-shot SHA256() and EVP_Digest() do both.
 * The functions fail only when OpenSSL cannot allocate or is broken (-ENOMEM, -EIO); callers pass
 * that on rather than abort, and never see a half-written digest. */

#include "macro.h"

#define SHA256_SIZE 32

/* ret = SHA-256(p[0..n)). */
int sha256(const void *p, size_t n, uint8_t ret[SHA256_SIZE]);
/* ret = SHA-256(left || right): the parent of two Merkle nodes. ret may alias either input. */
int sha256_pair(const uint8_t left[SHA256_SIZE], const uint8_t right[SHA256_SIZE], uint8_t ret[SHA256_SIZE]);
