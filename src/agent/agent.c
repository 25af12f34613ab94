/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>
#include <sys/stat.h>

#include "agent.h"
#include "capacity.h"
#include "config.h"
#include "daemon-util.h"
#include "fence-keeper.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"
#include "outbox.h"

#define BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
/* How long an adopted container whose lease deadline we do not know may wait for the first renewal. */
#define ADOPT_WAIT_MAX_USEC (2 * USEC_PER_SEC)
/* How long SIGTERM waits for tasks being started to reach their container. */
#define STOP_WAIT_MAX_USEC (15 * USEC_PER_SEC)

static const char *const task_state_table[_TASK_STATE_MAX] = {
        [TASK_ADOPTING] = "adopting",
        [TASK_CLAIMED] = "claimed",
        [TASK_STARTING] = "starting",
        [TASK_RUNNING] = "running",
        [TASK_EXITED] = "exited",
        [TASK_REPORTING] = "reporting",
};

const char *task_state_to_string(TaskState s) {
        return s < _TASK_STATE_MAX ? task_state_table[s] : "unknown";
}

static void schedule_claim(Agent *a, uint64_t delay_usec);
static void heartbeat_now(Agent *a);
static void update_fence_timer(Agent *a);
static void task_send_finish(Task *t);
static void task_start(Task *t);
static void maybe_finish_stop(Agent *a);
static void adopt_pending(Agent *a, void *heartbeat, bool final);

/* How long before our deadline we stop a task ourselves. The process dies at once (the drivers signal
 * it directly), but the engine may take a while to notice, and anyone judging by the engine's events
 * (a test, an operator) should see the container gone before the deadline too: on a loaded machine
 * that took up to a second here. A third of the TTL leaves the heartbeat in between (also at TTL/3)
 * several retries before it comes to that. */
static uint64_t fence_margin(Agent *a) {
        return MIN(MAX(a->ttl_usec / 3, 250 * USEC_PER_MSEC), 3 * USEC_PER_SEC);
}

static uint64_t request_timeout(Agent *a) {
        /* A renewal that has not answered within a third of the TTL is better retried elsewhere. */
        return MIN((uint64_t) a->config.request_timeout_ms * USEC_PER_MSEC, MAX(a->ttl_usec / 3, 300 * USEC_PER_MSEC));
}

static void log_task(int level, Task *t, const char *event, const char *fmt, ...) _printf_(4, 5);
static void log_task(int level, Task *t, const char *event, const char *fmt, ...) {
        char token[32], attempt[32], msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(token, sizeof(token), "%" PRIi64, t->lease_token);
        snprintf(attempt, sizeof(attempt), "%" PRIi64, t->attempt);
        log_event(level, event, LOG_FIELDS("TASK_ID", t->id, "NODE_ID", t->agent->config.node_id,
                                           "LEASE_TOKEN", token, "ATTEMPT", attempt),
                  "Task %s (lease %s): %s", t->id, token, msg);
}

/* ---------------------------------------------------------------------------------------------- */
/* Tasks */

static Task *task_find(Agent *a, const char *id) {
        for (Task *t = a->tasks; t; t = t->next)
                if (streq(t->id, id))
                        return t;
        return NULL;
}

static Task *task_new(Agent *a, const char *id, int64_t lease_token, int64_t attempt) {
        Task *t = calloc(1, sizeof(Task));

        if (!t)
                return NULL;
        t->id = strdup(id);
        if (!t->id) {
                free(t);
                return NULL;
        }
        t->agent = a;
        t->lease_token = lease_token;
        t->attempt = attempt;
        t->exit_code = -1;
        t->next = a->tasks;
        if (a->tasks)
                a->tasks->prev = t;
        a->tasks = t;
        a->n_tasks++;
        return t;
}

static void task_free(Task *t) {
        Agent *a = t->agent;

        if (t->prev)
                t->prev->next = t->next;
        else
                a->tasks = t->next;
        if (t->next)
                t->next->prev = t->prev;
        a->n_tasks--;
        driver_job_free(t->job);
        control_call_cancel(t->started_call);
        control_call_cancel(t->finish_call);
        sd_event_source_disable_unref(t->timeout_timer);
        sd_event_source_disable_unref(t->finish_retry);
        json_object_put(t->record);
        json_object_put(t->finish);
        free(t->handle);
        free(t->status);
        free(t->id);
        free(t);
}

/* A task holds capacity from its claim until its process is gone. */
static bool task_holds_capacity(Task *t) {
        return t->state != TASK_REPORTING;
}

/* Leases we renew: every one whose result we still may deliver. */
static bool task_renewable(Task *t) {
        return !t->drop_result;
}

unsigned agent_n_running(Agent *a) {
        unsigned n = 0;
        for (Task *t = a->tasks; t; t = t->next)
                if (t->state == TASK_RUNNING)
                        n++;
        return n;
}

static bool has_room(Agent *a) {
        int64_t cpus = 0, mem = 0;
        unsigned n = 0;

        for (Task *t = a->tasks; t; t = t->next)
                if (task_holds_capacity(t)) {
                        n++;
                        cpus += t->nano_cpus;
                        mem += t->memory_bytes;
                }
        return n < (unsigned) a->config.max_tasks && cpus < a->capacity_nano_cpus && mem < a->capacity_memory_bytes;
}

static void save_leases(Agent *a) {
        LeaseRecord *l;
        size_t n = 0;
        int r;

        l = calloc(a->n_tasks + 1, sizeof(LeaseRecord));
        if (!l)
                return;
        for (Task *t = a->tasks; t; t = t->next)
                if (t->deadline_usec > 0 && task_renewable(t))
                        l[n++] = (LeaseRecord) {
                                .task_id = t->id,
                                .lease_token = t->lease_token,
                                .deadline_usec = t->deadline_usec,
                                .fence_usec = t->deadline_usec > fence_margin(a) ? t->deadline_usec - fence_margin(a) : 0,
                                .pid = t->job ? t->job->pid : 0,
                                .cgroup_marker = t->job ? t->job->cgroup_marker : NULL,
                        };
        r = lease_store_save(a->lease_file, a->ttl_usec, getpid(), l, n);
        if (r < 0)
                log_warning_errno(r, "Cannot save the lease deadlines to %s: %m", a->lease_file);
        free(l);
        /* A keeper that left (no agent, nothing to fence) just before we came back is started again. */
        if (n > 0 && a->keeper_pid_file)
                (void) fence_keeper_ensure(a->lease_file, a->keeper_pid_file);
}

