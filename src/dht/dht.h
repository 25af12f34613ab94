/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A Mainline DHT node (BEP 5 + BEP 44, BEP 32 for IPv6, BEP 43 read-only) on an sd-event loop.
 *
 *   dht_new(event, &(DhtConfig) { .port = 6881, .bootstrap = nodes, .state_dir = dir }, &d);
 *   dht_announce(d, info_hash, http_port, DHT_REPUBLISH, cb, ud);    peers are found with dht_get_peers()
 *   dht_put(d, v, n, 0, target, cb, ud);                  immutable; dht_get(d, target, cb, ud)
 *   dht_put_mutable(d, key, salt, salt_len, v, n, seq, NULL, DHT_REPUBLISH, cb, ud);
 *   dht_get_mutable(d, pubkey, salt, salt_len, cb, ud);
 *
 * Every operation is asynchronous and calls cb once with a DhtResult (cb may be NULL). Operations
 * started before the node has bootstrapped wait for it. v is a bencoded value of at most 1000 bytes
 * (mc-dhtget and the task records store a bencoded string or dict). DHT_REPUBLISH keeps re-announcing
 * (every 15 minutes) or re-putting (every hour) until dht_unpublish(). With a state_dir, the node id
 * and a snapshot of the routing table live in state_dir/dht-state, so a restart rejoins at once.
 * dht_free() calls the callbacks of unfinished operations with -ECANCELED; they must not call into
 * the Dht then. Nothing here blocks: host names in bootstrap are resolved in a helper thread. */

#include <openssl/evp.h>
#include <systemd/sd-event.h>

#include "dht-addr.h"
#include "dht-id.h"
#include "krpc.h"

typedef struct Dht Dht;

/* Knobs for tests and simulations; zero fields take the defaults in dht.c. */
typedef struct DhtTuning {
        uint32_t query_rate, query_burst;       /* per source address (default 50/s, burst 100) */
        uint64_t min_timeout_usec, max_timeout_usec; /* adaptive query timeout bounds (5 ms, 2 s) */
        size_t max_items, max_infohashes;       /* storage bounds (4096 each) */
        unsigned alpha;                         /* lookup parallelism (3) */
        bool no_initial_refresh;                /* skip filling far buckets after bootstrap */
        uint64_t maintenance_usec;              /* period of the housekeeping timer (5 s, +-1 s) */
        uint64_t republish_usec;                /* re-announce / re-put period (15 min / 1 h) */
} DhtTuning;

typedef struct DhtConfig {
        uint16_t port;                  /* 0: any free port */
        const char *bind_address;       /* NULL: all IPv4 addresses, plus all IPv6 ones if the host has IPv6 */
        int family;                     /* AF_UNSPEC (both), AF_INET or AF_INET6 */
        char *const *bootstrap;         /* "HOST:PORT", NULL-terminated; may be NULL */
        /* Sockets to use instead of binding port (a socket unit's ListenDatagram=): bound UDP sockets,
         * at most one AF_INET and one AF_INET6 (IPV6_V6ONLY: BEP 32 keeps a routing table per family).
         * Taken over whatever dht_new() returns. */
        const int *fds;
        size_t n_fds;
        const char *state_dir;          /* NULL: no persistence */
        /* The node id to take, NULL: the state file's, or a random one. A node's id should be random
         * (BEP 5); this is for simulations, whose networks a seed must reproduce. */
        const uint8_t *id;
        bool read_only;                 /* BEP 43: a client that serves nobody (mc-dhtget) */
        const DhtTuning *tuning;        /* NULL: defaults */
} DhtConfig;

typedef struct DhtItem {
        uint8_t target[DHT_ID_SIZE];
        const void *v;                  /* bencoded */
        size_t v_len;
        bool is_mutable;
        uint8_t k[BEP44_KEY_SIZE];
        uint8_t sig[BEP44_SIG_SIZE];
        int64_t seq;
        const void *salt;
        size_t salt_len;
} DhtItem;

typedef struct DhtResult {
        int error;              /* 0; -ENOENT nothing found; -EHOSTUNREACH no node answered; -ETIMEDOUT
                                 * (ping); -ESTALE a newer seq is stored; -ECANCELED */
        const DhtAddr *peers;   /* get_peers */
        size_t n_peers;
        const DhtItem *item;    /* get, get_mutable */
        unsigned n_stored;      /* announce, put: nodes that accepted */
        uint8_t id[DHT_ID_SIZE];/* ping: the node's id */
        unsigned rounds;        /* longest chain of queries in the lookup */
        unsigned queries;       /* queries this operation sent */
        unsigned responses;
        unsigned rejected;      /* get: items received that failed verification (forged, wrong key) */
} DhtResult;

typedef void (*DhtCallback)(Dht *d, const DhtResult *r, void *userdata);

#define DHT_REPUBLISH 1U

int dht_new(sd_event *e, const DhtConfig *config, Dht **ret);
Dht *dht_free(Dht *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Dht *, dht_free);

int dht_when_ready(Dht *d, DhtCallback cb, void *userdata);
int dht_ping(Dht *d, const DhtAddr *addr, DhtCallback cb, void *userdata);
int dht_get_peers(Dht *d, const uint8_t info_hash[DHT_ID_SIZE], DhtCallback cb, void *userdata);
/* port 0: the port we send from (implied_port). */
int dht_announce(Dht *d, const uint8_t info_hash[DHT_ID_SIZE], uint16_t port, unsigned flags, DhtCallback cb, void *userdata);
int dht_get(Dht *d, const uint8_t target[DHT_ID_SIZE], DhtCallback cb, void *userdata);
int dht_get_mutable(Dht *d, const uint8_t k[BEP44_KEY_SIZE], const void *salt, size_t salt_len, DhtCallback cb, void *userdata);
int dht_put(Dht *d, const void *v, size_t n, unsigned flags, uint8_t ret_target[DHT_ID_SIZE], DhtCallback cb, void *userdata);
/* cas: NULL, or the seq the stored item must have for the put to be accepted. */
int dht_put_mutable(Dht *d, EVP_PKEY *key, const void *salt, size_t salt_len, const void *v, size_t n,
                    int64_t seq, const int64_t *cas, unsigned flags, DhtCallback cb, void *userdata);
/* Stops republishing what was announced under (or put at) target. -ENOENT if nothing was. */
int dht_unpublish(Dht *d, const uint8_t target[DHT_ID_SIZE]);

typedef struct DhtNodeInfo {
        uint8_t id[DHT_ID_SIZE];
        DhtAddr addr;
        const char *state;      /* "good", "questionable", "bad" */
        uint32_t rtt_usec;
} DhtNodeInfo;

typedef struct DhtStats {
        uint64_t rx_packets, tx_packets, rx_bytes, tx_bytes;
        uint64_t queries_received, queries_answered, queries_sent, responses_received;
        uint64_t dropped_malformed, dropped_ratelimited, dropped_oversize, dropped_unexpected;
        uint64_t timeouts, late_replies, send_errors;
        size_t nodes, good_nodes, peers_stored, items_stored, pending;
} DhtStats;

const uint8_t *dht_id(Dht *d);
/* The bound port (the IPv4 one when there are two sockets). */
uint16_t dht_port(Dht *d);
size_t dht_nodes(Dht *d, DhtNodeInfo *ret, size_t max);
void dht_get_stats(Dht *d, DhtStats *ret);
/* Stops answering and sending, closing the sockets, as if the process had died (for simulations). */
void dht_kill(Dht *d);
