/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP API: routing, authentication, and the user endpoints. */

#include "api.h"
#include "claim.h"
#include "config.h"
#include "daemon-util.h"
#include "json-util.h"
#include "list-query.h"
#include "log.h"
#include "push.h"
#include "task-publisher.h"
#include "task-spec.h"

#define PUSH_MAX_BODY (1024 * 1024)

typedef enum Access {
        ACCESS_PUBLIC,
        ACCESS_USER,
        ACCESS_AGENT,
} Access;

void api_reply_op(Control *c, unsigned code, const char *body, void *userdata) {
        http_request_reply(userdata, code, "application/json", body, strlen(body));
}

static void reply_text_op(Control *c, unsigned code, const char *body, void *userdata) {
        http_request_reply(userdata, code, code == 200 ? "text/plain; charset=utf-8" : "application/json",
                           body, strlen(body));
}

void api_reply_check_error(HttpRequest *req, const CheckError *e) {
        http_request_reply_error(req, 400, isempty(e->field) ? NULL : e->field, "%s", e->message);
}

static void reply_op_failed(HttpRequest *req, int r) {
        if (r == -ENOMEM)
                http_request_reply_error(req, 500, NULL, "Out of memory.");
        else if (r == -EBUSY)
                http_request_reply_error(req, 503, NULL, "Too many requests waiting; retry.");
        else
                http_request_reply_error(req, control_db_error_code(r), NULL, "Database unavailable; retry.");
}

static void handle_push(Control *c, HttpRequest *req) {
        TaskSpec spec = {};
        CheckError e = {};
        const char *body;
        size_t size;
        int r;

        body = http_request_body(req, &size);
        if (size > PUSH_MAX_BODY) {
                /* The server takes larger bodies for agents' results; a task is at most 1 MiB. */
                http_request_reply_error(req, 413, NULL, "A task is at most %d bytes of JSON.", PUSH_MAX_BODY);
                return;
        }
        r = task_spec_parse(body, size, &spec, &e);
        if (r == -ENOMEM) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        if (r < 0) {
                api_reply_check_error(req, &e);
                return;
        }
        r = control_push(c, &spec, api_reply_op, req);
        if (r < 0) {
                task_spec_done(&spec);
                reply_op_failed(req, r);
        }
}

