/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "macro.h"

/* Fills buf with n bytes from getrandom(): task ids, DHT secrets, hash-map keys. Aborts if the kernel
 * cannot provide randomness (only without the system call), since there is no safe way on. */
void random_bytes(void *buf, size_t n);

/* xorshift64: the next of a sequence a seed fixes, for choices that must be reproducible or merely
 * spread (simulations, tests, the piece picker's starting point), never for secrets. *state must not
 * be 0 (the sequence stays there). */
static inline uint64_t xorshift64(uint64_t *state) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        return *state;
}
