/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* KRPC messages (BEP 5, with BEP 32's nodes6/want, BEP 43's ro and BEP 44's get/put), decoded from
 * and encoded to bencode. The decoder turns one datagram into a KrpcMsg whose byte fields point into
 * the datagram: every field is checked for type and size, and a message with any malformed field is
 * rejected whole. Unknown keys are ignored (the protocol is extensible), unknown query methods are
 * reported as such so that the node can answer error 204. */

#include "bencode.h"
#include "dht-id.h"

#define KRPC_TID_MAX 16         /* longer transaction ids are not echoed: dropped */
#define KRPC_TOKEN_MAX 64
#define KRPC_MAX_VALUES 256
#define KRPC_VERSION_MAX 16
#define KRPC_PACKET_MAX 4096    /* larger datagrams are dropped before decoding */
#define BEP44_KEY_SIZE 32
#define BEP44_SIG_SIZE 64
#define BEP44_SALT_MAX 64
#define BEP44_VALUE_MAX 1000

typedef enum KrpcKind {
        KRPC_QUERY = 1,
        KRPC_RESPONSE,
        KRPC_ERROR,
} KrpcKind;

typedef enum KrpcMethod {
        KRPC_UNKNOWN = 0,
        KRPC_PING,
        KRPC_FIND_NODE,
        KRPC_GET_PEERS,
        KRPC_ANNOUNCE_PEER,
        KRPC_GET,
        KRPC_PUT,
        _KRPC_METHOD_MAX,
} KrpcMethod;

/* Error codes of BEP 5 and BEP 44. */
enum {
        KRPC_ERR_GENERIC = 201,
        KRPC_ERR_SERVER = 202,
        KRPC_ERR_PROTOCOL = 203,
        KRPC_ERR_METHOD_UNKNOWN = 204,
        KRPC_ERR_TOO_BIG = 205,
        KRPC_ERR_INVALID_SIG = 206,
        KRPC_ERR_SALT_TOO_BIG = 207,
        KRPC_ERR_CAS_MISMATCH = 301,
        KRPC_ERR_SEQ_TOO_LOW = 302,
};

typedef struct KrpcBytes {
        const uint8_t *p;
        size_t n;
} KrpcBytes;

typedef struct KrpcMsg {
        KrpcKind kind;
        KrpcBytes tid;
        KrpcBytes version;              /* top-level "v": client version, optional */
        bool read_only;                 /* top-level "ro": 1 (BEP 43) */

        /* Queries. */
        KrpcMethod method;
        bool has_id;
        uint8_t id[DHT_ID_SIZE];        /* the sender's node id (queries and responses) */
        bool has_target;
        uint8_t target[DHT_ID_SIZE];    /* "target" (find_node, get) or "info_hash" (get_peers, announce_peer) */
        KrpcBytes token;
        bool has_port, implied_port;
        uint16_t port;
        bool want_n4, want_n6;          /* "want": ["n4", "n6"]; both false when absent */

        /* BEP 44: put arguments, and get responses. */
        KrpcBytes v;                    /* the value, still bencoded */
        bool has_k, has_sig, has_seq, has_cas, has_salt;
        uint8_t k[BEP44_KEY_SIZE];
        uint8_t sig[BEP44_SIG_SIZE];
        KrpcBytes salt;
        int64_t seq, cas;

        /* Responses. */
        KrpcBytes nodes;                /* n * 26 bytes */
        KrpcBytes nodes6;               /* n * 38 bytes */
        KrpcBytes values[KRPC_MAX_VALUES]; /* compact peers, 6 or 18 bytes each */
        size_t n_values;

        /* Errors. */
        int64_t error_code;
        KrpcBytes error_msg;
} KrpcMsg;

const char *krpc_method_to_string(KrpcMethod m);

/* Returns 0 for a well-formed message. A query whose envelope is sound but whose arguments are wrong
 * (missing or malformed) gives -EPROTO, with kind, tid and method filled in so that the caller may
 * answer error 203. Anything else gives -EBADMSG (or -E2BIG), and should be dropped and counted. */
int krpc_decode(const void *buf, size_t size, KrpcMsg *ret);

/* Encodes m (kind, tid and what the kind and method need; absent optional fields are left out) into
 * buf. Returns the length or a negative errno (-ENOBUFS when buf is too small). */
int krpc_encode(const KrpcMsg *m, void *buf, size_t size);

/* Whether two decoded messages carry the same fields (for round-trip checks). */
bool krpc_msg_equal(const KrpcMsg *a, const KrpcMsg *b);
