/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* mc-agent: registers with the control, long-polls claims while it has room, runs each leased task
 * through a driver (Docker or exec), renews every lease with one heartbeat per TTL/3, and stops a
 * task's process itself when its lease cannot be renewed before the deadline the agent computes
 * (the time it sent the last successful renewal plus the TTL). Results go to an outbox on disk before
 * they are sent. A restarted agent adopts the containers whose leases are still valid. */

#include <json-c/json.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "control-client.h"
#include "curl-event.h"
#include "daemon-util.h"
#include "dht-daemon.h"
#include "driver.h"
#include "list.h"
#include "macro.h"
#include "offload.h"
#include "prometheus.h"
#include "task-status.h"

typedef struct AgentConfig {
        char **control_urls;
        char *node_id;
        char *token;
        char *token_file;
        char *driver;
        char *docker_runtime;
        char *docker_socket;
        char *docker_network;
        int64_t capacity_nano_cpus;
        int64_t capacity_memory_bytes;
        char **labels;
        int64_t lease_ttl_ms;
        int64_t max_tasks;
        int64_t claim_wait_ms;
        int64_t stop_grace_sec;
        int64_t output_cap_bytes;
        int64_t tail_bytes;
        int64_t request_timeout_ms;
        char *cgroup_root;
        char *cgroup_path;
        char *exec_user;                /* EXEC_USER: "" = mc-task, else nobody (exec-user.h) */
        bool bus;
        char *bus_group;
        char *log_level;
        TlsClientSettings tls;  /* CONTROL_CA, TLS_CERT, TLS_KEY */
        DhtSettings dht;        /* with DHT_BOOTSTRAP (or DHT_PORT), controls are also found in the DHT */
        /* Task inputs (agent-inputs.c, inputs/). */
        char **seeders;                 /* SEEDERS: HOST:PORT of mc-seeders, resolved at start */
        int64_t peer_port;              /* PEER_PORT: where other agents fetch from us; 0 any, -1 none */
        char *input_cache_dir;          /* INPUT_CACHE_DIR: "" = $STATE_DIRECTORY/inputs */
        int64_t cache_max_bytes;        /* CACHE_MAX_BYTES */
        int64_t input_fetch_timeout_sec;/* INPUT_FETCH_TIMEOUT_SEC: no progress for this long fails */
        int64_t input_fetches;          /* INPUT_FETCHES: downloads at once */
        /* GET /metrics (agent-metrics.c). */
        int64_t metrics_port;           /* METRICS_PORT: 0 = none */
        char *metrics_address;          /* METRICS_ADDRESS */
} AgentConfig;

typedef enum TaskState {
        TASK_ADOPTING,          /* found at start; waiting to know whether its lease is valid */
        TASK_CLAIMED,           /* leased; not started yet */
        TASK_FETCHING,          /* leased; its inputs are being brought into the cache */
        TASK_STARTING,          /* the driver is creating/starting it */
        TASK_RUNNING,
        TASK_EXITED,            /* ended; its process being removed, its result (if any) being sent */
        TASK_REPORTING,         /* removed; result in the outbox, being sent */
        _TASK_STATE_MAX,
} TaskState;

typedef enum StopReason {
        STOP_NONE,
        STOP_TIMEOUT,           /* timeout_sec ran out: timed_out */
        STOP_CANCEL,            /* the control revoked the lease as cancelled: cancelled */
        STOP_FENCE,             /* no renewal before the deadline: killed, no result */
        STOP_REVOKED,           /* the lease is gone (expired, superseded, finished): killed, no result */
} StopReason;

typedef struct Agent Agent;
typedef struct TaskInput TaskInput;

