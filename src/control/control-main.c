/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-control: the task API over PostgreSQL. Stateless: run as many replicas against one database as
 * you like; any replica serves any request. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>

#include "awaits.h"
#include "claim.h"
#include "config.h"
#include "control.h"
#include "daemon-util.h"
#include "heartbeat.h"
#include "json-util.h"
#include "log.h"
#include "migrations.h"
#include "push.h"
#include "task-publisher.h"
#include "task-signals.h"
#include "watch.h"

#define DRAIN_TIMEOUT_USEC (5 * USEC_PER_SEC)

static const ConfigOption control_options[] = {
        { "DB_DSN", NULL, CONFIG_STRING, offsetof(ControlConfig, db_dsn), 0, 0, "",
          "PostgreSQL connection string or URI (empty: libpq's PG* environment defaults); with a standby, "
          "both hosts (host=a,b): only a read-write server is used" },
        { "PORT", NULL, CONFIG_INT, offsetof(ControlConfig, port), 0, 65535, "8080",
          "TCP port to listen on when not socket-activated" },
        { "LISTEN_ADDRESS", NULL, CONFIG_STRING, offsetof(ControlConfig, listen_address), 0, 0, "",
          "Address to listen on when not socket-activated (empty: all with TLS, 127.0.0.1 with plain HTTP)" },
        { "TLS_CERT", NULL, CONFIG_STRING, offsetof(ControlConfig, tls_cert), 0, 0, "",
          "PEM certificate (then its intermediates) to serve HTTPS with (empty: plain HTTP, development only)" },
        { "TLS_KEY", NULL, CONFIG_STRING, offsetof(ControlConfig, tls_key), 0, 0, "",
          "PEM private key of TLS_CERT" },
        { "TLS_CLIENT_CA", NULL, CONFIG_STRING, offsetof(ControlConfig, tls_client_ca), 0, 0, "",
          "PEM CA whose client certificates (CN = node id, clientAuth) authenticate agents without a token" },
        { "TOKENS_FILE", NULL, CONFIG_STRING, offsetof(ControlConfig, tokens_file), 0, 0, MC_PKGSYSCONFDIR "/tokens",
          "File of \"user|agent NAME TOKEN\" lines, mode 0600 (0640 with the service's group)" },
        { "CONTROL_TOKEN", "CONTROL_TOKEN", CONFIG_STRING, offsetof(ControlConfig, control_token), 0, 0, NULL,
          "One user token (seed compatibility)" },
        { "DISABLE_AUTH", NULL, CONFIG_BOOL, offsetof(ControlConfig, disable_auth), 0, 0, "no",
          "Accept every request without a token (development only)" },
        { "LEASE_TTL_MS", NULL, CONFIG_INT, offsetof(ControlConfig, lease_ttl_ms), 300, 3600000, "5000",
          "Lease time to live; agents renew each lease a quarter of it after its last renewal was sent" },
        { "LEASE_GRACE_MS", NULL, CONFIG_INT, offsetof(ControlConfig, lease_grace_ms), 0, 600000, "1000",
          "A lease expires when not renewed for its TTL plus this" },
        { "SWEEP_INTERVAL_MS", NULL, CONFIG_INT, offsetof(ControlConfig, sweep_interval_ms), 20, 60000, "250",
          "How often to read the leases' renewal counts and expire what stood still" },
        { "DB_POOL_SIZE", NULL, CONFIG_INT, offsetof(ControlConfig, db_pool_size), 1, 64, "8",
          "Database connections for queries" },
        { "DB_TIMEOUT_MS", NULL, CONFIG_INT, offsetof(ControlConfig, db_timeout_ms), 100, 600000, "10000",
          "Longest a query may wait and run" },
        { "CLAIM_WAIT_MAX_MS", NULL, CONFIG_INT, offsetof(ControlConfig, claim_wait_max_ms), 0, 300000, "30000",
          "Longest wait an agent may ask for in a claim" },
        { "OUTPUT_MAX_BYTES", NULL, CONFIG_INT, offsetof(ControlConfig, output_max_bytes), 0, 16777216, "1048576",
          "Captured output kept per task" },
        { "BUS", NULL, CONFIG_BOOL, offsetof(ControlConfig, bus), 0, 0, "yes",
          "Serve org.mutualcloud.Control1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS)" },
        { "BUS_GROUP", NULL, CONFIG_STRING, offsetof(ControlConfig, bus_group), 0, 0, "mc",
          "Group whose members may use the D-Bus methods (besides root)" },
        { "HTTP_MAX_CONNECTIONS", NULL, CONFIG_INT, offsetof(ControlConfig, http_max_connections), 0, 1048576, "0",
          "HTTP connections at once; at the cap the one waiting longest for its request is closed for a new one "
          "(0: RLIMIT_NOFILE less a quarter, at most 16384)" },
        { "HTTP_MAX_CONNECTIONS_PER_ADDRESS", NULL, CONFIG_INT, offsetof(ControlConfig, http_max_per_address), 1, 1048576, "64",
          "HTTP connections at once from one IPv4 address or IPv6 /64; more are refused with 429 "
          "(at least HTTP_MAX_CONNECTIONS: no cap of its own)" },
        { "HTTP_HEADER_TIMEOUT_SEC", NULL, CONFIG_INT, offsetof(ControlConfig, http_header_timeout_sec), 1, 3600, "10",
          "Longest a client may take to send a request's headers" },
        { "HTTP_BODY_TIMEOUT_SEC", NULL, CONFIG_INT, offsetof(ControlConfig, http_body_timeout_sec), 1, 3600, "60",
          "Longest a client may take to send a request's body" },
        { "HTTP_IDLE_TIMEOUT_SEC", NULL, CONFIG_INT, offsetof(ControlConfig, http_idle_timeout_sec), 1, 3600, "30",
          "Longest a keep-alive connection may stay idle between requests" },
        { "HTTP_MAX_STREAMS", NULL, CONFIG_INT, offsetof(ControlConfig, http_max_streams), 1, 1048576, "1024",
          "Long polls, followed logs and event streams served at once (beyond: 503)" },
        { "RETENTION_SEC", NULL, CONFIG_INT, offsetof(ControlConfig, retention_sec), 0, INT64_C(3153600000), "604800",
          "Finished tasks and their output are deleted this long after they ended (0: never)" },
        { "LIVE_OUTPUT_MAX_BYTES", NULL, CONFIG_INT, offsetof(ControlConfig, live_output_max_bytes), 0, 16777216, "1048576",
          "Output an agent may send while a lease runs (GET /api/tasks/{id}/logs before the end)" },
        { "LOG_LEVEL", NULL, CONFIG_STRING, offsetof(ControlConfig, log_level), 0, 0, "info",
          "debug, info, notice, warning, err" },
        DHT_CONFIG_OPTIONS(ControlConfig, dht),
};

