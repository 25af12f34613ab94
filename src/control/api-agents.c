/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The agent side of the API: register, long-poll claim, one heartbeat per node, and the fenced task
 * reports (started, finish). Every write carries the lease token; the database functions compare it
 * under the task's row lock, so a stale agent changes nothing and gets 409. */

#include "api.h"
#include "claim.h"
#include "daemon-util.h"
#include "json-util.h"
#include "log.h"

#define TAIL_MAX_BYTES (64 * 1024)
#define REASON_MAX_BYTES 1024
#define HEARTBEAT_MAX_LEASES 10000

typedef struct AgentCall {
        Control *control;
        HttpRequest *req;
        char node_id[129];
        char task_id[129];
        char token[32];
        char status[16];
        char attempt[16];
        const char *kind;       /* "register", "heartbeat", "started", "finish" */
} AgentCall;

/* Checks the node_id member against the token's node. */
static int check_node(HttpRequest *req, json_object *o, const AuthIdentity *id, const char **ret_node) {
        CheckError e = {};
        const char *node;

        if (check_string(o, "node_id", true, 128, valid_id, "node id ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", &node, &e) < 0) {
                api_reply_check_error(req, &e);
                return -EINVAL;
        }
        if (id->kind == AUTH_AGENT && !streq(node, id->name)) {
                http_request_reply_error(req, 403, "node_id", "This token belongs to node \"%s\", not \"%s\".", id->name, node);
                return -EPERM;
        }
        *ret_node = node;
        return 0;
}

static int parse_body(HttpRequest *req, const char *const *allowed, json_object **ret) {
        _cleanup_json_ json_object *o = NULL;
        CheckError e = {};
        const char *body;
        size_t size;

        body = http_request_body(req, &size);
        if (check_parse_object(body, size, &o, &e) < 0 || check_known_keys(o, allowed, NULL, &e) < 0) {
                api_reply_check_error(req, &e);
                return -EINVAL;
        }
        *ret = TAKE_PTR(o);
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
                log_event(LOG_NOTICE, "lease_revoked",
                          LOG_FIELDS("TASK_ID", task, "NODE_ID", node, "LEASE_TOKEN", token, "MC_REASON", reason),
                          "Lease %s of task %s on node %s is revoked (%s).", token, task, node, reason);
        }
}

