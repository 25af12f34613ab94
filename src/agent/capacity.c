/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <sched.h>

#include "capacity.h"
#include "cgroup.h"
#include "config.h"
#include "file-util.h"
#include "log.h"

static int64_t meminfo_total(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/meminfo", "re");
        _cleanup_free_ char *line = NULL;
        size_t n = 0;

        if (!f)
                return -1;
        while (getline(&line, &n, f) > 0) {
                long long kb;
                if (sscanf(line, "MemTotal: %lld kB", &kb) == 1)
                        return (int64_t) kb * 1024;
        }
        return -1;
}

/* Whether the comma-separated list has word. */
static bool list_has(const char *list, const char *word) {
        size_t l = strlen(word);

        for (const char *p = list; *p;) {
                size_t n = strcspn(p, ",");
                if (n == l && strncmp(p, word, l) == 0)
                        return true;
                p += n;
                p += strspn(p, ",");
        }
        return false;
}

/* Our own cgroup's path in the hierarchy that has controller (v1), or the unified one (v2: ""). */
static char *own_cgroup(const char *controller) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/cgroup", "re");
        _cleanup_free_ char *line = NULL;
        size_t n = 0;

        if (!f)
                return NULL;
        while (getline(&line, &n, f) > 0) {
                char *c, *p;
                line[strcspn(line, "\n")] = 0;
                c = strchr(line, ':');
                if (!c)
                        continue;
                p = strchr(c + 1, ':');
                if (!p)
                        continue;
                *p = 0;
                c++;
                if (isempty(controller) ? streq(c, "") : list_has(c, controller))
                        return strdup(p + 1);
        }
        return NULL;
}

static int64_t read_limit(const char *file) {
        _cleanup_free_ char *s = NULL;
        int64_t v;

        if (read_one_line_file(file, &s) < 0 || streq(s, "max") || parse_int64(s, &v) < 0)
                return -1;
        return v;
}

int capacity_detect(const char *cgroup_root, int64_t *ret_nano_cpus, int64_t *ret_memory_bytes) {
        cpu_set_t set;
        int64_t cpus, mem;
        CgroupMode mode;

        if (sched_getaffinity(0, sizeof(set), &set) == 0)
                cpus = (int64_t) CPU_COUNT(&set) * (int64_t) NSEC_PER_SEC;
        else
                cpus = (int64_t) sysconf(_SC_NPROCESSORS_ONLN) * (int64_t) NSEC_PER_SEC;
        mem = meminfo_total();

        if (cgroup_detect(cgroup_root, &mode) >= 0) {
                _cleanup_free_ char *cpu_cg = own_cgroup(mode == CGROUP_V2 ? "" : "cpu"),
                                    *mem_cg = own_cgroup(mode == CGROUP_V2 ? "" : "memory"),
                                    *f = NULL;
                int64_t quota = -1, period = -1, limit = -1;

                if (cpu_cg && mode == CGROUP_V2) {
                        _cleanup_free_ char *s = NULL;
                        long long q, p;
                        if (asprintf(&f, "%s%s/cpu.max", cgroup_root, cpu_cg) >= 0 &&
                            read_one_line_file(f, &s) >= 0 && sscanf(s, "%lld %lld", &q, &p) == 2) {
                                quota = q;
                                period = p;
                        }
                } else if (cpu_cg) {
                        if (asprintf(&f, "%s/cpu%s/cpu.cfs_quota_us", cgroup_root, cpu_cg) >= 0)
                                quota = read_limit(f);
                        free(TAKE_PTR(f));
                        if (asprintf(&f, "%s/cpu%s/cpu.cfs_period_us", cgroup_root, cpu_cg) >= 0)
                                period = read_limit(f);
                }
                free(TAKE_PTR(f));
                if (quota > 0 && period > 0)
                        cpus = MIN(cpus, quota * (int64_t) NSEC_PER_SEC / period);

                if (mem_cg && asprintf(&f, mode == CGROUP_V2 ? "%s%s/memory.max" : "%s/memory%s/memory.limit_in_bytes",
                                       cgroup_root, mem_cg) >= 0)
                        limit = read_limit(f);
                if (limit > 0 && (mem < 0 || limit < mem))
                        mem = limit;
        }
        if (cpus <= 0 || mem <= 0)
                return -EIO;
        *ret_nano_cpus = cpus;
        *ret_memory_bytes = mem;
        return 0;
}
