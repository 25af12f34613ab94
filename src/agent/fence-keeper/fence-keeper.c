/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "cgroup-locate.h"
#include "config.h"
#include "file-util.h"
#include "daemon-util.h"
#include "fence-keeper.h"
#include "lease-store.h"
#include "log.h"
#include "spawn-util.h"

/* The longest the keeper sleeps: how late it sees a new lease (to look up its cgroup while the job's
 * process runs) and an agent that has gone. A fence time is never waited past: it wakes at the
 * earliest one in the file, re-reads the file (the agent may have renewed meanwhile) and acts. */
#define IDLE_USEC (500 * USEC_PER_MSEC)
#define KEEPER_ARG "--fence-keeper"
#define DETACH_ARG "--detach"
#ifndef MC_FENCE_KEEPER_PATH
#define MC_FENCE_KEEPER_PATH "/usr/libexec/mc/mc-fence-keeper"
#endif

/* After its fence time a lease is still watched for a while: a container whose start the engine was
 * still carrying out when the agent died may come up late. */
#define AFTER_FENCE_WATCH_USEC (30 * USEC_PER_SEC)
/* How often a due lease's cgroup is emptied again (one small read when the cgroup is known). */
#define RECHECK_USEC (200 * USEC_PER_MSEC)
/* A scan of every process is what a lease whose cgroup is unknown costs (thousands of /proc reads):
 * the first comes at once, the next ones after 200 ms, 400 ms, ... up to every 2 s. Several keepers
 * on one host (a test rig of many agents), each scanning at a fixed fast pace while its agent was
 * starved, took the CPU their agents needed to renew, and made more of them late. */
#define SCAN_FIRST_INTERVAL_USEC (200 * USEC_PER_MSEC)
#define SCAN_MAX_INTERVAL_USEC (2 * USEC_PER_SEC)

/* What the keeper knows of one lease of the file, kept across reloads of it. */
typedef struct Fence {
        char *task_id;
        int64_t lease_token;
        pid_t pid;              /* the process the cgroup was looked up from (0: none yet) */
        char *cgroup_dir;       /* the job's cgroup, found from that process; NULL: unknown */
        uint64_t next_check;    /* when the known cgroup is emptied again */
        bool gone;              /* the known cgroup was removed: nothing of the job is left */
} Fence;

static void fences_free(Fence *f, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(f[i].task_id);
                free(f[i].cgroup_dir);
        }
        free(f);
}

static void sleep_until(uint64_t when_usec) {
        struct timespec ts = {
                .tv_sec = (time_t) (when_usec / USEC_PER_SEC),
                .tv_nsec = (long) (when_usec % USEC_PER_SEC) * 1000,
        };

        /* CLOCK_MONOTONIC, the lease file's clock (now_usec()). */
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
}

static bool process_alive(pid_t pid) {
        return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The fences of a newly loaded lease list: what was known of a lease before is kept; a lease whose
 * process is known (and was not looked at yet) has its cgroup looked up now, while the process runs,
 * so that at its fence time (maybe long after the job ended) the keeper knows where to look. */
static Fence *fences_update(Fence *old, size_t n_old, const LeaseRecord *l, size_t n) {
        Fence *f = calloc(n + 1, sizeof(Fence));

        if (!f)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                Fence *o = NULL;

                for (size_t j = 0; j < n_old && !o; j++)
                        if (old[j].task_id && old[j].lease_token == l[i].lease_token && streq(old[j].task_id, l[i].task_id))
                                o = &old[j];
                if (o) {
                        f[i] = *o;
                        *o = (Fence) {};
                } else {
                        f[i].task_id = strdup(l[i].task_id);
                        f[i].lease_token = l[i].lease_token;
                        if (!f[i].task_id) {
                                fences_free(f, n);
                                return NULL;
                        }
                }
                /* The driver made the job's cgroup itself and said where (checked against the marker
                 * when the file was read). */
                if (l[i].cgroup_dir && !f[i].cgroup_dir) {
                        f[i].cgroup_dir = strdup(l[i].cgroup_dir);
                        if (!f[i].cgroup_dir) {
                                fences_free(f, n);
                                return NULL;
                        }
                }
                if (l[i].pid > 0 && l[i].cgroup_marker && !f[i].cgroup_dir && f[i].pid != (pid_t) l[i].pid) {
                        int r;

                        f[i].pid = (pid_t) l[i].pid;
                        r = cgroup_dir_of_pid(f[i].pid, l[i].cgroup_marker, &f[i].cgroup_dir);
                        if (r < 0)
                                log_debug_errno(r, "Fence keeper: no cgroup for task %s from process %d, scanning for it at its fence: %m",
                                                l[i].task_id, (int) f[i].pid);
                }
        }
        return f;
}

