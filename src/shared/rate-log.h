/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A journal event kept to one entry per interval: the others are counted, and the next entry says
 * how many there were (so that a flood of refusals or violations cannot flood the journal too). */

#include <stdbool.h>
#include <stdint.h>

typedef struct RateLog {
        uint64_t last_usec;
        uint64_t suppressed;
        bool logged_once;
} RateLog;

/* Whether to log now (then *ret_suppressed is how many were not logged since the last entry);
 * otherwise the entry is counted for the next one. now and interval on one monotonic clock. */
static inline bool rate_log_allow(RateLog *l, uint64_t now, uint64_t interval, uint64_t *ret_suppressed) {
        if (l->logged_once && now < l->last_usec + interval) {
                l->suppressed++;
                return false;
        }
        *ret_suppressed = l->suppressed;
        l->suppressed = 0;
        l->last_usec = now;
        l->logged_once = true;
        return true;
}
