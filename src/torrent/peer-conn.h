/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PeerConn: one TCP connection speaking BitTorrent v2 (BEP 3, 6, 9, 10, 52) on an sd-event loop,
 * serving and downloading at once. The owner (a Swarm downloading, a SwarmServer serving) decides
 * what to request; the connection does everything else on its own:
 *
 *  - the handshake: the first 20 bytes of the v2 info-hash, reserved bits for the extension
 *    protocol (byte 5, 0x10), the fast extension (byte 7, 0x04) and v2 (byte 7, 0x10); an incoming
 *    connection asks the owner (`lookup`) for the content named by the peer's handshake;
 *  - then our bitfield (have-all / have-none with the fast extension), the BEP 10 extension
 *    handshake (ut_metadata with metadata_size, reqq), and unchoke: we serve every peer that connects
 *    (the owner bounds how many), so interest and choking only matter in the other direction;
 *  - `have` for each piece that becomes present in the store while connected (ContentStoreWatch);
 *  - requests: blocks of present pieces are queued on the PeerSink, at most max_requests at once;
 *    every request is answered with the block or, with the fast extension, a reject (a request over
 *    16 KiB or past its piece, for a piece we lack, beyond max_requests, cancelled before it left, or
 *    declined by the owner's `serve`);
 *  - BEP 52 hash requests are answered from the store's tree (the blocks of a present piece are
 *    hashed again for a request below the piece layer: one piece per request, 8 such requests a
 *    second per connection), anything else gets a hash reject; we never
 *    send hash requests (the manifest comes with the piece layer; libtorrent 2.0.8 mishandles hash
 *    requests that come before our bitfield);
 *  - ut_metadata requests are answered with the info dictionary (for peers starting from a magnet);
 *  - keep-alives after keepalive_usec without sending, a close after idle_timeout_usec without
 *    receiving, or handshake_timeout_usec without a handshake;
 *  - bounded memory: a 64 KiB receive buffer, the decoder's max message (32 KiB), at most
 *    max_requests queued blocks, and reading stops while the sink holds more than
 *    read_pause_bytes (so a peer that floods us without reading gets back-pressure, not memory).
 *
 * Any protocol violation (a decoder error, a second bitfield, have-all without the fast extension,
 * a block we did not ask for, hashes we did not ask for, a bad extension handshake ...) closes the
 * connection: `closed` is called once with a negative errno and a sentence, and no callback runs
 * after it. The owner frees the connection with peer_conn_free(), from any callback or later; a
 * connection is never freed behind the owner's back.
 *
 * Downloading: the owner calls peer_conn_request() for blocks of pieces the peer has (its bitfield
 * is peer_conn_peer_bitfield()), at most peer_conn_request_room() more at a time; each request ends
 * in `block`, `rejected` (a reject, or a choke without the fast extension), or the close. Requests
 * cancelled with peer_conn_cancel() end silently (a block or reject that still arrives for them is
 * dropped). */

#include <sys/socket.h>
#include <systemd/sd-event.h>

#include "content-store.h"
#include "peer-sink.h"
#include "peer-wire.h"

#define PEER_CONN_MAX_REQUESTS_DEFAULT 500U
#define PEER_CONN_OUT_MAX 512U                  /* our requests in flight to one peer, at most */
#define PEER_CONN_ADDR_MAX 64

typedef struct PeerConn PeerConn;

typedef struct PeerConnConfig {
        PeerSink *sink;                         /* required */
        uint8_t peer_id[PEER_ID_SIZE];          /* zero: a random one */
        uint32_t max_requests;                  /* the peer's requests queued at once; our reqq (500) */
        uint64_t handshake_timeout_usec;        /* connect + handshake (10 s) */
        uint64_t idle_timeout_usec;             /* nothing received (120 s) */
        uint64_t keepalive_usec;                /* nothing sent (60 s) */
        uint64_t read_pause_bytes;              /* 0: max_requests * (16 KiB + 13) + 1 MiB */
        uint32_t hashes_max;                    /* largest hashes answer we send (1024 hashes) */
} PeerConnConfig;

