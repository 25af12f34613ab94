/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "storage.h"

const StorageLimits storage_limits_default = {
        .max_infohashes = 4096,
        .max_peers_per_infohash = 128,
        .max_peers = 32768,
        .max_items = 4096,
};

typedef struct PeerSet {
        size_t n;
        struct {
                DhtAddr addr;
                uint64_t added;
        } p[];
} PeerSet;

int peer_store_init(PeerStore *s, const StorageLimits *limits) {
        *s = (PeerStore) { .limits = limits ? *limits : storage_limits_default };
        s->map = hashmap_new(DHT_ID_SIZE);
        return s->map ? 0 : -ENOMEM;
}

void peer_store_done(PeerStore *s) {
        HashmapIter i = HASHMAP_ITER_INIT;
        void *v;

        if (!s->map)
                return;
        while (hashmap_iterate(s->map, &i, &v, NULL))
                free(v);
        hashmap_free(s->map);
        s->map = NULL;
}

int peer_store_add(PeerStore *s, const uint8_t info_hash[DHT_ID_SIZE], const DhtAddr *peer, uint64_t now) {
        PeerSet *set = hashmap_get(s->map, info_hash);
        size_t oldest = 0;
        int r;

        if (!set) {
                if (hashmap_size(s->map) >= s->limits.max_infohashes || s->n_peers >= s->limits.max_peers)
                        return -ENOSPC;
                set = calloc(1, sizeof(PeerSet) + s->limits.max_peers_per_infohash * sizeof(set->p[0]));
                if (!set)
                        return -ENOMEM;
                r = hashmap_put(s->map, info_hash, set);
                if (r < 0) {
                        free(set);
                        return r;
                }
        }
        for (size_t i = 0; i < set->n; i++) {
                if (dht_addr_eq(&set->p[i].addr, peer)) {
                        set->p[i].added = now;
                        return 0;
                }
                if (set->p[i].added < set->p[oldest].added)
                        oldest = i;
        }
        if (set->n < s->limits.max_peers_per_infohash) {
                if (s->n_peers >= s->limits.max_peers)
                        return -ENOSPC;
                set->p[set->n].addr = *peer;
                set->p[set->n].added = now;
                set->n++;
                s->n_peers++;
                return 0;
        }
        /* A full set keeps the most recent announcers. */
        set->p[oldest].addr = *peer;
        set->p[oldest].added = now;
        return 0;
}

size_t peer_store_get(PeerStore *s, const uint8_t info_hash[DHT_ID_SIZE], int family, uint64_t now,
                      DhtAddr *ret, size_t max) {
        PeerSet *set = hashmap_get(s->map, info_hash);
        size_t n = 0, start;

        if (!set || set->n == 0)
                return 0;
        start = set->n > max ? (size_t) random() % set->n : 0;
        for (size_t j = 0; j < set->n && n < max; j++) {
                size_t i = (start + j) % set->n;
                if (set->p[i].addr.family != family || set->p[i].added + PEER_TTL_USEC <= now)
                        continue;
                ret[n++] = set->p[i].addr;
        }
        return n;
}

void peer_store_expire(PeerStore *s, uint64_t now) {
        HashmapIter it = HASHMAP_ITER_INIT;
        const void *key;
        void *v;

        while (hashmap_iterate(s->map, &it, &v, &key)) {
                PeerSet *set = v;
                size_t j = 0;

                for (size_t i = 0; i < set->n; i++)
                        if (set->p[i].added + PEER_TTL_USEC > now)
                                set->p[j++] = set->p[i];
                s->n_peers -= set->n - j;
                set->n = j;
                if (set->n == 0) {
                        hashmap_remove(s->map, key);
                        free(set);
                }
        }
}

int item_store_init(ItemStore *s, const StorageLimits *limits) {
        *s = (ItemStore) { .limits = limits ? *limits : storage_limits_default };
        s->map = hashmap_new(DHT_ID_SIZE);
        return s->map ? 0 : -ENOMEM;
}

void item_store_done(ItemStore *s) {
        HashmapIter i = HASHMAP_ITER_INIT;
        void *v;

        if (!s->map)
                return;
        while (hashmap_iterate(s->map, &i, &v, NULL))
                free(v);
        hashmap_free(s->map);
        s->map = NULL;
}

int item_store_put(ItemStore *s, const StoredItem *item, uint64_t now) {
        StoredItem *it = hashmap_get(s->map, item->target);
        int r;

        if (!it) {
                if (hashmap_size(s->map) >= s->limits.max_items) {
                        item_store_expire(s, now);
                        if (hashmap_size(s->map) >= s->limits.max_items)
                                return -ENOSPC;
                }
                it = malloc(sizeof(StoredItem));
                if (!it)
                        return -ENOMEM;
                r = hashmap_put(s->map, item->target, it);
                if (r < 0) {
                        free(it);
                        return r;
                }
        }
        *it = *item;
        it->stored_at = now;
        return 0;
}

const StoredItem *item_store_get(ItemStore *s, const uint8_t target[DHT_ID_SIZE], uint64_t now) {
        StoredItem *it = hashmap_get(s->map, target);
        if (!it || it->stored_at + ITEM_TTL_USEC <= now)
                return NULL;
        return it;
}

void item_store_expire(ItemStore *s, uint64_t now) {
        HashmapIter i = HASHMAP_ITER_INIT;
        const void *key;
        void *v;

        while (hashmap_iterate(s->map, &i, &v, &key)) {
                StoredItem *it = v;
                if (it->stored_at + ITEM_TTL_USEC <= now) {
                        hashmap_remove(s->map, key);
                        free(it);
                }
        }
}