/* Kills every process whose cgroup path contains one of markers[]; counts them, per marker. */
static void kill_marked(char *const *markers, size_t n, unsigned *killed) {
        _cleanup_closedir_ DIR *d = NULL;
        struct dirent *de;

        d = opendir("/proc");
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *path = NULL, *line = NULL;
                _cleanup_fclose_ FILE *f = NULL;
                size_t ln = 0;
                pid_t pid;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                pid = (pid_t) atoi(de->d_name);
                if (pid == getpid() || asprintf(&path, "/proc/%s/cgroup", de->d_name) < 0)
                        continue;
                f = fopen(path, "re");
                while (f && getline(&line, &ln, f) > 0) {
                        size_t i;
                        for (i = 0; i < n; i++)
                                if (markers[i] && strstr(line, markers[i]))
                                        break;
                        if (i < n) {
                                (void) kill(pid, SIGKILL);
                                killed[i]++;
                                break;
                        }
                }
        }
}

static void log_fenced(const LeaseRecord *l, unsigned killed) {
        if (killed > 0)
                log_event(LOG_WARNING, MC_EVENT_LEASE_EXPIRED,
                          LOG_FIELDS("TASK_ID", l->task_id, "MC_FENCED_BY", "keeper"),
                          "Fence keeper: killed %u process(es) of task %s (lease %" PRIi64
                          "): its lease ran out with no agent renewing it.",
                          killed, l->task_id, l->lease_token);
}

_noreturn_ void fence_keeper_run(const char *lease_file, const char *pid_file, bool persistent) {
        struct timespec last_mtime = {};
        LeaseRecord *l = NULL;
        Fence *fences = NULL;
        size_t n = 0;
        pid_t agent = 0;
        uint64_t last_scan = 0, scan_interval = SCAN_FIRST_INTERVAL_USEC;
        /* Until the first look: a keeper (re)started late still kills what is past its fence, however
         * long ago that was (it cannot know what came up meanwhile). */
        bool first = true;

        log_setup("mc-agent-fence");
        (void) prctl(PR_SET_NAME, "mc-fence-keeper");
        {
                /* Atomic: an agent reading it never sees it half written. */
                char pid[24];
                int len = snprintf(pid, sizeof(pid), "%d\n", (int) getpid());
                (void) write_file_atomic(pid_file, pid, (size_t) len, 0644, 0);
        }
        log_info("Fence keeper %d watching %s%s.", (int) getpid(), lease_file, persistent ? " (persistent)" : "");

        for (;;) {
                struct stat st;
                uint64_t now = now_usec(), ttl;
                bool watching = false, newly_due = false;
                uint64_t wake = now + IDLE_USEC;
                _cleanup_free_ char **scan = NULL;
                _cleanup_free_ size_t *scan_of = NULL;
                _cleanup_free_ unsigned *killed = NULL;
                size_t n_scan = 0;

                if (stat(lease_file, &st) >= 0 &&
                    (st.st_mtim.tv_sec != last_mtime.tv_sec || st.st_mtim.tv_nsec != last_mtime.tv_nsec)) {
                        LeaseRecord *nl = NULL;
                        size_t nn = 0;
                        pid_t na = 0;

                        if (lease_store_load(lease_file, &ttl, &na, &nl, &nn) >= 0) {
                                Fence *nf = fences_update(fences, n, nl, nn);
                                if (nf) {
                                        fences_free(fences, n);
                                        lease_records_free(l, n);
                                        fences = nf;
                                        l = nl;
                                        n = nn;
                                        agent = na;
                                        last_mtime = st.st_mtim;
                                } else
                                        lease_records_free(nl, nn);
                        }
                }

                /* The file changes whenever the agent renews: a lease past its fence time in it means
                 * that nobody renewed it. Whatever of its job is alive dies: by its cgroup when the
                 * keeper knows it, else by its mark, scanning every process. */
                scan = calloc(n + 1, sizeof(char *));
                scan_of = calloc(n + 1, sizeof(size_t));
                killed = calloc(n + 1, sizeof(unsigned));
                for (size_t i = 0; scan && scan_of && killed && i < n; i++) {
                        Fence *f = &fences[i];

                        if (!l[i].cgroup_marker || f->gone)
                                continue;
                        if (now < l[i].fence_usec) {
                                watching = true;
                                wake = MIN(wake, l[i].fence_usec);
                                continue;
                        }
                        if (!first && now >= l[i].fence_usec + AFTER_FENCE_WATCH_USEC)
                                continue;
                        watching = true;
                        if (f->cgroup_dir) {
                                int k;

                                if (now >= f->next_check) {
                                        f->next_check = now + RECHECK_USEC;
                                        k = cgroup_dir_kill_all(f->cgroup_dir);
                                        if (k == -ENOENT)
                                                f->gone = true;
                                        else if (k > 0)
                                                log_fenced(&l[i], (unsigned) k);
                                }
                                wake = MIN(wake, f->next_check);
                                continue;
                        }
                        if (l[i].fence_usec > last_scan)
                                newly_due = true;
                        scan_of[n_scan] = i;
                        scan[n_scan++] = l[i].cgroup_marker;
                }
                if (newly_due)
                        scan_interval = SCAN_FIRST_INTERVAL_USEC;
                if (n_scan > 0 && (first || newly_due || now >= last_scan + scan_interval)) {
                        if (!first && !newly_due)
                                scan_interval = MIN(scan_interval * 2, (uint64_t) SCAN_MAX_INTERVAL_USEC);
                        last_scan = now;
                        kill_marked(scan, n_scan, killed);
                        for (size_t k = 0; k < n_scan; k++)
                                log_fenced(&l[scan_of[k]], killed[k]);
                }
                if (n_scan > 0)
                        wake = MIN(wake, last_scan + scan_interval);
                first = false;

                if (!watching && !persistent && !process_alive(agent)) {
                        log_info("Fence keeper: the agent is gone and nothing is left to fence; leaving.");
                        (void) unlink(pid_file);
                        _exit(EXIT_SUCCESS);
                }
                /* Polled, not watched with inotify: one instance per keeper is one of the few a user
                 * may have (128 by default), and a wake-up every half second costs nothing. */
                sleep_until(wake);
        }
}

