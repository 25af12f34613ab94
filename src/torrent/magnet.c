/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <strings.h>

#include "hex.h"
#include "magnet.h"

/* Percent-decodes s[0..n) into ret (at least n + 1 bytes). -EINVAL for a bad escape or a NUL. */
static int unescape(const char *s, size_t n, char *ret) {
        size_t o = 0;

        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '%') {
                        char digits[3];
                        uint8_t b;

                        if (i + 2 >= n)
                                return -EINVAL;
                        digits[0] = s[i + 1];
                        digits[1] = s[i + 2];
                        digits[2] = 0;
                        if (hex_decode(digits, &b, 1) < 0)
                                return -EINVAL;
                        c = (char) b;
                        i += 2;
                } else if (c == '+')
                        c = ' ';
                if (c == 0)
                        return -EINVAL;
                ret[o++] = c;
        }
        ret[o] = 0;
        return 0;
}

/* Host names, IPv4 and IPv6 literals: letters, digits, '-', '_', '.', and ':' (IPv6). IPv6 zone ids
 * ("%eth0") are not taken. */
static bool host_valid(const char *h) {
        size_t n = strlen(h);

        if (n == 0 || n > MAGNET_HOST_MAX)
                return false;
        for (const char *p = h; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '.' || *p == ':' || *p == '_'))
                        return false;
        return true;
}

/* "HOST:PORT" or "[V6]:PORT". */
static int parse_peer(const char *s, MagnetPeer *ret) {
        MagnetPeer p = {};
        const char *colon, *host = s;
        size_t host_len;
        char *end;
        unsigned long port;

        if (s[0] == '[') {
                const char *close = strchr(s, ']');
                if (!close || close[1] != ':')
                        return -EINVAL;
                host = s + 1;
                host_len = (size_t) (close - host);
                colon = close + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon)
                        return -EINVAL;
                host_len = (size_t) (colon - s);
                if (memchr(s, ':', host_len))
                        return -EINVAL; /* an IPv6 literal without brackets */
        }
        if (host_len == 0 || host_len > MAGNET_HOST_MAX)
                return -EINVAL;
        memcpy(p.host, host, host_len);
        p.host[host_len] = 0;
        if (!host_valid(p.host) || (s[0] != '[' && strchr(p.host, ':')))
                return -EINVAL;
        if (colon[1] < '0' || colon[1] > '9')
                return -EINVAL;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno != 0 || *end != 0 || port == 0 || port > 65535 || end - (colon + 1) > 5)
                return -EINVAL;
        p.port = (uint16_t) port;
        *ret = p;
        return 0;
}

int magnet_parse(const char *s, MagnetLink *ret) {
        MagnetLink m = {};
        bool have_id = false;
        const char *q;
        size_t n;

        assert(s && ret);
        n = strlen(s);
        if (n > MAGNET_URI_MAX)
                return -EINVAL;
        if (strncasecmp(s, "magnet:?", 8) != 0)
                return -EINVAL;
        q = s + 8;

        while (*q) {
                const char *amp = strchr(q, '&'), *eq;
                size_t len = amp ? (size_t) (amp - q) : strlen(q);
                char key[32], value[MAGNET_URI_MAX + 1];

                eq = memchr(q, '=', len);
                if (!eq || eq == q)
                        return -EINVAL;
                if ((size_t) (eq - q) >= sizeof(key) || unescape(q, (size_t) (eq - q), key) < 0)
                        return -EINVAL;
                if (unescape(eq + 1, len - (size_t) (eq + 1 - q), value) < 0)
                        return -EINVAL;

                if (strcasecmp(key, "xt") == 0) {
                        const char *h = NULL;

                        if (strncasecmp(value, "urn:btmh:", 9) == 0)
                                h = value + 9;
                        if (h) {
                                if (have_id)
                                        return -EINVAL; /* two v2 ids: which one? */
                                if (strncmp(h, "1220", 4) != 0 || hex_decode(h + 4, m.id, TORRENT_ID_SIZE) < 0)
                                        return -EINVAL;
                                have_id = true;
                        }
                } else if (strcasecmp(key, "x.pe") == 0 && m.n_peers < MAGNET_PEERS_MAX) {
                        if (parse_peer(value, &m.peers[m.n_peers]) >= 0)
                                m.n_peers++;
                }
                q += len;
                if (*q == '&')
                        q++;
        }
        if (!have_id)
                return -EINVAL;
        *ret = m;
        return 0;
}

int magnet_format(const MagnetLink *m, char **ret) {
        char hex[TORRENT_ID_HEX_SIZE];
        char *buf, *p;
        size_t size;

        assert(m && ret);
        if (m->n_peers > MAGNET_PEERS_MAX)
                return -EINVAL;
        for (size_t i = 0; i < m->n_peers; i++)
                if (!host_valid(m->peers[i].host) || m->peers[i].port == 0)
                        return -EINVAL;

        size = sizeof("magnet:?xt=urn:btmh:1220") + 64 + m->n_peers * (sizeof("&x.pe=[]:65535") + MAGNET_HOST_MAX);
        buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        torrent_id_to_hex(m->id, hex);
        p = buf + sprintf(buf, "magnet:?xt=urn:btmh:1220%s", hex);
        for (size_t i = 0; i < m->n_peers; i++) {
                bool v6 = strchr(m->peers[i].host, ':');
                p += sprintf(p, "&x.pe=%s%s%s:%u", v6 ? "[" : "", m->peers[i].host, v6 ? "]" : "", m->peers[i].port);
        }
        *ret = buf;
        return 0;
}
