/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A task from its claim to its delivered result: start through the driver, timeout, start report,
 * result (outbox, then the container goes, then the control gets it). */

#include "agent-internal.h"
#include "config.h"
#include "daemon-util.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"
#include "fence-protocol.h"
#include "outbox.h"
#include "prometheus.h"
#include "utf8.h"

/* ---------------------------------------------------------------------------------------------- */
/* Tasks */

Task *task_find(Agent *a, const char *id) {
        for (Task *t = a->tasks; t; t = t->next)
                if (streq(t->id, id))
                        return t;
        return NULL;
}

Task *task_new(Agent *a, const char *id, int64_t lease_token, int64_t attempt) {
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
        if (task_fence_init(t) < 0) {
                free(t->id);
                free(t);
                return NULL;
        }
        t->attempt = attempt;
        t->exit_code = -1;
        t->status = _TASK_STATUS_INVALID;
        LIST_PREPEND(a->tasks, t);
        a->n_tasks++;
        return t;
}

void task_free(Task *t) {
        Agent *a = t->agent;

        LIST_REMOVE(a->tasks, t);
        a->n_tasks--;
        task_live_output_stop(t);
        driver_job_free(t->job);
        control_call_cancel(t->started_call);
        control_call_cancel(t->finish_call);
        control_call_cancel(t->release_call);
        task_inputs_free(t);
        sd_event_source_disable_unref(t->timeout_timer);
        sd_event_source_disable_unref(t->finish_retry);
        json_object_put(t->record);
        json_object_put(t->finish);
        free(t->handle);
        free(t->lost_reason);
        free(t->fence_dir);
        free(t->id);
        free(t);
}

/* Stops sending the task's result: the call in flight and the retry. The result itself stays. */
static void task_finish_stop(Task *t) {
        control_call_cancel(TAKE_PTR(t->finish_call));
        t->finish_retry = sd_event_source_disable_unref(t->finish_retry);
}

/* A task holds capacity from its claim until its process is gone. */
bool task_holds_capacity(Task *t) {
        return t->state != TASK_REPORTING;
}

/* Leases we renew: every one whose result we still may deliver. */
bool task_renewable(Task *t) {
        return !t->drop_result && !t->result_settled;
}

/* Its process has ended and its result is in the outbox: sent until the control answers, whatever
 * the time, while the job's leftovers are removed. */
bool task_result_waits(Task *t) {
        return (t->state == TASK_EXITED || t->state == TASK_REPORTING) && t->finish && task_renewable(t);
}

/* Leases whose fence (deadline - margin) we act on: a task that may still run. One whose result waits
 * has nothing left to run twice: dropping its result at the fence would only make it run again (the
 * fence keeper still kills whatever is left in its cgroup at that time, should the renewals fail). */
bool task_fenceable(Task *t) {
        return !t->drop_result && t->deadline_usec > 0 && t->state != TASK_REPORTING && !task_result_waits(t);
}

unsigned agent_n_running(Agent *a) {
        unsigned n = 0;
        for (Task *t = a->tasks; t; t = t->next)
                if (t->state == TASK_RUNNING)
                        n++;
        return n;
}

