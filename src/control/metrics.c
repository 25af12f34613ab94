/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "metrics.h"

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5,
};

const double metrics_batch_bounds[METRICS_LATENCY_BUCKETS] = {
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096,
};

void metrics_count_request(Metrics *m, const char *route, unsigned code) {
        route = route ?: "other";
        for (size_t i = 0; i < m->n_requests; i++)
                if (m->requests[i].code == code && streq(m->requests[i].route, route)) {
                        m->requests[i].count++;
                        return;
                }
        if (m->n_requests < METRICS_MAX_REQUEST_SERIES)
                m->requests[m->n_requests++] = (RequestSeries) { .route = route, .code = code, .count = 1 };
}

void histogram_observe(Histogram *h, const double *bounds, double value) {
        for (size_t i = 0; i < METRICS_LATENCY_BUCKETS; i++)
                if (value <= bounds[i]) {
                        h->buckets[i]++;
                        break;
                }
        h->count++;
        h->sum += value;
}

void metrics_write_histogram(FILE *f, const char *name, const char *help, const Histogram *h, const double *bounds) {
        uint64_t cumulative = 0;

        fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
        for (size_t i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
                cumulative += h->buckets[i];
                fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, bounds[i], cumulative);
        }
        fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, h->count);
        fprintf(f, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->sum, name, h->count);
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
}
