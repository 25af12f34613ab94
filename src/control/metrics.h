/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* In-process counters for GET /metrics (Prometheus text exposition format 0.0.4). Per replica: a
 * Prometheus server scrapes each replica and sums. */

#include <stdio.h>

#include "macro.h"
#include "prometheus.h"

#define METRICS_MAX_REQUEST_SERIES 96
#define METRICS_MAX_ENDPOINTS 48

typedef struct RequestSeries {
        const char *route;      /* static string */
        unsigned code;
        uint64_t count;
} RequestSeries;

/* How long answering took, by endpoint (long polls and streams included: their wait counts). */
typedef struct EndpointLatency {
        const char *route;      /* static string */
        Histogram latency;
} EndpointLatency;

/* Where the bytes of tasks' inputs came from, as agents report them when a task starts. */
typedef enum InputSource {
        INPUT_SOURCE_SEEDERS,   /* received from the agent's SEEDERS */
        INPUT_SOURCE_AGENTS,    /* received from other peers (agents, seeders found in the DHT) */
        INPUT_SOURCE_CACHE,     /* already complete in the agent's cache: nothing received */
        _INPUT_SOURCE_MAX,
} InputSource;

typedef struct Metrics {
        RequestSeries requests[METRICS_MAX_REQUEST_SERIES];
        size_t n_requests;
        EndpointLatency endpoints[METRICS_MAX_ENDPOINTS];
        size_t n_endpoints;
        Histogram claim_latency;        /* the claim transaction */
        Histogram push_batch_size;
        Histogram claim_batch_size;     /* claims per claim statement (mc_claim_batch) */
        Histogram heartbeat_batch_size; /* heartbeats per heartbeat statement (mc_heartbeat_batch) */
        uint64_t tasks_pushed;
        uint64_t leases_granted;
        uint64_t claims_abandoned;      /* claims whose client had gone before their statement was sent */
        uint64_t heartbeats_abandoned;  /* the same for heartbeats */
        uint64_t leases_expired;
        uint64_t input_bytes[_INPUT_SOURCE_MAX];
} Metrics;

/* A request answered with code after seconds. */
void metrics_count_request(Metrics *m, const char *route, unsigned code, double seconds);
void metrics_write_requests(FILE *f, const Metrics *m);
void metrics_write_input_bytes(FILE *f, const Metrics *m);
