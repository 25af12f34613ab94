/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "file-util.h"
#include "daemon-util.h"
#include "fence-keeper.h"
#include "lease-store.h"
#include "log.h"

#define POLL_USEC (50 * USEC_PER_MSEC)
#define KEEPER_ARG "--fence-keeper"
#ifndef MC_FENCE_KEEPER_PATH
#define MC_FENCE_KEEPER_PATH "/usr/libexec/mc/mc-fence-keeper"
#endif

/* After its fence time a lease is still watched for a while: a container whose start the engine was
 * still carrying out when the agent died may come up late. */
#define AFTER_FENCE_WATCH_USEC (30 * USEC_PER_SEC)
#define SCAN_USEC (200 * USEC_PER_MSEC)

static bool process_alive(pid_t pid) {
        return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Kills every process whose cgroup path contains one of markers[]; returns how many, per marker. */
static void kill_marked(char *const *markers, size_t n, unsigned *killed) {
        struct dirent *de;
        DIR *d;

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
        closedir(d);
}

_noreturn_ void fence_keeper_run(const char *lease_file, const char *pid_file, bool persistent) {
        struct timespec last_mtime = {};
        LeaseRecord *l = NULL;
        size_t n = 0;
        pid_t agent = 0;
        uint64_t last_scan = 0;
        /* Until the first scan: a keeper (re)started late still kills what is past its fence, however
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
                bool watching = false;
                _cleanup_free_ char **due = NULL;
                _cleanup_free_ unsigned *killed = NULL;
                size_t n_due = 0;

                if (stat(lease_file, &st) >= 0 &&
                    (st.st_mtim.tv_sec != last_mtime.tv_sec || st.st_mtim.tv_nsec != last_mtime.tv_nsec)) {
                        LeaseRecord *nl = NULL;
                        size_t nn = 0;
                        pid_t na = 0;

                        if (lease_store_load(lease_file, &ttl, &na, &nl, &nn) >= 0) {
                                lease_records_free(l, n);
                                l = nl;
                                n = nn;
                                agent = na;
                                last_mtime = st.st_mtim;
                        }
                }

                due = calloc(n + 1, sizeof(char *));
                killed = calloc(n + 1, sizeof(unsigned));
                for (size_t i = 0; due && killed && i < n; i++) {
                        if (!l[i].cgroup_marker)
                                continue;
                        if (now < l[i].fence_usec) {
                                watching = true;
                                continue;
                        }
                        if (first || now < l[i].fence_usec + AFTER_FENCE_WATCH_USEC) {
                                watching = true;
                                due[n_due++] = l[i].cgroup_marker;
                        }
                }
                /* The file changes whenever the agent renews: a lease past its fence time in it means
                 * that nobody renewed it. Whatever carries its mark dies. */
                if (n_due > 0 && now >= last_scan + SCAN_USEC) {
                        last_scan = now;
                        first = false;
                        kill_marked(due, n_due, killed);
                        for (size_t i = 0, k = 0; i < n && k < n_due; i++) {
                                if (!l[i].cgroup_marker || l[i].cgroup_marker != due[k])
                                        continue;
                                if (killed[k] > 0)
                                        log_event(LOG_WARNING, MC_EVENT_LEASE_EXPIRED,
                                                  LOG_FIELDS("TASK_ID", l[i].task_id, "MC_FENCED_BY", "keeper"),
                                                  "Fence keeper: killed %u process(es) of task %s (lease %" PRIi64
                                                  "): its lease ran out with no agent renewing it.",
                                                  killed[k], l[i].task_id, l[i].lease_token);
                                k++;
                        }
                }

                if (n_due == 0)
                        first = false;
                if (!watching && !persistent && !process_alive(agent)) {
                        log_info("Fence keeper: the agent is gone and nothing is left to fence; leaving.");
                        (void) unlink(pid_file);
                        _exit(EXIT_SUCCESS);
                }
                (void) usleep(POLL_USEC);
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

int fence_keeper_ensure(const char *lease_file, const char *pid_file) {
        _cleanup_free_ char *tmp = NULL;
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

        /* Twice forked, so that it belongs to nobody: it must outlive us. Only async-signal-safe
         * calls in between (there may be threads). */
        if (asprintf(&tmp, "%s.new", pid_file) < 0)
                return log_oom();
        pid = fork();
        if (pid < 0)
                return log_error_errno(errno, "Cannot start the fence keeper: %m");
        if (pid == 0) {
                char *argv[] = { exe, (char *) KEEPER_ARG, (char *) lease_file, (char *) pid_file, NULL };
                sigset_t ss;
                pid_t k;

                (void) setsid();
                k = fork();
                if (k != 0) {
                        /* The keeper's pid, in place before the agent looks again (the keeper writes
                         * it too, once it runs). Formatted by hand: only async-signal-safe calls here. */
                        char buf[24];
                        int i = (int) sizeof(buf), fd;

                        buf[--i] = '\n';
                        for (unsigned long v = (unsigned long) (k > 0 ? k : 0); i > 0;) {
                                buf[--i] = (char) ('0' + v % 10);
                                v /= 10;
                                if (v == 0)
                                        break;
                        }
                        fd = k > 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
                        if (fd >= 0) {
                                if (write(fd, buf + i, sizeof(buf) - (size_t) i) == (ssize_t) (sizeof(buf) - (size_t) i))
                                        (void) rename(tmp, pid_file);
                                close(fd);
                        }
                        _exit(0);
                }
                sigemptyset(&ss);
                (void) sigprocmask(SIG_SETMASK, &ss, NULL);
#ifdef SYS_close_range
                (void) syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
#endif
                execv(exe, argv);
                _exit(127);
        }
        (void) waitpid(pid, &status, 0);
        log_info("Started the fence keeper.");
        return 0;
}
