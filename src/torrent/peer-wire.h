/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The BitTorrent peer wire protocol, as bytes: the handshake, and the length-prefixed messages of
 * BEP 3 (0-8), the DHT port (BEP 5, 9), the fast extension (BEP 6, 13-17), the extension protocol
 * (BEP 10, 20: its payloads are in peer-ext.h) and the v2 hash messages (BEP 52, 21-23).
 *
 * Encoders write whole messages into a caller's buffer (a piece message's header separately, so the
 * block can be sent from where it lies). PeerDecoder turns a byte stream, fed in chunks of any size,
 * into messages: a message that is whole in the chunk is decoded in place, otherwise it is gathered in
 * the decoder's buffer (max_message bytes, allocated once). Every message is checked against its
 * type's exact size and, once the torrent's geometry is known, its indices; any violation fails the
 * decoder for good (the connection is to be closed) with one of these errors, and
 * peer_decoder_error() gives a sentence for the log:
 *
 *   -EPROTO       not a BitTorrent handshake
 *   -EMSGSIZE     a length prefix beyond max_message, or a piece block over 16 KiB
 *   -EOPNOTSUPP   an unknown message id
 *   -EBADMSG      a payload of the wrong size for its message (hashes included: their count must
 *                 match the request's fields)
 *   -EILSEQ       a bitfield of the wrong length for the piece count, or with spare bits set
 *   -ERANGE       a piece index (have, suggest, allowed fast, reject, piece) past the last piece, or a
 *                 piece block past the end of its piece
 *   -EDOM         hashes or hash reject with fields no valid request has (length 0 or not a power
 *                 of two, index not a multiple of length)
 *
 * Requests and hash requests that are well-formed but ask for what cannot be served (an empty block
 * or one over 16 KiB, past the piece; an invalid hash request, or one for another file) are not
 * errors: the message
 * is delivered with `reject` set, and the caller answers with a reject (BEP 6 / BEP 52) or drops it. */

#include "merkle-proof.h"

#define PEER_PROTOCOL "BitTorrent protocol"
#define PEER_HANDSHAKE_SIZE 68
#define PEER_ID_SIZE 20
#define PEER_INFO_HASH_SIZE 20          /* v2: the first 20 bytes of the SHA-256 info-hash */
#define PEER_BLOCK_MAX 16384U           /* largest request we serve, and largest block we take */
#define PEER_PIECE_HEADER_SIZE 13       /* length, id, index, begin */
#define PEER_HASH_HEADER_SIZE 48        /* pieces root, base, index, length, proof layers */
/* The default max_message: a 16 KiB block with its header, or a ut_metadata data message, or a
 * 512-hash answer with its proof, with room to spare. */
#define PEER_MESSAGE_MAX_DEFAULT (32U * 1024U)

/* Reserved bits of the handshake (byte, mask). */
#define PEER_RESERVED_EXTENSION 5, 0x10 /* BEP 10 */
#define PEER_RESERVED_V2        7, 0x10 /* BEP 52: v2 upgrade of a hybrid torrent */
#define PEER_RESERVED_FAST      7, 0x04 /* BEP 6 */
#define PEER_RESERVED_DHT       7, 0x01 /* BEP 5 */

typedef enum PeerMsgType {
        PEER_MSG_CHOKE = 0,
        PEER_MSG_UNCHOKE = 1,
        PEER_MSG_INTERESTED = 2,
        PEER_MSG_NOT_INTERESTED = 3,
        PEER_MSG_HAVE = 4,
        PEER_MSG_BITFIELD = 5,
        PEER_MSG_REQUEST = 6,
        PEER_MSG_PIECE = 7,
        PEER_MSG_CANCEL = 8,
        PEER_MSG_PORT = 9,
        PEER_MSG_SUGGEST = 13,
        PEER_MSG_HAVE_ALL = 14,
        PEER_MSG_HAVE_NONE = 15,
        PEER_MSG_REJECT = 16,
        PEER_MSG_ALLOWED_FAST = 17,
        PEER_MSG_EXTENDED = 20,
        PEER_MSG_HASH_REQUEST = 21,
        PEER_MSG_HASHES = 22,
        PEER_MSG_HASH_REJECT = 23,
        /* Not message ids: */
        PEER_MSG_KEEPALIVE = 256,
        PEER_MSG_HANDSHAKE = 257,
} PeerMsgType;

typedef struct PeerHandshake {
        uint8_t reserved[8];
        uint8_t info_hash[PEER_INFO_HASH_SIZE];
        uint8_t peer_id[PEER_ID_SIZE];
} PeerHandshake;

static inline bool peer_reserved_get(const uint8_t reserved[8], int byte, uint8_t mask) {
        return reserved[byte] & mask;
}
static inline void peer_reserved_set(uint8_t reserved[8], int byte, uint8_t mask) {
        reserved[byte] |= mask;
}

typedef struct PeerMsg {
        PeerMsgType type;
        bool reject;                    /* REQUEST, HASH_REQUEST: well-formed but not to be served */
        uint32_t index, begin, length;  /* HAVE, SUGGEST, ALLOWED_FAST: index; REQUEST, CANCEL, REJECT:
                                         * all three; PIECE: index, begin (length = size) */
        uint16_t port;                  /* PORT */
        uint8_t ext_id;                 /* EXTENDED: 0 = the extension handshake */
        const uint8_t *data;            /* BITFIELD: the bits; PIECE: the block; EXTENDED: the payload after ext_id */
        size_t size;
        TorrentHashRequest hash;        /* HASH_REQUEST, HASHES, HASH_REJECT */
        const uint8_t *hashes;          /* HASHES: n_hashes hashes of SHA256_SIZE bytes */
        size_t n_hashes;
        PeerHandshake handshake;        /* HANDSHAKE */
} PeerMsg;

/* Encoders. Each writes into buf (size bytes) and returns the length written, or -ENOBUFS (buf too
 * small), -EINVAL (fields the message cannot carry). */
int peer_handshake_encode(const PeerHandshake *h, void *buf, size_t size);
/* Parses the 68 bytes of a handshake. -EPROTO when it is not one. */
int peer_handshake_parse(const void *buf, size_t size, PeerHandshake *ret);
/* Any message of PeerMsg (not HANDSHAKE). */
int peer_msg_encode(const PeerMsg *m, void *buf, size_t size);
/* The bytes peer_msg_encode() writes for m, or 0 for a message that cannot be encoded. */
size_t peer_msg_encoded_size(const PeerMsg *m);
/* The 13 bytes preceding a block of `length` bytes in a piece message. */
int peer_piece_header_encode(uint32_t index, uint32_t begin, uint32_t length, void *buf, size_t size);

typedef struct PeerDecoderConfig {
        size_t max_message;             /* largest length prefix taken; 0: PEER_MESSAGE_MAX_DEFAULT */
        bool handshake;                 /* the stream starts with a handshake */
} PeerDecoderConfig;

typedef struct PeerDecoder PeerDecoder;

int peer_decoder_new(const PeerDecoderConfig *c, PeerDecoder **ret);
PeerDecoder *peer_decoder_free(PeerDecoder *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerDecoder *, peer_decoder_free);
/* Once the torrent's metadata is known: bitfields, indices and blocks are checked against it, and
 * hash requests against the file (with its pieces root). g is copied. */
void peer_decoder_set_geometry(PeerDecoder *d, const TorrentGeometry *g, const uint8_t root[SHA256_SIZE]);

/* Takes bytes from data[0..size) until a message is complete. Returns 1 with *ret_msg (pointing into
 * data or into the decoder, valid until the next call) when one is; 0 when all of data was taken
 * without completing one; a negative errno (see above) when the stream violates the protocol, and
 * every later call fails the same way. *ret_used is how many bytes were taken in every case: call
 * again with the rest. *ret_msg is written only when 1 is returned. */
int peer_decoder_feed(PeerDecoder *d, const void *data, size_t size, size_t *ret_used, PeerMsg *ret_msg);
/* A sentence on the first violation, or NULL. */
const char *peer_decoder_error(const PeerDecoder *d);

/* A short name for logs ("request", "hashes", ...). */
const char *peer_msg_type_to_string(PeerMsgType t);
