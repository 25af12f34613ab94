/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* SipHash-2-4 (Aumasson and Bernstein): a 64-bit keyed hash. Under a random key nobody else knows,
 * its values cannot be predicted or steered from the input, so it serves where a client or a peer
 * chooses the input: hash-map buckets it cannot crowd, and tags of tokens it cannot learn anything
 * about by timing a search among them. No allocation, no library to initialise. */

#include "macro.h"

uint64_t siphash24(const void *data, size_t len, const uint8_t key[16]);
