/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* GET /metrics on METRICS_PORT, or on the socket systemd passed as "metrics" (units/mc-agent.socket:
 * 127.0.0.1:6884): the agent's own view, in Prometheus text, for a scraper on the node (by default on
 * 127.0.0.1 only: it names tasks by state, not by id, and needs no token). */

#include <inttypes.h>

#include "agent-internal.h"
#include "daemon-util.h"
#include "http-server.h"
#include "log.h"
#include "prometheus.h"

static void write_metrics(Agent *a, FILE *f) {
        unsigned by_state[_TASK_STATE_MAX] = {};

        for (Task *t = a->tasks; t; t = t->next)
                by_state[t->state]++;
        fputs("# HELP mc_agent_tasks Tasks this agent holds, by state.\n# TYPE mc_agent_tasks gauge\n", f);
        for (TaskState s = 0; s < _TASK_STATE_MAX; s++)
                fprintf(f, "mc_agent_tasks{state=\"%s\"} %u\n", task_state_to_string(s), by_state[s]);
        fprintf(f, "# HELP mc_agent_claims_total Claims answered by the control, by outcome.\n"
                   "# TYPE mc_agent_claims_total counter\n"
                   "mc_agent_claims_total{outcome=\"leased\"} %" PRIu64 "\n"
                   "mc_agent_claims_total{outcome=\"empty\"} %" PRIu64 "\n"
                   "mc_agent_claims_total{outcome=\"failed\"} %" PRIu64 "\n",
                a->claims_leased, a->claims_empty, a->claims_failed);
        fprintf(f, "# HELP mc_agent_heartbeats_total Lease renewals sent to the control, by outcome (answered, "
                   "or failed: no answer in time, or an error).\n"
                   "# TYPE mc_agent_heartbeats_total counter\n"
                   "mc_agent_heartbeats_total{outcome=\"answered\"} %" PRIu64 "\n"
                   "mc_agent_heartbeats_total{outcome=\"failed\"} %" PRIu64 "\n",
                a->heartbeats_answered, a->heartbeats_failed);
        fprintf(f, "# HELP mc_agent_fences_total Tasks killed because their lease could not be renewed in time.\n"
                   "# TYPE mc_agent_fences_total counter\nmc_agent_fences_total %" PRIu64 "\n", a->fences);
        fprintf(f, "# HELP mc_agent_input_bytes_total Bytes of task inputs, by source (received from SEEDERS, "
                   "from other peers, or found in the cache).\n# TYPE mc_agent_input_bytes_total counter\n"
                   "mc_agent_input_bytes_total{source=\"seeders\"} %" PRIu64 "\n"
                   "mc_agent_input_bytes_total{source=\"agents\"} %" PRIu64 "\n"
                   "mc_agent_input_bytes_total{source=\"cache\"} %" PRIu64 "\n",
                a->input_bytes_seeders, a->input_bytes_agents, a->input_bytes_cache);
        metrics_write_histogram(f, "mc_agent_kill_duration_seconds",
                                "From the agent's SIGKILL of a task's process (its fence, or its lease revoked) to the "
                                "process's end (recorded by the exec supervisor; for Docker, when the agent sees it).",
                                &a->kill_latency, metrics_latency_bounds);
        metrics_write_histogram(f, "mc_agent_control_request_duration_seconds",
                                "Round trips to the control (every call but the long-poll claims).",
                                control_client_latency(a->control), metrics_latency_bounds);
        metrics_write_build_info(f, "mc-agent");
        metrics_write_process(f);
}

static void on_request(HttpRequest *req, void *userdata) {
        Agent *a = userdata;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        FILE *f;

        if (!streq(http_request_path(req), "/metrics")) {
                http_request_reply_error(req, 404, NULL, "No such endpoint: the agent serves only GET /metrics.");
                return;
        }
        if (!streq(http_request_method(req), "GET") && !streq(http_request_method(req), "HEAD")) {
                (void) http_request_add_header(req, "Allow", "GET, HEAD");
                http_request_reply_error(req, 405, NULL, "GET /metrics only.");
                return;
        }
        f = open_memstream(&text, &size);
        if (!f) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        write_metrics(a, f);
        if (fclose(f) != 0) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        http_request_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, size);
}

int agent_metrics_start(Agent *a) {
        int fds[DAEMON_SOCKETS_PER_NAME], r;
        unsigned n;
        char where[256];

        assert(a);
        /* A socket passed as "metrics" (units/mc-agent.socket) wins over METRICS_PORT. */
        n = agent_socket_take(a, AGENT_SOCKET_METRICS, fds);
        if (n > 0) {
                agent_socket_check_config(a, AGENT_SOCKET_METRICS, fds, n, "METRICS_PORT", a->config.metrics_port,
                                          "METRICS_ADDRESS", a->config.metrics_address);
                daemon_socket_describe(fds[0], where, sizeof(where));
        } else {
                if (a->config.metrics_port == 0)
                        return 0;
                fds[0] = daemon_listen_tcp(a->config.metrics_address, (uint16_t) a->config.metrics_port);
                if (fds[0] < 0)
                        return log_error_errno(fds[0], "Cannot listen on the metrics port %s:%" PRIi64 ": %m",
                                               isempty(a->config.metrics_address) ? "*" : a->config.metrics_address,
                                               a->config.metrics_port);
                n = 1;
                snprintf(where, sizeof(where), "%s port %" PRIi64,
                         isempty(a->config.metrics_address) ? "*" : a->config.metrics_address, a->config.metrics_port);
        }
        /* A scraper or two: few connections, short deadlines. */
        HttpServerConfig hc = {
                .max_body = 4096,
                .max_connections = 32,
                .max_connections_per_address = 8,
        };
        /* Takes the fds over, also when it fails. */
        r = http_server_new(a->event, fds, n, &hc, on_request, NULL, a, &a->metrics_server);
        if (r < 0)
                return log_error_errno(r, "Cannot serve the metrics port: %m");
        log_info("Serving GET /metrics on %s.", where);
        return 1;
}

void agent_metrics_stop(Agent *a) {
        a->metrics_server = http_server_free(a->metrics_server);
}
