/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the parts of mc-agent (agent.c, agent-task.c, agent-lease.c, agent-claim.c, agent-adopt.c)
 * share among themselves. */

#include "agent.h"
#include "log.h"

#define BACKOFF_MIN_USEC (100 * USEC_PER_MSEC)
#define BACKOFF_MAX_USEC (5 * USEC_PER_SEC)
/* How long an adopted container whose lease deadline we do not know may wait for the first renewal. */
#define ADOPT_WAIT_MAX_USEC (2 * USEC_PER_SEC)

/* agent.c */
uint64_t fence_margin(Agent *a);
uint64_t request_timeout(Agent *a);
void log_task(int level, Task *t, McEvent event, const char *fmt, ...) _printf_(4, 5);
void maybe_finish_stop(Agent *a);

/* agent-task.c */
Task *task_find(Agent *a, const char *id);
Task *task_new(Agent *a, const char *id, int64_t lease_token, int64_t attempt);
void task_free(Task *t);
bool task_holds_capacity(Task *t);
bool task_renewable(Task *t);
bool task_result_waits(Task *t);
bool task_fenceable(Task *t);
bool has_room(Agent *a);
void task_abandon(Task *t, StopReason why, const char *reason);
void task_report_started(Task *t);
void task_start(Task *t);
void task_lease_confirmed(Task *t);
void task_send_finish(Task *t);
void task_result_settled(Task *t);
extern const DriverJobCallbacks job_callbacks;

/* agent-output.c: the live output of a running task */
void task_live_output_start(Task *t);
void task_live_output_stop(Task *t);

/* agent-lease.c */
void save_leases(Agent *a);
/* Starts the fence keeper (on a helper thread) unless it runs or is being started. */
void keeper_ensure(Agent *a);
void update_fence_timer(Agent *a);
void schedule_heartbeat(Agent *a, uint64_t delay_usec);
void schedule_heartbeat_due(Agent *a, bool only_sooner);
void heartbeat_now(Agent *a);
void handle_revoked(Agent *a, json_object *e);
int on_fence(sd_event_source *s, uint64_t usec, void *userdata);
int on_heartbeat_timer(sd_event_source *s, uint64_t usec, void *userdata);
void heartbeat_sent_free(void *heartbeat);
/* Whether the heartbeat whose answer is being handled carried t's lease. */
bool heartbeat_included(void *heartbeat, Task *t);

/* agent-fence.c: the lease files of mc-fence-init */
int task_fence_init(Task *t);
/* Before the job is created: its directory and a first lease file (the init starts nothing yet). */
int task_fence_prepare(Task *t);
/* Every job's lease file, after a renewal or a change of state. */
void fence_write_all(Agent *a);
void task_fence_remove(Task *t);
/* Whether the job ended because its init fenced it (and not with that exit code of its own). */
bool task_killed_by_fence(Task *t, const DriverExit *e);
void fence_writes_done(Agent *a);
bool task_ended_before_fence(Task *t, uint64_t ended_usec);
/* Removes the directories of jobs no task holds (left by a previous run). */
void fence_dirs_sweep(Agent *a);

/* agent-claim.c */
void schedule_claim(Agent *a, uint64_t delay_usec);
int on_claim_timer(sd_event_source *s, uint64_t usec, void *userdata);
int on_register_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* agent-discovery.c */
/* Joins the DHT when DHT_BOOTSTRAP (or DHT_PORT) is set, or a socket was passed as "dht"; a no-op
 * otherwise. */
int discovery_init(Agent *a);
/* The first lookup, at once. */
void discovery_start(Agent *a);
void discovery_done(Agent *a);

/* agent-inputs.c */
/* The peer port, the cache (taking stock of it) and the fetcher. */
int inputs_init(Agent *a);
void inputs_done(Agent *a);
/* From the claim answer's inputs: pins each in the cache. -EBADMSG for an answer not as docs/api.md says. */
int task_inputs_parse(Task *t, json_object *inputs);
/* 1 when every input is in the cache (or there is none): start the task. 0: it is being fetched (state
 * TASK_FETCHING; task_start() runs again once all is there), or could not be, and the lease is being
 * given back (release) -- either way the caller leaves t alone. */
int task_inputs_fetch(Task *t);
/* Stops waiting for the inputs (the downloads go on for other tasks, or stop); they stay pinned. */
void task_inputs_stop_fetching(Task *t);
/* ... and unpins them. */
void task_inputs_free(Task *t);
/* The task cannot run here, or its run was not its own end (code engine_lost): its lease goes back to
 * the control (POST /api/tasks/{id}/release), which queues it again or fails it after max_attempts.
 * Nothing of it is renewed or reported any more; t is freed once the control answered. */
void task_release(Task *t, const char *code, const char *reason);
/* The claim's inputs could not be taken (task_inputs_parse() failed with error): the lease goes back. */
void task_release_bad_inputs(Task *t, int error);
/* The mounts for the driver: n_inputs elements, valid while t is. */
void task_inputs_for_driver(Task *t, DriverInput *ret);

/* agent-adopt.c */
int load_outbox(Agent *a);
void on_leftovers(int error, DriverLeftover *l, size_t n, void *userdata);
/* heartbeat: what the heartbeat that just answered carried (NULL when none did). */
void adopt_pending(Agent *a, void *heartbeat, bool final);
int on_adopt_timer(sd_event_source *s, uint64_t usec, void *userdata);
