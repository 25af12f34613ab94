/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "metrics.h"

static void observe_latency(Metrics *m, const char *route, double seconds) {
        for (size_t i = 0; i < m->n_endpoints; i++)
                if (streq(m->endpoints[i].route, route)) {
                        histogram_observe(&m->endpoints[i].latency, metrics_latency_bounds, seconds);
                        return;
                }
        if (m->n_endpoints < METRICS_MAX_ENDPOINTS) {
                m->endpoints[m->n_endpoints].route = route;
                histogram_observe(&m->endpoints[m->n_endpoints++].latency, metrics_latency_bounds, seconds);
        }
}

void metrics_count_request(Metrics *m, const char *route, unsigned code, double seconds) {
        route = route ?: "other";
        observe_latency(m, route, seconds);
        for (size_t i = 0; i < m->n_requests; i++)
                if (m->requests[i].code == code && streq(m->requests[i].route, route)) {
                        m->requests[i].count++;
                        return;
                }
        if (m->n_requests < METRICS_MAX_REQUEST_SERIES)
                m->requests[m->n_requests++] = (RequestSeries) { .route = route, .code = code, .count = 1 };
}

static const char *const input_source_names[_INPUT_SOURCE_MAX] = {
        [INPUT_SOURCE_SEEDERS] = "seeders",
        [INPUT_SOURCE_AGENTS] = "agents",
        [INPUT_SOURCE_CACHE] = "cache",
};

void metrics_write_input_bytes(FILE *f, const Metrics *m) {
        fputs("# HELP mc_input_bytes_total Bytes of task inputs in the tasks this replica saw start, by source "
              "(received from seeders, from other agents, or found in the agent's cache).\n"
              "# TYPE mc_input_bytes_total counter\n", f);
        for (InputSource i = 0; i < _INPUT_SOURCE_MAX; i++)
                fprintf(f, "mc_input_bytes_total{source=\"%s\"} %" PRIu64 "\n", input_source_names[i], m->input_bytes[i]);
}

void metrics_write_requests(FILE *f, const Metrics *m) {
        fputs("# HELP mc_http_requests_total HTTP requests answered, by endpoint and status code.\n"
              "# TYPE mc_http_requests_total counter\n", f);
        for (size_t i = 0; i < m->n_requests; i++)
                fprintf(f, "mc_http_requests_total{endpoint=\"%s\",code=\"%u\"} %" PRIu64 "\n",
                        m->requests[i].route, m->requests[i].code, m->requests[i].count);
        metrics_write_histogram_header(f, "mc_http_request_duration_seconds",
                                       "Time from a request's headers to its answer, by endpoint.");
        for (size_t i = 0; i < m->n_endpoints; i++) {
                char labels[128];
                snprintf(labels, sizeof(labels), "endpoint=\"%s\"", m->endpoints[i].route);
                metrics_write_histogram_series(f, "mc_http_request_duration_seconds", labels,
                                               &m->endpoints[i].latency, metrics_latency_bounds);
        }
}