typedef struct Task {
        Agent *agent;
        char *id;
        int64_t lease_token;
        int64_t attempt;
        TaskState state;
        json_object *record;            /* the task as the claim returned it (NULL when adopted) */
        int64_t nano_cpus, memory_bytes, timeout_sec;
        uint64_t deadline_usec;         /* our lease deadline (CLOCK_MONOTONIC); 0 when unknown */
        DriverJob *job;
        char *handle;
        uint64_t started_realtime_usec;
        StopReason stop_reason;
        bool timed_out_before;          /* a previous run of the agent stopped it for its timeout */
        bool drop_result;
        char *lost_reason;              /* the engine ended its container: the lease goes back once it is removed */
        bool started_reported, started_in_flight;
        sd_event_source *timeout_timer;
        ControlCall *started_call, *finish_call;
        json_object *finish;            /* the finish body, once known */
        bool result_settled;           /* the control answered it while the job was still being removed */
        TaskStatus status;              /* its final status, once known (_TASK_STATUS_INVALID before) */
        int64_t exit_code;
        sd_event_source *finish_retry;
        uint64_t finish_backoff_usec;
        /* Inputs (agent-inputs.c): pinned in the cache from the claim to the task's end. */
        TaskInput *inputs;
        size_t n_inputs, n_inputs_ready;
        bool inputs_ready;              /* every input is in the cache (or there is none) */
        uint64_t inputs_ready_usec;     /* CLOCK_REALTIME, when they were */
        uint64_t inputs_bytes;
        /* What the task's inputs cost, by source, for the control's /metrics: received from SEEDERS,
         * from other peers, and found complete in the cache. A download shared by several tasks
         * counts for the first one told. */
        uint64_t inputs_bytes_seeders, inputs_bytes_agents, inputs_bytes_cache;
        ControlCall *release_call;      /* giving the lease back (inputs_unavailable, disk_full) */
        /* Its lease file for mc-fence-init (agent-lease.c, fence-init/fence-protocol.h). */
        char *fence_dir;                /* <state>/fence/<task>-<lease>: the lease file's directory */
        uint64_t fence_promise_usec;    /* CLOCK_MONOTONIC: the fence time the last write promised */
        uint64_t fence_replaced_usec;   /* the promise the writes in progress replace (fence_writes_done()) */
        bool fence_gap;                 /* a promise ran out before the next write: the init or the keeper
                                         * may have fenced */
        uint64_t kill_sent_usec;        /* CLOCK_MONOTONIC: when we sent its process SIGKILL, 0 if we did not */
        /* Live output (agent-output.c): what of the job's output went to the control so far. */
        sd_event_source *live_timer;
        ControlCall *live_call;
        char *live_pending;             /* the chunk being sent (valid UTF-8), until accepted */
        size_t live_pending_raw;        /* the output bytes it was made of */
        uint64_t live_raw_offset;       /* output bytes sent */
        int64_t live_sent;              /* text bytes the control stored */
        unsigned live_chunks;           /* sent in this flush interval */
        bool live_stopped;
        LIST_FIELDS(struct Task);
} Task;

typedef enum AgentSocket {
        AGENT_SOCKET_METRICS,
        AGENT_SOCKET_DHT,
        AGENT_SOCKET_PEER,
        _AGENT_SOCKET_MAX,
} AgentSocket;

struct Agent {
        AgentConfig config;
        /* The sockets systemd passed, until the part that uses each takes it (agent-sockets.c). */
        DaemonSocket sockets[_AGENT_SOCKET_MAX];
        sd_event *event;
        CurlEvent *curl;
        ControlClient *control;
        Driver *driver;
        sd_bus *bus;
        sd_bus_slot *bus_slot;
        char *state_dir, *outbox_dir, *lease_file, *keeper_pid_file;
        Offload *helpers;               /* the fence keeper's start, off the loop (agent-lease.c) */
        OffloadCall *keeper_call;       /* a start of the keeper pending */
        char *fence_dir;                /* <state>/fence: a directory per job, its lease file for the init */
        uint64_t fence_seq;             /* the last seq written to a lease file */

        int64_t capacity_nano_cpus, capacity_memory_bytes;
        uint64_t ttl_usec;
        uint64_t claim_wait_max_ms;     /* the control's longest claim wait; 0: it did not say */

        Task *tasks;
        unsigned n_tasks;

