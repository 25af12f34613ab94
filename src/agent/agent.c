/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>
#include <sys/stat.h>

#include "agent-internal.h"
#include "capacity.h"
#include "config.h"
#include "daemon-util.h"
#include "fence-keeper.h"
#include "json-util.h"
#include "lease-store.h"
#include "log.h"

#ifndef MC_FENCE_INIT_PATH
#define MC_FENCE_INIT_PATH "/usr/libexec/mc/mc-fence-init"
#endif
#include "outbox.h"

/* How long SIGTERM waits for tasks being started to reach their container. */
#define STOP_WAIT_MAX_USEC (15 * USEC_PER_SEC)

static const char *const task_state_table[_TASK_STATE_MAX] = {
        [TASK_ADOPTING] = "adopting",
        [TASK_CLAIMED] = "claimed",
        [TASK_FETCHING] = "fetching",
        [TASK_STARTING] = "starting",
        [TASK_RUNNING] = "running",
        [TASK_EXITED] = "exited",
        [TASK_REPORTING] = "reporting",
};

const char *task_state_to_string(TaskState s) {
        return s < _TASK_STATE_MAX ? task_state_table[s] : "unknown";
}


/* How long before our deadline we stop a task ourselves. The process dies at once (the drivers signal
 * it directly), but the engine may take a while to notice, and anyone judging by the engine's events
 * (a test, an operator) should see the container gone before the deadline too: on a loaded machine
 * that took up to a second here. A third of the TTL leaves the heartbeat in between (also at TTL/3)
 * several retries before it comes to that. */
uint64_t fence_margin(Agent *a) {
        return MIN(MAX(a->ttl_usec / 3, 250 * USEC_PER_MSEC), 3 * USEC_PER_SEC);
}

uint64_t request_timeout(Agent *a) {
        /* A renewal that has not answered within a third of the TTL is better retried elsewhere. */
        return MIN((uint64_t) a->config.request_timeout_ms * USEC_PER_MSEC, MAX(a->ttl_usec / 3, 300 * USEC_PER_MSEC));
}

