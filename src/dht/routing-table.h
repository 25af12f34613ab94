/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Kademlia routing table of BEP 5: buckets of K = 8 nodes by XOR distance from our id, where only
 * the bucket covering our own id splits when full (so the table knows the id space near us finely
 * and far from us coarsely). A node enters only after it answered one of our queries. Nodes are good
 * (heard from within 15 minutes), questionable (silent longer) or bad (failed RT_BAD_FAILS queries in
 * a row). A full bucket takes a newcomer in place of a bad node; otherwise the newcomer waits in the
 * bucket's replacement cache, and the caller is told which questionable node to ping: if that one
 * fails, the best replacement takes its place. Pure data structure: time is passed in, nothing is
 * sent from here. */

#include "dht-addr.h"
#include "dht-id.h"

#define RT_K 8
#define RT_MAX_BUCKETS (DHT_ID_SIZE * 8)
#define RT_GOOD_USEC (15 * 60 * USEC_PER_SEC)
#define RT_BAD_FAILS 2

typedef struct RtNode {
        uint8_t id[DHT_ID_SIZE];
        DhtAddr addr;
        uint64_t last_seen;     /* last answer, or query after it had answered before */
        uint64_t last_pinged;   /* last time we pinged it to check it (0: never) */
        uint32_t rtt_usec;
        uint8_t fails;          /* consecutive unanswered queries */
} RtNode;

typedef enum RtNodeState {
        RT_GOOD,
        RT_QUESTIONABLE,
        RT_BAD,
} RtNodeState;

typedef struct RtBucket {
        uint8_t n, n_repl;
        uint64_t last_changed;
        RtNode nodes[RT_K];
        RtNode repl[RT_K];      /* replacement cache: answered us, waiting for room */
} RtBucket;

typedef struct RoutingTable {
        uint8_t self[DHT_ID_SIZE];
        unsigned n_buckets;
        RtBucket *buckets;
} RoutingTable;

typedef enum RtResult {
        RT_IGNORED,
        RT_UPDATED,
        RT_ADDED,
        RT_CACHED,
} RtResult;

int rt_init(RoutingTable *rt, const uint8_t self[DHT_ID_SIZE], uint64_t now);
void rt_done(RoutingTable *rt);

RtNodeState rt_node_state(const RtNode *n, uint64_t now);
unsigned rt_bucket_index(const RoutingTable *rt, const uint8_t id[DHT_ID_SIZE]);
RtNode *rt_find(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE]);

/* The node answered a query of ours. When it ends up only cached, *ret_ping (if non-NULL) receives a
 * questionable node of the full bucket worth pinging, and the function returns RT_CACHED with
 * *ret_has_ping set. */
RtResult rt_heard_from(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr, uint64_t now,
                       uint32_t rtt_usec, RtNode *ret_ping, bool *ret_has_ping);
/* The node sent us a query. Returns true when it is unknown and there would be room for it, so that
 * the caller may ping it (a node enters the table only by answering us). */
bool rt_heard_query(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr, uint64_t now);
/* A query to the node went unanswered. */
void rt_failed(RoutingTable *rt, const uint8_t id[DHT_ID_SIZE], const DhtAddr *addr);

/* Up to max nodes that are not bad, closest to target first. */
size_t rt_closest(const RoutingTable *rt, const uint8_t target[DHT_ID_SIZE], uint64_t now, RtNode *ret, size_t max);
size_t rt_count(const RoutingTable *rt, uint64_t now, size_t *ret_good);

/* A bucket not changed for stale_usec (the oldest), or -1. Marks it as refreshed now. */
int rt_take_stale_bucket(RoutingTable *rt, uint64_t now, uint64_t stale_usec);
void rt_random_id_in_bucket(const RoutingTable *rt, unsigned idx, uint8_t ret[DHT_ID_SIZE]);
/* A questionable node not pinged for min_interval, least recently seen first; marks it pinged. */
bool rt_take_node_to_ping(RoutingTable *rt, uint64_t now, uint64_t min_interval, RtNode *ret);
