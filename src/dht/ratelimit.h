/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Per-source rate limit on incoming queries: a token bucket per source IP address. The buckets live
 * in a fixed table indexed by a keyed hash of the address, so memory is bounded whatever the number of
 * (possibly spoofed) sources, and nobody can aim at another address's bucket. Two addresses that share
 * a slot share a budget, which only ever errs on the strict side. */

#include "dht-addr.h"

#define RATELIMIT_SLOTS 2048

typedef struct RateLimit {
        uint8_t key[16];
        uint32_t rate;          /* queries per second */
        uint32_t burst;
        uint64_t epoch;         /* usec; slot times are milliseconds since then (8 bytes a slot: 16 KiB) */
        struct {
                uint32_t last_ms;       /* 0: unused */
                uint32_t tokens_milli;  /* tokens * 1000 */
        } slot[RATELIMIT_SLOTS];
} RateLimit;

void ratelimit_init(RateLimit *rl, uint32_t rate, uint32_t burst);
/* true when a query from this address may be served now (and takes a token). */
bool ratelimit_allow(RateLimit *rl, const DhtAddr *from, uint64_t now);
