/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Starting again: results waiting in the outbox, and containers a previous run left behind. */

#include "agent-internal.h"
#include "config.h"
#include "daemon-util.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"
#include "outbox.h"

/* ---------------------------------------------------------------------------------------------- */
/* Start: the outbox, and what a previous run left behind */

static void adopt_task(Task *t, const DriverLeftover *l) {
        int r;

        t->state = TASK_STARTING;
        r = t->agent->driver->ops->job_adopt(t->agent->driver, l, &job_callbacks, t, &t->job);
        if (r < 0) {
                log_task(LOG_ERR, t, MC_EVENT_NONE, "cannot adopt its container: %s", strerror(-r));
                t->state = TASK_CLAIMED;
                task_abandon(t, STOP_REVOKED, "adoption failed");
        }
}

/* Nothing is allocated for the answer: a stop may free the driver, and the call with it, before the
 * engine answers. The handle is in the CONTAINER_DISCARDED event just before. */
static void on_discarded(int error, void *userdata) {
        if (error < 0)
                log_warning_errno(error, "Cannot remove a leftover container: %m");
}

static void discard_leftover(Agent *a, const DriverLeftover *l, const char *why) {
        int r;

        log_event(LOG_NOTICE, MC_EVENT_CONTAINER_DISCARDED,
                  LOG_FIELDS("TASK_ID", l->task_id, "NODE_ID", a->config.node_id),
                  "Removing %s of task %s (lease %" PRIi64 "): %s.", l->handle, l->task_id, l->lease_token, why);
        r = a->driver->ops->leftover_discard(a->driver, l, on_discarded, NULL);
        if (r < 0)
                log_warning_errno(r, "Cannot remove %s: %m", l->handle);
}

/* Decides over the leftovers found at start: adopts those whose lease is valid (a deadline ahead of
 * us, from the lease file or from a renewal), removes those whose lease is gone, and keeps the rest
 * waiting, until `final` (the wait is over) or a heartbeat that carried their lease has answered. A
 * container adopted on the strength of the lease file is fenced like any other if no renewal comes. */
void adopt_pending(Agent *a, void *heartbeat, bool final) {
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
                        log_task(LOG_INFO, t, MC_EVENT_CONTAINER_ADOPTED, "adopting %s (%s).", l->handle, l->state);
                        adopt_task(t, l);
                } else if (final || (heartbeat && heartbeat_included(heartbeat, t))) {
                        discard_leftover(a, l, "its lease could not be confirmed");
                        log_task(LOG_NOTICE, t, MC_EVENT_LEASE_EXPIRED,
                                 "not adopted: its lease could not be confirmed.");
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
        fence_dirs_sweep(a);
        driver_leftovers_free(a->pending, a->n_pending);
        a->pending = NULL;
        a->n_pending = 0;
        (void) sd_event_source_set_enabled(a->adopt_timer, SD_EVENT_OFF);
        schedule_claim(a, 0);
        daemon_notify_status("Serving node %s.", a->config.node_id);
}

int on_adopt_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        adopt_pending(userdata, NULL, true);
        return 0;
}

void on_leftovers(int error, DriverLeftover *l, size_t n, void *userdata) {
        Agent *a = userdata;
        LeaseRecord *records = NULL;
        size_t n_records = 0;
        size_t kept = 0;
        uint64_t ttl = 0;
        int r;

        if (error < 0) {
                /* Nothing is adopted then; the control re-queues their tasks after their leases. */
                log_error_errno(error, "Cannot list what a previous run left behind: %m");
                a->leftovers_listed = a->adopted = true;
                fence_dirs_sweep(a);
                schedule_claim(a, 0);
                return;
        }
        r = lease_store_load(a->lease_file, &ttl, NULL, &records, &n_records);
        if (r < 0)
                /* Leftovers are then not adopted but stopped; their tasks run again after their leases. */
                log_warning_errno(r, "Cannot read the lease file %s, adopting nothing: %m", a->lease_file);
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
                        if (streq(records[j].task_id, t->id) && records[j].lease_token == t->lease_token) {
                                t->deadline_usec = records[j].deadline_usec;
                                /* What the previous run last promised the job's init. */
                                t->fence_promise_usec = records[j].fence_usec;
                                /* Not stop_reason: a job still running must be stopped again
                                 * (its re-armed timeout does that at once). */
                                t->timed_out_before = records[j].timed_out;
                        }
                log_task(LOG_INFO, t, MC_EVENT_NONE, "found %s (%s) from a previous run; %s.", l[i].handle, l[i].state,
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

int load_outbox(Agent *a) {
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
                t->status = task_status_from_string(status);
                t->exit_code = code;
                t->state = TASK_REPORTING;
                log_task(LOG_INFO, t, MC_EVENT_RESULT_QUEUED, "result (%s) found in the outbox; sending it.", status);
        }
        outbox_entries_free(e, n);
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