void log_task(int level, Task *t, McEvent event, const char *fmt, ...) {
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


int agent_start(Agent *a) {
        int r;

        if (asprintf(&a->keeper_pid_file, "%s/fence-keeper.pid", a->state_dir) < 0)
                return log_oom();
        /* Leases of a previous run may be in the file: the keeper watches them from now on. Without a
         * file there is nothing to fence yet (a keeper would leave at once), and the first lease starts
         * it (save_leases()). */
        if (access(a->lease_file, F_OK) >= 0)
                keeper_ensure(a);

        r = load_outbox(a);
        if (r < 0)
                return r;
        for (Task *t = a->tasks; t; t = t->next)
                task_send_finish(t);

        r = agent_metrics_start(a);
        if (r < 0)
                return r;

        r = a->driver->ops->list_leftovers(a->driver, on_leftovers, a);
        if (r < 0)
                return log_error_errno(r, "Cannot look for what a previous run left behind: %m");

        discovery_start(a);
        if (control_client_n_urls(a->control) == 0) {
                /* agent-discovery.c starts the registration when the DHT names a replica. */
                log_info("No control known yet: registering once the DHT names one.");
                daemon_notify_status("Looking for the controls of cluster \"%s\" in the DHT.", a->config.dht.cluster_name);
                return 0;
        }
        (void) sd_event_source_set_time_relative(a->register_timer, 0);
        (void) sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
        return 0;
}

void maybe_finish_stop(Agent *a) {
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
                if (t->status >= 0)
                        json_add_string(o, "status", task_status_to_string(t->status));
                if (t->drop_result)
                        json_add(o, "abandoned", json_object_new_boolean(true));
                if (t->n_inputs > 0) {
                        json_add_int64(o, "inputs", (int64_t) t->n_inputs);
                        json_add_int64(o, "inputs_ready", (int64_t) t->n_inputs_ready);
                        json_add_int64(o, "inputs_bytes", (int64_t) t->inputs_bytes);
                }
        }
        return strdup(json_to_string(arr));
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        agent_stop(userdata);
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
        _cleanup_free_ char *fence_init = NULL;
        const char *state;
        int r;

        a = calloc(1, sizeof(Agent));
        if (!a)
                return log_oom();
        a->config = *config;    /* the caller's strings stay the caller's */
        /* Before anything else: the passed sockets are made close-on-exec here, before any child. */
        r = agent_sockets_take(a);
        if (r < 0)
                return r;
        a->ttl_usec = (uint64_t) (config->lease_ttl_ms > 0 ? config->lease_ttl_ms : 5000) * USEC_PER_MSEC;

        /* SIGTERM and SIGINT go to agent_stop(), which lets tasks being started reach their container. */
        r = daemon_event_new_with_terminate(on_signal, a, &a->event);
        if (r < 0)
                return r;
        r = offload_new(a->event, "mc-agent-keeper", &a->helpers);
        if (r < 0)
                return log_error_errno(r, "Cannot start the agent's helper thread: %m");

        state = daemon_state_directory("/var/lib/mc-agent");
        a->state_dir = strdup(state);
        if (!a->state_dir || asprintf(&a->outbox_dir, "%s/outbox", state) < 0 ||
            asprintf(&a->lease_file, "%s/leases.json", state) < 0 || asprintf(&a->fence_dir, "%s/fence", state) < 0)
                return log_oom();
        /* Searchable, not listable: exec tasks, which run as another user, reach their work directories
         * and lease files in here by name; everything else in it is mode 0600/0700 itself. */
        if (mkdir(a->state_dir, 0711) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the state directory %s: %m", a->state_dir);
        /* Bind-mounted from here into containers, read by the init as whatever user the image has. */
        if (mkdir(a->fence_dir, 0755) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create %s: %m", a->fence_dir);
        r = daemon_helper_path("mc-fence-init", MC_FENCE_INIT_PATH, &fence_init);
        if (r < 0)
                return log_oom();
        if (access(fence_init, X_OK) < 0)
                return log_error_errno(errno, "Cannot find mc-fence-init (%s), which every task runs under: %m",
                                       fence_init);
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
        r = curl_event_set_tls(a->curl, &config->tls);
        if (r < 0)
                return log_oom();
        r = control_client_new(a->event, a->curl, config->control_urls, config->token, &a->control);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the control client: %m");
        r = discovery_init(a);
        if (r < 0)
                return r;
        r = inputs_init(a);
        if (r < 0)
                return r;

        if (streq(config->driver, "docker"))
                r = docker_driver_new(a->event, a->curl, &(DockerDriverConfig) {
                                .socket_path = config->docker_socket,
                                .node_id = config->node_id,
                                .network = isempty(config->docker_network) ? NULL : config->docker_network,
                                .output_cap = (size_t) config->output_cap_bytes,
                                .tail_max = (size_t) config->tail_bytes,
                                .fence_init = fence_init,
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
                                .fence_init = fence_init,
                                .user = config->exec_user,
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

        log_info("Node %s: driver %s, runtime %s, capacity %.2f CPUs and %" PRIi64 " MiB, controls: %s%s%s.",
                 config->node_id, a->driver->ops->name, config->docker_runtime,
                 (double) a->capacity_nano_cpus / 1e9, a->capacity_memory_bytes >> 20,
                 strv_length(config->control_urls) > 0 ? config->control_urls[0] : "",
                 strv_length(config->control_urls) > 1 ? " and more" : "",
                 !a->dht ? "" : strv_length(config->control_urls) > 0 ? ", and those found in the DHT" :
                 "those found in the DHT");
        *ret = TAKE_PTR(a);
        return 0;
}

Agent *agent_free(Agent *a) {
        if (!a)
                return NULL;
        while (a->tasks)
                task_free(a->tasks);
        driver_leftovers_free(a->pending, a->n_pending);
        agent_metrics_stop(a);
        agent_sockets_close(a);
        inputs_done(a);
        discovery_done(a);
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
        /* A keeper's start still queued runs now: with leases held, it fences them once we are gone. */
        offload_call_cancel(a->keeper_call);
        offload_free(a->helpers);
        control_client_free(a->control);
        curl_event_free(a->curl);
        sd_event_unref(a->event);
        free(a->state_dir);
        free(a->outbox_dir);
        free(a->lease_file);
        free(a->fence_dir);
        free(a->keeper_pid_file);
        free(a);
        return NULL;
}