/* Kills the task's process (if any) and makes sure no result of it is ever sent. */
static void task_abandon(Task *t, StopReason why, const char *reason) {
        Agent *a = t->agent;

        if (t->drop_result)
                return;
        t->drop_result = true;
        if (t->stop_reason == STOP_NONE || why == STOP_FENCE || why == STOP_REVOKED)
                t->stop_reason = why;

        switch (t->state) {
        case TASK_ADOPTING:
        case TASK_CLAIMED:
                log_task(LOG_NOTICE, t, why == STOP_FENCE ? "lease_expired" : "lease_revoked",
                         "dropped before it ran: %s.", reason);
                if (t->job)
                        (void) driver_job_stop(t->job, 0);
                else {
                        task_free(t);
                        schedule_claim(a, 0);
                        return;
                }
                break;
        case TASK_STARTING:
        case TASK_RUNNING:
                log_task(LOG_WARNING, t, why == STOP_FENCE ? "lease_expired" : "lease_revoked",
                         "killing its process: %s.", reason);
                (void) driver_job_stop(t->job, 0);
                break;
        case TASK_EXITED:
                /* Its process is gone; the exit path drops the result. */
                break;
        case TASK_REPORTING:
                log_task(LOG_NOTICE, t, "lease_revoked", "result no longer wanted: %s.", reason);
                (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
                task_free(t);
                schedule_claim(a, 0);
                return;
        default:
                break;
        }
        update_fence_timer(a);
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Task *t = userdata;

        t->timeout_timer = sd_event_source_disable_unref(t->timeout_timer);
        if (t->state != TASK_RUNNING || t->stop_reason != STOP_NONE)
                return 0;
        log_task(LOG_INFO, t, "task_timeout", "ran out of its %" PRIi64 " s; stopping it.", t->timeout_sec);
        t->stop_reason = STOP_TIMEOUT;
        (void) driver_job_stop(t->job, (unsigned) t->agent->config.stop_grace_sec);
        return 0;
}

static void task_arm_timeout(Task *t) {
        uint64_t now = realtime_usec(), end;
        int r;

        if (t->timeout_sec <= 0)
                return;
        end = t->started_realtime_usec + (uint64_t) t->timeout_sec * USEC_PER_SEC;
        r = sd_event_add_time_relative(t->agent->event, &t->timeout_timer, CLOCK_MONOTONIC,
                                       end > now ? end - now : 0, 10 * USEC_PER_MSEC, on_timeout, t);
        if (r < 0)
                log_task(LOG_ERR, t, NULL, "cannot arm its timeout: %s", strerror(-r));
}

static void on_started_reply(const ControlReply *reply, void *userdata) {
        Task *t = userdata;

        t->started_call = NULL;
        t->started_in_flight = false;
        if (reply->error >= 0 && reply->code == 200) {
                t->started_reported = true;
                return;
        }
        if (reply->error >= 0 && (reply->code == 409 || reply->code == 404)) {
                /* The heartbeat is the authority on the lease: ask it now. */
                log_task(LOG_NOTICE, t, NULL, "the control refused its start report (%ld: %s); checking the lease.",
                         reply->code, strna(reply->message));
                t->started_reported = true;
                heartbeat_now(t->agent);
                return;
        }
        /* Sent again after the next successful heartbeat. */
        log_task(LOG_DEBUG, t, NULL, "start report not delivered: %s", strna(reply->message));
}

static void task_report_started(Task *t) {
        _cleanup_json_ json_object *o = json_object_new_object();
        _cleanup_free_ char *path = NULL;
        int r;

        if (t->started_reported || t->started_in_flight || !t->handle || t->drop_result)
                return;
        if (!o || json_add_string(o, "node_id", t->agent->config.node_id) < 0 ||
            json_add_int64(o, "lease_token", t->lease_token) < 0 ||
            json_add_string(o, "container_id", t->handle) < 0 ||
            asprintf(&path, "/api/tasks/%s/started", t->id) < 0)
                return;
        r = control_post(t->agent->control, path, o, request_timeout(t->agent), on_started_reply, t, &t->started_call);
        if (r >= 0)
                t->started_in_flight = true;
}

static void on_job_started(DriverJob *job, const char *handle, uint64_t started_realtime_usec, void *userdata) {
        Task *t = userdata;
        Agent *a = t->agent;

        free(t->handle);
        t->handle = strdup(handle);
        t->started_realtime_usec = started_realtime_usec;
        t->state = TASK_RUNNING;
        log_task(LOG_INFO, t, "container_started", "running as %s.", handle);
        task_arm_timeout(t);
        task_report_started(t);
        save_leases(a);
        agent_bus_task_started(a, t->id);
        agent_bus_running_changed(a);
        maybe_finish_stop(a);
}

static const char *final_status(Task *t, const DriverExit *e, char **ret_reason) {
        *ret_reason = NULL;
        switch (t->stop_reason) {
        case STOP_CANCEL:
                return "cancelled";
        case STOP_TIMEOUT:
                (void) asprintf(ret_reason, "timed out after %" PRIi64 " s", t->timeout_sec);
                return "timed_out";
        default:
                break;
        }
        if (e->error < 0) {
                *ret_reason = strdup(e->reason ?: "the task could not be run");
                return "failed";
        }
        if (e->exit_code == 0)
                return "succeeded";
        if (e->reason)
                *ret_reason = strdup(e->reason);
        else
                (void) asprintf(ret_reason, "exited with code %" PRIi64, e->exit_code);
        return "failed";
}

/* The control's limits (docs/api.md, src/control/api-agents.c): a reason of at most 1 KiB, tails of
 * at most 64 KiB, a request of at most 4 MiB. Cuts are made on UTF-8 character boundaries. */
#define REASON_MAX 1000U
#define TAIL_MAX (64U * 1024U)
#define FINISH_BODY_MAX (3U * 1024U * 1024U)

/* Keeps at most max bytes of s: its start (head) or its end. */
static void utf8_cut(char *s, size_t max, bool head) {
        size_t l = strlen(s), cut;

        if (l <= max)
                return;
        if (head) {
                cut = max;
                while (cut > 0 && ((unsigned char) s[cut] & 0xC0) == 0x80)
                        cut--;
                s[cut] = 0;
                return;
        }
        cut = l - max;
        while (cut < l && ((unsigned char) s[cut] & 0xC0) == 0x80)
                cut++;
        memmove(s, s + cut, l - cut + 1);
}

static json_object *finish_body(Task *t, const char *status, const char *reason, const DriverExit *e) {
        _cleanup_free_ char *out = NULL, *err = NULL, *output = NULL, *why = NULL;
        bool truncated = e->output->truncated;

        out = output_capture_tail(e->output, OUTPUT_STDOUT);
        err = output_capture_tail(e->output, OUTPUT_STDERR);
        output = output_capture_output(e->output);
        why = reason ? utf8_sanitize(reason, strlen(reason)) : NULL;
        if (!out || !err || !output || (reason && !why))
                return NULL;
        utf8_cut(out, TAIL_MAX, false);
        utf8_cut(err, TAIL_MAX, false);
        if (why)
                utf8_cut(why, REASON_MAX, true);

        for (;;) {
                _cleanup_json_ json_object *o = json_object_new_object();

                if (!o || json_add_string(o, "node_id", t->agent->config.node_id) < 0 ||
                    json_add_int64(o, "lease_token", t->lease_token) < 0 ||
                    json_add_string(o, "status", status) < 0 ||
                    (e->error >= 0 && e->exit_code >= 0 && e->exit_code <= 255 &&
                     json_add_int64(o, "exit_code", e->exit_code) < 0) ||
                    (why && json_add_string(o, "reason", why) < 0) ||
                    json_add_string(o, "stdout_tail", out) < 0 ||
                    json_add_string(o, "stderr_tail", err) < 0 ||
                    json_add(o, "truncated", json_object_new_boolean(truncated)) < 0 ||
                    json_add_string(o, "output", output) < 0)
                        return NULL;
                /* Escaping can make output that fit the cap too large for one request (control
                 * characters take six bytes each): keep less of it. */
                if (strlen(json_to_string(o)) <= FINISH_BODY_MAX || output[0] == 0)
                        return TAKE_PTR(o);
                utf8_cut(output, strlen(output) / 2, true);
                truncated = true;
        }
}

static void on_job_removed(int error, void *userdata) {
        Task *t = userdata;

        if (error < 0)
                log_task(LOG_WARNING, t, NULL, "cannot remove its container: %s", strerror(-error));
        if (t->drop_result) {
                Agent *a = t->agent;
                task_free(t);
                schedule_claim(a, 0);
                maybe_finish_stop(a);
                return;
        }
        t->state = TASK_REPORTING;
        task_send_finish(t);
        schedule_claim(t->agent, 0);
}

static void on_job_exited(DriverJob *job, const DriverExit *e, void *userdata) {
        Task *t = userdata;
        Agent *a = t->agent;
        _cleanup_free_ char *reason = NULL;
        const char *status;
        bool was_running = t->state == TASK_RUNNING;
        int r;

        t->timeout_timer = sd_event_source_disable_unref(t->timeout_timer);
        t->state = TASK_EXITED;
        if (was_running)
                agent_bus_running_changed(a);

        if (t->drop_result) {
                log_task(LOG_NOTICE, t, "container_exited", "process gone (exit %" PRIi64 "); no result is sent.",
                         e->exit_code);
        } else {
                status = final_status(t, e, &reason);
                t->finish = finish_body(t, status, reason, e);
                t->status = strdup(status);
                t->exit_code = e->error < 0 ? -1 : e->exit_code;
                if (!t->finish || !t->status) {
                        log_oom();
                        task_abandon(t, STOP_REVOKED, "out of memory");
                } else {
                        log_task(LOG_INFO, t, "container_exited", "%s (exit %" PRIi64 "%s%s).", status, t->exit_code,
                                 reason ? ", " : "", reason ?: "");
                        /* The result is safe before the container (and its logs) go. */
                        r = outbox_write(a->outbox_dir, t->id, t->lease_token, t->finish);
                        if (r < 0)
                                log_task(LOG_ERR, t, NULL, "cannot put its result in the outbox; sending it anyway.");
                        agent_bus_task_finished(a, t->id, status, (int) t->exit_code);
                }
        }

        r = driver_job_remove(job, on_job_removed, t);
        if (r < 0)
                on_job_removed(r, t);
}

static void on_job_pid_known(DriverJob *job, void *userdata) {
        Task *t = userdata;
        /* The fence keeper needs it now, not at the next renewal. */
        save_leases(t->agent);
}

static const DriverJobCallbacks job_callbacks = {
        .started = on_job_started,
        .exited = on_job_exited,
        .pid_known = on_job_pid_known,
};

static char **json_strv(json_object *a) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));

        if (!l || !json_object_is_type(a, json_type_array))
                return NULL;
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *v = json_object_array_get_idx(a, i);
                if (!json_object_is_type(v, json_type_string) || strv_extend(&l, json_object_get_string(v)) < 0)
                        return NULL;
        }
        return TAKE_PTR(l);
}