static void handle_list(Control *c, HttpRequest *req) {
        static const char *const allowed[] = { "status", "label", "limit", "after", NULL };
        _cleanup_(list_query_done) ListQuery q = {};
        const char *unknown, *filters[LIST_MAX_LABEL_FILTERS + 1];
        CheckError e = {};
        size_t n;
        int r;

        unknown = http_request_query_unknown(req, allowed);
        if (unknown) {
                http_request_reply_error(req, 400, unknown, "Unknown query parameter \"%.64s\" (known: status, label, limit, after).", unknown);
                return;
        }

        n = http_request_query_all(req, "label", filters, ELEMENTSOF(filters));
        r = list_query_parse(http_request_query(req, "status"), http_request_query(req, "limit"),
                             http_request_query(req, "after"), filters, n, &q, &e);
        if (r == -ENOMEM) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        if (r < 0) {
                api_reply_check_error(req, &e);
                return;
        }

        r = control_list_tasks(c, q.status, q.labels, q.limit, q.after, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_health(Control *c, HttpRequest *req) {
        _cleanup_json_ json_object *o = json_object_new_object();
        bool ok = db_is_available(c->db);

        if (!o) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        json_add_string(o, "status", ok ? "ok" : "degraded");
        json_add_string(o, "database", ok ? "ok" : "unavailable");
        json_add_string(o, "version", MC_VERSION);
        json_add_int64(o, "schema_version", db_schema_version(c->db));
        http_request_reply_json(req, ok ? 200 : 503, o);
}

static uint64_t resident_memory_bytes(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/statm", "re");
        unsigned long size, resident;

        if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
                return 0;
        return (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE);
}

static void handle_metrics(Control *c, HttpRequest *req) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&text, &size);
        if (!f) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        metrics_write_requests(f, &c->metrics);
        fputs("# HELP mc_tasks Tasks by state (refreshed every few seconds).\n# TYPE mc_tasks gauge\n", f);
        for (TaskStatus i = 0; i < _TASK_STATUS_MAX; i++)
                fprintf(f, "mc_tasks{status=\"%s\"} %" PRIu64 "\n", task_status_to_string(i), c->counts.by_status[i]);
        fprintf(f, "# HELP mc_nodes_ready Nodes that heartbeat and are not draining.\n# TYPE mc_nodes_ready gauge\n"
                   "mc_nodes_ready %" PRIu64 "\n", c->counts.nodes_ready);
        metrics_write_histogram(f, "mc_claim_duration_seconds", "Time of the claim transaction.",
                                &c->metrics.claim_latency, metrics_latency_bounds);
        metrics_write_histogram(f, "mc_push_batch_size", "Tasks committed per push transaction.",
                                &c->metrics.push_batch_size, metrics_batch_bounds);
        fprintf(f, "# HELP mc_db_errors_total Failed database connections and queries.\n# TYPE mc_db_errors_total counter\n"
                   "mc_db_errors_total %" PRIu64 "\n", db_n_errors(c->db));
        fprintf(f, "# HELP mc_db_available Whether the database is usable.\n# TYPE mc_db_available gauge\n"
                   "mc_db_available %d\n", db_is_available(c->db));
        fprintf(f, "# HELP mc_db_pending_queries Queries queued or running.\n# TYPE mc_db_pending_queries gauge\n"
                   "mc_db_pending_queries %zu\n", db_n_pending(c->db));
        fprintf(f, "# HELP mc_claims_waiting Long-poll claims waiting for a task.\n# TYPE mc_claims_waiting gauge\n"
                   "mc_claims_waiting %zu\n", claim_waiters_n(c->waiters));
        fprintf(f, "# HELP mc_tasks_pushed_total Tasks created by this replica.\n# TYPE mc_tasks_pushed_total counter\n"
                   "mc_tasks_pushed_total %" PRIu64 "\n", c->metrics.tasks_pushed);
        fprintf(f, "# HELP mc_leases_granted_total Leases granted by this replica.\n# TYPE mc_leases_granted_total counter\n"
                   "mc_leases_granted_total %" PRIu64 "\n", c->metrics.leases_granted);
        fprintf(f, "# HELP mc_leases_expired_total Leases this replica found expired.\n# TYPE mc_leases_expired_total counter\n"
                   "mc_leases_expired_total %" PRIu64 "\n", c->metrics.leases_expired);
        if (c->publisher) {
                TaskPublisherStats ps;
                task_publisher_stats(c->publisher, &ps);
                fprintf(f, "# HELP mc_dht_records_total Task records put in the DHT, by outcome.\n"
                           "# TYPE mc_dht_records_total counter\n"
                           "mc_dht_records_total{outcome=\"published\"} %" PRIu64 "\n"
                           "mc_dht_records_total{outcome=\"failed\"} %" PRIu64 "\n"
                           "mc_dht_records_total{outcome=\"dropped\"} %" PRIu64 "\n"
                           "# HELP mc_dht_records_pending Task records waiting to be put.\n# TYPE mc_dht_records_pending gauge\n"
                           "mc_dht_records_pending %zu\n"
                           "# HELP mc_dht_nodes Nodes in the DHT routing table.\n# TYPE mc_dht_nodes gauge\n"
                           "mc_dht_nodes %zu\n", ps.published, ps.failed, ps.dropped, ps.pending, ps.dht_nodes);
        }
        fprintf(f, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\n"
                   "process_resident_memory_bytes %" PRIu64 "\n", resident_memory_bytes());
        if (fclose(f) != 0) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, size);
}

/* Splits "/api/tasks/{id}[/{action}]". Returns the number of segments after "/api/tasks" (0, 1 or 2),
 * or -1 for anything else. */
static int split_task_path(const char *path, char *id, size_t id_size, const char **ret_action) {
        const char *rest = startswith(path, "/api/tasks"), *slash;
        size_t n;

        if (!rest)
                return -1;
        if (*rest == 0)
                return 0;
        if (*rest != '/')
                return -1;
        rest++;
        slash = strchr(rest, '/');
        n = slash ? (size_t) (slash - rest) : strlen(rest);
        if (n >= id_size)
                n = id_size - 1; /* too long to be valid; id_is_valid() rejects it below */
        memcpy(id, rest, n);
        id[n] = 0;
        if (!slash) {
                *ret_action = NULL;
                return 1;
        }
        *ret_action = slash + 1;
        return 2;
}

static bool authorize(Control *c, HttpRequest *req, Access access, AuthIdentity *ret) {
        AuthIdentity id;

        if (access == ACCESS_PUBLIC)
                return true;
        id = auth_check_header(c->auth, http_request_header(req, "Authorization"));
        if (id.kind == AUTH_NONE) {
                http_request_add_header(req, "WWW-Authenticate", "Bearer realm=\"mc\"");
                http_request_reply_error(req, 401, NULL, http_request_header(req, "Authorization") ?
                                         "Unknown token." : "Missing \"Authorization: Bearer <token>\" header.");
                return false;
        }
        if (access == ACCESS_USER && id.kind == AUTH_AGENT) {
                http_request_reply_error(req, 403, NULL, "Agent tokens may only register, claim, heartbeat and report.");
                return false;
        }
        if (access == ACCESS_AGENT && id.kind == AUTH_USER) {
                http_request_reply_error(req, 403, NULL, "This endpoint is for agents; use an agent token.");
                return false;
        }
        *ret = id;
        return true;
}

