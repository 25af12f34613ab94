/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* UDP endpoints as the DHT handles them: a small fixed-size value (family, address, port) that is
 * cheap to compare and copy, with conversions to sockaddr and to the compact forms of BEP 5/32
 * (4 or 16 address bytes then the port, big-endian). */

#include <netinet/in.h>
#include <sys/socket.h>

#include "macro.h"

typedef struct DhtAddr {
        uint8_t family;         /* AF_INET or AF_INET6 */
        uint16_t port;          /* host byte order */
        uint8_t ip[16];         /* the first 4 bytes for IPv4 */
} DhtAddr;

#define DHT_ADDR_STR_MAX (INET6_ADDRSTRLEN + 8)

static inline size_t dht_addr_ip_len(const DhtAddr *a) {
        return a->family == AF_INET ? 4 : 16;
}
/* Compact peer length: 6 (IPv4) or 18 (IPv6). */
static inline size_t dht_compact_len(int family) {
        return family == AF_INET ? 6 : 18;
}
bool dht_addr_eq(const DhtAddr *a, const DhtAddr *b);
bool dht_addr_ip_eq(const DhtAddr *a, const DhtAddr *b);

int dht_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, DhtAddr *ret);
socklen_t dht_addr_to_sockaddr(const DhtAddr *a, struct sockaddr_storage *ret);

/* Compact encoding. from_compact() fails unless n is 6 or 18, or the port is 0. */
void dht_addr_to_compact(const DhtAddr *a, uint8_t *out);
int dht_addr_from_compact(const uint8_t *p, size_t n, DhtAddr *ret);

/* "1.2.3.4:5", "[::1]:5". */
const char *dht_addr_to_string(const DhtAddr *a, char buf[static DHT_ADDR_STR_MAX]);
/* Parses a numeric "IP:PORT" or "[IPv6]:PORT". -EINVAL for anything else (names are resolved
 * elsewhere, see dht-resolve.h). */
int dht_addr_from_string(const char *s, DhtAddr *ret);
/* Splits "HOST:PORT" / "[HOST]:PORT" into a newly allocated host and a port (1..65535). */
int dht_split_host_port(const char *s, char **ret_host, uint16_t *ret_port);