static void task_start(Task *t) {
        Agent *a = t->agent;
        _cleanup_strv_free_ char **cmd = NULL;
        json_object *v, *env = NULL;
        const char *image = NULL, *runtime = NULL;
        int r;

        if (t->state != TASK_CLAIMED)
                return;
        if (!json_object_object_get_ex(t->record, "cmd", &v) || !(cmd = json_strv(v)) || !cmd[0]) {
                log_task(LOG_ERR, t, NULL, "the claimed task has no usable cmd.");
                task_abandon(t, STOP_REVOKED, "bad task record");
                return;
        }
        (void) json_get_string(t->record, "image", &image);
        if (json_get_string(t->record, "runtime", &runtime) < 0 || isempty(runtime))
                runtime = a->config.docker_runtime;
        if (json_object_object_get_ex(t->record, "env", &v) && json_object_is_type(v, json_type_object))
                env = v;

        t->state = TASK_STARTING;
        r = driver_job_start(a->driver, &(DriverJobSpec) {
                        .task_id = t->id,
                        .lease_token = t->lease_token,
                        .attempt = t->attempt,
                        .timeout_sec = t->timeout_sec,
                        .image = image,
                        .cmd = cmd,
                        .env = env,
                        .nano_cpus = t->nano_cpus,
                        .memory_bytes = t->memory_bytes,
                        .runtime = runtime,
                }, &job_callbacks, t, &t->job);
        if (r < 0) {
                log_task(LOG_ERR, t, NULL, "cannot start it: %s", strerror(-r));
                t->state = TASK_CLAIMED;
                task_abandon(t, STOP_REVOKED, "the driver could not start it");
                return;
        }
        /* A driver that knew its job's mark at once (exec) told us before t->job was set. */
        save_leases(a);
}

/* The lease has just been confirmed: act on what waited for that. */
static void task_lease_confirmed(Task *t) {
        if (t->state == TASK_CLAIMED)
                task_start(t);
        else if (t->state == TASK_RUNNING)
                task_report_started(t);
}

/* ---------------------------------------------------------------------------------------------- */
/* Results */

static int on_finish_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Task *t = userdata;

        t->finish_retry = sd_event_source_disable_unref(t->finish_retry);
        task_send_finish(t);
        return 0;
}

static void on_finish_reply(const ControlReply *reply, void *userdata) {
        Task *t = userdata;
        Agent *a = t->agent;
        int r;

        t->finish_call = NULL;
        if (reply->error >= 0 && (reply->code == 200 || reply->code == 409 || reply->code == 404)) {
                if (reply->code == 200)
                        log_task(LOG_INFO, t, "task_finished", "result delivered (%s).", t->status);
                else
                        log_task(LOG_NOTICE, t, "result_rejected", "the control rejected its result (%ld: %s).",
                                 reply->code, strna(reply->message));
                (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
                task_free(t);
                schedule_claim(a, 0);
                maybe_finish_stop(a);
                return;
        }
        if (reply->error >= 0 && reply->code == 413 && json_object_object_get_ex(t->finish, "output", NULL)) {
                /* Still too large for this control: the tails and the exit code matter most. */
                log_task(LOG_WARNING, t, NULL, "result too large for the control; sending it without the full output.");
                json_object_object_del(t->finish, "output");
                json_object_object_add(t->finish, "truncated", json_object_new_boolean(true));
                (void) outbox_write(a->outbox_dir, t->id, t->lease_token, t->finish);
                task_send_finish(t);
                return;
        }
        if (reply->error >= 0 && reply->code == 400)
                /* Our own bug, most likely: keep the result, and say so loudly. */
                log_task(LOG_ERR, t, NULL, "the control refused the result as malformed: %s", strna(reply->message));
        else
                log_task(LOG_WARNING, t, "result_queued", "result not delivered (%s); it stays in the outbox.",
                         reply->error < 0 ? strna(reply->message) : "control error");

        t->finish_backoff_usec = MIN(MAX(t->finish_backoff_usec * 2, 250 * USEC_PER_MSEC), BACKOFF_MAX_USEC);
        r = sd_event_add_time_relative(a->event, &t->finish_retry, CLOCK_MONOTONIC, t->finish_backoff_usec,
                                       10 * USEC_PER_MSEC, on_finish_retry, t);
        if (r < 0)
                log_task(LOG_ERR, t, NULL, "cannot schedule sending its result again.");
}

static void task_send_finish(Task *t) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (t->finish_call || t->finish_retry || !t->finish)
                return;
        if (asprintf(&path, "/api/tasks/%s/finish", t->id) < 0)
                return;
        r = control_post(t->agent->control, path, t->finish, request_timeout(t->agent), on_finish_reply, t, &t->finish_call);
        if (r < 0)
                log_task(LOG_ERR, t, NULL, "cannot send its result: %s", strerror(-r));
}

/* ---------------------------------------------------------------------------------------------- */
/* Fencing */

