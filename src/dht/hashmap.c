/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <sys/random.h>

#include "hashmap.h"
#include "random-util.h"
#include "siphash.h"

typedef struct Entry {
        struct Entry *next;
        void *value;
        uint8_t key[];
} Entry;

struct Hashmap {
        size_t key_size;
        size_t n_buckets;       /* a power of two */
        size_t size;
        Entry **buckets;
        uint8_t hash_key[16];
};

Hashmap *hashmap_new(size_t key_size) {
        Hashmap *h = calloc(1, sizeof(Hashmap));
        if (!h)
                return NULL;
        h->key_size = key_size;
        h->n_buckets = 8;
        h->buckets = calloc(h->n_buckets, sizeof(Entry *));
        if (!h->buckets) {
                free(h);
                return NULL;
        }
        random_bytes(h->hash_key, sizeof(h->hash_key));
        return h;
}

void hashmap_free(Hashmap *h) {
        if (!h)
                return;
        for (size_t i = 0; i < h->n_buckets; i++)
                for (Entry *e = h->buckets[i], *n; e; e = n) {
                        n = e->next;
                        free(e);
                }
        free(h->buckets);
        free(h);
}

static size_t bucket_of(const Hashmap *h, const void *key) {
        return (size_t) siphash24(key, h->key_size, h->hash_key) & (h->n_buckets - 1);
}

static Entry **find(Hashmap *h, const void *key) {
        Entry **p = &h->buckets[bucket_of(h, key)];
        for (; *p; p = &(*p)->next)
                if (memcmp((*p)->key, key, h->key_size) == 0)
                        return p;
        return p;
}

void *hashmap_get(Hashmap *h, const void *key) {
        Entry *e = *find(h, key);
        return e ? e->value : NULL;
}

static void grow(Hashmap *h) {
        size_t n = h->n_buckets * 2;
        Entry **b = calloc(n, sizeof(Entry *));

        if (!b)
                return; /* keep working with longer chains */
        for (size_t i = 0; i < h->n_buckets; i++)
                for (Entry *e = h->buckets[i], *next; e; e = next) {
                        size_t j = (size_t) siphash24(e->key, h->key_size, h->hash_key) & (n - 1);
                        next = e->next;
                        e->next = b[j];
                        b[j] = e;
                }
        free(h->buckets);
        h->buckets = b;
        h->n_buckets = n;
}

int hashmap_put(Hashmap *h, const void *key, void *value) {
        Entry **p = find(h, key), *e;

        if (*p)
                return -EEXIST;
        e = malloc(sizeof(Entry) + h->key_size);
        if (!e)
                return -ENOMEM;
        memcpy(e->key, key, h->key_size);
        e->value = value;
        e->next = NULL;
        *p = e;
        h->size++;
        if (h->size > h->n_buckets)
                grow(h);
        return 0;
}

void *hashmap_remove(Hashmap *h, const void *key) {
        Entry **p = find(h, key), *e = *p;
        void *v;

        if (!e)
                return NULL;
        *p = e->next;
        v = e->value;
        free(e);
        h->size--;
        return v;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->size : 0;
}

bool hashmap_iterate(Hashmap *h, HashmapIter *i, void **ret_value, const void **ret_key) {
        Entry *e = i->next;

        while (!e) {
                if (i->bucket >= h->n_buckets)
                        return false;
                e = h->buckets[i->bucket++];
        }
        i->next = e->next;
        if (ret_value)
                *ret_value = e->value;
        if (ret_key)
                *ret_key = e->key;
        return true;
}
