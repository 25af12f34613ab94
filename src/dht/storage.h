/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a node stores for others: announced peers per info-hash (BEP 5) and BEP 44 items per target.
 * Both expire and both are bounded (per key and in total); when full, new keys are refused rather
 * than evicting live ones, and expired entries are reclaimed by *_expire(). The protocol rules (tokens,
 * signatures, seq and cas) are checked by the caller before storing. */

#include "dht-addr.h"
#include "dht-id.h"
#include "hashmap.h"
#include "krpc.h"

#define PEER_TTL_USEC (30 * 60 * USEC_PER_SEC)
#define ITEM_TTL_USEC (2 * 60 * 60 * USEC_PER_SEC)

typedef struct StorageLimits {
        size_t max_infohashes;
        size_t max_peers_per_infohash;
        size_t max_peers;               /* in total */
        size_t max_items;
} StorageLimits;

extern const StorageLimits storage_limits_default;

typedef struct PeerStore {
        Hashmap *map;                   /* info-hash -> PeerSet */
        size_t n_peers;
        StorageLimits limits;
} PeerStore;

int peer_store_init(PeerStore *s, const StorageLimits *limits);
void peer_store_done(PeerStore *s);
/* Adds or refreshes peer under info_hash. -ENOSPC when a bound refuses it. */
int peer_store_add(PeerStore *s, const uint8_t info_hash[DHT_ID_SIZE], const DhtAddr *peer, uint64_t now);
/* Up to max live peers of the given family, starting at a random place when there are more. */
size_t peer_store_get(PeerStore *s, const uint8_t info_hash[DHT_ID_SIZE], int family, uint64_t now,
                      DhtAddr *ret, size_t max);
void peer_store_expire(PeerStore *s, uint64_t now);

typedef struct StoredItem {
        uint8_t target[DHT_ID_SIZE];
        bool is_mutable;
        uint8_t k[BEP44_KEY_SIZE];
        uint8_t sig[BEP44_SIG_SIZE];
        int64_t seq;
        uint8_t salt[BEP44_SALT_MAX];
        size_t salt_len;
        uint64_t stored_at;
        size_t v_len;
        uint8_t v[BEP44_VALUE_MAX];
} StoredItem;

typedef struct ItemStore {
        Hashmap *map;                   /* target -> StoredItem */
        StorageLimits limits;
} ItemStore;

int item_store_init(ItemStore *s, const StorageLimits *limits);
void item_store_done(ItemStore *s);
/* Copies item in (replacing the one with the same target). -ENOSPC when full. */
int item_store_put(ItemStore *s, const StoredItem *item, uint64_t now);
/* The live item stored under target, or NULL. */
const StoredItem *item_store_get(ItemStore *s, const uint8_t target[DHT_ID_SIZE], uint64_t now);
void item_store_expire(ItemStore *s, uint64_t now);