static int on_fence(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        uint64_t now = now_usec(), margin = fence_margin(a);
        Task *t, *next;

        for (t = a->tasks; t; t = next) {
                next = t->next;
                if (t->drop_result || t->deadline_usec == 0 || t->state == TASK_REPORTING)
                        continue;
                if (t->deadline_usec <= now + margin) {
                        char why[160];
                        /* Wall clock in the message, so that it can be set against Docker's events. */
                        snprintf(why, sizeof(why), "its lease could not be renewed; deadline in %" PRIi64
                                 " ms, at %.3f", ((int64_t) t->deadline_usec - (int64_t) now) / 1000,
                                 (double) (realtime_usec() + t->deadline_usec - now) / 1e6);
                        task_abandon(t, STOP_FENCE, why);
                }
        }
        update_fence_timer(a);
        return 0;
}

static void update_fence_timer(Agent *a) {
        uint64_t first = UINT64_MAX, margin = fence_margin(a);
        int r;

        for (Task *t = a->tasks; t; t = t->next)
                if (!t->drop_result && t->deadline_usec > 0 && t->state != TASK_REPORTING)
                        first = MIN(first, t->deadline_usec > margin ? t->deadline_usec - margin : 0);
        if (first == UINT64_MAX) {
                (void) sd_event_source_set_enabled(a->fence_timer, SD_EVENT_OFF);
                return;
        }
        r = sd_event_source_set_time(a->fence_timer, first);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->fence_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot arm the fence timer: %m");
}

/* ---------------------------------------------------------------------------------------------- */
/* Heartbeat */

