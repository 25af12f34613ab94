/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* 160-bit node ids and keys (node ids, info-hashes and BEP 44 targets share the space) and the XOR
 * metric. */

#include "macro.h"

#define DHT_ID_SIZE 20

/* -1 when a is closer to target than b, 1 when farther, 0 when equal. */
static inline int dht_id_cmp_distance(const uint8_t *target, const uint8_t *a, const uint8_t *b) {
        for (size_t i = 0; i < DHT_ID_SIZE; i++) {
                uint8_t da = a[i] ^ target[i], db = b[i] ^ target[i];
                if (da != db)
                        return da < db ? -1 : 1;
        }
        return 0;
}

/* Number of leading bits a and b share (160 when equal). */
static inline unsigned dht_id_common_prefix(const uint8_t *a, const uint8_t *b) {
        for (size_t i = 0; i < DHT_ID_SIZE; i++) {
                uint8_t x = a[i] ^ b[i];
                if (x)
                        return (unsigned) (i * 8) + (unsigned) __builtin_clz(x) - 24;
        }
        return DHT_ID_SIZE * 8;
}

static inline bool dht_id_eq(const uint8_t *a, const uint8_t *b) {
        return memcmp(a, b, DHT_ID_SIZE) == 0;
}


#define DHT_ID_HEX_MAX (DHT_ID_SIZE * 2 + 1)
