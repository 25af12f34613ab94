/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "hashmap.h"
#include "random-util.h"
#include "ratelimit.h"
#include "siphash.h"

void ratelimit_init(RateLimit *rl, uint32_t rate, uint32_t burst) {
        memset(rl, 0, sizeof(*rl));
        random_bytes(rl->key, sizeof(rl->key));
        rl->rate = MAX(rate, 1U);
        rl->burst = MAX(burst, 1U);
}

bool ratelimit_allow(RateLimit *rl, const DhtAddr *from, uint64_t now) {
        uint8_t k[17];
        size_t i;
        uint64_t tokens, now_ms;

        if (rl->epoch == 0 || now < rl->epoch)
                rl->epoch = now;
        /* 1 + : 0 marks an unused slot. Wraps after 49 days, costing one burst refill at most. */
        now_ms = 1 + (now - rl->epoch) / USEC_PER_MSEC;
        k[0] = from->family;
        memcpy(k + 1, from->ip, 16);
        i = (size_t) siphash24(k, 1 + dht_addr_ip_len(from), rl->key) % RATELIMIT_SLOTS;

        if (rl->slot[i].last_ms == 0)
                tokens = (uint64_t) rl->burst * 1000;
        else {
                uint32_t elapsed = (uint32_t) now_ms - rl->slot[i].last_ms;
                /* rate tokens per second = rate milli-tokens per millisecond */
                tokens = rl->slot[i].tokens_milli + (uint64_t) elapsed * rl->rate;
                tokens = MIN(tokens, (uint64_t) rl->burst * 1000);
        }
        rl->slot[i].last_ms = (uint32_t) now_ms ?: 1;
        if (tokens < 1000) {
                rl->slot[i].tokens_milli = (uint32_t) tokens;
                return false;
        }
        rl->slot[i].tokens_milli = (uint32_t) (tokens - 1000);
        return true;
}