static void on_agent_call_done(PGresult *r, int error, void *userdata) {
        AgentCall *a = userdata;
        Control *c = a->control;

        if (error < 0 || !r) {
                http_request_reply_error(a->req, control_db_error_code(error), NULL, "Database unavailable; retry.");
                goto finish;
        }
        if (streq(a->kind, "register")) {
                _cleanup_json_ json_object *o = json_object_new_object();
                json_add_string(o, "node_id", a->node_id);
                json_add_int64(o, "lease_ttl_ms", c->config.lease_ttl_ms);
                json_add_int64(o, "heartbeat_interval_ms", c->config.lease_ttl_ms / 3);
                log_event(LOG_INFO, "node_registered", LOG_FIELDS("NODE_ID", a->node_id), "Node %s registered.", a->node_id);
                http_request_reply_json(a->req, 200, o);
                goto finish;
        }
        if (PQntuples(r) != 1) {
                http_request_reply_error(a->req, 500, NULL, "Unexpected database answer.");
                goto finish;
        }

        unsigned code = (unsigned) atoi(PQgetvalue(r, 0, 0));
        const char *body = PQgetvalue(r, 0, 1);

        if (code == 200) {
                if (streq(a->kind, "heartbeat"))
                        log_revoked(c, a->node_id, body);
                else if (streq(a->kind, "started"))
                        control_task_changed(c, a->task_id, "running", "container_started", a->node_id, a->token, NULL,
                                             "Container started");
                else if (streq(a->kind, "finish")) {
                        _cleanup_json_ json_object *o = NULL;
                        const char *status = a->status;
                        json_object *v;

                        /* A cancelled task keeps its status even when its result arrives. */
                        if (json_parse_strict(body, strlen(body), &o, NULL) >= 0 &&
                            json_object_object_get_ex(o, "status", &v))
                                status = json_object_get_string(v);
                        control_task_changed(c, a->task_id, status, "task_finished", a->node_id, a->token, NULL,
                                             "Task finished");
                }
        } else if (code == 409)
                log_event(LOG_NOTICE, "stale_lease",
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

void api_agent_register(Control *c, HttpRequest *req, const AuthIdentity *id) {
        static const char *const allowed[] = { "node_id", "capacity", "labels", "runtime", "driver", "version", NULL };
        static const char *const cap_allowed[] = { "nano_cpus", "memory_bytes", NULL };
        _cleanup_json_ json_object *o = NULL;
        json_object *cap, *labels = NULL;
        const char *node, *runtime = NULL, *driver = NULL, *version = NULL;
        int64_t cpus, memory;
        char cpus_s[32], memory_s[32];
        CheckError e = {};
        AgentCall *a;

        if (parse_body(req, allowed, &o) < 0 || check_node(req, o, id, &node) < 0)
                return;
        if (!json_object_object_get_ex(o, "capacity", &cap) || !json_object_is_type(cap, json_type_object)) {
                http_request_reply_error(req, 400, "capacity", "Field \"capacity\" must be an object {\"nano_cpus\", \"memory_bytes\"}.");
                return;
        }
        if (check_known_keys(cap, cap_allowed, "capacity.", &e) < 0 ||
            check_int(cap, "nano_cpus", true, 0, INT64_C(1) << 50, &cpus, &e) < 0 ||
            check_int(cap, "memory_bytes", true, 0, INT64_C(1) << 56, &memory, &e) < 0 ||
            check_string(o, "runtime", false, 64, valid_runtime, "runtime name", &runtime, &e) == -EINVAL ||
            check_string(o, "driver", false, 16, NULL, NULL, &driver, &e) == -EINVAL ||
            check_string(o, "version", false, 64, NULL, NULL, &version, &e) == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        if (driver && !streq(driver, "docker") && !streq(driver, "exec")) {
                http_request_reply_error(req, 400, "driver", "Field \"driver\" must be \"docker\" or \"exec\".");
                return;
        }
        if (json_object_object_get_ex(o, "labels", &labels) && labels) {
                if (!json_object_is_type(labels, json_type_object) || json_object_object_length(labels) > 64) {
                        http_request_reply_error(req, 400, "labels", "Field \"labels\" must be an object of at most 64 strings.");
                        return;
                }
                json_object_object_foreach(labels, k, v)
                        if (!valid_label_key(k) || !v || !json_object_is_type(v, json_type_string) || !check_string_value(v, 256)) {
                                http_request_reply_error(req, 400, "labels", "Label \"%.64s\" is invalid.", k);
                                return;
                        }
        }

        snprintf(cpus_s, sizeof(cpus_s), "%" PRIi64, cpus);
        snprintf(memory_s, sizeof(memory_s), "%" PRIi64, memory);
        a = call_new(c, req, "register", node, NULL);
        if (!a)
                return;
        const char *params[] = { node, cpus_s, memory_s, labels ? json_to_string(labels) : "{}", runtime, driver, version };
        run_call(a, "SELECT mc_register($1, $2::bigint, $3::bigint, $4::jsonb, $5, $6, $7)", 7, params);
}

void api_agent_claim(Control *c, HttpRequest *req, const AuthIdentity *id) {
        static const char *const allowed[] = { "node_id", "wait_ms", NULL };
        _cleanup_json_ json_object *o = NULL;
        int64_t wait_ms = 0;
        CheckError e = {};
        const char *node;
        int r;

        if (parse_body(req, allowed, &o) < 0 || check_node(req, o, id, &node) < 0)
                return;
        if (check_int(o, "wait_ms", false, 0, c->config.claim_wait_max_ms, &wait_ms, &e) == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        r = claim_start(c, req, node, (uint64_t) wait_ms * USEC_PER_MSEC);
        if (r < 0)
                http_request_reply_error(req, 500, NULL, "Cannot start the claim: %s", strerror(-r));
}

void api_agent_heartbeat(Control *c, HttpRequest *req, const AuthIdentity *id) {
        static const char *const allowed[] = { "node_id", "leases", "draining", NULL };
        static const char *const lease_allowed[] = { "task_id", "lease_token", NULL };
        _cleanup_json_ json_object *o = NULL;
        json_object *leases = NULL;
        bool draining = false;
        char ttl[32];
        CheckError e = {};
        const char *node;
        AgentCall *a;

        if (parse_body(req, allowed, &o) < 0 || check_node(req, o, id, &node) < 0)
                return;
        if (check_bool(o, "draining", false, &draining, &e) == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        if (json_object_object_get_ex(o, "leases", &leases) && leases) {
                if (!json_object_is_type(leases, json_type_array) || json_object_array_length(leases) > HEARTBEAT_MAX_LEASES) {
                        http_request_reply_error(req, 400, "leases", "Field \"leases\" must be an array of at most %d "
                                                 "{\"task_id\", \"lease_token\"}.", HEARTBEAT_MAX_LEASES);
                        return;
                }
                for (size_t i = 0; i < json_object_array_length(leases); i++) {
                        json_object *l = json_object_array_get_idx(leases, i);
                        const char *tid;
                        int64_t tok;

                        if (!json_object_is_type(l, json_type_object) ||
                            check_known_keys(l, lease_allowed, "leases.", &e) < 0 ||
                            check_string(l, "task_id", true, 128, valid_id, "task id", &tid, &e) < 0 ||
                            check_int(l, "lease_token", true, 1, INT64_MAX - 1, &tok, &e) < 0) {
                                if (isempty(e.message))
                                        check_fail(&e, "leases", "Element %zu of \"leases\" must be an object.", i);
                                snprintf(e.field, sizeof(e.field), "leases");
                                api_reply_check_error(req, &e);
                                return;
                        }
                }
        }

        snprintf(ttl, sizeof(ttl), "%" PRIi64, c->config.lease_ttl_ms);
        a = call_new(c, req, "heartbeat", node, NULL);
        if (!a)
                return;
        const char *params[] = { node, leases ? json_to_string(leases) : "[]", ttl, draining ? "true" : "false" };
        run_call(a, "SELECT code, body FROM mc_heartbeat($1, $2::jsonb, $3::integer, $4::boolean)", 4, params);
}

void api_task_started(Control *c, HttpRequest *req, const AuthIdentity *id, const char *task_id) {
        static const char *const allowed[] = { "node_id", "lease_token", "container_id", NULL };
        _cleanup_json_ json_object *o = NULL;
        const char *node, *container = NULL;
        CheckError e = {};
        int64_t token;
        AgentCall *a;

        if (parse_body(req, allowed, &o) < 0 || check_node(req, o, id, &node) < 0)
                return;
        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &token, &e) < 0 ||
            check_string(o, "container_id", false, 128, valid_id, "container id", &container, &e) == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        a = call_new(c, req, "started", node, task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, token);
        const char *params[] = { task_id, node, a->token, container };
        run_call(a, "SELECT code, body FROM mc_started($1, $2, $3::bigint, $4)", 4, params);
}

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
        if (len <= max)
                return len;
        while (max > 0 && ((unsigned char) s[max] & 0xc0) == 0x80)
                max--;
        return max;
}

void api_task_finish(Control *c, HttpRequest *req, const AuthIdentity *id, const char *task_id) {
        static const char *const allowed[] = {
                "node_id", "lease_token", "status", "exit_code", "reason", "stdout_tail", "stderr_tail",
                "truncated", "output", NULL,
        };
        static const char *const final_states[] = { "succeeded", "failed", "timed_out", "cancelled" };
        _cleanup_json_ json_object *o = NULL;
        _cleanup_free_ char *output_cut = NULL;
        const char *node, *status, *reason = NULL, *out = NULL, *err = NULL, *output = NULL;
        char exit_s[16];
        bool truncated = false, output_truncated = false, known = false;
        int64_t token, exit_code = 0;
        CheckError e = {};
        AgentCall *a;
        int r;

        if (parse_body(req, allowed, &o) < 0 || check_node(req, o, id, &node) < 0)
                return;
        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &token, &e) < 0 ||
            check_string(o, "status", true, 16, NULL, NULL, &status, &e) < 0 ||
            check_string(o, "reason", false, REASON_MAX_BYTES, NULL, NULL, &reason, &e) == -EINVAL ||
            check_string(o, "stdout_tail", false, TAIL_MAX_BYTES, NULL, NULL, &out, &e) == -EINVAL ||
            check_string(o, "stderr_tail", false, TAIL_MAX_BYTES, NULL, NULL, &err, &e) == -EINVAL ||
            check_bool(o, "truncated", false, &truncated, &e) == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(final_states); i++)
                known = known || streq(status, final_states[i]);
        if (!known) {
                http_request_reply_error(req, 400, "status", "Field \"status\" must be succeeded, failed, timed_out or cancelled.");
                return;
        }
        r = check_int(o, "exit_code", false, -1, 255, &exit_code, &e);
        if (r == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        bool have_exit_code = r == 0;
        if (have_exit_code)
                snprintf(exit_s, sizeof(exit_s), "%" PRIi64, exit_code);

        r = check_string(o, "output", false, SIZE_MAX, NULL, NULL, &output, &e);
        if (r == -EINVAL) {
                api_reply_check_error(req, &e);
                return;
        }
        if (r == 0 && strlen(output) > (size_t) c->config.output_max_bytes) {
                size_t n = utf8_cut(output, strlen(output), (size_t) c->config.output_max_bytes);
                output_cut = strndup(output, n);
                if (!output_cut) {
                        http_request_reply_error(req, 500, NULL, "Out of memory.");
                        return;
                }
                output = output_cut;
                output_truncated = true;
        }

        a = call_new(c, req, "finish", node, task_id);
        if (!a)
                return;
        snprintf(a->token, sizeof(a->token), "%" PRIi64, token);
        snprintf(a->status, sizeof(a->status), "%s", status);
        const char *params[] = {
                task_id, node, a->token, status, have_exit_code ? exit_s : NULL, reason, out, err,
                truncated ? "true" : "false", output, output_truncated ? "true" : "false",
        };
        run_call(a, "SELECT code, body FROM mc_finish($1, $2, $3::bigint, $4, $5::integer, $6, $7, $8, $9::boolean, "
                    "$10, $11::boolean)", 11, params);
}
