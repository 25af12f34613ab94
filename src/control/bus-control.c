/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* org.mutualcloud.Control1 on the system bus: the same operations as the HTTP API, for operators on
 * the control host (busctl). Method calls are answered asynchronously, after the database. Every method
 * needs root or the configured group (BUS_GROUP), as the policy file also says. */

#include "bus-util.h"
#include "control.h"
#include "json-util.h"
#include "log.h"
#include "push.h"
#include "task-signals.h"
#include "task-spec.h"

#define BUS_NAME "org.mutualcloud.Control1"
#define BUS_PATH "/org/mutualcloud/Control1"
#define BUS_INTERFACE "org.mutualcloud.Control1"

/* Turns a failed operation's (code, {"error","field"}) into a D-Bus error reply. */
static void reply_error(sd_bus_message *m, unsigned code, const char *body) {
        _cleanup_json_ json_object *o = NULL;
        const char *msg = "Failed.", *field = NULL, *name;

        if (json_parse_strict(body, strlen(body), &o, NULL) >= 0) {
                (void) json_get_string(o, "error", &msg);
                (void) json_get_string(o, "field", &field);
        }
        switch (code) {
        case 400:
                name = SD_BUS_ERROR_INVALID_ARGS;
                break;
        case 404:
                name = BUS_INTERFACE ".NoSuchTask";
                break;
        case 409:
                name = BUS_INTERFACE ".Conflict";
                break;
        case 503:
                name = BUS_INTERFACE ".Unavailable";
                break;
        default:
                name = SD_BUS_ERROR_FAILED;
        }
        if (field)
                (void) sd_bus_reply_method_errorf(m, name, "%s (field \"%s\")", msg, field);
        else
                (void) sd_bus_reply_method_errorf(m, name, "%s", msg);
}

static void on_push_done(Control *c, unsigned code, const char *id, const char *body, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;

        if (code != 200 && code != 201) {
                reply_error(m, code, body);
                return;
        }
        (void) sd_bus_reply_method_return(m, "s", id);
}

static void on_json_done(Control *c, unsigned code, const char *body, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;

        if (code != 200) {
                reply_error(m, code, body);
                return;
        }
        (void) sd_bus_reply_method_return(m, "s", body);
}

static void on_cancel_done(Control *c, unsigned code, const char *body, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;

        if (code != 200) {
                reply_error(m, code, body);
                return;
        }
        (void) sd_bus_reply_method_return(m, NULL);
}

/* Starts an asynchronous operation; on success the message reference is owned by the callback. */
static int start_op(sd_bus_message *m, int r, sd_bus_error *error) {
        if (r >= 0)
                return 1;
        sd_bus_message_unref(m);
        if (r == -ENOMEM)
                return -ENOMEM;
        return sd_bus_error_set(error, BUS_INTERFACE ".Unavailable", "Database unavailable; retry.");
}

static int check_access(Control *c, sd_bus_message *m, sd_bus_error *error) {
        int r = bus_check_privileged(m, c->config.bus_group, error);
        if (r < 0)
                return sd_bus_error_set_errnof(error, r, "Cannot read the caller's credentials: %m");
        return r == 0 ? -EACCES : 0;
}

static int method_push_task(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Control *c = userdata;
        TaskSpec spec = {};
        CheckError e = {};
        const char *json;
        int r;

        r = check_access(c, m, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", &json);
        if (r < 0)
                return r;
        r = task_spec_parse(json, strlen(json), &spec, &e);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (!isempty(e.field))
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "%s (field \"%s\")", e.message, e.field);
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS, e.message);
        }
        r = control_push(c, &spec, on_push_done, sd_bus_message_ref(m));
        if (r < 0)
                task_spec_done(&spec);
        return start_op(m, r, error);
}

/* The access check and the one argument of GetTask and CancelTask. */
static int read_task_id(Control *c, sd_bus_message *m, const char **ret, sd_bus_error *error) {
        int r;

        r = check_access(c, m, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", ret);
        if (r < 0)
                return r;
        if (!id_is_valid(*ret))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Invalid task id.");
        return 0;
}

static int method_get_task(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Control *c = userdata;
        const char *id;
        int r = read_task_id(c, m, &id, error);

        if (r < 0)
                return r;
        return start_op(m, control_get_task(c, id, on_json_done, sd_bus_message_ref(m)), error);
}

static int method_list_tasks(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Control *c = userdata;
        const char *status;
        uint32_t limit;
        int r;

        r = check_access(c, m, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "su", &status, &limit);
        if (r < 0)
                return r;
        if (!isempty(status) && task_status_from_string(status) < 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown status \"%s\".", status);
        if (limit > 1000)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "limit must be at most 1000 (0: 100).");
        return start_op(m, control_list_tasks(c, isempty(status) ? NULL : status, NULL, limit == 0 ? 100 : limit, NULL,
                                              on_json_done, sd_bus_message_ref(m)), error);
}

static int method_cancel_task(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Control *c = userdata;
        const char *id;
        int r = read_task_id(c, m, &id, error);

        if (r < 0)
                return r;
        return start_op(m, control_cancel_task(c, id, on_cancel_done, sd_bus_message_ref(m)), error);
}

static int property_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Control *c = userdata;
        uint64_t v;

        if (streq(property, "TasksQueued"))
                v = c->counts.by_status[TASK_STATUS_QUEUED];
        else if (streq(property, "TasksRunning"))
                v = c->counts.by_status[TASK_STATUS_LEASED] + c->counts.by_status[TASK_STATUS_RUNNING];
        else
                v = c->counts.nodes_ready;
        return sd_bus_message_append(reply, "u", (uint32_t) MIN(v, (uint64_t) UINT32_MAX));
}

static int property_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", MC_VERSION);
}

static const sd_bus_vtable control_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("TasksQueued", "u", property_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("TasksRunning", "u", property_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NodesReady", "u", property_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("PushTask", SD_BUS_ARGS("s", json), SD_BUS_RESULT("s", id), method_push_task,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetTask", SD_BUS_ARGS("s", id), SD_BUS_RESULT("s", json), method_get_task,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListTasks", SD_BUS_ARGS("s", status, "u", limit), SD_BUS_RESULT("s", json),
                                method_list_tasks, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CancelTask", SD_BUS_ARGS("s", id), SD_BUS_NO_RESULT, method_cancel_task,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("TasksChanged", SD_BUS_ARGS("a(ss)", changes), 0),
        SD_BUS_VTABLE_END,
};

int control_bus_setup(Control *c) {
        int r;

        if (!c->config.bus)
                return 0;
        r = bus_open_and_request_name(c->event, BUS_NAME, &c->bus);
        if (r < 0) {
                log_warning("Continuing without D-Bus.");
                return 0;
        }
        r = sd_bus_add_object_vtable(c->bus, NULL, BUS_PATH, BUS_INTERFACE, control_vtable, c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the D-Bus object: %m");
        r = task_signals_new(c->bus, c->event, BUS_PATH, BUS_INTERFACE, &c->task_signals);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the TasksChanged signal: %m");
        return 0;
}

void control_bus_emit_counts_changed(Control *c) {
        if (c->bus)
                (void) sd_bus_emit_properties_changed(c->bus, BUS_PATH, BUS_INTERFACE, "TasksQueued", "TasksRunning",
                                                      "NodesReady", NULL);
}

void control_bus_emit_task_changed(Control *c, const char *id, const char *status) {
        task_signals_add(c->task_signals, id, status);
}
