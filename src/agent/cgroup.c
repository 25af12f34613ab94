/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "cgroup.h"
#include "config.h"
#include "file-util.h"
#include "log.h"

static bool is_dir(const char *p) {
        struct stat st;
        return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int cgroup_detect(const char *root, CgroupMode *ret) {
        _cleanup_free_ char *controllers = NULL, *memory = NULL;

        if (asprintf(&controllers, "%s/cgroup.controllers", root) < 0 || asprintf(&memory, "%s/memory", root) < 0)
                return -ENOMEM;
        /* The unified hierarchy has cgroup.controllers at its top; in hybrid mode it is mounted
         * below (unified/) and the controllers we need sit in the v1 hierarchies. */
        if (access(controllers, F_OK) == 0) {
                *ret = CGROUP_V2;
                return 0;
        }
        if (is_dir(memory)) {
                *ret = CGROUP_V1;
                return 0;
        }
        return -ENOMEDIUM;
}

const char *cgroup_mode_to_string(CgroupMode m) {
        return m == CGROUP_V2 ? "v2" : "v1";
}

int cgroup_dup(const Cgroup *cg, Cgroup **ret) {
        _cleanup_(cgroup_freep) Cgroup *c = NULL;

        assert(cg);
        c = calloc(1, sizeof(Cgroup));
        if (!c)
                return -ENOMEM;
        c->mode = cg->mode;
        if ((cg->v2 && !(c->v2 = strdup(cg->v2))) || (cg->memory && !(c->memory = strdup(cg->memory))) ||
            (cg->cpu && !(c->cpu = strdup(cg->cpu))))
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

Cgroup *cgroup_free(Cgroup *cg) {
        if (!cg)
                return NULL;
        free(cg->v2);
        free(cg->memory);
        free(cg->cpu);
        free(cg);
        return NULL;
}

/* mkdir -p for cgroupfs: each level separately, so that v2 can enable controllers on the way down. */
static int mkdir_parents_v2(const char *root, const char *path, bool enable) {
        _cleanup_free_ char *p = NULL;
        const char *s = path;
        int r;

        p = strdup(root);
        if (!p)
                return -ENOMEM;
        for (;;) {
                _cleanup_free_ char *sc = NULL, *np = NULL;
                size_t n;

                if (enable) {
                        /* Each controller on its own: one that is not available must not keep the
                         * other from being enabled. */
                        if (asprintf(&sc, "%s/cgroup.subtree_control", p) < 0)
                                return -ENOMEM;
                        (void) write_string_file(sc, "+memory");
                        (void) write_string_file(sc, "+cpu");
                }
                s += strspn(s, "/");
                if (!*s)
                        return 0;
                n = strcspn(s, "/");
                if (asprintf(&np, "%s/%.*s", p, (int) n, s) < 0)
                        return -ENOMEM;
                s += n;
                /* The last level is the job's own cgroup: no controllers enabled below it (a v2
                 * cgroup with processes may not have any). */
                enable = enable && *(s + strspn(s, "/")) != 0;
                if (mkdir(np, 0755) < 0 && errno != EEXIST) {
                        r = -errno;
                        return r;
                }
                free(p);
                p = TAKE_PTR(np);
        }
}

static int mkdir_parents(const char *root, const char *path) {
        return mkdir_parents_v2(root, path, false);
}

static int set_limits_v2(Cgroup *cg, int64_t nano_cpus, int64_t memory_bytes) {
        _cleanup_free_ char *f = NULL;
        char v[64];
        int r;

        if (nano_cpus > 0) {
                int64_t quota = MAX(nano_cpus * CGROUP_CPU_PERIOD_USEC / (int64_t) NSEC_PER_SEC, (int64_t) 1000);
                snprintf(v, sizeof(v), "%" PRIi64 " %d", quota, CGROUP_CPU_PERIOD_USEC);
                if (asprintf(&f, "%s/cpu.max", cg->v2) < 0)
                        return -ENOMEM;
                r = write_string_file(f, v);
                if (r < 0)
                        return log_error_errno(r, "Cannot set %s (is the cpu controller enabled?): %m", f);
                free(TAKE_PTR(f));
        }
        if (memory_bytes > 0) {
                snprintf(v, sizeof(v), "%" PRIi64, memory_bytes);
                if (asprintf(&f, "%s/memory.max", cg->v2) < 0)
                        return -ENOMEM;
                r = write_string_file(f, v);
                if (r < 0)
                        return log_error_errno(r, "Cannot set %s (is the memory controller enabled?): %m", f);
                free(TAKE_PTR(f));
                /* Swap would let a task exceed its memory unnoticed; not every kernel accounts it. */
                if (asprintf(&f, "%s/memory.swap.max", cg->v2) < 0)
                        return -ENOMEM;
                (void) write_string_file(f, "0");
        }
        return 0;
}

static int set_limits_v1(Cgroup *cg, int64_t nano_cpus, int64_t memory_bytes) {
        _cleanup_free_ char *f = NULL;
        char v[64];
        int r;

        if (nano_cpus > 0) {
                int64_t quota = MAX(nano_cpus * CGROUP_CPU_PERIOD_USEC / (int64_t) NSEC_PER_SEC, (int64_t) 1000);
                if (asprintf(&f, "%s/cpu.cfs_period_us", cg->cpu) < 0)
                        return -ENOMEM;
                snprintf(v, sizeof(v), "%d", CGROUP_CPU_PERIOD_USEC);
                r = write_string_file(f, v);
                if (r < 0)
                        return log_error_errno(r, "Cannot set %s: %m", f);
                free(TAKE_PTR(f));
                if (asprintf(&f, "%s/cpu.cfs_quota_us", cg->cpu) < 0)
                        return -ENOMEM;
                snprintf(v, sizeof(v), "%" PRIi64, quota);
                r = write_string_file(f, v);
                if (r < 0)
                        return log_error_errno(r, "Cannot set %s: %m", f);
                free(TAKE_PTR(f));
        }
        if (memory_bytes > 0) {
                snprintf(v, sizeof(v), "%" PRIi64, memory_bytes);
                if (asprintf(&f, "%s/memory.limit_in_bytes", cg->memory) < 0)
                        return -ENOMEM;
                r = write_string_file(f, v);
                if (r < 0)
                        return log_error_errno(r, "Cannot set %s: %m", f);
                free(TAKE_PTR(f));
                /* memsw must not be below the memory limit: set after it. Absent without swap accounting. */
                if (asprintf(&f, "%s/memory.memsw.limit_in_bytes", cg->memory) < 0)
                        return -ENOMEM;
                if (access(f, F_OK) == 0) {
                        r = write_string_file(f, v);
                        if (r < 0)
                                log_warning_errno(r, "Cannot set %s, swap is not limited: %m", f);
                }
        }
        return 0;
}

int cgroup_at(const char *root, CgroupMode mode, const char *path, Cgroup **ret) {
        _cleanup_(cgroup_freep) Cgroup *cg = NULL;

        cg = calloc(1, sizeof(Cgroup));
        if (!cg)
                return -ENOMEM;
        cg->mode = mode;
        path += strspn(path, "/");
        if (mode == CGROUP_V2) {
                if (asprintf(&cg->v2, "%s/%s", root, path) < 0)
                        return -ENOMEM;
        } else {
                if (asprintf(&cg->memory, "%s/memory/%s", root, path) < 0 ||
                    asprintf(&cg->cpu, "%s/cpu/%s", root, path) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(cg);
        return 0;
}

int cgroup_open(const char *root, CgroupMode mode, const char *path, Cgroup **ret) {
        _cleanup_(cgroup_freep) Cgroup *cg = NULL;
        int r;

        r = cgroup_at(root, mode, path, &cg);
        if (r < 0)
                return r;
        if (!is_dir(mode == CGROUP_V2 ? cg->v2 : cg->memory))
                return -ENOENT;
        *ret = TAKE_PTR(cg);
        return 0;
}

int cgroup_create(const char *root, CgroupMode mode, const char *path, int64_t nano_cpus, int64_t memory_bytes,
                  Cgroup **ret) {
        _cleanup_(cgroup_freep) Cgroup *cg = NULL;
        int r;

        r = cgroup_at(root, mode, path, &cg);
        if (r < 0)
                return r;

        if (mode == CGROUP_V2) {
                r = mkdir_parents_v2(root, path, true);
                if (r < 0)
                        return log_error_errno(r, "Cannot create cgroup %s: %m", cg->v2);
                r = set_limits_v2(cg, nano_cpus, memory_bytes);
        } else {
                _cleanup_free_ char *m = NULL, *c = NULL;

                if (asprintf(&m, "%s/memory", root) < 0 || asprintf(&c, "%s/cpu", root) < 0)
                        return -ENOMEM;
                r = mkdir_parents(m, path);
                if (r < 0)
                        return log_error_errno(r, "Cannot create cgroup %s: %m", cg->memory);
                r = mkdir_parents(c, path);
                if (r < 0)
                        return log_error_errno(r, "Cannot create cgroup %s: %m", cg->cpu);
                r = set_limits_v1(cg, nano_cpus, memory_bytes);
        }
        if (r < 0) {
                (void) cgroup_destroy(cg);
                return r;
        }
        *ret = TAKE_PTR(cg);
        return 0;
}

static int open_procs(const char *dir) {
        _cleanup_free_ char *f = NULL;
        int fd;

        if (asprintf(&f, "%s/cgroup.procs", dir) < 0)
                return -ENOMEM;
        fd = open(f, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        return fd;
}

int cgroup_open_procs(Cgroup *cg, int ret_fds[2]) {
        int a, b = -1;

        a = open_procs(cg->mode == CGROUP_V2 ? cg->v2 : cg->memory);
        if (a < 0)
                return a;
        if (cg->mode == CGROUP_V1) {
                b = open_procs(cg->cpu);
                if (b < 0) {
                        close(a);
                        return b;
                }
        }
        ret_fds[0] = a;
        ret_fds[1] = b;
        return 0;
}

static int read_pids(const char *dir, pid_t **ret, size_t *ret_n) {
        _cleanup_free_ char *f = NULL, *line = NULL;
        _cleanup_fclose_ FILE *fp = NULL;
        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0, a = 0, ln = 0;

        if (asprintf(&f, "%s/cgroup.procs", dir) < 0)
                return -ENOMEM;
        fp = fopen(f, "re");
        if (!fp)
                return -errno;
        while (getline(&line, &ln, fp) > 0) {
                int64_t v;
                line[strcspn(line, "\n")] = 0;
                if (parse_int64(line, &v) < 0 || v <= 0)
                        continue;
                if (n == a) {
                        pid_t *np;
                        a = MAX(a * 2, (size_t) 8);
                        np = realloc(pids, a * sizeof(pid_t));
                        if (!np)
                                return -ENOMEM;
                        pids = np;
                }
                pids[n++] = (pid_t) v;
        }
        *ret = TAKE_PTR(pids);
        *ret_n = n;
        return 0;
}

static const char *procs_dir(Cgroup *cg) {
        return cg->mode == CGROUP_V2 ? cg->v2 : cg->memory;
}

int cgroup_kill(Cgroup *cg, int sig) {
        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0;
        int r;

        /* cgroup.kill (v2, Linux 5.14) kills atomically, even a process forking right now. */
        if (cg->mode == CGROUP_V2 && sig == SIGKILL) {
                _cleanup_free_ char *f = NULL;
                if (asprintf(&f, "%s/cgroup.kill", cg->v2) < 0)
                        return -ENOMEM;
                if (write_string_file(f, "1") >= 0)
                        return 1;
        }

        r = read_pids(procs_dir(cg), &pids, &n);
        if (r < 0)
                return r == -ENOENT ? 0 : r;
        for (size_t i = 0; i < n; i++)
                (void) kill(pids[i], sig);
        return (int) n;
}

int cgroup_is_empty(Cgroup *cg) {
        _cleanup_free_ pid_t *pids = NULL;
        size_t n = 0;
        int r;

        r = read_pids(procs_dir(cg), &pids, &n);
        if (r == -ENOENT)
                return 1;
        if (r < 0)
                return r;
        return n == 0;
}

static int64_t read_key(const char *file, const char *key) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t n = 0, kl = strlen(key);

        f = fopen(file, "re");
        if (!f)
                return -1;
        while (getline(&line, &n, f) > 0)
                if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
                        return strtoll(line + kl + 1, NULL, 10);
        return -1;
}

bool cgroup_oom_killed(Cgroup *cg) {
        _cleanup_free_ char *f = NULL;

        if (asprintf(&f, cg->mode == CGROUP_V2 ? "%s/memory.events" : "%s/memory.oom_control", procs_dir(cg)) < 0)
                return false;
        return read_key(f, "oom_kill") > 0;
}

static int rmdir_retry(const char *dir) {
        /* A cgroup whose last process just died may still count as busy for a moment. */
        for (unsigned i = 0; i < 100; i++) {
                if (rmdir(dir) >= 0 || errno == ENOENT)
                        return 0;
                if (errno != EBUSY)
                        return -errno;
                usleep(10000);
        }
        return -EBUSY;
}

int cgroup_destroy(Cgroup *cg) {
        int r = 0, k;

        for (unsigned i = 0; i < 100; i++) {
                k = cgroup_is_empty(cg);
                if (k != 0)
                        break;
                (void) cgroup_kill(cg, SIGKILL);
                usleep(10000);
        }
        if (cg->mode == CGROUP_V2)
                return rmdir_retry(cg->v2);
        k = rmdir_retry(cg->memory);
        if (k < 0)
                r = k;
        k = rmdir_retry(cg->cpu);
        if (k < 0 && r == 0)
                r = k;
        return r;
}

static int read_int_file(const char *dir, const char *name, int64_t *ret) {
        _cleanup_free_ char *f = NULL, *s = NULL;
        int r;

        if (asprintf(&f, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        r = read_one_line_file(f, &s);
        if (r < 0)
                return r;
        return parse_int64(s, ret);
}

int cgroup_get_limits(Cgroup *cg, int64_t *ret_cpu_quota_usec, int64_t *ret_cpu_period_usec, int64_t *ret_memory) {
        int64_t quota = -1, period = CGROUP_CPU_PERIOD_USEC, mem = -1;
        int r;

        if (cg->mode == CGROUP_V2) {
                _cleanup_free_ char *f = NULL, *s = NULL;
                char q[32];
                long long p;

                if (asprintf(&f, "%s/cpu.max", cg->v2) < 0)
                        return -ENOMEM;
                if (read_one_line_file(f, &s) >= 0 && sscanf(s, "%31s %lld", q, &p) == 2) {
                        period = p;
                        if (!streq(q, "max"))
                                (void) parse_int64(q, &quota);
                }
                free(TAKE_PTR(f));
                free(TAKE_PTR(s));
                if (asprintf(&f, "%s/memory.max", cg->v2) < 0)
                        return -ENOMEM;
                if (read_one_line_file(f, &s) >= 0 && !streq(s, "max"))
                        (void) parse_int64(s, &mem);
        } else {
                r = read_int_file(cg->cpu, "cpu.cfs_quota_us", &quota);
                if (r < 0)
                        return r;
                (void) read_int_file(cg->cpu, "cpu.cfs_period_us", &period);
                r = read_int_file(cg->memory, "memory.limit_in_bytes", &mem);
                if (r < 0)
                        return r;
                /* "No limit" in v1 is a huge page-aligned number. */
                if (mem >= INT64_MAX / 2)
                        mem = -1;
                if (quota < 0)
                        quota = -1;
        }
        if (ret_cpu_quota_usec)
                *ret_cpu_quota_usec = quota;
        if (ret_cpu_period_usec)
                *ret_cpu_period_usec = period;
        if (ret_memory)
                *ret_memory = mem;
        return 0;
}

int cgroup_list_children(const char *root, CgroupMode mode, const char *path, char ***ret) {
        _cleanup_strv_free_ char **l = calloc(1, sizeof(char *));
        _cleanup_free_ char *dir = NULL;
        DIR *d;
        struct dirent *de;

        if (!l)
                return -ENOMEM;
        path += strspn(path, "/");
        if (asprintf(&dir, mode == CGROUP_V2 ? "%s/%s" : "%s/memory/%s", root, path) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return -errno;
                *ret = TAKE_PTR(l);
                return 0;
        }
        while ((de = readdir(d))) {
                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                if (strv_extend(&l, de->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
        }
        closedir(d);
        *ret = TAKE_PTR(l);
        return 0;
}
