/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <inttypes.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "macro.h"
#include "prometheus.h"

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5,
};

const double metrics_batch_bounds[METRICS_LATENCY_BUCKETS] = {
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096,
};

void histogram_observe(Histogram *h, const double *bounds, double value) {
        for (size_t i = 0; i < METRICS_LATENCY_BUCKETS; i++)
                if (value <= bounds[i]) {
                        h->buckets[i]++;
                        break;
                }
        h->count++;
        h->sum += value;
}

void metrics_write_histogram_header(FILE *f, const char *name, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
}

void metrics_write_histogram_series(FILE *f, const char *name, const char *labels, const Histogram *h,
                                    const double *bounds) {
        const char *sep = labels && labels[0] ? "," : "";
        uint64_t cumulative = 0;

        labels = labels ?: "";
        for (size_t i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
                cumulative += h->buckets[i];
                fprintf(f, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep, bounds[i], cumulative);
        }
        fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, h->count);
        if (labels[0])
                fprintf(f, "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, labels, h->sum, name, labels, h->count);
        else
                fprintf(f, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, h->sum, name, h->count);
}

void metrics_write_histogram(FILE *f, const char *name, const char *help, const Histogram *h, const double *bounds) {
        metrics_write_histogram_header(f, name, help);
        metrics_write_histogram_series(f, name, NULL, h, bounds);
}

void metrics_write_build_info(FILE *f, const char *program) {
        fprintf(f, "# HELP mc_build_info The program and its version; always 1.\n# TYPE mc_build_info gauge\n"
                   "mc_build_info{program=\"%s\",version=\"%s\"} 1\n", program, MC_VERSION);
}

/* /proc/self/stat: utime, stime (fields 14, 15), starttime (22), vsize (23), rss (24). */
static int read_stat(double *ret_cpu, double *ret_start, uint64_t *ret_vsize, uint64_t *ret_rss) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/stat", "re");
        unsigned long utime, stime, vsize;
        unsigned long long starttime;
        long rss, tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        char buf[1024], *p;
        double boot = 0;

        if (!f || !fgets(buf, sizeof(buf), f) || tick <= 0)
                return -1;
        p = strrchr(buf, ')');          /* the command name may hold spaces */
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu %lu %ld",
                         &utime, &stime, &starttime, &vsize, &rss) != 5)
                return -1;
        {
                _cleanup_fclose_ FILE *s = fopen("/proc/stat", "re");
                char line[256];
                while (s && fgets(line, sizeof(line), s))
                        if (sscanf(line, "btime %lf", &boot) == 1)
                                break;
        }
        *ret_cpu = (double) (utime + stime) / (double) tick;
        *ret_start = boot + (double) starttime / (double) tick;
        *ret_vsize = vsize;
        *ret_rss = (uint64_t) rss * (uint64_t) page;
        return 0;
}

static unsigned open_fds(void) {
        _cleanup_closedir_ DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        return n > 0 ? n - 1 : 0;       /* not the one reading the directory */
}

void metrics_write_process(FILE *f) {
        struct rlimit rl = {};
        double cpu, start;
        uint64_t vsize, rss;

        if (read_stat(&cpu, &start, &vsize, &rss) >= 0)
                fprintf(f, "# HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n"
                           "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
                           "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                           "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %" PRIu64 "\n"
                           "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                           "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %" PRIu64 "\n"
                           "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                           "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                        cpu, rss, vsize, start);
        fprintf(f, "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\n"
                   "process_open_fds %u\n", open_fds());
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0)
                fprintf(f, "# HELP process_max_fds Maximum number of open file descriptors.\n# TYPE process_max_fds gauge\n"
                           "process_max_fds %llu\n", (unsigned long long) rl.rlim_cur);
}