static const ConfigSpec control_config_spec = {
        .program = "mc-control",
        .summary = "The mc control server: task API over PostgreSQL, leases, long-poll claims.",
        .default_path = MC_PKGSYSCONFDIR "/control.conf",
        .options = control_options,
        .n_options = ELEMENTSOF(control_options),
};

/* A task's event (mc_events, from the tasks trigger) goes to the long polls and streams watching it.
 * A queued task's (pushed, released, expired) also wakes the claims that could take it: one
 * notification per push does for both (a second, on mc_queued, cost PostgreSQL about 10 µs of CPU
 * per push at 8 clients: bench/control/README.md). */
static void on_task_event(Control *c, const char *payload) {
        _cleanup_json_ json_object *e = NULL;
        const char *status, *target;

        /* Every task's every change comes by here: with nobody to tell, not even a parse. */
        if (claim_waiters_n(c->waiters) == 0 && watchers_n(c->watchers) == 0)
                return;
        e = json_tokener_parse(payload);
        if (!e || !json_object_is_type(e, json_type_object)) {
                log_debug("Ignoring a task event that is not one: %.200s", payload);
                return;
        }
        if (json_get_string(e, "status", &status) >= 0 && streq(status, "queued")) {
                if (json_get_string(e, "target_node", &target) >= 0)
                        claim_waiters_wake_node(c->waiters, target);
                else
                        claim_waiters_wake_any(c->waiters, 1);
        }
        watchers_task_event(c->watchers, e, payload);
}

static void on_db_notify(const char *channel, const char *payload, void *userdata) {
        Control *c = userdata;

        if (streq(channel, "mc_events"))
                on_task_event(c, payload);
        else if (streq(channel, "mc_output"))
                watchers_task_output(c->watchers, payload);
        else
                claim_waiters_notify(c->waiters, payload);
}

/* The database now holds what this replica waits for (awaits.h). A change made before may not have
 * been announced: everyone waiting looks again. */
static void on_listener_state(void *userdata) {
        Control *c = userdata;

        if (awaits_kinds(c->awaits) == 0)
                return;
        claim_waiters_wake_all(c->waiters);
        watchers_recheck_all(c->watchers);
}