static pid_t running_keeper(const char *pid_file) {
        _cleanup_free_ char *s = NULL, *path = NULL;
        _cleanup_close_ int fd = -1;
        char cmdline[4096];
        ssize_t n;
        int64_t pid;

        if (read_one_line_file(pid_file, &s) < 0 || parse_int64(s, &pid) < 0 || pid <= 1 || pid == getpid())
                return 0;
        if (asprintf(&path, "/proc/%" PRIi64 "/cmdline", pid) < 0)
                return 0;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        n = read(fd, cmdline, sizeof(cmdline) - 1);
        if (n <= 0)
                return 0;
        /* Arguments are NUL-separated: look at each. */
        for (ssize_t i = 0; i < n; i += (ssize_t) strlen(cmdline + i) + 1) {
                cmdline[n] = 0;
                if (streq(cmdline + i, KEEPER_ARG))
                        return (pid_t) pid;
        }
        return 0;
}

int fence_keeper_detach(const char *pid_file) {
        char buf[24];
        pid_t k;
        int n, r;

        k = fork();
        if (k < 0)
                return log_error_errno(errno, "Cannot detach the fence keeper: %m");
        if (k == 0)
                return 0;
        /* The keeper's pid, in place before the agent looks again (the keeper writes it too, once it
         * runs). Whoever started us waits for this exit. */
        n = snprintf(buf, sizeof(buf), "%d\n", (int) k);
        r = write_file_atomic(pid_file, buf, (size_t) n, 0644, 0);
        if (r < 0)
                log_warning_errno(r, "Cannot record the fence keeper's pid in %s: %m", pid_file);
        _exit(EXIT_SUCCESS);
}

int fence_keeper_ensure(const char *lease_file, const char *pid_file) {
        _cleanup_free_ char *exe = NULL;
        pid_t pid, keeper;
        int status, r;

        keeper = running_keeper(pid_file);
        if (keeper > 0) {
                log_debug("Fence keeper %d is running.", (int) keeper);
                return 0;
        }
        /* A program of its own, not a mode of mc-agent, so that it does not carry libcurl's libraries
         * (8 MiB of resident memory for a process that reads one file). */
        r = daemon_helper_path("mc-fence-keeper", MC_FENCE_KEEPER_PATH, &exe);
        if (r < 0)
                return log_oom();
        if (access(exe, X_OK) < 0)
                return log_error_errno(errno, "Cannot find mc-fence-keeper (%s): %m", exe);

        /* Started detached (fence_keeper_detach()): it belongs to nobody, as it must outlive us. Spawned,
         * not forked (spawn-util.h): the agent's other threads go on meanwhile. */
        r = spawn_helper(exe, (char *[]) { exe, (char *) KEEPER_ARG, (char *) lease_file, (char *) pid_file,
                                           (char *) DETACH_ARG, NULL }, -1, -1, &pid);
        if (r < 0)
                return log_error_errno(r, "Cannot start the fence keeper (%s): %m", exe);
        if (waitpid(pid, &status, 0) < 0)
                return log_error_errno(errno, "Cannot wait for the fence keeper's start: %m");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                log_error("The fence keeper (%s) did not start (wait status %d).", exe, status);
                return -EIO;
        }
        log_info("Started the fence keeper.");
        return 0;
}
