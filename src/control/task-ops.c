/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Task operations shared by the HTTP API and D-Bus: each is one database call whose answer is
 * passed on as (code, JSON text). */

#include <assert.h>
#include <stdarg.h>

#include "control.h"
#include "json-util.h"
#include "log.h"
#include "task-publisher.h"

char *control_error_body(const char *field, const char *format, ...) {
        _cleanup_json_ json_object *o = json_object_new_object();
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&msg, format, ap);
        va_end(ap);
        if (r < 0 || !o)
                return NULL;
        json_add_string(o, "error", msg);
        if (field)
                json_add_string(o, "field", field);
        return strdup(json_to_string(o));
}

unsigned control_db_error_code(int error) {
        /* A query that ran and failed is our bug (500); anything else means the database is not there. */
        return error == -EIO ? 500 : 503;
}

void control_task_changed(Control *c, const char *id, TaskStatus s, McEvent event,
                          const char *node, const char *lease_token, const char *attempt, const char *message) {
        const char *status = task_status_to_string(s), *fields[12];
        size_t n = 0;

        assert(status);

        fields[n++] = "TASK_ID";
        fields[n++] = id;
        if (node) {
                fields[n++] = "NODE_ID";
                fields[n++] = node;
        }
        if (lease_token) {
                fields[n++] = "LEASE_TOKEN";
                fields[n++] = lease_token;
        }
        if (attempt) {
                fields[n++] = "ATTEMPT";
                fields[n++] = attempt;
        }
        fields[n++] = "MC_STATUS";
        fields[n++] = status;
        fields[n] = NULL;
        log_event(LOG_INFO, event, fields, "%s: task %s is %s%s%s.", message, id, status,
                  node ? " on node " : "", node ?: "");
        control_bus_emit_task_changed(c, id, status);
        task_publisher_changed(c->publisher, id, s, node, lease_token, attempt);
}

/* What an operator did through the API, in the journal. */
static void log_operation(const char *what, const char *id) {
        if (streq(what, "delete"))
                log_event(LOG_INFO, MC_EVENT_TASKS_DELETED, LOG_FIELDS("TASK_ID", id, "MC_COUNT", "1"),
                          "Task %s deleted.", id);
        else if (streq(what, "drain") || streq(what, "undrain")) {
                bool drain = streq(what, "drain");
                log_event(LOG_INFO, drain ? MC_EVENT_NODE_DRAINING : MC_EVENT_NODE_RESUMED,
                          LOG_FIELDS("NODE_ID", id, "MC_REASON", "control"),
                          "Node %s %s through the control.", id, drain ? "drained" : "undrained");
        }
        else if (streq(what, "remove"))
                log_event(LOG_INFO, MC_EVENT_NODE_REMOVED, LOG_FIELDS("NODE_ID", id), "Lost node %s removed.", id);
}

typedef struct Op {
        Control *control;
        TaskOpCallback callback;
        void *userdata;
        bool code_column;       /* result has (code, body[, ...]) columns instead of one body */
        const char *what;       /* for the cancel journal event */
        char id[129];
} Op;

static void on_op_done(PGresult *r, int error, void *userdata) {
        Op *op = userdata;
        Control *c = op->control;

        if (error < 0 || !r) {
                _cleanup_free_ char *body = control_error_body(NULL, error == -EIO ? "Database error." :
                                                               "Database unavailable; retry.");
                op->callback(c, control_db_error_code(error), body ?: "{}", op->userdata);
        } else if (PQntuples(r) == 0 || PQgetisnull(r, 0, 0)) {
                _cleanup_free_ char *body = control_error_body("id", "No such task.");
                op->callback(c, 404, body ?: "{}", op->userdata);
        } else if (op->code_column) {
                unsigned code = (unsigned) atoi(PQgetvalue(r, 0, 0));
                if (code == 200 && op->what && streq(op->what, "cancel")) {
                        const char *node = PQgetisnull(r, 0, 2) ? NULL : PQgetvalue(r, 0, 2);
                        control_task_changed(c, op->id, TASK_STATUS_CANCELLED,
                                             node ? MC_EVENT_LEASE_REVOKED : MC_EVENT_TASK_FINISHED,
                                             node, NULL, NULL, "Task cancelled by user");
                }
                if (code < 300 && op->what)
                        log_operation(op->what, op->id);
                op->callback(c, code, PQgetvalue(r, 0, 1), op->userdata);
        } else
                op->callback(c, 200, PQgetvalue(r, 0, 0), op->userdata);
        free(op);
}