static void on_db_state(bool available, void *userdata) {
        Control *c = userdata;

        /* The daemon itself is fine: the watchdog stays fed (it checks that HTTP is served), and
         * /api/health, /metrics and this status say the database is not (docs/postgresql-ha.md). */
        if (!available) {
                daemon_notify_status("Database unavailable: answering 503, reconnecting.");
                return;
        }
        daemon_notify_status("Serving.");
        /* Housekeeping puts the counts back into the status at its next round. */
        c->counts.valid = false;
        /* Notifications may have been missed while the listener was away. */
        claim_waiters_wake_all(c->waiters);
        watchers_recheck_all(c->watchers);
        /* The lease watch needs nothing here. The sweep stood still during the outage and expired
         * nothing; what it saw before stays. A lease that now looks due (its count seen a TTL plus the
         * grace ago) is one whose holder has fenced itself meanwhile: the holder counts from an
         * earlier instant, the renewal it last got through, and could not renew since. A holder
         * that renews before its fence time (the outage was shorter than its TTL less the margin)
         * moves the count, and the update of an expiry already sent applies only to the count it saw,
         * so the renewal keeps the lease. */
}

static int on_drain_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Control *c = userdata;
        static uint64_t deadline = 0;

        if (deadline == 0)
                deadline = now_usec() + DRAIN_TIMEOUT_USEC;
        if ((db_n_pending(c->db) == 0 && push_batcher_n_pending(c->pusher) == 0) || now_usec() > deadline)
                return sd_event_exit(sd_event_source_get_event(s), 0);
        (void) sd_event_source_set_time_relative(s, 20 * USEC_PER_MSEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* SIGTERM: stop taking requests, let what is being committed finish (so a push in flight still gets
 * its answer), then exit. */
static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Control *c = userdata;
        int r;

        if (c->stopping)
                return sd_event_exit(sd_event_source_get_event(s), 0);
        c->stopping = true;
        log_info("Stopping: finishing requests in progress.");
        daemon_notify_stopping();
        http_server_set_stopping(c->http);
        r = sd_event_add_time_relative(c->event, NULL, CLOCK_MONOTONIC, 0, 0, on_drain_check, c);
        if (r < 0)
                return sd_event_exit(sd_event_source_get_event(s), 0);
        return 0;
}

static int open_listeners(Control *c, int **ret_fds, size_t *ret_n) {
        _cleanup_free_ int *fds = NULL;
        int n, fd;

        n = daemon_listen_fds();
        if (n < 0)
                return n;
        if (n > 0) {
                fds = calloc((size_t) n, sizeof(int));
                if (!fds)
                        return log_oom();
                for (int i = 0; i < n; i++)
                        fds[i] = SD_LISTEN_FDS_START + i;
                log_info("Serving HTTP on %d socket(s) passed by systemd.", n);
                *ret_fds = TAKE_PTR(fds);
                *ret_n = (size_t) n;
                return 0;
        }
        /* Plain HTTP carries the tokens in clear: by hand, it serves this machine unless told otherwise. */
        if (isempty(c->config.listen_address) && !c->tls) {
                free(c->config.listen_address);
                c->config.listen_address = strdup("127.0.0.1");
                if (!c->config.listen_address)
                        return log_oom();
        }
        fd = daemon_listen_tcp(c->config.listen_address, (uint16_t) c->config.port);
        if (fd < 0)
                return fd;
        fds = calloc(1, sizeof(int));
        if (!fds) {
                close(fd);
                return log_oom();
        }
        fds[0] = fd;
        log_info("Serving %s on %s port %" PRIi64 ".", c->tls ? "HTTPS" : "HTTP", isempty(c->config.listen_address) ? "*" : c->config.listen_address,
                 c->config.port);
        *ret_fds = TAKE_PTR(fds);
        *ret_n = 1;
        return 0;
}

/* The port agents reach us on, for the DHT announcement: the socket's own, whoever opened it. */
static uint16_t local_port(int fd) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return 0;
        if (sa.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &sa)->sin_port);
        if (sa.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
        return 0;
}

static void control_done(Control *c) {
        /* Order matters: closing the database answers the requests whose queries were in flight, then
         * the pushes and claims still waiting are answered, and only then can the HTTP server go. */
        c->db = db_free(c->db);
        c->pusher = push_batcher_free(c->pusher);
        c->waiters = claim_waiters_free(c->waiters);
        c->heartbeats = heartbeats_free(c->heartbeats);
        c->watchers = watchers_free(c->watchers);
        c->awaits = awaits_free(c->awaits);
        c->publisher = task_publisher_free(c->publisher);
        c->sweep_timer = sd_event_source_disable_unref(c->sweep_timer);
        c->housekeeping_timer = sd_event_source_disable_unref(c->housekeeping_timer);
        c->leases = lease_watch_free(c->leases);
        c->task_signals = task_signals_free(c->task_signals);
        c->bus = sd_bus_flush_close_unref(c->bus);
        c->http = http_server_free(c->http);
        c->auth = auth_free(c->auth);
        c->tls = tls_server_free(c->tls);
        c->event = sd_event_unref(c->event);
        config_free(&control_config_spec, &c->config);
}