        bool registered, draining, stopping, adopted, leftovers_listed;
        bool drained;                   /* drained through the control (the heartbeat's "drain") */
        DriverLeftover *pending;        /* found at start, waiting for the first renewal */
        size_t n_pending;
        void *heartbeat_sent;           /* what the heartbeat in flight renews */
        ControlCall *register_call, *claim_call, *heartbeat_call;
        sd_event_source *register_timer, *claim_timer, *heartbeat_timer, *fence_timer, *adopt_timer;
        sd_event_source *stop_timer;
        uint64_t register_backoff_usec, claim_backoff_usec;
        uint64_t last_heartbeat_ok_usec;
        uint64_t heartbeat_sent_usec;   /* CLOCK_MONOTONIC, when the last heartbeat was sent */
        bool heartbeat_again;           /* a heartbeat was wanted while one was in flight */
        unsigned heartbeat_failures;
        bool register_again;

        /* Controls found in the DHT (agent-discovery.c). */
        Dht *dht;                       /* NULL when the DHT is not used */
        sd_event_source *lookup_timer;
        bool lookup_running;
        uint64_t lookup_started_usec;   /* CLOCK_MONOTONIC, of the last lookup */
        uint64_t lookup_backoff_usec;   /* after lookups that found nothing */
        int lookup_outcome;             /* of the last lookup: 1 found, 0 none yet, < 0 the error */
        char **dht_urls;                /* what the last successful lookup returned, in a stable order */

        /* Inputs (agent-inputs.c). */
        struct PeerSink *peer_sink;
        struct InputServer *input_server;       /* NULL with PEER_PORT=-1 */
        struct InputCache *input_cache;
        struct InputFetcher *input_fetcher;

        /* GET /metrics (agent-metrics.c): counted where they happen. */
        struct HttpServer *metrics_server;      /* NULL without METRICS_PORT */
        uint64_t claims_leased, claims_empty, claims_failed;
        uint64_t fences;                        /* tasks killed because their lease could not be renewed */
        Histogram kill_latency;                 /* from our SIGKILL of a task's process to its end */
        uint64_t heartbeats_answered, heartbeats_failed;
        uint64_t input_bytes_seeders, input_bytes_agents, input_bytes_cache;
};

/* agent-sockets.c: what systemd passed, by FileDescriptorName=. */
int agent_sockets_take(Agent *a);
void agent_sockets_close(Agent *a);
/* Moves the sockets passed as s to ret_fds (DAEMON_SOCKETS_PER_NAME long); returns how many. */
unsigned agent_socket_take(Agent *a, AgentSocket s, int *ret_fds);
/* Logs MC_EVENT=passed_socket_overrides_config when the configured port key=port (and address_key=
 * address, if not NULL) is not where the passed fds are; port 0 (none, or any) agrees with anything. */
void agent_socket_check_config(Agent *a, AgentSocket s, const int *fds, unsigned n_fds, const char *key,
                               int64_t port, const char *address_key, const char *address);

int agent_new(const AgentConfig *config, Agent **ret);
Agent *agent_free(Agent *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Agent *, agent_free);
/* Loads the outbox and what a previous run left, then registers, heartbeats and claims. */
int agent_start(Agent *a);
/* SIGTERM: stops claiming, lets a task being started reach its container, then exits the loop. The
 * containers keep running: the next agent adopts them. */
void agent_stop(Agent *a);

void agent_set_draining(Agent *a, bool draining);
void agent_set_drained(Agent *a, bool drained);
unsigned agent_n_running(Agent *a);
unsigned agent_n_fetching(Agent *a);
/* JSON array describing every task the agent holds. */
char *agent_list_tasks_json(Agent *a);
const char *task_state_to_string(TaskState s);
/* METRICS_PORT: serves GET /metrics on it; 0 when none is configured, negative errno. */
int agent_metrics_start(Agent *a);
void agent_metrics_stop(Agent *a);

/* D-Bus (agent-bus.c). */
int agent_bus_init(Agent *a);
void agent_bus_task_started(Agent *a, const char *id);
void agent_bus_task_finished(Agent *a, const char *id, const char *status, int exit_code);
void agent_bus_running_changed(Agent *a);
void agent_bus_control_urls_changed(Agent *a);
void agent_bus_fetching_changed(Agent *a);