static bool method_is(HttpRequest *req, const char *allowed) {
        if (streq(http_request_method(req), allowed))
                return true;
        /* HEAD is GET without a body; MHD drops the body for us. */
        if (streq(allowed, "GET") && streq(http_request_method(req), "HEAD"))
                return true;
        http_request_add_header(req, "Allow", allowed);
        http_request_reply_error(req, 405, NULL, "Method %s not allowed here; use %s.", http_request_method(req), allowed);
        return false;
}

void control_http_handler(HttpRequest *req, void *userdata) {
        Control *c = userdata;
        const char *path = http_request_path(req), *action = NULL;
        AuthIdentity id = {};
        char task_id[160];
        int n, r = 0;

        if (streq(path, "/api/health")) {
                http_request_set_route(req, "health");
                if (method_is(req, "GET"))
                        handle_health(c, req);
                return;
        }
        if (streq(path, "/metrics")) {
                http_request_set_route(req, "metrics");
                if (method_is(req, "GET"))
                        handle_metrics(c, req);
                return;
        }

        if (streq(path, "/api/tasks/push")) {
                http_request_set_route(req, "push");
                if (method_is(req, "POST") && authorize(c, req, ACCESS_USER, &id))
                        handle_push(c, req);
                return;
        }

        if (streq(path, "/api/nodes")) {
                http_request_set_route(req, "nodes");
                if (method_is(req, "GET") && authorize(c, req, ACCESS_USER, &id) &&
                    (r = control_list_nodes(c, api_reply_op, req)) < 0)
                        reply_op_failed(req, r);
                return;
        }

        if (startswith(path, "/api/agents/")) {
                const char *what = path + strlen("/api/agents/");
                void (*handler)(Control *, HttpRequest *, const AuthIdentity *) = NULL;

                if (streq(what, "register"))
                        handler = api_agent_register;
                else if (streq(what, "claim"))
                        handler = api_agent_claim;
                else if (streq(what, "heartbeat"))
                        handler = api_agent_heartbeat;
                if (handler) {
                        http_request_set_route(req, what[0] == 'r' ? "register" : what[0] == 'c' ? "claim" : "heartbeat");
                        if (method_is(req, "POST") && authorize(c, req, ACCESS_AGENT, &id))
                                handler(c, req, &id);
                        return;
                }
        }

        n = split_task_path(path, task_id, sizeof(task_id), &action);
        if (n == 0) {
                if (streq(http_request_method(req), "POST")) {
                        http_request_set_route(req, "push");
                        if (authorize(c, req, ACCESS_USER, &id))
                                handle_push(c, req);
                } else {
                        http_request_set_route(req, "list");
                        if (method_is(req, "GET") && authorize(c, req, ACCESS_USER, &id))
                                handle_list(c, req);
                }
                return;
        }
        if (n > 0) {
                if (!id_is_valid(task_id)) {
                        http_request_set_route(req, "bad_id");
                        http_request_reply_error(req, 400, "id", "Invalid task id in the path ([A-Za-z0-9][A-Za-z0-9._-]{0,127}).");
                        return;
                }
                if (n == 1) {
                        http_request_set_route(req, "get");
                        if (method_is(req, "GET") && authorize(c, req, ACCESS_USER, &id) &&
                            (r = control_get_task(c, task_id, api_reply_op, req)) < 0)
                                reply_op_failed(req, r);
                        return;
                }
                if (streq(action, "logs")) {
                        http_request_set_route(req, "logs");
                        if (method_is(req, "GET") && authorize(c, req, ACCESS_USER, &id) &&
                            (r = control_task_logs(c, task_id, reply_text_op, req)) < 0)
                                reply_op_failed(req, r);
                        return;
                }
                if (streq(action, "cancel")) {
                        http_request_set_route(req, "cancel");
                        if (method_is(req, "POST") && authorize(c, req, ACCESS_USER, &id) &&
                            (r = control_cancel_task(c, task_id, api_reply_op, req)) < 0)
                                reply_op_failed(req, r);
                        return;
                }
                if (streq(action, "started")) {
                        http_request_set_route(req, "started");
                        if (method_is(req, "POST") && authorize(c, req, ACCESS_AGENT, &id))
                                api_task_started(c, req, &id, task_id);
                        return;
                }
                if (streq(action, "finish")) {
                        http_request_set_route(req, "finish");
                        if (method_is(req, "POST") && authorize(c, req, ACCESS_AGENT, &id))
                                api_task_finish(c, req, &id, task_id);
                        return;
                }
        }

        http_request_set_route(req, "not_found");
        http_request_reply_error(req, 404, NULL, "No such endpoint: %.200s", path);
}

void control_http_completed(HttpRequest *req, unsigned code, void *userdata) {
        Control *c = userdata;
        metrics_count_request(&c->metrics, http_request_route(req), code);
}
