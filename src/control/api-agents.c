/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The agent side of the API: register, long-poll claim, one heartbeat per node, and the fenced task
 * reports (started, finish, release). Every write carries the lease token; the database functions compare it
 * under the task's row lock, so a stale agent changes nothing and gets 409. */

#include <assert.h>

#include "agent-body.h"
#include "api.h"
#include "claim.h"
#include "daemon-util.h"
#include "heartbeat.h"
#include "json-util.h"
#include "log.h"
#include "utf8.h"

typedef struct AgentCall {
        Control *control;
        HttpRequest *req;
        char node_id[129];
        char task_id[129];
        char token[32];
        TaskStatus status;      /* finish: the state the agent reported */
        char attempt[16];
        const char *kind;       /* "register", "heartbeat", "started", "finish", "release" */
        uint64_t input_bytes[_INPUT_SOURCE_MAX]; /* started: counted in /metrics by the call that recorded it */
} AgentCall;

/* The body of an agent call, decoded and checked (agent-body.c), with node_id checked against the
 * token's node in between, as docs/api.md orders the answers. Replies itself on failure. */
static int decode_body(HttpRequest *req, AgentBodyKind kind, const AuthIdentity *id, int64_t claim_wait_max_ms,
                       AgentBody *ret) {
        _cleanup_(agent_body_done) AgentBody b = {};
        CheckError e = {};
        const char *body;
        size_t size;

        body = http_request_body(req, &size);
        if (agent_body_parse(kind, body, size, &b, &e) < 0) {
                api_reply_check_error(req, &e);
                return -EINVAL;
        }
        if (id->kind == AUTH_AGENT && !streq(b.node_id, id->name)) {
                http_request_reply_error(req, 403, "node_id", "This token or certificate belongs to node \"%s\", not \"%s\".",
                                         id->name, b.node_id);
                return -EPERM;
        }
        if (agent_body_check(&b, claim_wait_max_ms, &e) < 0) {
                api_reply_check_error(req, &e);
                return -EINVAL;
        }
        *ret = b;
        b = (AgentBody) {};
        return 0;
}

static AgentCall *call_new(Control *c, HttpRequest *req, const char *kind, const char *node, const char *task) {
        AgentCall *a = calloc(1, sizeof(AgentCall));

        if (!a) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return NULL;
        }
        a->control = c;
        a->req = req;
        a->kind = kind;
        snprintf(a->node_id, sizeof(a->node_id), "%s", node);
        if (task)
                snprintf(a->task_id, sizeof(a->task_id), "%s", task);
        return a;
}

static void log_revoked(Control *c, const char *node, const char *body) {
        _cleanup_json_ json_object *o = NULL;
        json_object *revoked;

        if (json_parse_strict(body, strlen(body), &o, NULL) < 0 || !json_object_object_get_ex(o, "revoked", &revoked))
                return;
        for (size_t i = 0; i < json_object_array_length(revoked); i++) {
                json_object *e = json_object_array_get_idx(revoked, i), *v;
                const char *task = "", *reason = "";
                char token[32] = "";

                if (json_object_object_get_ex(e, "task_id", &v))
                        task = json_object_get_string(v);
                if (json_object_object_get_ex(e, "reason", &v))
                        reason = json_object_get_string(v);
                if (json_object_object_get_ex(e, "lease_token", &v))
                        snprintf(token, sizeof(token), "%" PRIi64, json_object_get_int64(v));
                log_event(LOG_NOTICE, MC_EVENT_LEASE_REVOKED,
                          LOG_FIELDS("TASK_ID", task, "NODE_ID", node, "LEASE_TOKEN", token, "MC_REASON", reason),
                          "Lease %s of task %s on node %s is revoked (%s).", token, task, node, reason);
        }
}

static void agent_call_answer(AgentCall *a, int error, unsigned code, const char *body);

static void on_agent_call_done(PGresult *r, int error, void *userdata) {
        AgentCall *a = userdata;

        if (error >= 0 && !r)
                error = -EIO;
        if (error < 0 || streq(a->kind, "register")) {
                agent_call_answer(a, error, 0, NULL);
                return;
        }
        if (PQntuples(r) != 1) {
                http_request_reply_error(a->req, 500, NULL, "Unexpected database answer.");
                free(a);
                return;
        }
        /* started's third column: whether this call recorded the start (not a started sent again). */
        if (streq(a->kind, "started") && (PQnfields(r) < 3 || !streq(PQgetvalue(r, 0, 2), "t")))
                memset(a->input_bytes, 0, sizeof(a->input_bytes));
        agent_call_answer(a, 0, (unsigned) atoi(PQgetvalue(r, 0, 0)), PQgetvalue(r, 0, 1));
}

static void on_heartbeat_done(int error, unsigned code, const char *body, void *userdata) {
        agent_call_answer(userdata, error, code, body);
}

