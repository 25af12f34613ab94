/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bep44.h"
#include "hashmap.h"
#include "random-util.h"
#include "token.h"

void token_init(TokenSecrets *t, uint64_t now) {
        random_bytes(t->current, sizeof(t->current));
        random_bytes(t->previous, sizeof(t->previous));
        t->rotated_at = now;
}

void token_rotate_if_due(TokenSecrets *t, uint64_t now) {
        if (now < t->rotated_at + TOKEN_ROTATE_USEC)
                return;
        if (now >= t->rotated_at + 2 * TOKEN_ROTATE_USEC)
                random_bytes(t->previous, sizeof(t->previous)); /* both secrets are too old */
        else
                memcpy(t->previous, t->current, sizeof(t->current));
        random_bytes(t->current, sizeof(t->current));
        t->rotated_at = now;
}

static void make(const uint8_t secret[16], const DhtAddr *from, const uint8_t target[DHT_ID_SIZE], uint8_t ret[TOKEN_SIZE]) {
        uint8_t buf[16 + 16 + DHT_ID_SIZE], h[DHT_ID_SIZE];
        size_t l = dht_addr_ip_len(from);

        memcpy(buf, secret, 16);
        memcpy(buf + 16, from->ip, l);
        memcpy(buf + 16 + l, target, DHT_ID_SIZE);
        sha1(buf, 16 + l + DHT_ID_SIZE, h);
        memcpy(ret, h, TOKEN_SIZE);
}

void token_make(const TokenSecrets *t, const DhtAddr *from, const uint8_t target[DHT_ID_SIZE], uint8_t ret[TOKEN_SIZE]) {
        make(t->current, from, target, ret);
}

bool token_check(const TokenSecrets *t, const DhtAddr *from, const uint8_t target[DHT_ID_SIZE],
                 const uint8_t *token, size_t len) {
        uint8_t a[TOKEN_SIZE], b[TOKEN_SIZE];

        make(t->current, from, target, a);
        make(t->previous, from, target, b);
        return memeq_consttime(a, sizeof(a), token, len) || memeq_consttime(b, sizeof(b), token, len);
}
