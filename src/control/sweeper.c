/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Periodic work: the lease sweep, and housekeeping (counts for metrics and D-Bus, explanations for
 * queued tasks nobody can take, retention). */

#include "control.h"
#include "daemon-util.h"
#include "json-util.h"
#include "lease-watch.h"
#include "log.h"

#define HOUSEKEEPING_INTERVAL_USEC (2 * USEC_PER_SEC)
/* Every so many rounds: counting finished tasks and explaining waiting ones cost a scan each. */
#define FINAL_COUNTS_EVERY 5
#define EXPLAIN_EVERY 5
/* Retention deletes at most this many tasks per transaction: each is short, and holds the rows it
 * deletes only; a backlog is worked off batch after batch. */
#define RETENTION_BATCH 200

/* The lease sweep. Each round sends the leases whose renewal count this replica has seen standing
 * still for their TTL plus the grace (lease-watch.h), which the database expires if they still are as
 * seen, and reads back every lease held, whose counts the next round compares. Nothing in it reads a
 * wall clock: the database's own (now()) may step, as may ours. */

static void on_sweep_done(PGresult *r, int error, void *userdata) {
        Control *c = userdata;
        _cleanup_free_ LeaseSeen *seen = NULL;
        uint64_t now = boottime_usec();
        size_t n_seen = 0;
        int k;

        c->sweep_running = false;
        if (error < 0 || !r)
                /* What we saw stays as it was. A lease found due once the database answers again is
                 * one whose holder could not renew either, and has fenced itself (control-main.c,
                 * on_db_state()). */
                return;

        seen = calloc((size_t) PQntuples(r) + 1, sizeof(LeaseSeen));
        if (!seen) {
                log_oom();
                return;
        }
        for (int i = 0; i < PQntuples(r); i++) {
                const char *id = PQgetvalue(r, i, 0);

                if (PQgetisnull(r, i, 4)) {
                        /* Held: watched from now on. */
                        seen[n_seen++] = (LeaseSeen) {
                                .task_id = id,
                                .lease_token = strtoll(PQgetvalue(r, i, 1), NULL, 10),
                                .renewals = strtoll(PQgetvalue(r, i, 2), NULL, 10),
                                .ttl_ms = PQgetisnull(r, i, 3) ? 0 : strtoll(PQgetvalue(r, i, 3), NULL, 10),
                        };
                        continue;
                }

                const char *node = PQgetisnull(r, i, 6) ? NULL : PQgetvalue(r, i, 6);
                TaskStatus status = task_status_from_string(PQgetvalue(r, i, 4));

                c->metrics.leases_expired++;
                /* The schema's CHECK constraint allows only known states; should it ever change
                 * under us, the lease is still counted, only not announced. */
                if (status < 0) {
                        log_warning("The sweep returned task %s in unknown state \"%s\".", id, PQgetvalue(r, i, 4));
                        continue;
                }
                control_task_changed(c, id, status, MC_EVENT_LEASE_EXPIRED,
                                     node, PQgetvalue(r, i, 1), PQgetvalue(r, i, 5),
                                     status == TASK_STATUS_FAILED ? "Lease expired on the last attempt" :
                                                                    "Lease expired, task re-queued");
        }

        k = lease_watch_update(c->leases, seen, n_seen, now);
        if (k < 0)
                log_warning_errno(k, "Cannot keep the renewal counts of %zu leases: %m", n_seen);
}

static int on_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        Control *c = userdata;
        _cleanup_json_ json_object *due = NULL;
        const char *params[1];
        int r;

        (void) sd_event_source_set_time_relative(s, (uint64_t) c->config.sweep_interval_ms * USEC_PER_MSEC);

        if (c->sweep_running || !db_is_available(c->db))
                return 0;

        r = lease_watch_due(c->leases, boottime_usec(), c->config.lease_ttl_ms, c->config.lease_grace_ms, &due);
        if (r < 0) {
                log_oom();
                return 0;
        }
        params[0] = json_to_string(due);
        if (db_query(c->db, "SELECT id, lease_token, renewals, ttl_ms, expired, attempt, node_id "
                            "FROM mc_lease_watch($1::jsonb)", 1, params, on_sweep_done, c) >= 0)
                c->sweep_running = true;
        return 0;
}

