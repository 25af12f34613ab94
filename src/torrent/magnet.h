/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Magnet links of v2 contents: magnet:?xt=urn:btmh:1220<64 hex>[&x.pe=HOST:PORT...]
 *
 * "1220" is the multihash prefix of a SHA-256 digest (code 0x12, 32 bytes); the digest is the
 * content id. x.pe names peers to ask first (a seeder); libtorrent takes IP literals there
 * ("1.2.3.4:6881", "[::1]:6881"), we also take host names. The parser accepts parameters in any order,
 * percent-escapes, upper- or lowercase hex, and ignores parameters it does not know (dn, tr, a v1
 * xt=urn:btih); it rejects a link without exactly one btmh SHA-256 xt. Peers beyond MAGNET_PEERS_MAX,
 * and x.pe values that are not HOST:PORT, are ignored. */

#include "manifest.h"

#define MAGNET_PEERS_MAX 8
#define MAGNET_HOST_MAX 253
#define MAGNET_URI_MAX 4096             /* longer links are refused */

typedef struct MagnetPeer {
        char host[MAGNET_HOST_MAX + 1];         /* without brackets for IPv6 */
        uint16_t port;
} MagnetPeer;

typedef struct MagnetLink {
        uint8_t id[TORRENT_ID_SIZE];
        MagnetPeer peers[MAGNET_PEERS_MAX];
        size_t n_peers;
} MagnetLink;

/* -EINVAL when s is not such a magnet link (or longer than MAGNET_URI_MAX); ret untouched then. */
int magnet_parse(const char *s, MagnetLink *ret);
/* The link for id with the peers of m (n_peers may be 0). *ret is malloc()ed. -EINVAL for a host
 * that has characters a host cannot have. */
int magnet_format(const MagnetLink *m, char **ret);
