/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Write tokens (BEP 5): a get_peers or get answer carries a token that the querier must present to
 * announce_peer or put. The token is a hash of a secret, the querier's IP address and the target, so
 * it proves the querier received our answer at that address. The secret is replaced every
 * TOKEN_ROTATE_USEC and the previous one is still accepted, so a token is good for 5 to 10 minutes. */

#include "dht-addr.h"
#include "dht-id.h"

#define TOKEN_SIZE 8
#define TOKEN_ROTATE_USEC (5 * 60 * USEC_PER_SEC)

typedef struct TokenSecrets {
        uint8_t current[16], previous[16];
        uint64_t rotated_at;
} TokenSecrets;

void token_init(TokenSecrets *t, uint64_t now);
/* Rotates when the current secret is older than TOKEN_ROTATE_USEC (any number of periods passed
 * counts as one rotation per period, so after 10 minutes of silence old tokens are rejected). */
void token_rotate_if_due(TokenSecrets *t, uint64_t now);
void token_make(const TokenSecrets *t, const DhtAddr *from, const uint8_t target[DHT_ID_SIZE], uint8_t ret[TOKEN_SIZE]);
bool token_check(const TokenSecrets *t, const DhtAddr *from, const uint8_t target[DHT_ID_SIZE],
                 const uint8_t *token, size_t len);
