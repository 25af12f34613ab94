/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>

#include "dht-addr.h"
#include "dht-id.h"

bool dht_addr_ip_eq(const DhtAddr *a, const DhtAddr *b) {
        return a->family == b->family && memcmp(a->ip, b->ip, dht_addr_ip_len(a)) == 0;
}

bool dht_addr_eq(const DhtAddr *a, const DhtAddr *b) {
        return dht_addr_ip_eq(a, b) && a->port == b->port;
}

int dht_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, DhtAddr *ret) {
        DhtAddr a = {};

        if (sa->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                a.family = AF_INET;
                a.port = ntohs(in->sin_port);
                memcpy(a.ip, &in->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                        a.family = AF_INET;
                        memcpy(a.ip, in6->sin6_addr.s6_addr + 12, 4);
                } else {
                        a.family = AF_INET6;
                        memcpy(a.ip, &in6->sin6_addr, 16);
                }
                a.port = ntohs(in6->sin6_port);
        } else
                return -EAFNOSUPPORT;
        *ret = a;
        return 0;
}

socklen_t dht_addr_to_sockaddr(const DhtAddr *a, struct sockaddr_storage *ret) {
        memset(ret, 0, sizeof(*ret));
        if (a->family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *) ret;
                in->sin_family = AF_INET;
                in->sin_port = htons(a->port);
                memcpy(&in->sin_addr, a->ip, 4);
                return sizeof(*in);
        }
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) ret;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(a->port);
        memcpy(&in6->sin6_addr, a->ip, 16);
        return sizeof(*in6);
}

void dht_addr_to_compact(const DhtAddr *a, uint8_t *out) {
        size_t l = dht_addr_ip_len(a);
        memcpy(out, a->ip, l);
        out[l] = (uint8_t) (a->port >> 8);
        out[l + 1] = (uint8_t) (a->port & 0xff);
}

int dht_addr_from_compact(const uint8_t *p, size_t n, DhtAddr *ret) {
        DhtAddr a = {};
        size_t l;

        if (n == 6)
                a.family = AF_INET;
        else if (n == 18)
                a.family = AF_INET6;
        else
                return -EINVAL;
        l = n - 2;
        memcpy(a.ip, p, l);
        a.port = (uint16_t) (p[l] << 8 | p[l + 1]);
        if (a.port == 0)
                return -EINVAL;
        *ret = a;
        return 0;
}

const char *dht_addr_to_string(const DhtAddr *a, char buf[static DHT_ADDR_STR_MAX]) {
        char ip[INET6_ADDRSTRLEN];

        if (!inet_ntop(a->family, a->ip, ip, sizeof(ip)))
                strcpy(ip, "?");
        if (a->family == AF_INET6)
                snprintf(buf, DHT_ADDR_STR_MAX, "[%s]:%u", ip, a->port);
        else
                snprintf(buf, DHT_ADDR_STR_MAX, "%s:%u", ip, a->port);
        return buf;
}

int dht_split_host_port(const char *s, char **ret_host, uint16_t *ret_port) {
        const char *colon, *host_end, *host_start = s;
        char *end;
        unsigned long port;
        char *host;

        if (isempty(s))
                return -EINVAL;
        if (s[0] == '[') {
                host_end = strchr(s, ']');
                if (!host_end || host_end[1] != ':')
                        return -EINVAL;
                host_start = s + 1;
                colon = host_end + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon || memchr(s, ':', (size_t) (colon - s)))
                        return -EINVAL; /* bare IPv6 needs brackets */
                host_end = colon;
        }
        if (host_end == host_start || !colon[1])
                return -EINVAL;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end != 0 || port == 0 || port > 65535 || colon[1] == '-' || colon[1] == '+')
                return -EINVAL;
        host = strndup(host_start, (size_t) (host_end - host_start));
        if (!host)
                return -ENOMEM;
        *ret_host = host;
        *ret_port = (uint16_t) port;
        return 0;
}

int dht_addr_from_string(const char *s, DhtAddr *ret) {
        _cleanup_free_ char *host = NULL;
        DhtAddr a = {};
        uint16_t port;
        int r;

        r = dht_split_host_port(s, &host, &port);
        if (r < 0)
                return r;
        if (inet_pton(AF_INET, host, a.ip) == 1)
                a.family = AF_INET;
        else if (inet_pton(AF_INET6, host, a.ip) == 1)
                a.family = AF_INET6;
        else
                return -EINVAL;
        a.port = port;
        *ret = a;
        return 0;
}
