/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What dht.c (transport, transactions, maintenance), dht-server.c (answering queries), dht-lookup.c
 * (iterative lookups and the operations of the API) and dht-persist.c share. Not for embedders. */

#include "bep44.h"
#include "dht.h"
#include "hashmap.h"
#include "list.h"
#include "ratelimit.h"
#include "routing-table.h"
#include "storage.h"
#include "token.h"

#define DHT_K RT_K
#define DHT_TID_SIZE 4
#define LOOKUP_MAX_CANDIDATES 64
#define LOOKUP_MAX_PEERS 512
#define DHT_MAX_PENDING 4096
#define DHT_MAX_TABLE_PINGS 16
#define DHT_RESPONSE_MAX 1500   /* no answer is larger: bounded amplification */
#define DHT_VALUES_MAX 100      /* peers in one get_peers answer */
#define ANNOUNCE_INTERVAL_USEC (15 * 60 * USEC_PER_SEC)
#define PUT_INTERVAL_USEC (60 * 60 * USEC_PER_SEC)
#define BUCKET_REFRESH_USEC (15 * 60 * USEC_PER_SEC)
#define SAVE_INTERVAL_USEC (10 * 60 * USEC_PER_SEC)

typedef struct Op Op;
typedef struct Lookup Lookup;
typedef struct Pending Pending;

typedef struct DhtSocket {
        Dht *dht;
        int family;
        int fd;
        sd_event_source *io;
        DhtAddr bound;
        RoutingTable rt;
} DhtSocket;

/* Called with reply set (a response, or an error reply with error = -EREMOTEIO), or reply NULL and
 * error = -ETIMEDOUT when every try went unanswered and then nothing came for a while longer (at
 * least a second). With QUERY_STALL, the first timeout is also reported, as -ETIME, and the
 * transaction stays open: lookups use this to move on from slow nodes without giving up on them. */
typedef void (*PendingCallback)(Dht *d, Pending *p, const KrpcMsg *reply, int error, void *userdata);

struct Pending {
        Dht *dht;
        uint8_t tid[DHT_TID_SIZE];
        DhtSocket *sock;
        DhtAddr to;
        KrpcMethod method;
        bool has_id;
        uint8_t id[DHT_ID_SIZE];        /* whom we expect to answer, for the routing table */
        uint64_t sent_at;
        uint64_t timeout;
        unsigned tries_left;
        bool retried;
        bool stall;                     /* QUERY_STALL */
        bool expired;                   /* timed out; lingering to learn from a late reply */
        sd_event_source *timer;
        PendingCallback cb;
        void *userdata;
        size_t len;
        uint8_t buf[];
};

typedef enum CandidateState {
        CAND_NEW,
        CAND_IN_FLIGHT,
        CAND_STALLED,                   /* no answer within the timeout, still hoping */
        CAND_RESPONDED,
        CAND_FAILED,
} CandidateState;

typedef struct Candidate {
        uint8_t id[DHT_ID_SIZE];
        DhtAddr addr;
        CandidateState state;
        uint8_t depth;
        uint8_t token_len;
        uint8_t token[KRPC_TOKEN_MAX];
        Pending *p;
} Candidate;

struct Lookup {
        Op *op;
        DhtSocket *sock;
        KrpcMethod method;              /* find_node, get_peers or get */
        bool done, writing;
        unsigned in_flight, writes_in_flight;
        size_t n;
        Candidate c[LOOKUP_MAX_CANDIDATES];
};

typedef enum OpType {
        OP_READY,
        OP_PING,
        OP_FIND_NODE,                   /* internal: bootstrap and bucket refresh */
        OP_GET_PEERS,
        OP_ANNOUNCE,
        OP_GET,
        OP_PUT,
} OpType;

struct Op {
        Dht *dht;
        LIST_FIELDS(Op);
        OpType type;
        bool started, internal;         /* internal: runs before the node is ready (bootstrap) */
        uint8_t target[DHT_ID_SIZE];
        DhtCallback cb;
        void *userdata;
        Lookup *lookups[2];
        unsigned n_lookups, n_running;

