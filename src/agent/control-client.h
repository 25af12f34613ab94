/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Calls to the control replicas (agent endpoints: register, claim, heartbeat, started, finish), with
 * failover: a call goes to the replica that answered last, and when it cannot be reached (or answers
 * 5xx) to the next one in the list, each at most once per call. The list may change at any time
 * (replicas found in the DHT come and go): calls in flight carry on with the new list, and never try
 * a replica twice. With no replica known, a call fails (asynchronously, as any other). */

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "curl-event.h"
#include "macro.h"

typedef struct ControlClient ControlClient;
typedef struct ControlCall ControlCall;

typedef struct ControlReply {
        int error;              /* 0: an HTTP answer (see code); < 0: no replica answered */
        long code;
        json_object *json;      /* the parsed body, if JSON */
        const char *body;       /* the raw body (NUL-terminated; binary for a .torrent) */
        size_t size;
        const char *message;    /* the body's "error", or the transport's explanation */
        const char *url;        /* the replica that answered (or the last one tried); NULL if none */
        uint64_t sent_usec;     /* CLOCK_MONOTONIC, when the request that got this answer was sent */
} ControlReply;

typedef void (*ControlCallback)(const ControlReply *reply, void *userdata);
/* Called when a call ends without any replica serving it: all failed, or none is known. */
typedef void (*ControlUnreachableCallback)(ControlClient *c, void *userdata);

/* urls may be empty (or NULL): control_client_set_urls() provides them later. */
int control_client_new(sd_event *e, CurlEvent *curl, char *const *urls, const char *token, ControlClient **ret);
ControlClient *control_client_free(ControlClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ControlClient *, control_client_free);

/* Replaces the list (trailing slashes are dropped, duplicates kept once, order kept). The replica
 * that answered last stays the first choice if it is still listed. Returns > 0 if the list changed. */
int control_client_set_urls(ControlClient *c, char *const *urls);
char *const *control_client_urls(ControlClient *c);
size_t control_client_n_urls(ControlClient *c);
void control_client_set_unreachable_callback(ControlClient *c, ControlUnreachableCallback cb, void *userdata);

/* POST path (e.g. "/api/agents/claim") with body. timeout_usec bounds each try. */
int control_post(ControlClient *c, const char *path, json_object *body, uint64_t timeout_usec,
                 ControlCallback cb, void *userdata, ControlCall **ret);
/* GET path with "Accept: accept" (NULL: none), failing over like control_post(); the reply's body is
 * the raw answer (a .torrent for GET /api/contents/{id}), at most max_body bytes (a longer one is an
 * error, -EFBIG). */
int control_get(ControlClient *c, const char *path, const char *accept, size_t max_body, uint64_t timeout_usec,
                ControlCallback cb, void *userdata, ControlCall **ret);
void control_call_cancel(ControlCall *call);

/* The longest lease TTL a control can be configured with (LEASE_TTL_MS). */
#define CONTROL_LEASE_TTL_MAX_MS INT64_C(3600000)

/* The "lease_ttl_ms" of a register, claim or heartbeat answer: 0 and the TTL, -ENOENT when absent,
 * -ERANGE when not within 1..CONTROL_LEASE_TTL_MAX_MS (which no control sends: it would overflow a
 * deadline in microseconds, or expire every lease at once). */
int control_answer_lease_ttl_ms(json_object *answer, int64_t *ret);

/* What a claim answered with 200 carries (docs/api.md); pointers are borrowed from the answer. */
typedef struct ControlClaimAnswer {
        json_object *record;    /* "task": the task's specification */
        const char *task_id;
        int64_t lease_token;
        int64_t attempt;        /* 1 when absent */
        int64_t lease_ttl_ms;   /* 0 when absent or out of range (control_answer_lease_ttl_ms()) */
        int64_t held_ms;        /* how long the control held the claim before granting; -1 when absent */
        int64_t nano_cpus;      /* the record's resources; 0 when absent, never negative */
        int64_t memory_bytes;
        int64_t timeout_sec;    /* 3600 when absent */
        json_object *inputs;    /* "inputs": [{content, path, length, piece_length}], NULL when absent */
} ControlClaimAnswer;

/* Returns 0, or -EBADMSG when the answer lacks what a claim answer must have, or its task id or lease
 * token is not one, or its inputs are not an array (docs/api.md). The inputs' elements are checked
 * where they are used (agent-inputs.c). */
int control_claim_answer_parse(json_object *answer, ControlClaimAnswer *ret);

/* The replica calls go to first, NULL when none is known. */
const char *control_client_current_url(ControlClient *c);
/* "http://host:port/" -> "http://host:port" (a new string). */
char *control_url_normalize(const char *url);

/* How long the control took to answer calls that are not long polls (the claims), for /metrics. */
struct Histogram;
const struct Histogram *control_client_latency(ControlClient *c);