/* The answer to the agent's call, from its database function's code and body (register: none). */
static void agent_call_answer(AgentCall *a, int error, unsigned code, const char *body) {
        Control *c = a->control;

        if (error < 0) {
                http_request_reply_error(a->req, control_db_error_code(error), NULL, "Database unavailable; retry.");
                goto finish;
        }
        if (streq(a->kind, "register")) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "node_id", a->node_id);
                json_add_int64(o, "lease_ttl_ms", c->config.lease_ttl_ms);
                json_add_int64(o, "heartbeat_interval_ms", c->config.lease_ttl_ms / 3);
                /* The longest claim wait it takes; and its lease answers say how long a claim was
                 * held (held_ms, claim.c), so that long polls need not be short for the lease's sake. */
                json_add_int64(o, "claim_wait_max_ms", c->config.claim_wait_max_ms);
                log_event(LOG_INFO, MC_EVENT_NODE_REGISTERED,
                          LOG_FIELDS("NODE_ID", a->node_id), "Node %s registered.", a->node_id);
                http_request_reply_json(a->req, 200, o);
                goto finish;
        }
        if (code == 200) {
                if (streq(a->kind, "heartbeat"))
                        log_revoked(c, a->node_id, body);
                else if (streq(a->kind, "started")) {
                        for (InputSource i = 0; i < _INPUT_SOURCE_MAX; i++)
                                c->metrics.input_bytes[i] += a->input_bytes[i];
                        control_task_changed(c, a->task_id, TASK_STATUS_RUNNING, MC_EVENT_CONTAINER_STARTED, a->node_id,
                                             a->token, NULL, "Container started");
                } else if (streq(a->kind, "finish")) {
                        _cleanup_json_ json_object *o = NULL;
                        TaskStatus status = a->status;
                        json_object *v;

                        /* A cancelled task keeps its status even when its result arrives. */
                        if (json_parse_strict(body, strlen(body), &o, NULL) >= 0 &&
                            json_object_object_get_ex(o, "status", &v)) {
                                TaskStatus stored = task_status_from_string(json_object_get_string(v));
                                if (stored >= 0)
                                        status = stored;
                        }
                        control_task_changed(c, a->task_id, status, MC_EVENT_TASK_FINISHED, a->node_id, a->token, NULL,
                                             "Task finished");
                } else if (streq(a->kind, "release")) {
                        _cleanup_json_ json_object *o = NULL;
                        TaskStatus status = TASK_STATUS_QUEUED;
                        json_object *v;

                        if (json_parse_strict(body, strlen(body), &o, NULL) >= 0 &&
                            json_object_object_get_ex(o, "status", &v)) {
                                TaskStatus stored = task_status_from_string(json_object_get_string(v));
                                if (stored >= 0)
                                        status = stored;
                        }
                        control_task_changed(c, a->task_id, status, MC_EVENT_LEASE_RELEASED, a->node_id, a->token, NULL,
                                             "Lease given back");
                }
        } else if (code == 409)
                log_event(LOG_NOTICE, MC_EVENT_STALE_LEASE,
                          LOG_FIELDS("TASK_ID", a->task_id, "NODE_ID", a->node_id, "LEASE_TOKEN", a->token),
                          "Rejected %s for task %s from node %s: lease token %s is stale.",
                          a->kind, a->task_id, a->node_id, a->token);
        http_request_reply(a->req, code, "application/json", body, strlen(body));

finish:
        free(a);
}

static void run_call(AgentCall *a, const char *sql, int n, const char *const *params) {
        int r = db_query(a->control->db, sql, n, params, on_agent_call_done, a);
        if (r < 0)
                on_agent_call_done(NULL, r, a);
}

void api_agent_register(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        char cpus_s[32], memory_s[32];
        AgentCall *a;

        if (decode_body(req, AGENT_BODY_REGISTER, &call->identity, 0, &b) < 0)
                return;

        snprintf(cpus_s, sizeof(cpus_s), "%" PRIi64, b.nano_cpus);
        snprintf(memory_s, sizeof(memory_s), "%" PRIi64, b.memory_bytes);
        a = call_new(c, req, "register", b.node_id, NULL);
        if (!a)
                return;
        const char *params[] = {
                b.node_id, cpus_s, memory_s, b.labels ? json_to_string(b.labels) : "{}", b.runtime, b.driver, b.version,
        };
        run_call(a, "SELECT mc_register($1, $2::bigint, $3::bigint, $4::jsonb, $5, $6, $7)", 7, params);
}

void api_agent_claim(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        int r;

        if (decode_body(req, AGENT_BODY_CLAIM, &call->identity, c->config.claim_wait_max_ms, &b) < 0)
                return;
        r = claim_start(c, req, b.node_id, (uint64_t) b.wait_ms * USEC_PER_MSEC);
        if (r < 0)
                http_request_reply_error(req, 500, NULL, "Cannot start the claim: %s", strerror(-r));
}