bool has_room(Agent *a) {
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

/* Kills the task's process (if any) and makes sure no result of it is ever sent. */
void task_abandon(Task *t, StopReason why, const char *reason) {
        Agent *a = t->agent;

        if (t->drop_result)
                return;
        t->drop_result = true;
        if (t->stop_reason == STOP_NONE || why == STOP_FENCE || why == STOP_REVOKED)
                t->stop_reason = why;

        switch (t->state) {
        case TASK_ADOPTING:
        case TASK_CLAIMED:
        case TASK_FETCHING:
                log_task(LOG_NOTICE, t, why == STOP_FENCE ? MC_EVENT_LEASE_EXPIRED : MC_EVENT_LEASE_REVOKED,
                         "dropped before it ran: %s.", reason);
                if (t->state == TASK_FETCHING) {
                        /* Its downloads stop unless other tasks wait for them; what came stays. */
                        t->state = TASK_CLAIMED;
                        agent_bus_fetching_changed(a);
                }
                if (t->job)
                        (void) driver_job_stop(t->job, 0);
                else {
                        task_fence_remove(t);
                        task_free(t);
                        schedule_claim(a, 0);
                        return;
                }
                break;
        case TASK_STARTING:
        case TASK_RUNNING:
                log_task(LOG_WARNING, t, why == STOP_FENCE ? MC_EVENT_LEASE_EXPIRED : MC_EVENT_LEASE_REVOKED,
                         "killing its process: %s.", reason);
                t->kill_sent_usec = now_usec();
                (void) driver_job_stop(t->job, 0);
                break;
        case TASK_EXITED:
                /* Its process is gone; its removal drops the result (on_job_removed()). */
                task_finish_stop(t);
                break;
        case TASK_REPORTING:
                log_task(LOG_NOTICE, t, MC_EVENT_LEASE_REVOKED, "result no longer wanted: %s.", reason);
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
        log_task(LOG_INFO, t, MC_EVENT_TASK_TIMEOUT, "ran out of its %" PRIi64 " s; stopping it.", t->timeout_sec);
        t->stop_reason = STOP_TIMEOUT;
        /* Recorded before the stop: an agent restarted before the result is sent still reports it
         * timed_out, not as the exit status the signal left. */
        save_leases(t->agent);
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
                log_task(LOG_ERR, t, MC_EVENT_NONE, "cannot arm its timeout: %s", strerror(-r));
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
                log_task(LOG_NOTICE, t, MC_EVENT_NONE,
                         "the control refused its start report (%ld: %s); checking the lease.",
                         reply->code, strna(reply->message));
                t->started_reported = true;
                heartbeat_now(t->agent);
                return;
        }
        /* Sent again after the next successful heartbeat. */
        log_task(LOG_DEBUG, t, MC_EVENT_NONE, "start report not delivered: %s", strna(reply->message));
}

void task_report_started(Task *t) {
        _cleanup_json_ json_object *o = json_object_new_object();
        _cleanup_free_ char *path = NULL;
        int r;

        if (t->started_reported || t->started_in_flight || !t->handle || t->drop_result)
                return;
        if (!o || json_add_string(o, "node_id", t->agent->config.node_id) < 0 ||
            json_add_int64(o, "lease_token", t->lease_token) < 0 ||
            json_add_string(o, "container_id", t->handle) < 0 ||
            (t->n_inputs > 0 && t->inputs_ready_usec > 0 &&
             (json_add_int64(o, "inputs_ready_usec", (int64_t) t->inputs_ready_usec) < 0 ||
              json_add_int64(o, "inputs_bytes", (int64_t) t->inputs_bytes) < 0 ||
              json_add_int64(o, "inputs_bytes_seeders", (int64_t) t->inputs_bytes_seeders) < 0 ||
              json_add_int64(o, "inputs_bytes_agents", (int64_t) t->inputs_bytes_agents) < 0 ||
              json_add_int64(o, "inputs_bytes_cache", (int64_t) t->inputs_bytes_cache) < 0)) ||
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
        log_task(LOG_INFO, t, MC_EVENT_CONTAINER_STARTED, "running as %s.", handle);
        task_arm_timeout(t);
        task_report_started(t);
        task_live_output_start(t);
        save_leases(a);
        agent_bus_task_started(a, t->id);
        agent_bus_running_changed(a);
        maybe_finish_stop(a);
}

/* The init's line saying why it could not execute the command (the last one in stderr), or NULL. */
static char *exec_error(const DriverExit *e) {
        _cleanup_free_ char *err = NULL;
        char *p = NULL, *nl;

        if (e->error < 0 || (e->exit_code != FENCE_EXIT_NOT_FOUND && e->exit_code != FENCE_EXIT_CANNOT_EXECUTE))
                return NULL;
        err = output_capture_tail(e->output, OUTPUT_STDERR);
        /* The last such line that starts a line: the init writes it just before it exits. */
        for (char *s = err; s && (s = strstr(s, FENCE_INIT_EXEC_ERROR_PREFIX)); s++)
                if (s == err || s[-1] == '\n')
                        p = s;
        if (!p)
                return NULL;
        p += strlen("mc-fence-init: ");
        nl = strchr(p, '\n');
        if (nl)
                *nl = 0;
        return strdup(p);
}

static TaskStatus final_status(Task *t, const DriverExit *e, char **ret_reason) {
        *ret_reason = NULL;
        switch (t->stop_reason == STOP_NONE && t->timed_out_before ? STOP_TIMEOUT : t->stop_reason) {
        case STOP_CANCEL:
                return TASK_STATUS_CANCELLED;
        case STOP_TIMEOUT:
                (void) asprintf(ret_reason, "timed out after %" PRIi64 " s", t->timeout_sec);
                return TASK_STATUS_TIMED_OUT;
        default:
                break;
        }
        if (e->error < 0) {
                *ret_reason = strdup(e->reason ?: "the task could not be run");
                return TASK_STATUS_FAILED;
        }
        if (e->exit_code == 0)
                return TASK_STATUS_SUCCEEDED;
        if (!e->reason && (*ret_reason = exec_error(e)))
                return TASK_STATUS_FAILED;
        if (e->reason)
                *ret_reason = strdup(e->reason);
        else
                (void) asprintf(ret_reason, "exited with code %" PRIi64, e->exit_code);
        return TASK_STATUS_FAILED;
}

/* The control's limits (docs/api.md, src/control/api-agents.c): a reason of at most 1 KiB, tails of
 * at most 64 KiB, a request of at most 4 MiB. Cuts are made on UTF-8 character boundaries. */
#define REASON_MAX 1000U
#define TAIL_MAX (64U * 1024U)
#define FINISH_BODY_MAX (3U * 1024U * 1024U)

/* Keeps at most max bytes of s: its start (head) or its end. */
static void utf8_cut(char *s, size_t max, bool head) {
        size_t l = strlen(s);

        if (head)
                s[utf8_prefix_len(s, l, max)] = 0;
        else {
                size_t start = utf8_suffix_start(s, l, max);
                memmove(s, s + start, l - start + 1);
        }
}

static json_object *finish_body(Task *t, TaskStatus status, const char *reason, const DriverExit *e) {
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
                    json_add_string(o, "status", task_status_to_string(status)) < 0 ||
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
                log_task(LOG_WARNING, t, MC_EVENT_NONE, "cannot remove its container: %s", strerror(-error));
        task_fence_remove(t);
        if (t->drop_result || t->result_settled) {
                Agent *a = t->agent;
                /* Its result was answered meanwhile, or nobody wants it now. */
                (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
                task_free(t);
                schedule_claim(a, 0);
                maybe_finish_stop(a);
                return;
        }
        if (t->lost_reason) {
                /* Its container is gone for sure (the engine said it exited): another run may start. */
                task_release(t, "engine_lost", t->lost_reason);
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
        uint64_t ended;
        int r;

        t->timeout_timer = sd_event_source_disable_unref(t->timeout_timer);
        t->state = TASK_EXITED;
        ended = e->ended_usec > 0 ? MIN(e->ended_usec, now_usec()) : now_usec();
        if (was_running)
                agent_bus_running_changed(a);
        /* How long a kill takes to end a process: the fence margin assumes it is well within it. */
        if (t->kill_sent_usec > 0 && ended >= t->kill_sent_usec)
                histogram_observe(&a->kill_latency, metrics_latency_bounds,
                                  (double) (ended - t->kill_sent_usec) / USEC_PER_SEC);

        if (!t->drop_result && task_killed_by_fence(t, e)) {
                /* We were away (stopped, short of CPU) past our own fence; the init or the keeper
                 * was not, even if a renewal came in afterwards. */
                t->drop_result = true;
                t->stop_reason = STOP_FENCE;
                log_task(LOG_WARNING, t, MC_EVENT_LEASE_EXPIRED,
                         "its fence init or the fence keeper killed it: the lease was not renewed in time.");
                update_fence_timer(a);
        } else if (task_fenceable(t) && !task_ended_before_fence(t, ended)) {
                /* Ended after its fence time, or seen only after it with no time of its own: it may
                 * have been killed by the fence keeper. A result is only ever sent of a run that ended
                 * within its lease, since a control takes one even after the lease expired. */
                t->drop_result = true;
                t->stop_reason = STOP_FENCE;
                a->fences++;
                log_task(LOG_WARNING, t, MC_EVENT_LEASE_EXPIRED,
                         "it ended%s after its fence time: the lease was not renewed in time.",
                         e->ended_usec > 0 ? "" : ", as far as we know,");
                update_fence_timer(a);
        } else if (t->drop_result && t->stop_reason == STOP_FENCE && e->error >= 0 && e->ended_usec > 0 &&
                   t->deadline_usec > 0 && task_ended_before_fence(t, e->ended_usec) && !task_killed_by_fence(t, e)) {
                /* Fenced while its end waited to be seen (we were short of CPU, say), but it had ended
                 * before the fence, on its own (our kill came at the fence, after it): its result is
                 * as good as any, and dropping it would only make it run again. The control takes it
                 * unless another node has the task since. Not after a revocation, whose kill may
                 * come before the fence and so look like an end in time. */
                t->drop_result = false;
                t->stop_reason = STOP_NONE;
                log_task(LOG_NOTICE, t, MC_EVENT_NONE,
                         "it had ended %" PRIu64 " ms before its fence, which came before we saw it: its result is sent.",
                         (t->deadline_usec - fence_margin(a) - e->ended_usec) / USEC_PER_MSEC);
        }
        if (t->drop_result) {
                log_task(LOG_NOTICE, t, MC_EVENT_CONTAINER_EXITED,
                         "process gone (exit %" PRIi64 "); no result is sent.",
                         e->exit_code);
        } else if (e->lost && t->stop_reason == STOP_NONE && !t->timed_out_before) {
                /* Not the task's end but the engine's (a restart without live-restore): no result; the
                 * control queues it again once the container is removed. */
                t->lost_reason = strdup(e->reason ?: "the container engine ended it");
                log_task(LOG_WARNING, t, MC_EVENT_CONTAINER_LOST, "%s; giving its lease back to run it again.",
                         strna(t->lost_reason));
                if (!t->lost_reason) {
                        log_oom();
                        task_abandon(t, STOP_REVOKED, "out of memory");
                }
        } else {
                t->status = final_status(t, e, &reason);
                status = task_status_to_string(t->status);
                t->finish = finish_body(t, t->status, reason, e);
                t->exit_code = e->error < 0 ? -1 : e->exit_code;
                if (!t->finish) {
                        log_oom();
                        task_abandon(t, STOP_REVOKED, "out of memory");
                } else {
                        log_task(LOG_INFO, t, MC_EVENT_CONTAINER_EXITED,
                                 "%s (exit %" PRIi64 "%s%s).", status, t->exit_code,
                                 reason ? ", " : "", reason ?: "");
                        /* The result is safe before the container (and its logs) go. */
                        r = outbox_write(a->outbox_dir, t->id, t->lease_token, t->finish);
                        if (r < 0)
                                log_task(LOG_ERR, t, MC_EVENT_NONE,
                                         "cannot put its result in the outbox; sending it anyway.");
                        agent_bus_task_finished(a, t->id, status, (int) t->exit_code);
                        /* Now, not once the job is removed: that can take seconds on a host busy
                         * with cgroups, and a result held back is a result the control may give
                         * up on (the lease expires) and run again. */
                        task_send_finish(t);
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

const DriverJobCallbacks job_callbacks = {
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

void task_start(Task *t) {
        Agent *a = t->agent;
        _cleanup_strv_free_ char **cmd = NULL;
        _cleanup_free_ DriverInput *inputs = NULL;
        json_object *v, *env = NULL;
        const char *image = NULL, *runtime = NULL;
        int r;

        if (t->state != TASK_CLAIMED || t->drop_result)
                return;
        /* Every input in the cache before anything of the task is created. */
        if (task_inputs_fetch(t) <= 0)
                return;
        if (!json_object_object_get_ex(t->record, "cmd", &v) || !(cmd = json_strv(v)) || !cmd[0]) {
                log_task(LOG_ERR, t, MC_EVENT_NONE, "the claimed task has no usable cmd.");
                task_abandon(t, STOP_REVOKED, "bad task record");
                return;
        }
        (void) json_get_string(t->record, "image", &image);
        if (json_get_string(t->record, "runtime", &runtime) < 0 || isempty(runtime))
                runtime = a->config.docker_runtime;
        if (json_object_object_get_ex(t->record, "env", &v) && json_object_is_type(v, json_type_object))
                env = v;

        inputs = calloc(t->n_inputs ?: 1, sizeof(DriverInput));
        if (!inputs) {
                log_oom();
                task_abandon(t, STOP_REVOKED, "out of memory");
                return;
        }
        task_inputs_for_driver(t, inputs);
        /* Its lease file first: the job's init reads it from its first instant. */
        r = task_fence_prepare(t);
        if (r < 0) {
                log_task(LOG_ERR, t, MC_EVENT_NONE, "cannot write its lease file for the fence init: %s", strerror(-r));
                task_abandon(t, STOP_REVOKED, "its lease file could not be written");
                return;
        }
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
                        .inputs = inputs,
                        .n_inputs = t->n_inputs,
                        .fence_dir = t->fence_dir,
                }, &job_callbacks, t, &t->job);
        if (r < 0) {
                log_task(LOG_ERR, t, MC_EVENT_NONE, "cannot start it: %s", strerror(-r));
                t->state = TASK_CLAIMED;
                task_abandon(t, STOP_REVOKED, "the driver could not start it");
                return;
        }
        /* A driver that knew its job's mark at once (exec) told us before t->job was set. */
        save_leases(a);
}

/* The lease has just been confirmed: act on what waited for that. */
void task_lease_confirmed(Task *t) {
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

static void schedule_finish_retry(Task *t);

static void on_finish_reply(const ControlReply *reply, void *userdata) {
        Task *t = userdata;
        Agent *a = t->agent;

        t->finish_call = NULL;
        if (reply->error >= 0 && (reply->code == 200 || reply->code == 409 || reply->code == 404)) {
                if (reply->code == 200)
                        log_task(LOG_INFO, t, MC_EVENT_TASK_FINISHED, "result delivered (%s).",
                                 strna(task_status_to_string(t->status)));
                else
                        log_task(LOG_NOTICE, t, MC_EVENT_RESULT_REJECTED, "the control rejected its result (%ld: %s).",
                                 reply->code, strna(reply->message));
                task_result_settled(t);
                return;
        }
        if (reply->error >= 0 && reply->code == 413 && json_object_object_get_ex(t->finish, "output", NULL)) {
                /* Still too large for this control: the tails and the exit code matter most. */
                log_task(LOG_WARNING, t, MC_EVENT_NONE,
                         "result too large for the control; sending it without the full output.");
                json_object_object_del(t->finish, "output");
                json_object_object_add(t->finish, "truncated", json_object_new_boolean(true));
                (void) outbox_write(a->outbox_dir, t->id, t->lease_token, t->finish);
                task_send_finish(t);
                return;
        }
        if (reply->error >= 0 && reply->code == 400)
                /* Our own bug, most likely: keep the result, and say so loudly. */
                log_task(LOG_ERR, t, MC_EVENT_NONE,
                         "the control refused the result as malformed: %s", strna(reply->message));
        else
                log_task(LOG_WARNING, t, MC_EVENT_RESULT_QUEUED, "result not delivered (%s); it stays in the outbox.",
                         reply->error < 0 ? strna(reply->message) : "control error");

        schedule_finish_retry(t);
}

/* The control has the task's result, or will never take it: the outbox entry goes, and the task with
 * it, or once its job is removed (on_job_removed()). */
void task_result_settled(Task *t) {
        Agent *a = t->agent;

        (void) outbox_remove(a->outbox_dir, t->id, t->lease_token);
        if (t->state == TASK_EXITED) {
                task_finish_stop(t);
                t->result_settled = true;       /* not renewed from now on */
                save_leases(a);
                update_fence_timer(a);
                return;
        }
        task_fence_remove(t);   /* left by a run before a restart: its job is gone */
        task_free(t);
        schedule_claim(a, 0);
        maybe_finish_stop(a);
}

/* The result stays in the outbox meanwhile; sending it again later is always safe (409 once taken). */
static void schedule_finish_retry(Task *t) {
        int r;

        t->finish_backoff_usec = MIN(MAX(t->finish_backoff_usec * 2, 250 * USEC_PER_MSEC), BACKOFF_MAX_USEC);
        r = sd_event_add_time_relative(t->agent->event, &t->finish_retry, CLOCK_MONOTONIC, t->finish_backoff_usec,
                                       10 * USEC_PER_MSEC, on_finish_retry, t);
        if (r < 0)
                log_task(LOG_ERR, t, MC_EVENT_NONE, "cannot schedule sending its result again.");
}

void task_send_finish(Task *t) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (t->finish_call || t->finish_retry || !t->finish)
                return;
        if (asprintf(&path, "/api/tasks/%s/finish", t->id) < 0) {
                schedule_finish_retry(t);
                return;
        }
        r = control_post(t->agent->control, path, t->finish, request_timeout(t->agent), on_finish_reply, t, &t->finish_call);
        if (r < 0) {
                /* Failing at once (out of memory, say) must not leave the result unsent until a restart. */
                log_task(LOG_WARNING, t, MC_EVENT_NONE,
                         "cannot send its result now (%s); trying again later.", strerror(-r));
                schedule_finish_retry(t);
        }
}
