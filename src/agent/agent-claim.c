/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Registration, and long-poll claims while there is room. */

#include "agent-internal.h"
#include "config.h"
#include "daemon-util.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"
#include "outbox.h"

/* ---------------------------------------------------------------------------------------------- */
/* Claims */

static void on_claim_reply(const ControlReply *reply, void *userdata) {
        Agent *a = userdata;
        ControlClaimAnswer c;
        Task *t;
        int r;

        a->claim_call = NULL;
        if (reply->error < 0 || (reply->code != 200 && reply->code != 204)) {
                a->claims_failed++;
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
                a->claims_empty++;
                schedule_claim(a, 0);
                return;
        }

        if (control_claim_answer_parse(reply->json, &c) < 0) {
                log_error("The control's claim answer is not what docs/api.md says; ignoring it.");
                schedule_claim(a, USEC_PER_SEC);
                return;
        }
        /* With the wall clock, for the dispatch benchmark (bench/agent). */
        log_debug("Task %s: claim answered at %.6f.", c.task_id, (double) realtime_usec() / 1e6);
        if (c.lease_ttl_ms > 0) {
                uint64_t ttl = (uint64_t) c.lease_ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        ttl = MIN(ttl, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
                a->ttl_usec = ttl;
        }

        t = task_find(a, c.task_id);
        if (t) {
                /* A new lease on a task we still hold (an old attempt's result being delivered): the
                 * old one is superseded. */
                log_task(LOG_NOTICE, t, MC_EVENT_NONE, "superseded by lease %" PRIi64 ".", c.lease_token);
                task_abandon(t, STOP_REVOKED, "superseded by a new lease");
        }
        t = task_new(a, c.task_id, c.lease_token, c.attempt);
        if (!t) {
                log_oom();
                schedule_claim(a, USEC_PER_SEC);
                return;
        }
        t->record = json_object_get(c.record);
        t->nano_cpus = c.nano_cpus;
        t->memory_bytes = c.memory_bytes;
        t->timeout_sec = c.timeout_sec;
        /* The control's deadline is later than this: it started the lease after it had held the claim
         * for held_ms, which was after we sent it. A control that does not say (an older replica) may
         * have started it right after the send. */
        t->deadline_usec = reply->sent_usec + (uint64_t) MAX(c.held_ms, (int64_t) 0) * USEC_PER_MSEC + a->ttl_usec;
        t->state = TASK_CLAIMED;
        a->claims_leased++;
        log_task(LOG_INFO, t, MC_EVENT_LEASE_ACQUIRED, "leased (attempt %" PRIi64 ").", c.attempt);
        save_leases(a);
        update_fence_timer(a);
        /* Its deadline counts from the claim's send, not from the last heartbeat's: it may be the
         * first lease due for renewal. A heartbeat in flight reschedules when it is answered. */
        if (!a->heartbeat_call && a->registered)
                schedule_heartbeat_due(a, true);
        /* Pinned from now on: the cache evicts nothing this task will need. */
        r = task_inputs_parse(t, c.inputs);
        if (r < 0) {
                log_task(LOG_ERR, t, MC_EVENT_NONE, "its inputs in the claim answer cannot be used: %s", strerror(-r));
                task_release_bad_inputs(t, r);
                schedule_claim(a, 0);
                return;
        }

        if (t->deadline_usec > now_usec() + fence_margin(a) + a->ttl_usec / 3)
                task_start(t);
        else {
                /* The claim took long to answer: renew the lease first. */
                log_task(LOG_INFO, t, MC_EVENT_NONE, "claim answered late; renewing before starting it.");
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
        /* At most a third of the TTL, even though held_ms keeps a late grant's deadline right: a claim
         * is answered before the control can have taken back a silent node's leases (at least two
         * thirds of a TTL after its last renewal). With longer waits, an agent that hung (SIGSTOP, a
         * stalled VM) with a claim waiting was granted the very task its expired lease had given
         * back, and that lease expired too (test-agent-clock). And no more than the control takes. */
        wait_ms = MIN((uint64_t) a->config.claim_wait_ms, a->ttl_usec / 3 / USEC_PER_MSEC);
        if (a->claim_wait_max_ms > 0)
                wait_ms = MIN(wait_ms, a->claim_wait_max_ms);
        if (json_add_string(o, "node_id", a->config.node_id) < 0 || json_add_int64(o, "wait_ms", (int64_t) wait_ms) < 0)
                return (void) log_oom();
        r = control_post(a->control, "/api/agents/claim", o, wait_ms * USEC_PER_MSEC + request_timeout(a),
                         on_claim_reply, a, &a->claim_call);
        if (r < 0) {
                log_error_errno(r, "Cannot send a claim: %m");
                schedule_claim(a, USEC_PER_SEC);
        }
}

int on_claim_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        if (a->claim_call || !a->registered || a->draining || a->drained || a->stopping || !a->adopted || !has_room(a))
                return 0;
        if (!driver_available(a->driver)) {
                /* A task claimed now would wait here while another node could run it: ask again soon. */
                schedule_claim(a, USEC_PER_SEC);
                return 0;
        }
        send_claim(a);
        return 0;
}

void schedule_claim(Agent *a, uint64_t delay_usec) {
        if (!a->claim_timer || a->claim_call)
                return;
        (void) sd_event_source_set_time_relative(a->claim_timer, delay_usec);
        (void) sd_event_source_set_enabled(a->claim_timer, SD_EVENT_ONESHOT);
}

/* The control says the node is drained (POST /api/nodes/{id}/drain), or no longer: no claims meanwhile,
 * whatever the node's own (D-Bus) drain says. */
void agent_set_drained(Agent *a, bool drained) {
        if (a->drained == drained)
                return;
        a->drained = drained;
        log_event(LOG_INFO, drained ? MC_EVENT_NODE_DRAINING : MC_EVENT_NODE_RESUMED,
                  LOG_FIELDS("NODE_ID", a->config.node_id, "MC_REASON", "control"),
                  drained ? "Drained through the control: no new claims; running tasks finish." :
                            "Undrained through the control.");
        if (drained)
                control_call_cancel(TAKE_PTR(a->claim_call));
        else
                schedule_claim(a, 0);
}

void agent_set_draining(Agent *a, bool draining) {
        if (a->draining == draining)
                return;
        a->draining = draining;
        log_event(LOG_INFO, draining ? MC_EVENT_NODE_DRAINING : MC_EVENT_NODE_RESUMED,
                  LOG_FIELDS("NODE_ID", a->config.node_id),
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
        int64_t wait_max_ms = 0;

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
        if (reply->json && control_answer_lease_ttl_ms(reply->json, &ttl_ms) >= 0) {
                a->ttl_usec = (uint64_t) ttl_ms * USEC_PER_MSEC;
                if (a->config.lease_ttl_ms > 0)
                        a->ttl_usec = MIN(a->ttl_usec, (uint64_t) a->config.lease_ttl_ms * USEC_PER_MSEC);
        }
        a->claim_wait_max_ms = reply->json && json_get_int64(reply->json, "claim_wait_max_ms", &wait_max_ms) >= 0 &&
                               wait_max_ms > 0 ? (uint64_t) wait_max_ms : 0;
        a->registered = true;
        log_event(LOG_INFO, MC_EVENT_NODE_REGISTERED, LOG_FIELDS("NODE_ID", a->config.node_id),
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

int on_register_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        if (!a->register_call && !a->stopping)
                send_register(a);
        return 0;
}
