/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Leases: one heartbeat renews them all; what the control revokes is stopped; what cannot be renewed
 * before our own deadline is stopped by us (and, should we be gone, by the fence keeper). */

#include "agent-internal.h"
#include "config.h"
#include "daemon-util.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"
#include "fence-keeper.h"
#include "outbox.h"

/* The fence keeper is started on a thread of ours, not on the loop: starting a process waits, on a
 * host where many processes move between cgroups, for the kernel's lock on such moves (seconds, with
 * 1 000 agents on one host). An agent's first lease, when its keeper had left for want of anything to
 * fence, came with that wait on the loop, and the lease was fenced before its first renewal. */
typedef struct KeeperStart {
        Agent *agent;
        char *lease_file, *pid_file;
} KeeperStart;

static int keeper_start_work(void *userdata) {
        KeeperStart *k = userdata;

        return fence_keeper_ensure(k->lease_file, k->pid_file);
}

static void keeper_start_done(int result, void *userdata) {
        KeeperStart *k = userdata;

        k->agent->keeper_call = NULL;
        if (result < 0)
                log_warning("Running without a fence keeper: while the agent is away, only each task's own "
                            "mc-fence-init fences it.");
}

static void keeper_start_free(void *userdata) {
        KeeperStart *k = userdata;

        free(k->lease_file);
        free(k->pid_file);
        free(k);
}

void keeper_ensure(Agent *a) {
        KeeperStart *k;
        int r;

        if (a->keeper_call || !a->keeper_pid_file)
                return;
        k = calloc(1, sizeof(KeeperStart));
        if (!k)
                return (void) log_oom();
        *k = (KeeperStart) { .agent = a, .lease_file = strdup(a->lease_file), .pid_file = strdup(a->keeper_pid_file) };
        if (!k->lease_file || !k->pid_file) {
                keeper_start_free(k);
                return (void) log_oom();
        }
        r = offload_submit(a->helpers, keeper_start_work, keeper_start_done, keeper_start_free, k, &a->keeper_call);
        if (r < 0) {
                log_warning_errno(r, "Cannot start the fence keeper: %m");
                keeper_start_free(k);
        }
}

void save_leases(Agent *a) {
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
                                .cgroup_dir = t->job ? t->job->cgroup_dir : NULL,
                                .timed_out = t->stop_reason == STOP_TIMEOUT || t->timed_out_before,
                        };
        /* The inits' first: they fence without anyone's help. */
        fence_write_all(a);
        r = lease_store_save(a->lease_file, a->ttl_usec, getpid(), l, n);
        if (r < 0)
                log_warning_errno(r, "Cannot save the lease deadlines to %s: %m", a->lease_file);
        fence_writes_done(a);
        free(l);
        /* A keeper that left (no agent, nothing to fence) just before we came back is started again. */
        if (n > 0)
                keeper_ensure(a);
}


/* ---------------------------------------------------------------------------------------------- */
/* Fencing */

int on_fence(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        uint64_t now = now_usec(), margin = fence_margin(a);
        Task *t, *next;

        for (t = a->tasks; t; t = next) {
                next = t->next;
                if (task_fenceable(t) && t->deadline_usec <= now + margin) {
                        char why[160];
                        /* Wall clock in the message, so that it can be set against Docker's events. */
                        snprintf(why, sizeof(why), "its lease could not be renewed; deadline in %" PRIi64
                                 " ms, at %.3f", ((int64_t) t->deadline_usec - (int64_t) now) / 1000,
                                 (double) (realtime_usec() + t->deadline_usec - now) / 1e6);
                        a->fences++;
                        task_abandon(t, STOP_FENCE, why);
                }
        }
        update_fence_timer(a);
        return 0;
}

/* CLOCK_MONOTONIC: the first fence we would act on; UINT64_MAX when there is none. */
static uint64_t first_fence_usec(Agent *a) {
        uint64_t first = UINT64_MAX, margin = fence_margin(a);

        for (Task *t = a->tasks; t; t = t->next)
                if (task_fenceable(t))
                        first = MIN(first, t->deadline_usec > margin ? t->deadline_usec - margin : 0);
        return first;
}

