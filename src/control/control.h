/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* mc-control: the state every part of the daemon shares. The control itself is stateless as far as
 * tasks go (PostgreSQL is the only source of truth); what lives here is configuration, connections,
 * requests in progress and cached counts. */

#include <json-c/json.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "auth.h"
#include "db.h"
#include "dht-daemon.h"
#include "http-server.h"
#include "lease-watch.h"
#include "log-events.h"
#include "metrics.h"
#include "task-status.h"

typedef struct ControlConfig {
        char *db_dsn;
        int64_t port;
        char *listen_address;
        char *tokens_file;
        char *control_token;
        char *tls_cert;
        char *tls_key;
        char *tls_client_ca;
        bool disable_auth;
        int64_t lease_ttl_ms;
        int64_t lease_grace_ms;
        int64_t sweep_interval_ms;
        int64_t db_pool_size;
        int64_t db_timeout_ms;
        int64_t claim_wait_max_ms;
        int64_t output_max_bytes;
        int64_t http_max_connections;
        int64_t http_max_per_address;
        int64_t http_header_timeout_sec;
        int64_t http_body_timeout_sec;
        int64_t http_idle_timeout_sec;
        int64_t http_max_streams;
        int64_t retention_sec;
        int64_t live_output_max_bytes;
        bool bus;
        char *bus_group;
        char *log_level;
        DhtSettings dht;
} ControlConfig;

typedef struct PushBatcher PushBatcher;
typedef struct TaskPublisher TaskPublisher;
typedef struct TaskSignals TaskSignals;
typedef struct ClaimWaiters ClaimWaiters;
typedef struct Heartbeats Heartbeats;
typedef struct Watchers Watchers;
typedef struct Awaits Awaits;

typedef struct TaskCounts {
        uint64_t by_status[_TASK_STATUS_MAX];
        uint64_t nodes_ready;
        bool valid;
} TaskCounts;

typedef struct Control {
        ControlConfig config;
        sd_event *event;
        Db *db;
        Auth *auth;
        TlsServer *tls;         /* NULL: plain HTTP */
        HttpServer *http;
        sd_bus *bus;
        TaskSignals *task_signals;      /* TasksChanged on the bus (task-signals.h) */
        Metrics metrics;
        PushBatcher *pusher;
        ClaimWaiters *waiters;
        Heartbeats *heartbeats;         /* batched heartbeats (heartbeat.h) */
        Watchers *watchers;             /* long polls, live output, event streams (watch.h) */
        Awaits *awaits;                 /* what the database is to announce to this replica (awaits.h) */
        TaskPublisher *publisher;
        sd_event_source *sweep_timer;
        sd_event_source *housekeeping_timer;
        LeaseWatch *leases;             /* the renewal counts the sweep compares (lease-watch.h) */
        bool stopping;
        bool sweep_running;
        bool housekeeping_running;
        bool retention_running;
        unsigned housekeeping_round;
        TaskCounts counts;
} Control;

/* Completion of a task operation: code is an HTTP status; body is the JSON text to return (a task
 * record, a list, or an {"error","field"} object). Shared by the HTTP API and D-Bus. */
typedef void (*TaskOpCallback)(Control *c, unsigned code, const char *body, void *userdata);

int control_get_task(Control *c, const char *id, TaskOpCallback cb, void *userdata);
int control_list_tasks(Control *c, const char *status, json_object *labels, int64_t limit, const char *after,
                       TaskOpCallback cb, void *userdata);
int control_cancel_task(Control *c, const char *id, TaskOpCallback cb, void *userdata);
int control_task_logs(Control *c, const char *id, TaskOpCallback cb, void *userdata);
int control_list_nodes(Control *c, TaskOpCallback cb, void *userdata);
int control_delete_task(Control *c, const char *id, TaskOpCallback cb, void *userdata);
int control_drain_node(Control *c, const char *node, bool drain, TaskOpCallback cb, void *userdata);
int control_delete_node(Control *c, const char *node, TaskOpCallback cb, void *userdata);

/* Helpers for callbacks: an error body as JSON text (static buffer-free: returns malloc'd). */
char *control_error_body(const char *field, const char *format, ...) _printf_(2, 3);
/* Maps a failed database call to an answer: 503 when unavailable, 500 otherwise. */
unsigned control_db_error_code(int error);

/* Journal + D-Bus signal for a task state change. */
void control_task_changed(Control *c, const char *id, TaskStatus s, McEvent event,
                          const char *node, const char *lease_token, const char *attempt, const char *message);

/* D-Bus: bus-control.c */
int control_bus_setup(Control *c);
void control_bus_emit_counts_changed(Control *c);
void control_bus_emit_task_changed(Control *c, const char *id, const char *status);

/* TLS, plain-HTTP warnings, SIGHUP: control-tls.c */
int control_tls_setup(Control *c);
/* Plain HTTP on a socket another machine can reach is said loudly (MC_EVENT=plaintext_http). */
void control_warn_plaintext(Control *c, const int *fds, size_t n_fds);
/* Re-reads the tokens file and the certificate; on any error keeps what it had. */
int control_reload(Control *c);
int control_reload_setup(Control *c);

/* HTTP: api.c */
void control_http_handler(HttpRequest *req, void *userdata);
void control_http_headers(HttpRequest *req, void *userdata);
void control_http_completed(HttpRequest *req, unsigned code, void *userdata);

/* Sweeps and periodic work: sweeper.c */
int control_timers_setup(Control *c);
