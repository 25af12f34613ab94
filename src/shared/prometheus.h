/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What every daemon's /metrics has in common (Prometheus text exposition format 0.0.4): histograms
 * with fixed buckets, mc_build_info, and the standard process_* series of the Prometheus client
 * libraries, read from /proc/self. */

#include <stdint.h>
#include <stdio.h>

#define METRICS_LATENCY_BUCKETS 12

typedef struct Histogram {
        uint64_t buckets[METRICS_LATENCY_BUCKETS]; /* cumulative at output time, per-bucket here */
        uint64_t count;
        double sum;
} Histogram;

/* Seconds, from 0.5 ms to 5 s; counts, from 1 to 4096. */
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];
extern const double metrics_batch_bounds[METRICS_LATENCY_BUCKETS];

void histogram_observe(Histogram *h, const double *bounds, double value);
void metrics_write_histogram(FILE *f, const char *name, const char *help, const Histogram *h, const double *bounds);
/* One series of a histogram family with labels (`endpoint="push"`): the family's HELP and TYPE are
 * written once, by metrics_write_histogram_header(). */
void metrics_write_histogram_header(FILE *f, const char *name, const char *help);
void metrics_write_histogram_series(FILE *f, const char *name, const char *labels, const Histogram *h,
                                    const double *bounds);

/* mc_build_info{program, version} 1. */
void metrics_write_build_info(FILE *f, const char *program);
/* process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds. */
void metrics_write_process(FILE *f);