typedef struct PeerConnCallbacks {
        /* Incoming connections: the content named by the peer's handshake, or NULL to close
         * (-ENOENT, "unknown info-hash"). The connection takes a reference. */
        ContentStore *(*lookup)(PeerConn *c, const uint8_t info_hash[PEER_INFO_HASH_SIZE], void *userdata);
        /* Both handshakes done. */
        void (*ready)(PeerConn *c, void *userdata);
        /* The peer's bitfield was set whole (bitfield, have-all, have-none). */
        void (*bitfield)(PeerConn *c, void *userdata);
        void (*have)(PeerConn *c, uint32_t index, void *userdata);
        void (*choke)(PeerConn *c, bool choked, void *userdata);
        void (*block)(PeerConn *c, uint32_t index, uint32_t begin, const void *data, size_t size, void *userdata);
        void (*rejected)(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length, void *userdata);
        /* Serving: a request for a block of a piece we have, from a peer with the fast extension:
         * false declines it with a reject (a seed's sharing policy, seed-ledger.h). NULL: serve all.
         * Must not free the connection. */
        bool (*serve)(PeerConn *c, uint32_t index, void *userdata);
        /* Once, on any close that the owner did not ask for; error 0: the peer closed cleanly. */
        void (*closed)(PeerConn *c, int error, const char *reason, void *userdata);
} PeerConnCallbacks;

typedef struct PeerRequest {
        uint32_t index, begin, length;
} PeerRequest;

typedef struct PeerConnStats {
        uint64_t bytes_received, bytes_sent;    /* block payload */
        uint64_t blocks_received, blocks_sent;
        uint64_t requests_rejected;             /* the peer's requests we rejected */
        uint64_t requests_declined;             /* of which declined by the owner's serve() */
        uint64_t hash_requests, hash_rejects;   /* answered, rejected */
        uint64_t metadata_pieces;               /* ut_metadata pieces served */
        uint64_t late_blocks;                   /* blocks for cancelled requests */
} PeerConnStats;

int peer_conn_connect(sd_event *e, const struct sockaddr *sa, socklen_t salen, ContentStore *store,
                      const PeerConnConfig *config, const PeerConnCallbacks *cb, void *userdata, PeerConn **ret);
/* fd: an accepted socket, taken (closed on failure too). */
int peer_conn_accept(sd_event *e, int fd, const PeerConnConfig *config, const PeerConnCallbacks *cb,
                     void *userdata, PeerConn **ret);
PeerConn *peer_conn_free(PeerConn *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerConn *, peer_conn_free);

void peer_conn_set_userdata(PeerConn *c, void *userdata);
/* "IP:PORT" of the peer. */
const char *peer_conn_address(const PeerConn *c);
/* The peer's address (as accepted or connected). */
const struct sockaddr_storage *peer_conn_sockaddr(const PeerConn *c);
ContentStore *peer_conn_store(const PeerConn *c);
bool peer_conn_is_ready(const PeerConn *c);
bool peer_conn_fast(const PeerConn *c);
/* NULL until the peer said what it has; all bits for a peer with every piece. */
const uint8_t *peer_conn_peer_bitfield(const PeerConn *c);
bool peer_conn_peer_is_seed(const PeerConn *c);
bool peer_conn_peer_choking(const PeerConn *c);
void peer_conn_get_stats(const PeerConn *c, PeerConnStats *ret);

int peer_conn_set_interested(PeerConn *c, bool interested);
/* -EBUSY when no room, -EINVAL for a block past its piece or over 16 KiB, -EPERM while choked. */
int peer_conn_request(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length);
int peer_conn_cancel(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length);
unsigned peer_conn_request_room(const PeerConn *c);
/* Our requests still in flight. */
size_t peer_conn_requests(const PeerConn *c, const PeerRequest **ret);