void api_agent_heartbeat(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        AgentCall *a;
        int r;

        if (decode_body(req, AGENT_BODY_HEARTBEAT, &call->identity, 0, &b) < 0)
                return;

        a = call_new(c, req, "heartbeat", b.node_id, NULL);
        if (!a)
                return;
        r = heartbeat_send(c->heartbeats, b.node_id, b.leases, b.draining, req, on_heartbeat_done, a);
        if (r < 0)
                agent_call_answer(a, r, 0, NULL);
}

void api_task_started(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        const char *task_id = call->task_id;
        AgentCall *a;

        assert(task_id);
        if (decode_body(req, AGENT_BODY_STARTED, &call->identity, 0, &b) < 0)
                return;
        a = call_new(c, req, "started", b.node_id, task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, b.lease_token);
        _Static_assert(ELEMENTSOF(b.inputs_bytes_by_source) == _INPUT_SOURCE_MAX, "one count per InputSource");
        for (InputSource i = 0; i < _INPUT_SOURCE_MAX; i++)
                a->input_bytes[i] = (uint64_t) b.inputs_bytes_by_source[i];
        char ready_s[32], bytes_s[32];
        snprintf(ready_s, sizeof(ready_s), "%" PRIi64, b.inputs_ready_usec);
        snprintf(bytes_s, sizeof(bytes_s), "%" PRIi64, b.inputs_bytes);
        const char *params[] = {
                task_id, b.node_id, a->token, b.container_id, b.inputs_ready_usec > 0 ? ready_s : NULL,
                b.inputs_ready_usec > 0 || b.inputs_bytes > 0 ? bytes_s : NULL,
        };
        run_call(a, "SELECT code, body, first FROM mc_started_first($1, $2, $3::bigint, $4, $5::bigint, $6::bigint)",
                 6, params);
}

void api_task_release(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        const char *task_id = call->task_id;
        AgentCall *a;

        assert(task_id);
        if (decode_body(req, AGENT_BODY_RELEASE, &call->identity, 0, &b) < 0)
                return;
        a = call_new(c, req, "release", b.node_id, task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, b.lease_token);
        const char *params[] = { task_id, b.node_id, a->token, b.code, b.reason };
        run_call(a, "SELECT code, body FROM mc_release($1, $2, $3::bigint, $4, $5)", 5, params);
}

void api_task_output(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        char offset_s[32], max_s[32];
        AgentCall *a;

        assert(call->task_id);
        if (decode_body(req, AGENT_BODY_OUTPUT, &call->identity, 0, &b) < 0)
                return;
        a = call_new(c, req, "output", b.node_id, call->task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, b.lease_token);
        snprintf(offset_s, sizeof(offset_s), "%" PRIi64, b.offset);
        snprintf(max_s, sizeof(max_s), "%" PRIi64, c->config.live_output_max_bytes);
        const char *params[] = { call->task_id, b.node_id, a->token, offset_s, b.data, max_s };
        run_call(a, "SELECT code, body FROM mc_output_chunk($1, $2, $3::bigint, $4::bigint, $5, $6::bigint)", 6, params);
}

void api_task_finish(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(agent_body_done) AgentBody b = {};
        _cleanup_free_ char *output_cut = NULL;
        const char *task_id = call->task_id, *output;
        char exit_s[16];
        bool output_truncated = false;
        AgentCall *a;

        assert(task_id);
        if (decode_body(req, AGENT_BODY_FINISH, &call->identity, 0, &b) < 0)
                return;
        if (b.have_exit_code)
                snprintf(exit_s, sizeof(exit_s), "%" PRIi64, b.exit_code);

        output = b.output;
        if (output && strlen(output) > (size_t) c->config.output_max_bytes) {
                size_t n = utf8_prefix_len(output, strlen(output), (size_t) c->config.output_max_bytes);
                output_cut = strndup(output, n);
                if (!output_cut) {
                        http_request_reply_error(req, 500, NULL, "Out of memory.");
                        return;
                }
                output = output_cut;
                output_truncated = true;
        }

        a = call_new(c, req, "finish", b.node_id, task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, b.lease_token);
        /* agent_body_check() let only final states through. */
        a->status = task_status_from_string(b.status);
        assert(task_status_is_final(a->status));
        const char *params[] = {
                task_id, b.node_id, a->token, b.status, b.have_exit_code ? exit_s : NULL, b.reason, b.stdout_tail,
                b.stderr_tail, b.truncated ? "true" : "false", output, output_truncated ? "true" : "false",
        };
        run_call(a, "SELECT code, body FROM mc_finish($1, $2, $3::bigint, $4, $5::integer, $6, $7, $8, $9::boolean, "
                    "$10, $11::boolean)", 11, params);
}
