/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The request bodies of the agent endpoints (register, claim, heartbeat, started, finish; see
 * release; see docs/api.md), decoded and checked without a database or a request, so that the fuzzer can call
 * them. Two steps, as the API answers: agent_body_parse() reads the JSON object, refuses unknown
 * members and checks node_id's syntax; the caller then checks node_id against the token (403); and
 * agent_body_check() checks the remaining members. Either fills e for a 400. */

#include <json-c/json.h>

#include "json-check.h"

typedef enum AgentBodyKind {
        AGENT_BODY_REGISTER,
        AGENT_BODY_CLAIM,
        AGENT_BODY_HEARTBEAT,
        AGENT_BODY_STARTED,
        AGENT_BODY_FINISH,
        AGENT_BODY_RELEASE,
        AGENT_BODY_OUTPUT,
        _AGENT_BODY_MAX,
} AgentBodyKind;

typedef struct AgentBody {
        AgentBodyKind kind;
        json_object *json;              /* owns what the pointers below point into */
        const char *node_id;
        /* register */
        int64_t nano_cpus, memory_bytes;
        json_object *labels;            /* NULL when absent */
        const char *runtime, *driver, *version;
        /* claim */
        int64_t wait_ms;
        /* heartbeat */
        json_object *leases;            /* NULL when absent */
        bool draining;
        /* started, finish and release */
        int64_t lease_token;
        const char *container_id;
        /* started: when the task's inputs were ready (agent's wall clock, usec since the epoch) and
         * how many bytes they are; 0 when the task has none or the agent does not say */
        int64_t inputs_ready_usec, inputs_bytes;
        /* started: those bytes by source, in InputSource's order (seeders, agents, cache); 0 when
         * the agent does not say */
        int64_t inputs_bytes_by_source[3];
        /* release: why the agent gives the lease back before running the task (one of
         * agent_release_codes) */
        const char *code;
        /* output: a chunk of the lease's live output, starting at byte offset of it */
        int64_t offset;
        const char *data;
        /* finish */
        const char *status, *reason, *stdout_tail, *stderr_tail, *output;
        bool truncated, have_exit_code;
        int64_t exit_code;
} AgentBody;

#define AGENT_TAIL_MAX_BYTES (64 * 1024)
#define AGENT_REASON_MAX_BYTES 1024
#define AGENT_HEARTBEAT_MAX_LEASES 10000
/* The most one chunk of live output may carry. */
#define AGENT_CHUNK_MAX_BYTES (64 * 1024)

/* Why an agent may give a lease back before its task ran: the inputs could not be fetched (no peer
 * within the deadline, a content that fails verification everywhere), or the node's disk cannot hold
 * them. The task is queued again (or fails after max_attempts) with the reason. NULL-terminated. */
extern const char *const agent_release_codes[];

void agent_body_done(AgentBody *b);

/* Returns 0, or -EINVAL (e filled; -ENOMEM leaves it empty). */
int agent_body_parse(AgentBodyKind kind, const char *body, size_t size, AgentBody *ret, CheckError *e);
/* claim_wait_max_ms bounds a claim's wait_ms. Returns 0 or -EINVAL with e filled. */
int agent_body_check(AgentBody *b, int64_t claim_wait_max_ms, CheckError *e);
