/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP API: routing, authentication, and the user endpoints. */

#include <assert.h>
#include <strings.h>

#include "api.h"
#include "awaits.h"
#include "claim.h"
#include "config.h"
#include "daemon-util.h"
#include "heartbeat.h"
#include "id-util.h"
#include "json-util.h"
#include "list-query.h"
#include "log.h"
#include "push.h"
#include "task-publisher.h"
#include "task-spec.h"
#include "utf8.h"
#include "watch.h"

#define PUSH_MAX_BODY (1024 * 1024)
/* The longest ?wait= of GET /api/tasks/{id}, in seconds. */
#define WAIT_MAX_SEC 300

typedef enum Access {
        ACCESS_PUBLIC,
        ACCESS_USER,
        ACCESS_AGENT,
        ACCESS_ANY,     /* a user's or an agent's token: what agents read to run a task, users too */
} Access;

/* Answers req from a task operation's completion (userdata is the request). */
static void api_reply_op(Control *c, unsigned code, const char *body, void *userdata) {
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

/* The answer to a push; a created task's address goes in Location. */
static void reply_push_op(Control *c, unsigned code, const char *id, const char *body, void *userdata) {
        HttpRequest *req = userdata;

        if (code == 201) {
                char location[sizeof("/api/tasks/") + ID_MAX];

                /* An id needs no escaping in a path: it is [A-Za-z0-9._-] only. */
                assert(id_is_valid(id));
                snprintf(location, sizeof(location), "/api/tasks/%s", id);
                (void) http_request_add_header(req, "Location", location);
        }
        http_request_reply(req, code, "application/json", body, strlen(body));
}

static void handle_push(Control *c, HttpRequest *req, const ApiCall *call) {
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
        r = control_push(c, &spec, reply_push_op, req);
        if (r < 0) {
                task_spec_done(&spec);
                reply_op_failed(req, r);
        }
}

static void handle_list(Control *c, HttpRequest *req, const ApiCall *call) {
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

/* A query parameter not in allowed (NULL-terminated) gets 400 naming it; returns false then. */
static bool check_query_known(HttpRequest *req, const char *const *allowed, const char *known) {
        const char *unknown = http_request_query_unknown(req, allowed);

        if (!unknown)
                return true;
        http_request_reply_error(req, 400, unknown, "Unknown query parameter \"%.64s\" (known: %s).", unknown, known);
        return false;
}

/* A boolean query parameter: absent, "0"/"false"/"no" or "1"/"true"/"yes". */
static int query_bool(HttpRequest *req, const char *key, bool *ret) {
        const char *v = http_request_query(req, key);

        *ret = false;
        if (!v)
                return 0;
        if (streq(v, "1") || streq(v, "true") || streq(v, "yes") || isempty(v))
                *ret = true;
        else if (!streq(v, "0") && !streq(v, "false") && !streq(v, "no")) {
                http_request_reply_error(req, 400, key, "Query parameter \"%s\" must be 1 or 0.", key);
                return -EINVAL;
        }
        return 0;
}

static void handle_get(Control *c, HttpRequest *req, const ApiCall *call) {
        static const char *const allowed[] = { "wait", "since", NULL };
        const char *wait = http_request_query(req, "wait"), *since = http_request_query(req, "since");
        int r;

        assert(call->task_id);
        if (!check_query_known(req, allowed, "wait, since"))
                return;
        if (wait) {
                char *end;
                long n;

                errno = 0;
                n = strtol(wait, &end, 10);
                if (errno != 0 || end == wait || *end != 0 || n < 0 || n > WAIT_MAX_SEC) {
                        http_request_reply_error(req, 400, "wait", "Query parameter \"wait\" must be whole seconds, 0..%d.",
                                                 WAIT_MAX_SEC);
                        return;
                }
                if (since && (strlen(since) > 64 || !utf8_is_valid(since, strlen(since)))) {
                        http_request_reply_error(req, 400, "since", "Query parameter \"since\" must be a status or an "
                                                 "\"updated_at\" of the task.");
                        return;
                }
                if (n > 0) {
                        r = watch_task_wait(c, req, call->task_id, (uint64_t) n * USEC_PER_SEC, since);
                        if (r < 0)
                                reply_op_failed(req, r);
                        return;
                }
        } else if (since) {
                http_request_reply_error(req, 400, "since", "Query parameter \"since\" goes with \"wait\".");
                return;
        }
        r = control_get_task(c, call->task_id, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_logs(Control *c, HttpRequest *req, const ApiCall *call) {
        static const char *const allowed[] = { "follow", NULL };
        bool follow;
        int r;

        assert(call->task_id);
        if (!check_query_known(req, allowed, "follow") || query_bool(req, "follow", &follow) < 0)
                return;
        if (follow)
                r = watch_task_follow(c, req, call->task_id);
        else
                r = control_task_logs(c, call->task_id, reply_text_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_events(Control *c, HttpRequest *req, const ApiCall *call) {
        static const char *const allowed[] = { "since", "task", NULL };
        const char *since = http_request_query(req, "since"), *task = http_request_query(req, "task");
        int r;

        if (!check_query_known(req, allowed, "since, task"))
                return;
        if (task && !id_is_valid(task)) {
                http_request_reply_error(req, 400, "task", "Invalid task id ([A-Za-z0-9][A-Za-z0-9._-]{0,127}).");
                return;
        }
        /* The standard resumption of an EventSource that reconnects; a since given says it too. */
        if (!since)
                since = http_request_header(req, "Last-Event-ID");
        if (since && (isempty(since) || strlen(since) > 64 || !utf8_is_valid(since, strlen(since)))) {
                http_request_reply_error(req, 400, "since", "The cursor must be an event's id.");
                return;
        }
        r = watch_events(c, req, task, since);
        if (r < 0)
                reply_op_failed(req, r);
}

/* The answer of a delete: 204 and nothing, or the error. */
static void reply_delete_op(Control *c, unsigned code, const char *body, void *userdata) {
        if (code == 204)
                http_request_reply(userdata, 204, NULL, "", 0);
        else
                http_request_reply(userdata, code, "application/json", body, strlen(body));
}

static void handle_delete(Control *c, HttpRequest *req, const ApiCall *call) {
        int r;

        assert(call->task_id);
        r = control_delete_task(c, call->task_id, reply_delete_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_node_drain(Control *c, HttpRequest *req, const ApiCall *call) {
        int r;

        assert(call->node_id);
        r = control_drain_node(c, call->node_id, true, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_node_undrain(Control *c, HttpRequest *req, const ApiCall *call) {
        int r;

        assert(call->node_id);
        r = control_drain_node(c, call->node_id, false, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_node_delete(Control *c, HttpRequest *req, const ApiCall *call) {
        int r;

        assert(call->node_id);
        r = control_delete_node(c, call->node_id, reply_delete_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_cancel(Control *c, HttpRequest *req, const ApiCall *call) {
        int r;

        assert(call->task_id);
        r = control_cancel_task(c, call->task_id, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_nodes(Control *c, HttpRequest *req, const ApiCall *call) {
        int r = control_list_nodes(c, api_reply_op, req);
        if (r < 0)
                reply_op_failed(req, r);
}

static void handle_health(Control *c, HttpRequest *req, const ApiCall *call) {
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

static void handle_metrics(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&text, &size);
        if (!f) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        metrics_write_requests(f, &c->metrics);
        metrics_write_input_bytes(f, &c->metrics);
        fputs("# HELP mc_tasks Tasks by state (refreshed every few seconds).\n# TYPE mc_tasks gauge\n", f);
        for (TaskStatus i = 0; i < _TASK_STATUS_MAX; i++)
                fprintf(f, "mc_tasks{status=\"%s\"} %" PRIu64 "\n", task_status_to_string(i), c->counts.by_status[i]);
        fprintf(f, "# HELP mc_nodes_ready Nodes that heartbeat and are not draining.\n# TYPE mc_nodes_ready gauge\n"
                   "mc_nodes_ready %" PRIu64 "\n", c->counts.nodes_ready);
        metrics_write_histogram(f, "mc_claim_duration_seconds", "Time of the claim transaction.",
                                &c->metrics.claim_latency, metrics_latency_bounds);
        metrics_write_histogram(f, "mc_push_batch_size", "Tasks committed per push transaction.",
                                &c->metrics.push_batch_size, metrics_batch_bounds);
        metrics_write_histogram(f, "mc_claim_batch_size", "Claims per claim transaction.",
                                &c->metrics.claim_batch_size, metrics_batch_bounds);
        metrics_write_histogram(f, "mc_heartbeat_batch_size", "Heartbeats per heartbeat transaction.",
                                &c->metrics.heartbeat_batch_size, metrics_batch_bounds);
        fprintf(f, "# HELP mc_db_errors_total Failed database connections and queries.\n# TYPE mc_db_errors_total counter\n"
                   "mc_db_errors_total %" PRIu64 "\n", db_n_errors(c->db));
        fprintf(f, "# HELP mc_db_available Whether the database is usable.\n# TYPE mc_db_available gauge\n"
                   "mc_db_available %d\n", db_is_available(c->db));
        fprintf(f, "# HELP mc_db_pending_queries Queries queued or running.\n# TYPE mc_db_pending_queries gauge\n"
                   "mc_db_pending_queries %zu\n", db_n_pending(c->db));
        fprintf(f, "# HELP mc_claims_waiting Long-poll claims waiting for a task.\n# TYPE mc_claims_waiting gauge\n"
                   "mc_claims_waiting %zu\n", claim_waiters_n(c->waiters));
        fprintf(f, "# HELP mc_http_streams Long polls, followed logs and event streams open on this replica.\n"
                   "# TYPE mc_http_streams gauge\nmc_http_streams %zu\n", watchers_n(c->watchers));
        fprintf(f, "# HELP mc_notifications_awaited Whether the database announces this kind of change to this replica "
                   "(queued: tasks queued, for its waiting claims; events: every change, for its watches and streams).\n"
                   "# TYPE mc_notifications_awaited gauge\n");
        for (AwaitKind k = 0; k < _AWAIT_KIND_MAX; k++)
                fprintf(f, "mc_notifications_awaited{kind=\"%s\"} %d\n", await_kind_to_string(k),
                        awaits_holds(c->awaits, k));
        fprintf(f, "# HELP mc_tasks_pushed_total Tasks created by this replica.\n# TYPE mc_tasks_pushed_total counter\n"
                   "mc_tasks_pushed_total %" PRIu64 "\n", c->metrics.tasks_pushed);
        fprintf(f, "# HELP mc_leases_granted_total Leases granted by this replica.\n# TYPE mc_leases_granted_total counter\n"
                   "mc_leases_granted_total %" PRIu64 "\n", c->metrics.leases_granted);
        fprintf(f, "# HELP mc_claims_abandoned_total Claims dropped because their client had gone before they were sent "
                   "to the database.\n# TYPE mc_claims_abandoned_total counter\n"
                   "mc_claims_abandoned_total %" PRIu64 "\n", c->metrics.claims_abandoned);
        fprintf(f, "# HELP mc_pushes_queued Pushes waiting for a database statement.\n"
                   "# TYPE mc_pushes_queued gauge\nmc_pushes_queued %zu\n", push_batcher_n_pending(c->pusher));
        fprintf(f, "# HELP mc_heartbeats_queued Heartbeats waiting for a database statement.\n"
                   "# TYPE mc_heartbeats_queued gauge\nmc_heartbeats_queued %zu\n", heartbeats_n_queued(c->heartbeats));
        fprintf(f, "# HELP mc_heartbeats_abandoned_total Heartbeats dropped because their client had gone before "
                   "they were sent to the database.\n# TYPE mc_heartbeats_abandoned_total counter\n"
                   "mc_heartbeats_abandoned_total %" PRIu64 "\n", c->metrics.heartbeats_abandoned);
        fprintf(f, "# HELP mc_leases_expired_total Leases this replica found expired.\n# TYPE mc_leases_expired_total counter\n"
                   "mc_leases_expired_total %" PRIu64 "\n", c->metrics.leases_expired);
        {
                HttpServerStats hs;
                http_server_get_stats(c->http, &hs);
                fprintf(f, "# HELP mc_http_connections HTTP connections open, and the caps.\n# TYPE mc_http_connections gauge\n"
                           "mc_http_connections %u\n"
                           "mc_http_connections{limit=\"global\"} %u\n"
                           "mc_http_connections{limit=\"per_address\"} %u\n"
                           "# HELP mc_http_connections_closed_total HTTP connections refused or closed by the server's "
                           "defences, by reason.\n# TYPE mc_http_connections_closed_total counter\n"
                           "mc_http_connections_closed_total{reason=\"refused_per_address\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"refused_global\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"refused_descriptors\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"evicted\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"header_timeout\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"body_timeout\"} %" PRIu64 "\n"
                           "mc_http_connections_closed_total{reason=\"idle_timeout\"} %" PRIu64 "\n",
                        hs.connections, hs.max_connections, hs.max_connections_per_address,
                        hs.refused_address, hs.refused_global, hs.refused_descriptors, hs.evicted,
                        hs.header_timeouts, hs.body_timeouts, hs.idle_timeouts);
        }
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
        metrics_write_build_info(f, "mc-control");
        metrics_write_process(f);
        if (fclose(f) != 0) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, size);
}

/* A client certificate that verifies against TLS_CLIENT_CA makes the agent it names, without a token;
 * one that does not verify is refused even with a token, so that a misconfigured agent learns why. A
 * token, when sent, decides who asks. */
static bool authorize_certificate(Control *c, HttpRequest *req, AuthIdentity *id, char *cert_node, size_t size) {
        const char *reason = NULL;
        int r;

        if (!tls_server_has_client_ca(c->tls))
                return true;
        r = tls_server_peer_name(c->tls, http_request_tls_session(req), cert_node, size, &reason);
        if (r < 0) {
                http_request_reply_error(req, 401, NULL, "Client certificate refused: %s.", reason);
                return false;
        }
        if (r > 0 && id->kind == AUTH_NONE && !http_request_header(req, "Authorization"))
                *id = (AuthIdentity) { .kind = AUTH_AGENT, .name = cert_node };
        return true;
}

static bool authorize(Control *c, HttpRequest *req, Access access, ApiCall *call) {
        AuthIdentity id;

        if (access == ACCESS_PUBLIC)
                return true;
        id = auth_check_header(c->auth, http_request_header(req, "Authorization"));
        if (!authorize_certificate(c, req, &id, call->cert_node, sizeof(call->cert_node)))
                return false;
        if (id.kind == AUTH_NONE) {
                http_request_add_header(req, "WWW-Authenticate", "Bearer realm=\"mc\"");
                http_request_reply_error(req, 401, NULL, http_request_header(req, "Authorization") ?
                                         "Unknown token." : "Missing \"Authorization: Bearer <token>\" header.");
                return false;
        }
        if (access == ACCESS_USER && id.kind == AUTH_AGENT) {
                http_request_reply_error(req, 403, NULL, "Agent tokens may only register, claim, heartbeat, "
                                         "report and read contents.");
                return false;
        }
        if (access == ACCESS_AGENT && id.kind == AUTH_USER) {
                http_request_reply_error(req, 403, NULL, "This endpoint is for agents; use an agent token.");
                return false;
        }
        call->identity = id;
        return true;
}

typedef enum BodyType {
        BODY_NONE,      /* the handler reads no body: any Content-Type goes */
        BODY_JSON,
        BODY_TORRENT,   /* a BitTorrent v2 .torrent (a content's manifest) */
        _BODY_TYPE_MAX,
} BodyType;

/* What each kind of body must be sent as, and how a 415 names it. */
static const struct {
        const char *media_type;
        const char *what;
} body_types[_BODY_TYPE_MAX] = {
        [BODY_JSON]    = { "application/json",         "JSON" },
        [BODY_TORRENT] = { "application/x-bittorrent", "a .torrent file" },
};

/* Whether a body sent with Content-Type value may be read as type: that media type (parameters such
 * as charset allowed, any case), or no Content-Type at all, which is what scripts that write requests
 * by hand often send. Any other type is refused: curl -d without -H 'Content-Type: application/json'
 * sends application/x-www-form-urlencoded, and a form is not what it meant to send. */
static bool content_type_matches(const char *value, BodyType type) {
        const char *want = body_types[type].media_type;
        size_t n;

        assert(type > BODY_NONE && type < _BODY_TYPE_MAX);
        if (!value)
                return true;
        value += strspn(value, " \t");
        n = strcspn(value, ";");
        while (n > 0 && strchr(" \t", value[n - 1]))
                n--;
        return n == strlen(want) && strncasecmp(value, want, n) == 0;
}

typedef struct Route {
        const char *method;
        const char *pattern;    /* "/"-separated segments; a placeholder of path_params stands for one */
        Access access;
        BodyType body;          /* what the handler reads: a body of another Content-Type gets 415 */
        const char *label;      /* the endpoint label of mc_http_requests_total */
        ApiHandler handler;
} Route;

/* Every endpoint (docs/api.md). A request is matched by path first: the first pattern here that
 * matches it, which is why "/api/tasks/push" comes before "/api/tasks/{id}"; then by method among the
 * routes with that same pattern. */
static const Route routes[] = {
        /* method  pattern                    access         body          label          handler */
        { "GET",   "/api/health",             ACCESS_PUBLIC, BODY_NONE,    "health",      handle_health },
        { "GET",   "/metrics",                ACCESS_PUBLIC, BODY_NONE,    "metrics",     handle_metrics },
        { "POST",  "/api/tasks/push",         ACCESS_USER,   BODY_JSON,    "push",        handle_push },
        { "GET",   "/api/tasks",              ACCESS_USER,   BODY_NONE,    "list",        handle_list },
        { "POST",  "/api/tasks",              ACCESS_USER,   BODY_JSON,    "push",        handle_push },
        { "GET",   "/api/tasks/{id}",         ACCESS_USER,   BODY_NONE,    "get",         handle_get },
        { "DELETE", "/api/tasks/{id}",        ACCESS_USER,   BODY_NONE,    "delete",      handle_delete },
        { "GET",   "/api/tasks/{id}/logs",    ACCESS_USER,   BODY_NONE,    "logs",        handle_logs },
        { "POST",  "/api/tasks/{id}/output",  ACCESS_AGENT,  BODY_JSON,    "output",      api_task_output },
        { "POST",  "/api/tasks/{id}/cancel",  ACCESS_USER,   BODY_NONE,    "cancel",      handle_cancel },
        { "POST",  "/api/tasks/{id}/started", ACCESS_AGENT,  BODY_JSON,    "started",     api_task_started },
        { "POST",  "/api/tasks/{id}/finish",  ACCESS_AGENT,  BODY_JSON,    "finish",      api_task_finish },
        { "POST",  "/api/tasks/{id}/release", ACCESS_AGENT,  BODY_JSON,    "release",     api_task_release },
        { "GET",   "/api/contents",           ACCESS_USER,   BODY_NONE,    "contents",    api_contents_list },
        { "GET",   "/api/contents/{content}", ACCESS_ANY,    BODY_NONE,    "content_get", api_content_get },
        { "PUT",   "/api/contents/{content}", ACCESS_USER,   BODY_TORRENT, "content_put", api_content_put },
        { "GET",   "/api/nodes",              ACCESS_USER,   BODY_NONE,    "nodes",       handle_nodes },
        { "DELETE", "/api/nodes/{node}",      ACCESS_USER,   BODY_NONE,    "node_delete", handle_node_delete },
        { "POST",  "/api/nodes/{node}/drain", ACCESS_USER,   BODY_NONE,    "drain",       handle_node_drain },
        { "POST",  "/api/nodes/{node}/undrain", ACCESS_USER, BODY_NONE,    "undrain",     handle_node_undrain },
        { "GET",   "/api/events",             ACCESS_USER,   BODY_NONE,    "events",      handle_events },
        { "POST",  "/api/agents/register",    ACCESS_AGENT,  BODY_JSON,    "register",    api_agent_register },
        { "POST",  "/api/agents/claim",       ACCESS_AGENT,  BODY_JSON,    "claim",       api_agent_claim },
        { "POST",  "/api/agents/heartbeat",   ACCESS_AGENT,  BODY_JSON,    "heartbeat",   api_agent_heartbeat },
};

/* The placeholders of patterns: each stands for one segment that names something by its id. A
 * segment that cannot be such an id gets 400 ("field": "id"), not 404: the endpoint exists. */
typedef enum PathParamKind {
        PARAM_TASK,
        PARAM_CONTENT,
        PARAM_NODE,
        _PARAM_MAX,
} PathParamKind;

static const struct {
        const char *placeholder;
        bool (*valid)(const char *s);
        const char *invalid;    /* the 400's message */
} path_params[_PARAM_MAX] = {
        [PARAM_TASK]    = { "{id}",      id_is_valid,      "Invalid task id in the path ([A-Za-z0-9][A-Za-z0-9._-]{0,127})." },
        [PARAM_CONTENT] = { "{content}", valid_content_id, "Invalid content id in the path (64 lowercase hex digits)." },
        [PARAM_NODE]    = { "{node}",    id_is_valid,      "Invalid node id in the path ([A-Za-z0-9][A-Za-z0-9._-]{0,127})." },
};

/* The labels of requests no route took. */
#define LABEL_NOT_FOUND "not_found"
#define LABEL_BAD_ID "bad_id"

typedef enum PathMatch {
        PATH_MISMATCH,
        PATH_MATCH,
        PATH_BAD_ID,    /* no match, but the path named something that cannot be an id where one goes */
} PathMatch;

/* The segment a pattern's placeholder matched. The value is cut at ID_MAX + 1 bytes, longer than any
 * id, so that the validators refuse what was longer. */
typedef struct PathValue {
        bool has;
        PathParamKind kind;
        char value[ID_MAX + 2];
} PathValue;

static int path_param_of(const char *segment, size_t n) {
        for (size_t i = 0; i < ELEMENTSOF(path_params); i++)
                if (n == strlen(path_params[i].placeholder) && strncmp(segment, path_params[i].placeholder, n) == 0)
                        return (int) i;
        return -1;
}

/* Matches path against pattern, segment by segment. A placeholder segment matches any one segment,
 * even an invalid id (the caller answers 400 for that, not 404), and copies it to *ret. */
static PathMatch path_match(const char *pattern, const char *path, PathValue *ret) {
        bool bad_id = false;

        *ret = (PathValue) {};
        for (;;) {
                size_t p = strcspn(pattern, "/"), n = strcspn(path, "/");
                int param = path_param_of(pattern, p);

                if (param >= 0) {
                        assert(!ret->has);      /* one id per pattern */
                        ret->has = true;
                        ret->kind = (PathParamKind) param;
                        memcpy(ret->value, path, MIN(n, (size_t) ID_MAX + 1));
                        ret->value[MIN(n, (size_t) ID_MAX + 1)] = 0;
                        bad_id = !path_params[param].valid(ret->value);
                } else if (p != n || strncmp(pattern, path, p) != 0)
                        break;
                pattern += p;
                path += n;
                if (*pattern == 0 && *path == 0)
                        return PATH_MATCH;
                if (*pattern == 0 || *path == 0)
                        break;
                pattern++;
                path++;
        }
        return bad_id ? PATH_BAD_ID : PATH_MISMATCH;
}

static bool method_matches(const Route *r, const char *method) {
        /* HEAD is GET without a body; MHD drops the body for us. */
        return streq(r->method, method) || (streq(r->method, "GET") && streq(method, "HEAD"));
}

/* The route with first's pattern that takes method, or NULL. The routes of a pattern all come at or
 * after the first one that matched. */
static const Route *route_for_method(const Route *first, const char *method) {
        for (const Route *r = first; r < routes + ELEMENTSOF(routes); r++)
                if (streq(r->pattern, first->pattern) && method_matches(r, method))
                        return r;
        return NULL;
}

static void reply_bad_id(HttpRequest *req, PathParamKind kind) {
        http_request_reply_error(req, 400, "id", "%s", path_params[kind].invalid);
}

/* 405 with an Allow header naming every method the routes of this pattern take. */
static void reply_method_not_allowed(HttpRequest *req, const char *pattern) {
        char allow[64] = "";
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
                const char *m = routes[i].method;

                if (!streq(routes[i].pattern, pattern))
                        continue;
                n += (size_t) snprintf(allow + n, sizeof(allow) - n, "%s%s%s", n > 0 ? ", " : "", m,
                                       streq(m, "GET") ? ", HEAD" : "");
                assert(n < sizeof(allow));
        }
        assert(n > 0);
        http_request_add_header(req, "Allow", allow);
        http_request_reply_error(req, 405, NULL, "Method %.32s not allowed here; use %s.", http_request_method(req),
                                 allow);
}

void control_http_handler(HttpRequest *req, void *userdata) {
        Control *c = userdata;
        const char *path = http_request_path(req), *method = http_request_method(req);
        const Route *found = NULL, *route;
        PathValue value = {}, bad = {};
        ApiCall call = {};

        for (size_t i = 0; i < ELEMENTSOF(routes) && !found; i++)
                switch (path_match(routes[i].pattern, path, &value)) {
                case PATH_MATCH:
                        found = &routes[i];
                        break;
                case PATH_BAD_ID:
                        if (!bad.has)
                                bad = value;
                        break;
                case PATH_MISMATCH:
                        break;
                }
        if (!found) {
                /* "/api/tasks/..%2Fx" is a task id gone wrong rather than an endpoint we lack. */
                http_request_set_route(req, bad.has ? LABEL_BAD_ID : LABEL_NOT_FOUND);
                if (bad.has)
                        reply_bad_id(req, bad.kind);
                else
                        http_request_reply_error(req, 404, NULL, "No such endpoint: %.200s", path);
                return;
        }

        route = route_for_method(found, method);
        if (!route) {
                /* Counted under the path's first route: the path is known, only the method is not. */
                http_request_set_route(req, found->label);
                reply_method_not_allowed(req, found->pattern);
                return;
        }
        http_request_set_route(req, route->label);
        if (value.has) {
                if (!path_params[value.kind].valid(value.value)) {
                        reply_bad_id(req, value.kind);
                        return;
                }
                if (value.kind == PARAM_TASK)
                        call.task_id = value.value;
                else if (value.kind == PARAM_NODE)
                        call.node_id = value.value;
                else
                        call.content_id = value.value;
        }
        if (!authorize(c, req, route->access, &call))
                return;
        if (route->body != BODY_NONE && !content_type_matches(http_request_header(req, "Content-Type"), route->body)) {
                http_request_reply_error(req, 415, NULL, "The body must be %s, sent with "
                                         "\"Content-Type: %s\" (not \"%.64s\").", body_types[route->body].what,
                                         body_types[route->body].media_type, http_request_header(req, "Content-Type"));
                return;
        }
        route->handler(c, req, &call);
}

/* Before the body: a request for an endpoint that needs a token, sent without a valid one (or with one of
 * the wrong kind), gets its 401 (403) now, as the handler would give it, but without its body being
 * read: otherwise anyone could hold a connection past its headers, by sending a body a byte at a time,
 * where the server no longer closes it to make room for others. Everything else waits for the body,
 * so that the answers stay those of control_http_handler(), in its order. */
void control_http_headers(HttpRequest *req, void *userdata) {
        Control *c = userdata;
        const char *path = http_request_path(req);
        const Route *found = NULL, *route;
        PathValue value = {};
        ApiCall call = {};

        for (size_t i = 0; i < ELEMENTSOF(routes) && !found; i++)
                if (path_match(routes[i].pattern, path, &value) == PATH_MATCH)
                        found = &routes[i];
        if (!found)
                return;
        route = route_for_method(found, http_request_method(req));
        if (!route || route->access == ACCESS_PUBLIC)
                return;
        if (value.has && !path_params[value.kind].valid(value.value))
                return;
        http_request_set_route(req, route->label);
        (void) authorize(c, req, route->access, &call);
}

void control_http_completed(HttpRequest *req, unsigned code, void *userdata) {
        Control *c = userdata;
        metrics_count_request(&c->metrics, http_request_route(req), code,
                              (double) http_request_age_usec(req) / USEC_PER_SEC);
}
