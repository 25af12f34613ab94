/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Connections counted per client address, for a cap per address on a listening socket. An IPv4
 * address (or an IPv4-mapped IPv6 one) is its own key; an IPv6 address counts by its /64 prefix,
 * since one IPv6 host usually has a whole /64 to pick source addresses from. Any other family (a
 * unix socket) is a single key.
 *
 * A hash table keyed with a random seed, so that a client cannot choose addresses that fall into one
 * chain; it holds one entry per address with connections open, so its size is bounded by theirs. */

#include <sys/socket.h>

#include "macro.h"

typedef struct AddressKey {
        uint8_t bytes[16];
} AddressKey;

typedef struct AddressTable AddressTable;

/* n_buckets: about the most connections expected (rounded up to a power of two). */
int address_table_new(size_t n_buckets, AddressTable **ret);
AddressTable *address_table_free(AddressTable *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(AddressTable *, address_table_free);

void address_key_from_sockaddr(const struct sockaddr *sa, socklen_t len, AddressKey *ret);

/* Connections counted for key. */
unsigned address_table_get(const AddressTable *t, const AddressKey *key);
/* Counts one more for key: -ENOMEM, or the new count. */
int address_table_add(AddressTable *t, const AddressKey *key);
/* Counts one less (the entry goes at zero); a key with none is a caller's bug, and ignored. */
void address_table_remove(AddressTable *t, const AddressKey *key);
/* Addresses with connections. */
size_t address_table_size(const AddressTable *t);
