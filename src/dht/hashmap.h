/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A small hash map with fixed-size byte keys (ids, addresses, transaction ids) and pointer values,
 * hashed with SipHash-2-4 under a random key so that a peer choosing keys (info-hashes, targets)
 * cannot make the chains long. Values are not owned. Removing the entry just returned by
 * hashmap_iterate() is allowed. */

#include "macro.h"

typedef struct Hashmap Hashmap;
typedef struct HashmapIter {
        size_t bucket;
        void *next;
} HashmapIter;
#define HASHMAP_ITER_INIT { .bucket = 0, .next = NULL }

Hashmap *hashmap_new(size_t key_size);
void hashmap_free(Hashmap *h);
DEFINE_TRIVIAL_CLEANUP_FUNC(Hashmap *, hashmap_free);

void *hashmap_get(Hashmap *h, const void *key);
/* -EEXIST when the key is there already. */
int hashmap_put(Hashmap *h, const void *key, void *value);
/* Returns the removed value, or NULL. */
void *hashmap_remove(Hashmap *h, const void *key);
size_t hashmap_size(const Hashmap *h);
bool hashmap_iterate(Hashmap *h, HashmapIter *i, void **ret_value, const void **ret_key);

