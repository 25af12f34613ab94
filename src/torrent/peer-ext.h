/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Payloads of extended messages (peer wire id 20): the BEP 10 extension handshake (extension id 0),
 * and BEP 9's ut_metadata messages, with which a peer that has only the magnet link fetches the info
 * dictionary in 16 KiB pieces.
 *
 * Both parsers take untrusted bytes: canonical bencode only, bounded, every field we use checked for
 * type and range; keys we do not use are ignored (the protocol is extensible). Errors:
 *   -EBADMSG  not canonical bencode, not a dictionary, a field of the wrong type, a missing field,
 *             bytes after the dictionary where none belong
 *   -E2BIG    beyond the bounds (values, nesting, more than PEER_EXT_MAX extensions)
 *   -ERANGE   a number out of its range (extension id > 255, port 0 or > 65535, a metadata size over
 *             UT_METADATA_SIZE_MAX, a piece past the metadata's end, a data piece of the wrong size) */

#include "macro.h"

#define PEER_EXT_MAX 32                 /* entries of "m" we keep */
#define PEER_EXT_NAME_MAX 32            /* longer names are ignored */
#define PEER_EXT_CLIENT_MAX 64          /* "v" is cut (at a character boundary) to this */
#define UT_METADATA_PIECE_SIZE 16384U
/* The largest info dictionary we take: a v2 single-file one is ~270 bytes; 4 MiB is libtorrent's
 * default limit, so nothing it would serve is refused. */
#define UT_METADATA_SIZE_MAX (UINT32_C(4) << 20)

typedef struct PeerExtName {
        char name[PEER_EXT_NAME_MAX + 1];
        uint8_t id;                     /* 0: the peer disables this extension */
} PeerExtName;

typedef struct PeerExtHandshake {
        PeerExtName m[PEER_EXT_MAX];
        size_t n_m;
        uint32_t metadata_size;         /* 0: absent */
        uint16_t port;                  /* "p", 0: absent */
        uint32_t reqq;                  /* 0: absent */
        char v[PEER_EXT_CLIENT_MAX + 1];        /* client name, valid UTF-8; "" when absent or invalid */
} PeerExtHandshake;

int peer_ext_handshake_parse(const void *buf, size_t size, PeerExtHandshake *ret);
/* Writes the dictionary (the extended message's payload after ext id 0). -ENOBUFS, -EINVAL. */
int peer_ext_handshake_encode(const PeerExtHandshake *h, void *buf, size_t size, size_t *ret_len);
/* The id the peer assigned to extension name, 0 when it has none (or disabled it). */
uint8_t peer_ext_handshake_id(const PeerExtHandshake *h, const char *name);
/* Adds name -> id to h (for encoding). -E2BIG when full, -EINVAL for a name too long. */
int peer_ext_handshake_add(PeerExtHandshake *h, const char *name, uint8_t id);

typedef enum UtMetadataType {
        UT_METADATA_REQUEST = 0,
        UT_METADATA_DATA = 1,
        UT_METADATA_REJECT = 2,
} UtMetadataType;

typedef struct UtMetadataMsg {
        UtMetadataType type;
        uint32_t piece;
        uint32_t total_size;            /* DATA */
        const uint8_t *data;            /* DATA: the piece's bytes, after the dictionary */
        size_t size;
} UtMetadataMsg;

/* Parses a ut_metadata payload. For DATA, total_size must be in [1, UT_METADATA_SIZE_MAX], piece
 * within it, and the bytes after the dictionary exactly that piece's size (16 KiB, the last one
 * shorter). */
int ut_metadata_parse(const void *buf, size_t size, UtMetadataMsg *ret);
/* Writes a ut_metadata payload: the dictionary, then for DATA the piece's bytes. */
int ut_metadata_encode(const UtMetadataMsg *m, void *buf, size_t size, size_t *ret_len);
/* Number of ut_metadata pieces of metadata of total_size bytes. */
static inline uint32_t ut_metadata_pieces(uint32_t total_size) {
        return (total_size + UT_METADATA_PIECE_SIZE - 1) / UT_METADATA_PIECE_SIZE;
}