static int run(int argc, char *argv[]) {
        _cleanup_free_ int *fds = NULL;
        _cleanup_(control_done) Control c = {};
        size_t n_fds = 0;
        int r, level;

        log_setup("mc-control");
        r = config_load(&control_config_spec, &c.config, argc, argv, NULL);
        if (r != 0)
                return r < 0 ? r : 0;
        level = log_level_from_string(c.config.log_level);
        if (level < 0)
                return log_error_errno(EINVAL, "LOG_LEVEL=%s is not a log level.", c.config.log_level);
        log_set_max_level(level);

        if (c.config.disable_auth)
                log_warning("*** AUTHENTICATION IS DISABLED (MC_DISABLE_AUTH): anyone who can reach this port can "
                            "push, read and cancel tasks, and act as any agent. Development use only. ***");

        r = auth_new(c.config.tokens_file, c.config.control_token, c.config.disable_auth, &c.auth);
        if (r < 0)
                return r;
        if (!c.config.disable_auth && auth_n_tokens(c.auth) == 0)
                return log_error_errno(ENOKEY, "No tokens configured: create %s (\"user NAME TOKEN\" and \"agent NODE TOKEN\" "
                                    "lines, mode 0600), or set CONTROL_TOKEN; MC_DISABLE_AUTH=1 is for development only.",
                                    c.config.tokens_file);

        r = control_tls_setup(&c);
        if (r < 0)
                return r;

        r = daemon_event_new_with_terminate(on_terminate, &c, &c.event);
        if (r < 0)
                return r;
        r = control_reload_setup(&c);
        if (r < 0)
                return r;

        r = claim_waiters_new(&c, &c.waiters);
        if (r >= 0)
                r = heartbeats_new(&c, &c.heartbeats);
        if (r >= 0)
                r = push_batcher_new(&c, &c.pusher);
        if (r >= 0)
                r = watchers_new(&c, &c.watchers);
        if (r < 0)
                return log_oom();

        DbConfig dbc = {
                .dsn = c.config.db_dsn,
                .pool_size = (unsigned) c.config.db_pool_size,
                .query_timeout_usec = (uint64_t) c.config.db_timeout_ms * USEC_PER_MSEC,
                /* Claims wait for mc_events (a task queued) and mc_queued (a node's capacity freed);
                 * watches and streams for mc_events and mc_output (watch.h). */
                .listen_channels = (const char *const[]) { "mc_queued", "mc_events", "mc_output", NULL },
                .migrations = control_migrations,
                .n_migrations = control_n_migrations,
                .functions_sql = control_functions_sql,
                .on_listener_state = on_listener_state,
        };
        r = db_new(c.event, &dbc, on_db_notify, on_db_state, &c, &c.db);
        if (r < 0)
                return r;
        r = awaits_new(&c, &c.awaits);
        if (r < 0)
                return log_oom();

        /* Before the HTTP server derives its connection cap from it. */
        (void) daemon_raise_nofile();
        r = open_listeners(&c, &fds, &n_fds);
        if (r < 0)
                return r;
        HttpServerConfig hc = {
                /* Room for a finished task's captured output (OUTPUT_MAX_BYTES) plus its tails; pushes
                 * are held to 1 MiB by their handler. */
                .max_body = 4 * 1024 * 1024,
                .max_connections = (unsigned) c.config.http_max_connections,
                .max_connections_per_address = (unsigned) c.config.http_max_per_address,
                .header_timeout_usec = (uint64_t) c.config.http_header_timeout_sec * USEC_PER_SEC,
                .body_timeout_usec = (uint64_t) c.config.http_body_timeout_sec * USEC_PER_SEC,
                .idle_timeout_usec = (uint64_t) c.config.http_idle_timeout_sec * USEC_PER_SEC,
                .tls = c.tls,
        };
        control_warn_plaintext(&c, fds, n_fds);
        r = http_server_new(c.event, fds, n_fds, &hc, control_http_handler, control_http_completed, &c, &c.http);
        if (r < 0)
                return r;

        http_server_set_headers_handler(c.http, control_http_headers);

        /* The watchdog is pinged only while the HTTP sockets really accept (http-server.h). */
        r = http_server_take_watchdog(c.http);
        if (r < 0)
                return r;

        r = task_publisher_new(&c, local_port(fds[0]), &c.publisher);
        if (r < 0)
                return r;

        r = control_timers_setup(&c);
        if (r < 0)
                return r;
        r = control_bus_setup(&c);
        if (r < 0)
                return r;

        daemon_notify_ready(c.config.disable_auth ? "Serving WITHOUT AUTHENTICATION." : "Serving.");
        log_info("mc-control %s running (lease TTL %" PRIi64 " ms).", MC_VERSION, c.config.lease_ttl_ms);

        r = sd_event_loop(c.event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}

DEFINE_MAIN_FUNCTION(run);