void update_fence_timer(Agent *a) {
        uint64_t first = first_fence_usec(a);
        int r;

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

void schedule_heartbeat(Agent *a, uint64_t delay_usec) {
        int r;

        r = sd_event_source_set_time_relative(a->heartbeat_timer, delay_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->heartbeat_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot arm the heartbeat timer: %m");
}

/* When the next renewal is due. Every lease is renewed a quarter of the TTL after the renewal (or the
 * claim) that set its deadline was sent: from then until its fence (deadline - margin, at most a third
 * of the TTL before it) the heartbeat has five twelfths of the TTL to be answered, a retry included.
 * Counted from the send, not from the answer, so that slow answers do not add up; and per lease,
 * because a lease claimed between two heartbeats counts from its claim, which may have been sent up to
 * a third of the TTL before the heartbeat in flight: renewed on the heartbeats' cadence only, it could
 * reach its fence first, which is what made a busy node give up tasks the control still gave it. A node
 * without leases is only kept seen: a third of the TTL after the last heartbeat. Never sooner than a
 * failed one is retried after, so that a lease the control leaves out of its answer does not make us
 * send heartbeats back to back until its fence. */
static uint64_t heartbeat_retry_usec(Agent *a) {
        return MIN(MAX(a->ttl_usec / 15, 100 * USEC_PER_MSEC), USEC_PER_SEC);
}

void schedule_heartbeat_due(Agent *a, bool only_sooner) {
        uint64_t due = a->heartbeat_sent_usec + a->ttl_usec / 3, ahead = a->ttl_usec - a->ttl_usec / 4, armed;
        int enabled = SD_EVENT_OFF, r;

        for (Task *t = a->tasks; t; t = t->next)
                if (t->deadline_usec > 0 && task_renewable(t))
                        due = MIN(due, t->deadline_usec > ahead ? t->deadline_usec - ahead : 0);
        due = MAX(due, a->heartbeat_sent_usec + heartbeat_retry_usec(a));
        /* A heartbeat wanted sooner (heartbeat_now()) is not put off. */
        if (only_sooner && sd_event_source_get_enabled(a->heartbeat_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF &&
            sd_event_source_get_time(a->heartbeat_timer, &armed) >= 0 && armed <= due)
                return;
        r = sd_event_source_set_time(a->heartbeat_timer, MAX(due, (uint64_t) 1));
        if (r >= 0)
                r = sd_event_source_set_enabled(a->heartbeat_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_error_errno(r, "Cannot arm the heartbeat timer: %m");
}

void handle_revoked(Agent *a, json_object *e) {
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
                log_task(LOG_INFO, t, MC_EVENT_LEASE_REVOKED, "cancelled by the control.");
                t->stop_reason = STOP_CANCEL;
                t->deadline_usec = 0;   /* nothing else runs it: no fencing needed */
                switch (t->state) {
                case TASK_ADOPTING:
                case TASK_CLAIMED:
                case TASK_FETCHING: {
                        /* Never ran (here): say so, and be done. An adopted container is removed by
                         * the adoption pass, which no longer finds the task waiting. */
                        _cleanup_json_ json_object *o = json_object_new_object();

                        if (!o || json_add_string(o, "node_id", a->config.node_id) < 0 ||
                            json_add_int64(o, "lease_token", t->lease_token) < 0 ||
                            json_add_string(o, "status", task_status_to_string(TASK_STATUS_CANCELLED)) < 0 ||
                            json_add_string(o, "reason", "cancelled before it started") < 0) {
                                log_oom();
                                break;
                        }
                        t->finish = TAKE_PTR(o);
                        t->status = TASK_STATUS_CANCELLED;
                        if (t->state == TASK_FETCHING) {
                                /* Its downloads stop unless other tasks wait for them; what came stays. */
                                task_inputs_stop_fetching(t);
                                agent_bus_fetching_changed(a);
                        }
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
        if (task_result_waits(t) && streq(reason, "expired")) {
                /* The process is gone, so nothing runs twice; a finish needs no live lease, only a
                 * current token: the control takes it until it hands the task out again (409). */
                log_task(LOG_DEBUG, t, MC_EVENT_NONE, "lease expired while its result waits; still sending it.");
                return;
        }
        if (streq(reason, "finished") && task_result_waits(t)) {
                /* Our result got there; its answer did not. */
                log_task(LOG_INFO, t, MC_EVENT_TASK_FINISHED, "the control already has its result.");
                task_result_settled(t);
                return;
        }
        task_abandon(t, STOP_REVOKED, reason);
}

typedef struct HeartbeatSent {
        Agent *agent;
        size_t n;
        struct { char *id; int64_t token; } leases[];
} HeartbeatSent;

void heartbeat_sent_free(void *p) {
        HeartbeatSent *h = p;

        for (size_t i = 0; i < h->n; i++)
                free(h->leases[i].id);
        free(h);
}

bool heartbeat_included(void *sent, Task *t) {
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
                a->heartbeats_failed++;
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
                schedule_heartbeat(a, heartbeat_retry_usec(a));
                return;
        }

        if (a->heartbeat_failures > 0)
                log_info("Heartbeat delivered again (via %s).", reply->url);
        log_debug("Heartbeat sent %.3f answered in %" PRIu64 " ms.",
                  (double) (realtime_usec() - (now_usec() - reply->sent_usec)) / 1e6,
                  (now_usec() - reply->sent_usec) / USEC_PER_MSEC);
        a->heartbeat_failures = 0;
        a->heartbeats_answered++;
        a->last_heartbeat_ok_usec = reply->sent_usec;
        if (control_answer_lease_ttl_ms(reply->json, &ttl_ms) >= 0) {
                uint64_t ttl = (uint64_t) ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        ttl = MIN(ttl, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
                a->ttl_usec = ttl;
        }

        agent_set_drained(a, json_object_object_get_ex(reply->json, "drain", &renewed) &&
                             json_object_is_type(renewed, json_type_boolean) && json_object_get_boolean(renewed));

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
                schedule_heartbeat_due(a, false);
        /* Tasks that were waiting for the lease to be confirmed may now start. */
        for (Task *t = a->tasks; t; t = t->next)
                if (t->state == TASK_RUNNING && !t->started_reported)
                        task_report_started(t);
}

/* How long a heartbeat may wait for its answer. With several replicas, request_timeout(), then the
 * next one. With one, until the first lease's fence, after which an answer is of no use: a retry
 * could only go to the same replica, behind the queue the first one waited in (and the control drops
 * a heartbeat whose agent has gone). And on a node short of CPU the answer can lie in the socket
 * while the agent waits to run; once it runs, libcurl sees the time up before it reads and calls it a
 * timeout ("0 bytes received"): that is how loaded nodes fenced leases the control had renewed in
 * milliseconds. */
static uint64_t heartbeat_timeout(Agent *a) {
        uint64_t timeout = request_timeout(a), now = now_usec(), fence;

        if (control_client_n_urls(a->control) > 1)
                return timeout;
        fence = first_fence_usec(a);
        if (fence != UINT64_MAX && fence > now + timeout)
                timeout = fence - now;
        return timeout;
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
        /* What is past its fence time is fenced first, not renewed: the control no longer refuses a
         * late renewal (only its sweep takes a lease back), and one it took would keep the lease of a
         * task that is being killed from expiring. (Both timers are due together after a stop.) */
        (void) on_fence(a->fence_timer, 0, a);
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
        r = control_post(a->control, "/api/agents/heartbeat", o, heartbeat_timeout(a), on_heartbeat_reply, h,
                         &a->heartbeat_call);
        if (r >= 0) {
                a->heartbeat_sent = h;
                a->heartbeat_sent_usec = now_usec();
        }
        else {
                heartbeat_sent_free(h);
                log_error_errno(r, "Cannot send a heartbeat: %m");
                schedule_heartbeat(a, USEC_PER_SEC);
        }
}

int on_heartbeat_timer(sd_event_source *s, uint64_t usec, void *userdata) {
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

void heartbeat_now(Agent *a) {
        if (a->heartbeat_call)
                a->heartbeat_again = true;
        else if (a->registered)
                schedule_heartbeat(a, 0);
}