static int op_run(Control *c, const char *sql, int n, const char *const *params, bool code_column, const char *what,
                  const char *id, TaskOpCallback cb, void *userdata) {
        Op *op = calloc(1, sizeof(Op));
        int r;

        if (!op)
                return -ENOMEM;
        *op = (Op) { .control = c, .callback = cb, .userdata = userdata, .code_column = code_column, .what = what };
        if (id)
                snprintf(op->id, sizeof(op->id), "%s", id);
        r = db_query(c->db, sql, n, params, on_op_done, op);
        if (r < 0)
                free(op);
        return r;
}

int control_get_task(Control *c, const char *id, TaskOpCallback cb, void *userdata) {
        const char *params[] = { id };
        return op_run(c, "SELECT mc_task_json(t, true) FROM tasks t WHERE t.id = $1", 1, params, false, NULL, id,
                      cb, userdata);
}

int control_task_logs(Control *c, const char *id, TaskOpCallback cb, void *userdata) {
        const char *params[] = { id };
        /* The result's output once it came; before, what the agent sent while the task runs (empty when
         * nothing yet: an empty log, not a missing one). */
        return op_run(c, "SELECT data FROM mc_task_logs($1, NULL, 0)", 1, params, false, NULL, id, cb, userdata);
}

int control_cancel_task(Control *c, const char *id, TaskOpCallback cb, void *userdata) {
        const char *params[] = { id };
        return op_run(c, "SELECT code, body, lease_node FROM mc_cancel($1)", 1, params, true, "cancel", id, cb, userdata);
}

int control_list_tasks(Control *c, const char *status, json_object *labels, int64_t limit, const char *after,
                       TaskOpCallback cb, void *userdata) {
        char lim[32];
        const char *params[4];

        snprintf(lim, sizeof(lim), "%" PRIi64, limit);
        params[0] = status;
        params[1] = labels ? json_to_string(labels) : NULL;
        params[2] = lim;
        params[3] = after;
        return op_run(c, "SELECT mc_list($1, $2::jsonb, $3::integer, $4::bigint)", 4, params, false, NULL, NULL,
                      cb, userdata);
}

int control_list_nodes(Control *c, TaskOpCallback cb, void *userdata) {
        char lost[32];
        const char *params[] = { lost };

        /* A node that missed three heartbeat rounds (one TTL) is shown as lost. */
        snprintf(lost, sizeof(lost), "%" PRIi64, c->config.lease_ttl_ms);
        return op_run(c, "SELECT mc_nodes($1::integer)", 1, params, false, NULL, NULL, cb, userdata);
}

int control_delete_task(Control *c, const char *id, TaskOpCallback cb, void *userdata) {
        const char *params[] = { id };
        return op_run(c, "SELECT code, body FROM mc_task_delete($1)", 1, params, true, "delete", id, cb, userdata);
}

int control_drain_node(Control *c, const char *node, bool drain, TaskOpCallback cb, void *userdata) {
        char lost[32];
        const char *params[] = { node, drain ? "true" : "false", lost };

        snprintf(lost, sizeof(lost), "%" PRIi64, c->config.lease_ttl_ms);
        return op_run(c, "SELECT code, body FROM mc_node_drain($1, $2::boolean, $3::integer)", 3, params, true,
                      drain ? "drain" : "undrain", node, cb, userdata);
}

int control_delete_node(Control *c, const char *node, TaskOpCallback cb, void *userdata) {
        char lost[32];
        const char *params[] = { node, lost };

        snprintf(lost, sizeof(lost), "%" PRIi64, c->config.lease_ttl_ms);
        return op_run(c, "SELECT code, body FROM mc_node_delete($1, $2::integer)", 2, params, true, "remove", node,
                      cb, userdata);
}