static void on_counts_done(PGresult *r, int error, void *userdata) {
        Control *c = userdata;
        _cleanup_json_ json_object *o = NULL;
        TaskCounts n = c->counts;
        json_object *tasks, *v;
        const char *text;

        c->housekeeping_running = false;
        if (error < 0 || !r || PQntuples(r) != 1)
                return;
        text = PQgetvalue(r, 0, 0);
        if (json_parse_strict(text, strlen(text), &o, NULL) < 0)
                return;
        /* Only the states the answer has are updated: the finished ones come now and then. */
        n.valid = true;
        if (json_object_object_get_ex(o, "tasks", &tasks))
                for (TaskStatus i = 0; i < _TASK_STATUS_MAX; i++)
                        if (json_object_object_get_ex(tasks, task_status_to_string(i), &v))
                                n.by_status[i] = (uint64_t) json_object_get_int64(v);
        if (json_object_object_get_ex(o, "nodes_ready", &v))
                n.nodes_ready = (uint64_t) json_object_get_int64(v);

        if (memcmp(&n, &c->counts, sizeof(n)) != 0) {
                c->counts = n;
                control_bus_emit_counts_changed(c);
                daemon_notify_status("Serving; %" PRIu64 " queued, %" PRIu64 " running, %" PRIu64 " nodes ready.",
                                     n.by_status[TASK_STATUS_QUEUED],
                                     n.by_status[TASK_STATUS_LEASED] + n.by_status[TASK_STATUS_RUNNING], n.nodes_ready);
        }
}

static void on_explain_done(PGresult *r, int error, void *userdata) {
        /* Best effort: the explanation is refreshed next time. */
}

static void retention_run(Control *c);

static void on_retention_done(PGresult *r, int error, void *userdata) {
        Control *c = userdata;
        long n;
        char count[32];

        c->retention_running = false;
        if (error < 0 || !r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
                if (r && PQresultStatus(r) != PGRES_TUPLES_OK)
                        log_warning("Retention failed: %s", PQresultErrorMessage(r));
                return;         /* next round */
        }
        n = atol(PQgetvalue(r, 0, 0));
        if (n <= 0)
                return;
        snprintf(count, sizeof(count), "%ld", n);
        log_event(LOG_INFO, MC_EVENT_TASKS_DELETED, LOG_FIELDS("MC_COUNT", count, "MC_REASON", "retention"),
                  "Deleted %ld tasks that ended more than %" PRIi64 " s ago.", n, c->config.retention_sec);
        if (n >= RETENTION_BATCH && !c->stopping)
                retention_run(c);
}

/* Deletes the tasks that ended more than RETENTION_SEC ago, with their attempts and output. Every
 * replica does it; they skip each other's rows (SKIP LOCKED). */
static void retention_run(Control *c) {
        char age[32], batch[16];
        const char *params[] = { age, batch };

        if (c->config.retention_sec <= 0 || c->retention_running)
                return;
        snprintf(age, sizeof(age), "%" PRIi64, c->config.retention_sec * 1000);
        snprintf(batch, sizeof(batch), "%d", RETENTION_BATCH);
        if (db_query(c->db, "SELECT mc_retention($1::bigint, $2::integer)", 2, params, on_retention_done, c) >= 0)
                c->retention_running = true;
}

static int on_housekeeping(sd_event_source *s, uint64_t usec, void *userdata) {
        Control *c = userdata;
        char lost[32];
        const char *params[] = { lost, NULL };
        bool final;

        (void) sd_event_source_set_time_relative(s, HOUSEKEEPING_INTERVAL_USEC);
        if (c->housekeeping_running || !db_is_available(c->db))
                return 0;

        final = c->housekeeping_round % FINAL_COUNTS_EVERY == 0;
        snprintf(lost, sizeof(lost), "%" PRIi64, c->config.lease_ttl_ms);
        params[1] = final ? "true" : "false";
        if (db_query(c->db, "SELECT mc_counts($1::integer, $2::boolean)", 2, params, on_counts_done, c) >= 0)
                c->housekeeping_running = true;
        if (c->housekeeping_round % EXPLAIN_EVERY == 0)
                (void) db_query(c->db, "SELECT mc_explain_pending($1::integer)", 1, params, on_explain_done, c);
        retention_run(c);
        c->housekeeping_round++;
        return 0;
}

int control_timers_setup(Control *c) {
        int r;

        /* Nothing watched yet: every lease gets a full TTL from the first look, whatever happened
         * while no replica was up. */
        r = lease_watch_new(&c->leases);
        if (r < 0)
                return log_oom();

        r = sd_event_add_time_relative(c->event, &c->sweep_timer, CLOCK_MONOTONIC,
                                       (uint64_t) c->config.sweep_interval_ms * USEC_PER_MSEC, 10 * USEC_PER_MSEC,
                                       on_sweep, c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the sweep timer: %m");
        (void) sd_event_source_set_enabled(c->sweep_timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(c->sweep_timer, "lease-sweep");

        r = sd_event_add_time_relative(c->event, &c->housekeeping_timer, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC,
                                       100 * USEC_PER_MSEC, on_housekeeping, c);
        if (r < 0)
                return log_error_errno(r, "Failed to add the housekeeping timer: %m");
        (void) sd_event_source_set_enabled(c->housekeeping_timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(c->housekeeping_timer, "housekeeping");
        return 0;
}
