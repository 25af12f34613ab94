/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <netinet/in.h>

#include "address-table.h"
#include "random-util.h"

typedef struct AddressEntry AddressEntry;
struct AddressEntry {
        AddressKey key;
        unsigned count;
        AddressEntry *next;
};

struct AddressTable {
        AddressEntry **buckets;
        size_t mask;
        size_t size;
        uint64_t seed;
};

int address_table_new(size_t n_buckets, AddressTable **ret) {
        _cleanup_(address_table_freep) AddressTable *t = NULL;
        size_t n = 64;

        assert(ret);
        while (n < n_buckets && n < ((size_t) 1 << 24))
                n <<= 1;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->buckets = calloc(n, sizeof(AddressEntry *));
        if (!t->buckets)
                return -ENOMEM;
        t->mask = n - 1;
        random_bytes(&t->seed, sizeof(t->seed));
        *ret = TAKE_PTR(t);
        return 0;
}

AddressTable *address_table_free(AddressTable *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; t->buckets && i <= t->mask; i++)
                while (t->buckets[i]) {
                        AddressEntry *e = t->buckets[i];
                        t->buckets[i] = e->next;
                        free(e);
                }
        free(t->buckets);
        free(t);
        return NULL;
}

void address_key_from_sockaddr(const struct sockaddr *sa, socklen_t len, AddressKey *ret) {
        static const uint8_t v4_mapped[12] = { [10] = 0xff, [11] = 0xff };

        assert(ret);
        *ret = (AddressKey) {};
        if (!sa)
                return;
        if (sa->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in)) {
                memcpy(ret->bytes, v4_mapped, sizeof(v4_mapped));
                memcpy(ret->bytes + 12, &((const struct sockaddr_in *) sa)->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6)) {
                const uint8_t *a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;

                memcpy(ret->bytes, a, 16);
                /* A mapped IPv4 address is one host; a native IPv6 one counts by its /64. */
                if (memcmp(a, v4_mapped, sizeof(v4_mapped)) != 0)
                        memset(ret->bytes + 8, 0, 8);
        }
}

/* FNV-1a over the key, started from the table's random seed, then mixed (splitmix64's finaliser). */
static size_t bucket_of(const AddressTable *t, const AddressKey *key) {
        uint64_t h = UINT64_C(0xcbf29ce484222325) ^ t->seed;

        for (size_t i = 0; i < sizeof(key->bytes); i++) {
                h ^= key->bytes[i];
                h *= UINT64_C(0x100000001b3);
        }
        h ^= h >> 30;
        h *= UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h *= UINT64_C(0x94d049bb133111eb);
        h ^= h >> 31;
        return (size_t) h & t->mask;
}

static AddressEntry **find(const AddressTable *t, const AddressKey *key) {
        AddressEntry **p = &t->buckets[bucket_of(t, key)];

        while (*p && memcmp((*p)->key.bytes, key->bytes, sizeof(key->bytes)) != 0)
                p = &(*p)->next;
        return p;
}

unsigned address_table_get(const AddressTable *t, const AddressKey *key) {
        AddressEntry *e;

        assert(t);
        assert(key);
        e = *find(t, key);
        return e ? e->count : 0;
}

int address_table_add(AddressTable *t, const AddressKey *key) {
        AddressEntry **p, *e;

        assert(t);
        assert(key);
        p = find(t, key);
        if (!*p) {
                e = calloc(1, sizeof(*e));
                if (!e)
                        return -ENOMEM;
                e->key = *key;
                *p = e;
                t->size++;
        }
        return (int) ++(*p)->count;
}

void address_table_remove(AddressTable *t, const AddressKey *key) {
        AddressEntry **p, *e;

        assert(t);
        assert(key);
        p = find(t, key);
        e = *p;
        if (!e)
                return;
        if (--e->count > 0)
                return;
        *p = e->next;
        free(e);
        t->size--;
}

size_t address_table_size(const AddressTable *t) {
        assert(t);
        return t->size;
}