        DhtAddr ping_addr;
        uint16_t port;                  /* announce; 0: implied */
        bool want_mutable;              /* get */
        uint8_t k[BEP44_KEY_SIZE];
        uint8_t salt[BEP44_SALT_MAX];
        size_t salt_len;
        bool has_cas;
        int64_t cas;
        StoredItem *item;               /* put: what to store; get: best found so far */
        bool have_item;

        DhtAddr *peers;
        size_t n_peers;
        unsigned n_stored, n_stale, rejected;
        unsigned rounds, queries, responses;
        uint8_t ping_id[DHT_ID_SIZE];
        int error;
};

typedef struct Published {
        struct Published *next;
        uint8_t target[DHT_ID_SIZE];
        bool is_announce;
        uint16_t port;
        uint64_t due;
        StoredItem *item;
} Published;

struct Dht {
        sd_event *event;
        DhtTuning t;
        bool read_only, killed, ready, bootstrapping, self_lookup_started;
        char *state_dir;
        char **bootstrap;
        uint8_t id[DHT_ID_SIZE];
        DhtSocket sock[2];
        unsigned n_sock;

        Hashmap *pending;
        unsigned table_pings;
        TokenSecrets tokens;
        PeerStore peers;
        ItemStore items;
        RateLimit *rl;
        uint64_t srtt, rttvar;          /* usec */
        bool have_rtt;

        Op *ops;
        Published *published;
        DhtAddr *boot_addrs;            /* resolved bootstrap nodes and saved ones */
        size_t n_boot_addrs;
        unsigned boot_pending, resolving;
        uint64_t last_bootstrap, last_save, last_expire;
        sd_event_source *maintenance;
        sd_event_source *kick;          /* starts queued operations from the loop, never from the caller */
        sd_event_source *resolve_io;
        int resolve_fd, resolve_template_fd;
        DhtStats stats;
};

/* dht.c */
uint64_t dht_now(Dht *d);
DhtSocket *dht_socket_for(Dht *d, int family);
#define QUERY_STALL 0x100U
/* flags: the number of tries (1..), optionally | QUERY_STALL. */
int dht_send_query(Dht *d, DhtSocket *s, const DhtAddr *to, const uint8_t *expected_id, KrpcMsg *q,
                   unsigned flags, PendingCallback cb, void *userdata, Pending **ret);
/* Detaches the callback: the transaction still completes and updates the routing table. */
void pending_forget(Pending *p);
int dht_send_reply(Dht *d, DhtSocket *s, const DhtAddr *to, const KrpcMsg *m);
void dht_ping_node(Dht *d, DhtSocket *s, const uint8_t *id, const DhtAddr *addr);
void dht_add_boot_addr(Dht *d, const DhtAddr *a);
void dht_op_became_ready(Dht *d);
/* Handles buf as if it had arrived from `from` (the packet fuzz target). */
void dht_inject_packet(Dht *d, const void *buf, size_t len, const DhtAddr *from);

/* dht-bootstrap.c */
void dht_bootstrap_start(Dht *d);
void dht_bootstrap_resolved(Dht *d, const DhtAddr *a);

/* dht-server.c */
void dht_handle_query(Dht *d, DhtSocket *s, const KrpcMsg *m, const DhtAddr *from);
void dht_reply_error(Dht *d, DhtSocket *s, const DhtAddr *to, KrpcBytes tid, int code, const char *msg);

static inline uint64_t republish_interval(Dht *d, bool is_announce) {
        if (d->t.republish_usec > 0)
                return d->t.republish_usec;
        return is_announce ? ANNOUNCE_INTERVAL_USEC : PUT_INTERVAL_USEC;
}

/* dht-lookup.c */
Op *op_new(Dht *d, OpType type, DhtCallback cb, void *userdata);
void op_start(Op *op);
void op_cancel_all(Dht *d);
void dht_republish_due(Dht *d, uint64_t now);
void published_free_all(Dht *d);
int dht_remember_published(Dht *d, const uint8_t target[DHT_ID_SIZE], bool is_announce, uint16_t port, const StoredItem *item);

/* dht-persist.c */
int dht_state_load(Dht *d);
int dht_state_save(Dht *d);

/* dht-resolve.c */
int dht_resolve_start(Dht *d, const char *host, uint16_t port);
void dht_resolve_stop(Dht *d);