static void schedule_heartbeat(Agent *a, uint64_t delay_usec) {
        int r;

        r = sd_event_source_set_time_relative(a->heartbeat_timer, delay_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->heartbeat_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot arm the heartbeat timer: %m");
}

static void handle_revoked(Agent *a, json_object *e) {
        const char *id, *reason = "unknown";
        int64_t token;
        Task *t;

        if (json_get_string(e, "task_id", &id) < 0 || json_get_int64(e, "lease_token", &token) < 0)
                return;
        (void) json_get_string(e, "reason", &reason);
        t = task_find(a, id);
        if (!t || t->lease_token != token)
                return;

        if (streq(reason, "cancelled")) {
                if (t->stop_reason == STOP_CANCEL)
                        return;
                log_task(LOG_INFO, t, "lease_revoked", "cancelled by the control.");
                t->stop_reason = STOP_CANCEL;
                t->deadline_usec = 0;   /* nothing else runs it: no fencing needed */
                switch (t->state) {
                case TASK_ADOPTING:
                case TASK_CLAIMED: {
                        /* Never ran (here): say so, and be done. An adopted container is removed by
                         * the adoption pass, which no longer finds the task waiting. */
                        _cleanup_json_ json_object *o = json_object_new_object();

                        if (!o || json_add_string(o, "node_id", a->config.node_id) < 0 ||
                            json_add_int64(o, "lease_token", t->lease_token) < 0 ||
                            json_add_string(o, "status", "cancelled") < 0 ||
                            json_add_string(o, "reason", "cancelled before it started") < 0) {
                                log_oom();
                                break;
                        }
                        t->finish = TAKE_PTR(o);
                        t->status = strdup("cancelled");
                        t->state = TASK_REPORTING;
                        task_send_finish(t);
                        break;
                }
                case TASK_STARTING:
                case TASK_RUNNING:
                        (void) driver_job_stop(t->job, (unsigned) a->config.stop_grace_sec);
                        break;
                default:
                        break;
                }
                update_fence_timer(a);
                return;
        }
        if (t->state == TASK_REPORTING && streq(reason, "expired")) {
                /* The process is gone, so nothing runs twice; a finish needs no live lease, only a
                 * current token, and the control says 409 once it has handed the task out again. */
                log_task(LOG_DEBUG, t, NULL, "lease expired while its result waits; still sending it.");
                return;
        }
        if (streq(reason, "finished") && t->state == TASK_REPORTING) {
                /* Our result got there; its answer did not. */
                log_task(LOG_INFO, t, "task_finished", "the control already has its result.");
                (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
                task_free(t);
                schedule_claim(a, 0);
                return;
        }
        task_abandon(t, STOP_REVOKED, reason);
}

typedef struct HeartbeatSent {
        Agent *agent;
        size_t n;
        struct { char *id; int64_t token; } leases[];
} HeartbeatSent;

static void heartbeat_sent_free(HeartbeatSent *h) {
        for (size_t i = 0; i < h->n; i++)
                free(h->leases[i].id);
        free(h);
}

static bool heartbeat_included(void *sent, Task *t) {
        HeartbeatSent *h = sent;

        for (size_t i = 0; i < h->n; i++)
                if (streq(h->leases[i].id, t->id) && h->leases[i].token == t->lease_token)
                        return true;
        return false;
}

static void on_heartbeat_reply(const ControlReply *reply, void *userdata) {
        HeartbeatSent *h = userdata;
        Agent *a = h->agent;
        json_object *renewed, *revoked;
        int64_t ttl_ms;

        a->heartbeat_call = NULL;
        a->heartbeat_sent = NULL;
        if (reply->error < 0 || reply->code != 200 || !reply->json) {
                a->heartbeat_failures++;
                if (reply->error >= 0 && reply->code == 404) {
                        log_warning("The control does not know node %s (%s); registering again.", a->config.node_id,
                                    strna(reply->message));
                        a->registered = false;
                        a->register_again = true;
                } else
                        log_full(a->heartbeat_failures == 1 ? LOG_WARNING : LOG_DEBUG,
                                 "Heartbeat failed: %s%s", reply->error < 0 ? "" : "HTTP error: ",
                                 strna(reply->message));
                heartbeat_sent_free(h);
                if (a->register_again) {
                        a->register_again = false;
                        sd_event_source_set_time_relative(a->register_timer, 0);
                        sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
                }
                /* Try again soon: every renewal counts towards the deadline. */
                schedule_heartbeat(a, MIN(MAX(a->ttl_usec / 15, 100 * USEC_PER_MSEC), USEC_PER_SEC));
                return;
        }

        if (a->heartbeat_failures > 0)
                log_info("Heartbeat delivered again (via %s).", reply->url);
        log_debug("Heartbeat sent %.3f answered in %" PRIu64 " ms.",
                  (double) (realtime_usec() - (now_usec() - reply->sent_usec)) / 1e6,
                  (now_usec() - reply->sent_usec) / USEC_PER_MSEC);
        a->heartbeat_failures = 0;
        a->last_heartbeat_ok_usec = reply->sent_usec;
        if (json_get_int64(reply->json, "lease_ttl_ms", &ttl_ms) >= 0 && ttl_ms > 0) {
                uint64_t ttl = (uint64_t) ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        ttl = MIN(ttl, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
                a->ttl_usec = ttl;
        }

        if (json_object_object_get_ex(reply->json, "renewed", &renewed) && json_object_is_type(renewed, json_type_array))
                for (size_t i = 0; i < json_object_array_length(renewed); i++) {
                        const char *id = json_object_get_string(json_object_array_get_idx(renewed, i));
                        Task *t;
                        int64_t token = -1;

                        if (!id)
                                continue;
                        for (size_t j = 0; j < h->n; j++)
                                if (streq(h->leases[j].id, id))
                                        token = h->leases[j].token;
                        t = task_find(a, id);
                        if (!t || t->lease_token != token || t->drop_result)
                                continue;
                        /* Counted from when the renewal was sent: the control's own deadline is later. */
                        if (t->stop_reason != STOP_CANCEL)
                                t->deadline_usec = reply->sent_usec + a->ttl_usec;
                        if (t->state == TASK_ADOPTING)
                                continue;       /* the adoption pass acts on it */
                        task_lease_confirmed(t);
                }

        if (json_object_object_get_ex(reply->json, "revoked", &revoked) && json_object_is_type(revoked, json_type_array))
                for (size_t i = 0; i < json_object_array_length(revoked); i++)
                        handle_revoked(a, json_object_array_get_idx(revoked, i));

        /* A renewal decides over the containers found at start whose lease it carried. */
        adopt_pending(a, h, false);
        heartbeat_sent_free(h);
        save_leases(a);
        update_fence_timer(a);
        if (a->heartbeat_again) {
                a->heartbeat_again = false;
                schedule_heartbeat(a, 0);
        } else
                schedule_heartbeat(a, a->ttl_usec / 3);
        /* Tasks that were waiting for the lease to be confirmed may now start. */
        for (Task *t = a->tasks; t; t = t->next)
                if (t->state == TASK_RUNNING && !t->started_reported)
                        task_report_started(t);
}

static void send_heartbeat(Agent *a) {
        _cleanup_json_ json_object *o = json_object_new_object(), *leases = json_object_new_array();
        HeartbeatSent *h;
        size_t n = 0;
        int r;

        if (!o || !leases)
                return (void) log_oom();
        h = calloc(1, sizeof(HeartbeatSent) + sizeof(h->leases[0]) * (a->n_tasks + 1));
        if (!h)
                return (void) log_oom();
        h->agent = a;
        for (Task *t = a->tasks; t; t = t->next) {
                json_object *l;

                if (!task_renewable(t))
                        continue;
                l = json_object_new_object();
                if (!l || json_object_array_add(leases, l) < 0 || json_add_string(l, "task_id", t->id) < 0 ||
                    json_add_int64(l, "lease_token", t->lease_token) < 0) {
                        heartbeat_sent_free(h);
                        return (void) log_oom();
                }
                h->leases[n].id = strdup(t->id);
                h->leases[n].token = t->lease_token;
                if (!h->leases[n].id) {
                        heartbeat_sent_free(h);
                        return (void) log_oom();
                }
                h->n = ++n;
        }
        if (json_add_string(o, "node_id", a->config.node_id) < 0 || json_add(o, "leases", TAKE_PTR(leases)) < 0 ||
            json_add(o, "draining", json_object_new_boolean(a->draining)) < 0) {
                heartbeat_sent_free(h);
                return (void) log_oom();
        }
        r = control_post(a->control, "/api/agents/heartbeat", o, request_timeout(a), on_heartbeat_reply, h,
                         &a->heartbeat_call);
        if (r >= 0)
                a->heartbeat_sent = h;
        else {
                heartbeat_sent_free(h);
                log_error_errno(r, "Cannot send a heartbeat: %m");
                schedule_heartbeat(a, USEC_PER_SEC);
        }
}

static int on_heartbeat_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        if (a->heartbeat_call) {
                a->heartbeat_again = true;
                return 0;
        }
        if (!a->registered)
                return 0;       /* registration sends the first one */
        send_heartbeat(a);
        return 0;
}

static void heartbeat_now(Agent *a) {
        if (a->heartbeat_call)
                a->heartbeat_again = true;
        else if (a->registered)
                schedule_heartbeat(a, 0);
}

/* ---------------------------------------------------------------------------------------------- */
/* Claims */

static int64_t resource(json_object *record, const char *key) {
        json_object *res;
        int64_t v;

        if (!json_object_object_get_ex(record, "resources", &res) || !res || json_get_int64(res, key, &v) < 0)
                return 0;
        return MAX(v, (int64_t) 0);
}

static void on_claim_reply(const ControlReply *reply, void *userdata) {
        Agent *a = userdata;
        json_object *record;
        const char *id;
        int64_t token, attempt = 1, ttl_ms;
        Task *t;

        a->claim_call = NULL;
        if (reply->error < 0 || (reply->code != 200 && reply->code != 204)) {
                a->claim_backoff_usec = MIN(MAX(a->claim_backoff_usec * 2, BACKOFF_MIN_USEC), BACKOFF_MAX_USEC);
                log_full(a->claim_backoff_usec <= 2 * BACKOFF_MIN_USEC ? LOG_WARNING : LOG_DEBUG,
                         "Claim failed (%s%s); again in %" PRIu64 " ms.",
                         reply->error < 0 ? "" : "HTTP error: ", strna(reply->message),
                         a->claim_backoff_usec / USEC_PER_MSEC);
                if (reply->error >= 0 && reply->code == 404 && a->registered) {
                        a->registered = false;
                        sd_event_source_set_time_relative(a->register_timer, 0);
                        sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
                        return;
                }
                schedule_claim(a, a->claim_backoff_usec);
                return;
        }
        a->claim_backoff_usec = 0;
        if (reply->code == 204) {
                schedule_claim(a, 0);
                return;
        }

        if (!reply->json || !json_object_object_get_ex(reply->json, "task", &record) ||
            json_get_string(record, "id", &id) < 0 || json_get_int64(reply->json, "lease_token", &token) < 0) {
                log_error("The control's claim answer is not what docs/api.md says; ignoring it.");
                schedule_claim(a, USEC_PER_SEC);
                return;
        }
        (void) json_get_int64(reply->json, "attempt", &attempt);
        /* With the wall clock, for the dispatch benchmark (bench/agent). */
        log_debug("Task %s: claim answered at %.6f.", id, (double) realtime_usec() / 1e6);
        if (json_get_int64(reply->json, "lease_ttl_ms", &ttl_ms) >= 0 && ttl_ms > 0) {
                uint64_t ttl = (uint64_t) ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        ttl = MIN(ttl, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
                a->ttl_usec = ttl;
        }

        t = task_find(a, id);
        if (t) {
                /* A new lease on a task we still hold (an old attempt's result being delivered): the
                 * old one is superseded. */
                log_task(LOG_NOTICE, t, NULL, "superseded by lease %" PRIi64 ".", token);
                task_abandon(t, STOP_REVOKED, "superseded by a new lease");
        }
        t = task_new(a, id, token, attempt);
        if (!t) {
                log_oom();
                schedule_claim(a, USEC_PER_SEC);
                return;
        }
        t->record = json_object_get(record);
        t->nano_cpus = resource(record, "nano_cpus");
        t->memory_bytes = resource(record, "memory_bytes");
        if (json_get_int64(record, "timeout_sec", &t->timeout_sec) < 0)
                t->timeout_sec = 3600;
        /* The control's deadline is later than this: it started the lease after we sent the claim. */
        t->deadline_usec = reply->sent_usec + a->ttl_usec;
        t->state = TASK_CLAIMED;
        log_task(LOG_INFO, t, "lease_acquired", "leased (attempt %" PRIi64 ").", attempt);
        save_leases(a);
        update_fence_timer(a);

        if (t->deadline_usec > now_usec() + fence_margin(a) + a->ttl_usec / 3)
                task_start(t);
        else {
                /* The claim took long to answer: renew the lease first. */
                log_task(LOG_INFO, t, NULL, "claim answered late; renewing before starting it.");
                heartbeat_now(a);
        }
        schedule_claim(a, 0);
}

static void send_claim(Agent *a) {
        _cleanup_json_ json_object *o = json_object_new_object();
        uint64_t wait_ms;
        int r;

        if (!o)
                return (void) log_oom();
        /* A claim answered at the end of its wait leaves TTL minus the wait before our deadline. */
        wait_ms = MIN((uint64_t) a->config.claim_wait_ms, a->ttl_usec / 3 / USEC_PER_MSEC);
        if (json_add_string(o, "node_id", a->config.node_id) < 0 || json_add_int64(o, "wait_ms", (int64_t) wait_ms) < 0)
                return (void) log_oom();
        r = control_post(a->control, "/api/agents/claim", o, wait_ms * USEC_PER_MSEC + request_timeout(a),
                         on_claim_reply, a, &a->claim_call);
        if (r < 0) {
                log_error_errno(r, "Cannot send a claim: %m");
                schedule_claim(a, USEC_PER_SEC);
        }
}

static int on_claim_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        if (a->claim_call || !a->registered || a->draining || a->stopping || !a->adopted || !has_room(a))
                return 0;
        send_claim(a);
        return 0;
}

static void schedule_claim(Agent *a, uint64_t delay_usec) {
        if (!a->claim_timer || a->claim_call)
                return;
        (void) sd_event_source_set_time_relative(a->claim_timer, delay_usec);
        (void) sd_event_source_set_enabled(a->claim_timer, SD_EVENT_ONESHOT);
}

void agent_set_draining(Agent *a, bool draining) {
        if (a->draining == draining)
                return;
        a->draining = draining;
        log_event(LOG_INFO, draining ? "node_draining" : "node_resumed", LOG_FIELDS("NODE_ID", a->config.node_id),
                  draining ? "Draining: no new claims; running tasks finish." : "Resumed: claiming again.");
        if (draining)
                control_call_cancel(TAKE_PTR(a->claim_call));
        else
                schedule_claim(a, 0);
        heartbeat_now(a);
        daemon_notify_status("%s node %s.", draining ? "Draining" : "Serving", a->config.node_id);
}

/* ---------------------------------------------------------------------------------------------- */
/* Registration */

static void on_register_reply(const ControlReply *reply, void *userdata) {
        Agent *a = userdata;
        int64_t ttl_ms;

        a->register_call = NULL;
        if (reply->error < 0 || reply->code != 200) {
                a->register_backoff_usec = MIN(MAX(a->register_backoff_usec * 2, BACKOFF_MIN_USEC), BACKOFF_MAX_USEC);
                log_full(a->register_backoff_usec <= 2 * BACKOFF_MIN_USEC ? LOG_WARNING : LOG_DEBUG,
                         "Cannot register with the control (%s%s); again in %" PRIu64 " ms.",
                         reply->error < 0 ? "" : "HTTP error: ", strna(reply->message),
                         a->register_backoff_usec / USEC_PER_MSEC);
                daemon_notify_status("Registering with the control: %s", strna(reply->message));
                (void) sd_event_source_set_time_relative(a->register_timer, a->register_backoff_usec);
                (void) sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
                return;
        }
        a->register_backoff_usec = 0;
        if (reply->json && json_get_int64(reply->json, "lease_ttl_ms", &ttl_ms) >= 0 && ttl_ms > 0) {
                a->ttl_usec = (uint64_t) ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        a->ttl_usec = MIN(a->ttl_usec, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
        }
        a->registered = true;
        log_event(LOG_INFO, "node_registered", LOG_FIELDS("NODE_ID", a->config.node_id),
                  "Registered node %s with %s (lease TTL %" PRIu64 " ms).", a->config.node_id, reply->url,
                  a->ttl_usec / USEC_PER_MSEC);
        daemon_notify_status("Serving node %s via %s.", a->config.node_id, reply->url);
        heartbeat_now(a);
        schedule_claim(a, 0);
}

static void send_register(Agent *a) {
        _cleanup_json_ json_object *o = json_object_new_object(), *cap = json_object_new_object(),
                                   *labels = json_object_new_object();
        int r;

        if (!o || !cap || !labels)
                return (void) log_oom();
        for (char **l = a->config.labels; l && *l; l++) {
                const char *eq = strchr(*l, '=');
                _cleanup_free_ char *k = eq ? strndup(*l, (size_t) (eq - *l)) : strdup(*l);
                if (!k || json_add_string(labels, k, eq ? eq + 1 : "") < 0)
                        return (void) log_oom();
        }
        if (json_add_int64(cap, "nano_cpus", a->capacity_nano_cpus) < 0 ||
            json_add_int64(cap, "memory_bytes", a->capacity_memory_bytes) < 0 ||
            json_add_string(o, "node_id", a->config.node_id) < 0 ||
            json_add(o, "capacity", TAKE_PTR(cap)) < 0 ||
            json_add(o, "labels", TAKE_PTR(labels)) < 0 ||
            json_add_string(o, "runtime", a->config.docker_runtime) < 0 ||
            json_add_string(o, "driver", a->driver->ops->name) < 0 ||
            json_add_string(o, "version", MC_VERSION) < 0)
                return (void) log_oom();
        r = control_post(a->control, "/api/agents/register", o, request_timeout(a), on_register_reply, a,
                         &a->register_call);
        if (r < 0) {
                log_error_errno(r, "Cannot send the registration: %m");
                (void) sd_event_source_set_time_relative(a->register_timer, USEC_PER_SEC);
                (void) sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
        }
}

static int on_register_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        if (!a->register_call && !a->stopping)
                send_register(a);
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Start: the outbox, and what a previous run left behind */

static void adopt_task(Task *t, const DriverLeftover *l) {
        int r;

        t->state = TASK_STARTING;
        r = t->agent->driver->ops->job_adopt(t->agent->driver, l, &job_callbacks, t, &t->job);
        if (r < 0) {
                log_task(LOG_ERR, t, NULL, "cannot adopt its container: %s", strerror(-r));
                t->state = TASK_CLAIMED;
                task_abandon(t, STOP_REVOKED, "adoption failed");
        }
}

static void on_discarded(int error, void *userdata) {
        char *handle = userdata;
        if (error < 0)
                log_warning("Cannot remove container %s: %s", handle, strerror(-error));
        free(handle);
}

static void discard_leftover(Agent *a, const DriverLeftover *l, const char *why) {
        char *h = strdup(l->handle);
        int r;

        log_event(LOG_NOTICE, "container_discarded", LOG_FIELDS("TASK_ID", l->task_id, "NODE_ID", a->config.node_id),
                  "Removing %s of task %s (lease %" PRIi64 "): %s.", l->handle, l->task_id, l->lease_token, why);
        r = a->driver->ops->leftover_discard(a->driver, l, on_discarded, h);
        if (r < 0) {
                log_warning_errno(r, "Cannot remove %s: %m", l->handle);
                free(h);
        }
}

/* Decides over the leftovers found at start: adopts those whose lease is valid (a deadline ahead of
 * us, from the lease file or from a renewal), removes those whose lease is gone, and keeps the rest
 * waiting, until `final` (the wait is over) or a heartbeat that carried their lease has answered. A
 * container adopted on the strength of the lease file is fenced like any other if no renewal comes. */
static void adopt_pending(Agent *a, void *heartbeat, bool final) {
        uint64_t now = now_usec();
        bool waiting = false;

        if (a->adopted || !a->leftovers_listed)
                return;
        for (size_t i = 0; i < a->n_pending; i++) {
                DriverLeftover *l = a->pending + i;
                Task *t;

                if (!l->task_id)
                        continue;       /* decided already */
                t = task_find(a, l->task_id);
                if (!t || t->state != TASK_ADOPTING || t->lease_token != l->lease_token || t->drop_result) {
                        /* Revoked (or cancelled, and reported) while we waited: nobody adopts it. */
                        discard_leftover(a, l, "its lease is gone");
                        if (t && t->state == TASK_ADOPTING && t->lease_token == l->lease_token)
                                task_free(t);
                } else if (t->deadline_usec > now + fence_margin(a)) {
                        log_task(LOG_INFO, t, "container_adopted", "adopting %s (%s).", l->handle, l->state);
                        adopt_task(t, l);
                } else if (final || (heartbeat && heartbeat_included(heartbeat, t))) {
                        discard_leftover(a, l, "its lease could not be confirmed");
                        log_task(LOG_NOTICE, t, "lease_expired", "not adopted: its lease could not be confirmed.");
                        task_free(t);
                } else {
                        waiting = true;
                        continue;
                }
                free(l->task_id);
                l->task_id = NULL;
        }
        update_fence_timer(a);
        if (waiting)
                return;
        /* Adopted tasks whose containers vanished meanwhile are handled by their callbacks. */
        a->adopted = true;
        driver_leftovers_free(a->pending, a->n_pending);
        a->pending = NULL;
        a->n_pending = 0;
        (void) sd_event_source_set_enabled(a->adopt_timer, SD_EVENT_OFF);
        schedule_claim(a, 0);
        daemon_notify_status("Serving node %s.", a->config.node_id);
}

static int on_adopt_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        adopt_pending(userdata, NULL, true);
        return 0;
}

static void on_leftovers(int error, DriverLeftover *l, size_t n, void *userdata) {
        Agent *a = userdata;
        LeaseRecord *records = NULL;
        size_t n_records = 0;
        size_t kept = 0;
        uint64_t ttl = 0;

        if (error < 0) {
                /* Nothing is adopted then; the control re-queues their tasks after their leases. */
                log_error_errno(error, "Cannot list what a previous run left behind: %m");
                a->leftovers_listed = a->adopted = true;
                schedule_claim(a, 0);
                return;
        }
        (void) lease_store_load(a->lease_file, &ttl, NULL, &records, &n_records);
        /* Until the control tells us, the TTL the previous run knew decides the fence margin. */
        if (ttl > 0 && !a->registered && a->config.lease_ttl_ms <= 0)
                a->ttl_usec = ttl;

        a->pending = calloc(n + 1, sizeof(DriverLeftover));
        for (size_t i = 0; i < n; i++) {
                Task *t;

                if (!l[i].adoptable) {
                        discard_leftover(a, l + i, "it cannot be adopted");
                        continue;
                }
                t = task_find(a, l[i].task_id);
                if (t && t->lease_token == l[i].lease_token && t->state == TASK_REPORTING) {
                        /* Its result is in the outbox already. */
                        discard_leftover(a, l + i, "its result is in the outbox");
                        continue;
                }
                if (t || !a->pending) {
                        discard_leftover(a, l + i, "another lease of its task is held");
                        continue;
                }
                t = task_new(a, l[i].task_id, l[i].lease_token, l[i].attempt);
                if (!t) {
                        log_oom();
                        continue;
                }
                t->state = TASK_ADOPTING;
                t->timeout_sec = l[i].timeout_sec;
                for (size_t j = 0; j < n_records; j++)
                        if (streq(records[j].task_id, t->id) && records[j].lease_token == t->lease_token)
                                t->deadline_usec = records[j].deadline_usec;
                log_task(LOG_INFO, t, NULL, "found %s (%s) from a previous run; %s.", l[i].handle, l[i].state,
                         t->deadline_usec > now_usec() ? "its lease is still valid as far as we know"
                                                       : "checking its lease");
                a->pending[kept] = l[i];
                a->pending[kept].task_id = strdup(l[i].task_id);
                a->pending[kept].handle = strdup(l[i].handle);
                a->pending[kept].state = strdup(l[i].state);
                kept++;
        }
        a->n_pending = kept;
        a->leftovers_listed = true;
        lease_records_free(records, n_records);

        /* Those with a valid lease now; the others after the first renewal, or not at all. */
        adopt_pending(a, NULL, false);
        if (!a->adopted) {
                (void) sd_event_source_set_time_relative(a->adopt_timer, ADOPT_WAIT_MAX_USEC);
                (void) sd_event_source_set_enabled(a->adopt_timer, SD_EVENT_ONESHOT);
        }
        /* Heartbeats include the adopted leases from now on. */
        heartbeat_now(a);
}

static int load_outbox(Agent *a) {
        OutboxEntry *e = NULL;
        size_t n = 0;
        int r;

        r = outbox_load(a->outbox_dir, &e, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const char *status = "unknown";
                int64_t code = -1;
                Task *t = task_find(a, e[i].task_id);

                if (t) {
                        /* Two results of one task (two leases): the newer lease wins. */
                        if (t->lease_token > e[i].lease_token) {
                                (void) outbox_remove(a->outbox_dir, e[i].task_id, e[i].lease_token);
                                continue;
                        }
                        (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
                        task_free(t);
                }
                t = task_new(a, e[i].task_id, e[i].lease_token, 0);
                if (!t)
                        break;
                t->finish = json_object_get(e[i].finish);
                (void) json_get_string(t->finish, "status", &status);
                (void) json_get_int64(t->finish, "exit_code", &code);
                t->status = strdup(status);
                t->exit_code = code;
                t->state = TASK_REPORTING;
                log_task(LOG_INFO, t, "result_queued", "result (%s) found in the outbox; sending it.", status);
        }
        outbox_entries_free(e, n);
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */

int agent_start(Agent *a) {
        int r;

        if (asprintf(&a->keeper_pid_file, "%s/fence-keeper.pid", a->state_dir) < 0)
                return log_oom();
        r = fence_keeper_ensure(a->lease_file, a->keeper_pid_file);
        if (r < 0)
                log_warning("Running without a fence keeper: containers are fenced only while the agent runs.");

        r = load_outbox(a);
        if (r < 0)
                return r;
        for (Task *t = a->tasks; t; t = t->next)
                task_send_finish(t);

        r = a->driver->ops->list_leftovers(a->driver, on_leftovers, a);
        if (r < 0)
                return log_error_errno(r, "Cannot look for what a previous run left behind: %m");

        (void) sd_event_source_set_time_relative(a->register_timer, 0);
        (void) sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
        return 0;
}

static void maybe_finish_stop(Agent *a) {
        if (!a->stopping)
                return;
        for (Task *t = a->tasks; t; t = t->next)
                if (t->state == TASK_STARTING && (!t->drop_result || t->job))
                        return;
        (void) sd_event_exit(a->event, 0);
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        log_warning("Tasks still starting after %" PRIu64 " s; exiting anyway.", STOP_WAIT_MAX_USEC / USEC_PER_SEC);
        return sd_event_exit(a->event, 0);
}

void agent_stop(Agent *a) {
        if (a->stopping) {
                (void) sd_event_exit(a->event, 0);
                return;
        }
        a->stopping = true;
        log_info("Stopping: tasks keep running and will be adopted by the next start.");
        daemon_notify_stopping();
        control_call_cancel(TAKE_PTR(a->claim_call));
        (void) sd_event_source_set_enabled(a->claim_timer, SD_EVENT_OFF);
        (void) sd_event_add_time_relative(a->event, &a->stop_timer, CLOCK_MONOTONIC, STOP_WAIT_MAX_USEC, 0,
                                          on_stop_timeout, a);
        maybe_finish_stop(a);
}

char *agent_list_tasks_json(Agent *a) {
        _cleanup_json_ json_object *arr = json_object_new_array();
        uint64_t now = now_usec();

        if (!arr)
                return NULL;
        for (Task *t = a->tasks; t; t = t->next) {
                json_object *o = json_object_new_object();
                if (!o || json_object_array_add(arr, o) < 0)
                        return NULL;
                json_add_string(o, "id", t->id);
                json_add_int64(o, "lease_token", t->lease_token);
                json_add_int64(o, "attempt", t->attempt);
                json_add_string(o, "state", task_state_to_string(t->state));
                if (t->handle)
                        json_add_string(o, "handle", t->handle);
                json_add_int64(o, "nano_cpus", t->nano_cpus);
                json_add_int64(o, "memory_bytes", t->memory_bytes);
                json_add_int64(o, "timeout_sec", t->timeout_sec);
                if (t->deadline_usec > 0)
                        json_add_int64(o, "lease_remaining_ms",
                                       t->deadline_usec > now ? (int64_t) ((t->deadline_usec - now) / USEC_PER_MSEC) : 0);
                if (t->status)
                        json_add_string(o, "status", t->status);
                if (t->drop_result)
                        json_add(o, "abandoned", json_object_new_boolean(true));
        }
        return strdup(json_to_string(arr));
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        agent_stop(userdata);
        return 0;
}

/* Like daemon_event_new(), but SIGTERM and SIGINT go to agent_stop() (which lets tasks being started
 * reach their containers) rather than ending the loop at once. */
static int agent_event_new(Agent *a) {
        sigset_t mask;
        int r;

        r = sd_event_default(&a->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        signal(SIGPIPE, SIG_IGN);
        r = sd_event_add_signal(a->event, NULL, SIGTERM, on_signal, a);
        if (r >= 0)
                r = sd_event_add_signal(a->event, NULL, SIGINT, on_signal, a);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGTERM/SIGINT: %m");
        r = sd_event_set_watchdog(a->event, true);
        if (r < 0)
                return log_error_errno(r, "Failed to enable the watchdog: %m");
        return 0;
}

static int add_timer(Agent *a, sd_event_source **ret, sd_event_time_handler_t cb, const char *name) {
        int r = sd_event_add_time(a->event, ret, CLOCK_MONOTONIC, UINT64_MAX, USEC_PER_MSEC, cb, a);
        if (r < 0)
                return log_error_errno(r, "Cannot create the %s timer: %m", name);
        (void) sd_event_source_set_enabled(*ret, SD_EVENT_OFF);
        (void) sd_event_source_set_description(*ret, name);
        return 0;
}

int agent_new(const AgentConfig *config, Agent **ret) {
        _cleanup_(agent_freep) Agent *a = NULL;
        const char *state;
        int r;

        a = calloc(1, sizeof(Agent));
        if (!a)
                return log_oom();
        a->config = *config;    /* the caller's strings stay the caller's */
        a->ttl_usec = (uint64_t) (config->lease_ttl_ms > 0 ? config->lease_ttl_ms : 15000) * USEC_PER_MSEC;

        r = agent_event_new(a);
        if (r < 0)
                return r;

        state = daemon_state_directory("/var/lib/mc-agent");
        a->state_dir = strdup(state);
        if (!a->state_dir || asprintf(&a->outbox_dir, "%s/outbox", state) < 0 ||
            asprintf(&a->lease_file, "%s/leases.json", state) < 0)
                return log_oom();
        if (mkdir(a->state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the state directory %s: %m", a->state_dir);
        r = outbox_init(a->outbox_dir);
        if (r < 0)
                return r;

        if (config->capacity_nano_cpus > 0 && config->capacity_memory_bytes > 0) {
                a->capacity_nano_cpus = config->capacity_nano_cpus;
                a->capacity_memory_bytes = config->capacity_memory_bytes;
        } else {
                r = capacity_detect(config->cgroup_root ?: "/sys/fs/cgroup", &a->capacity_nano_cpus,
                                    &a->capacity_memory_bytes);
                if (r < 0)
                        return log_error_errno(r, "Cannot detect this machine's CPUs and memory; "
                                               "set CAPACITY_NANO_CPUS and CAPACITY_MEMORY_BYTES.");
                if (config->capacity_nano_cpus > 0)
                        a->capacity_nano_cpus = config->capacity_nano_cpus;
                if (config->capacity_memory_bytes > 0)
                        a->capacity_memory_bytes = config->capacity_memory_bytes;
        }

        r = curl_event_new(a->event, &a->curl);
        if (r < 0)
                return r;
        r = control_client_new(a->curl, config->control_urls, config->token, &a->control);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the control client: %m");

        if (streq(config->driver, "docker"))
                r = docker_driver_new(a->event, a->curl, &(DockerDriverConfig) {
                                .socket_path = config->docker_socket,
                                .node_id = config->node_id,
                                .network = isempty(config->docker_network) ? NULL : config->docker_network,
                                .output_cap = (size_t) config->output_cap_bytes,
                                .tail_max = (size_t) config->tail_bytes,
                        }, &a->driver);
        else {
                _cleanup_free_ char *work = NULL, *cg = NULL;
                if (asprintf(&work, "%s/exec", state) < 0)
                        return log_oom();
                if (isempty(config->cgroup_path) && asprintf(&cg, "mc.agent/%s", config->node_id) < 0)
                        return log_oom();
                r = exec_driver_new(a->event, &(ExecDriverConfig) {
                                .cgroup_root = config->cgroup_root,
                                .cgroup_path = cg ?: config->cgroup_path,
                                .work_dir = work,
                                .output_cap = (size_t) config->output_cap_bytes,
                                .tail_max = (size_t) config->tail_bytes,
                        }, &a->driver);
        }
        if (r < 0)
                return r;

        if ((r = add_timer(a, &a->register_timer, on_register_timer, "register")) < 0 ||
            (r = add_timer(a, &a->claim_timer, on_claim_timer, "claim")) < 0 ||
            (r = add_timer(a, &a->heartbeat_timer, on_heartbeat_timer, "heartbeat")) < 0 ||
            (r = add_timer(a, &a->fence_timer, on_fence, "fence")) < 0 ||
            (r = add_timer(a, &a->adopt_timer, on_adopt_timer, "adopt")) < 0)
                return r;
        /* The fence acts on time: no coalescing. */
        (void) sd_event_source_set_time_accuracy(a->fence_timer, 1);
        (void) sd_event_source_set_priority(a->fence_timer, SD_EVENT_PRIORITY_IMPORTANT);
        (void) sd_event_source_set_priority(a->heartbeat_timer, SD_EVENT_PRIORITY_IMPORTANT);

        log_info("Node %s: driver %s, runtime %s, capacity %.2f CPUs and %" PRIi64 " MiB, controls: %s%s.",
                 config->node_id, a->driver->ops->name, config->docker_runtime,
                 (double) a->capacity_nano_cpus / 1e9, a->capacity_memory_bytes >> 20, config->control_urls[0],
                 strv_length(config->control_urls) > 1 ? " and more" : "");
        *ret = TAKE_PTR(a);
        return 0;
}

Agent *agent_free(Agent *a) {
        if (!a)
                return NULL;
        while (a->tasks)
                task_free(a->tasks);
        driver_leftovers_free(a->pending, a->n_pending);
        control_call_cancel(a->register_call);
        control_call_cancel(a->claim_call);
        if (a->heartbeat_call) {
                control_call_cancel(a->heartbeat_call);
                heartbeat_sent_free(a->heartbeat_sent);
        }
        sd_event_source_disable_unref(a->register_timer);
        sd_event_source_disable_unref(a->claim_timer);
        sd_event_source_disable_unref(a->heartbeat_timer);
        sd_event_source_disable_unref(a->fence_timer);
        sd_event_source_disable_unref(a->adopt_timer);
        sd_event_source_disable_unref(a->stop_timer);
        sd_bus_slot_unref(a->bus_slot);
        sd_bus_flush_close_unref(a->bus);
        driver_free(a->driver);
        control_client_free(a->control);
        curl_event_free(a->curl);
        sd_event_unref(a->event);
        free(a->state_dir);
        free(a->outbox_dir);
        free(a->lease_file);
        free(a->keeper_pid_file);
        free(a);
        return NULL;
}
