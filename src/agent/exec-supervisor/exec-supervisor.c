/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-exec-supervisor: one exec job's command, watched by a process that outlives the agent.
 *
 * The agent forks it (in a session of its own, outside the task's cgroup, so that neither an agent
 * restart under KillMode=process nor a kill of the task's cgroup touches it) and, once it has
 * recorded the job on disk, writes one byte to our stdin. Only then do we fork the command into the
 * task's cgroup; an agent that died before (EOF on stdin) recorded nothing, and nothing runs.
 *
 * We read the command's stdout and stderr, keep the first <cap> bytes in <job>/output and the last
 * <tail_max> bytes of each stream in memory, note in <job>/started when it runs, wait for it, kill
 * what it left in its cgroup, and record the exit status and the tails in <job>/result (see
 * exec-job-files.h). The agent, whichever one runs by then, watches us with a pidfd and reads that.
 *
 * The command (or the mc-fence-init that starts it) runs as USER ("UID:GID", or "-" to keep ours),
 * set in the child after it has joined the cgroup and just before execve(): no supplementary groups,
 * no capabilities, no_new_privs, a session of its own (exec-user.h). The supervisor itself stays
 * root: it writes the job's files, which the task cannot touch.
 *
 * Usage (internal): mc-exec-supervisor JOB_DIR CGROUP_ROOT v1|v2 CGROUP_PATH CAP TAIL_MAX WORK_DIR
 *                                      USER EXE N_ENV ENV... ARGV... */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "config.h"
#include "daemon-util.h"
#include "exec-job-files.h"
#include "exec-user.h"
#include "log.h"
#include "output-capture.h"

/* After the command has exited and its cgroup was emptied, pipes still open somewhere (a process that
 * left the cgroup) must not keep the result back for long. */
#define DRAIN_TIMEOUT_USEC (2 * USEC_PER_SEC)

/* What the child did not get to: sent through the error pipe with the errno, before it exits. */
typedef enum ChildStep {
        CHILD_SETUP,            /* signals, the cgroup, the session, stdio */
        CHILD_PRIVILEGES,       /* + an ExecPrivStep */
        CHILD_WORK_DIR = CHILD_PRIVILEGES + _EXEC_PRIV_STEP_MAX,
        CHILD_EXECUTE,
} ChildStep;

typedef struct ChildError {
        int step;
        int error;
} ChildError;

typedef struct Job {
        const char *dir, *work_dir, *exe;
        ExecUser user;
        char **argv, **envp;
        size_t cap;
        Cgroup *cgroup;
        int output_fd;
        size_t output_size;
        bool output_failed;
        OutputCapture tails;            /* cap 0: only the tails and the count */
} Job;

/* In the command's child until execve(). */
static _noreturn_ void task_child(const Job *j, pid_t parent, const int procs[2], int devnull, int out_w, int err_w,
                                  int errpipe) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        ChildError ce = { .step = CHILD_SETUP };
        ExecPrivStep ps;
        sigset_t ss;
        int r;

        for (int sig = 1; sig < _NSIG; sig++)
                (void) sigaction(sig, &sa, NULL);
        sigemptyset(&ss);
        (void) sigprocmask(SIG_SETMASK, &ss, NULL);

        /* Whoever kills us (a leftover discarded by a restarted agent) kills the command too, even if
         * it is not in its cgroup yet. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                goto fail;
        if (getppid() != parent)
                _exit(127);
        if (setsid() < 0)
                goto fail;
        for (int i = 0; i < 2; i++)
                if (procs[i] >= 0 && write(procs[i], "0", 1) != 1)
                        goto fail;
        if (dup2(devnull, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
                goto fail;
        /* In the cgroup already: the task's user from here on. */
        r = exec_user_drop_privileges(&j->user, &ps);
        if (r < 0) {
                ce.step = CHILD_PRIVILEGES + (int) ps;
                errno = -r;
                goto fail;
        }
        /* The kernel clears the parent-death signal when the uid or gid changes: again, and we may
         * have missed our parent's death meanwhile. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
                goto fail;
        if (getppid() != parent)
                _exit(127);
        /* As the task: a work directory it cannot enter is said now, not found by the command. */
        ce.step = CHILD_WORK_DIR;
        if (chdir(j->work_dir) < 0)
                goto fail;
#ifdef SYS_close_range
        (void) syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
#endif
        ce.step = CHILD_EXECUTE;
        execve(j->exe, j->argv, j->envp);
fail:
        ce.error = errno;
        (void) write(errpipe, &ce, sizeof(ce));
        _exit(127);
}

static void add_output(Job *j, OutputStream stream, const char *buf, size_t n) {
        (void) output_capture_add(&j->tails, stream, buf, n);
        if (j->output_failed || j->output_size >= j->cap)
                return;
        n = MIN(n, j->cap - j->output_size);
        while (n > 0) {
                ssize_t w = write(j->output_fd, buf, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) {
                        log_error_errno(errno, "Cannot write the output of the job in %s: %m", j->dir);
                        j->output_failed = true;
                        return;
                }
                j->output_size += (size_t) w;
                buf += w;
                n -= (size_t) w;
        }
}

static char *tail_copy(const OutputCapture *c, OutputStream stream, size_t *ret_size) {
        const OutputTail *t = &c->tails[stream - 1];
        char *b = malloc(MAX(t->size, (size_t) 1));

        if (!b)
                return NULL;
        for (size_t i = 0; i < t->size; i++)
                b[i] = t->buf[(t->start + i) % MAX(c->tail_max, (size_t) 1)];
        *ret_size = t->size;
        return b;
}

static int record_result(Job *j, const char *error, int64_t exit_code, uint64_t ended_usec) {
        ExecJobResult r = {
                .exit_code = exit_code,
                .ended_usec = ended_usec,
                .total = j->tails.total,
                .truncated = j->tails.total > j->cap,
                /* Here rather than in the agent, whose loop must not wait on cgroup files. */
                .oom_killed = j->cgroup && cgroup_oom_killed(j->cgroup),
        };
        int k;

        if (j->output_fd >= 0 && fsync(j->output_fd) < 0)
                log_warning_errno(errno, "Cannot sync the output of the job in %s: %m", j->dir);
        r.error = (char *) error;
        r.tails[0] = tail_copy(&j->tails, OUTPUT_STDOUT, &r.tail_sizes[0]);
        r.tails[1] = tail_copy(&j->tails, OUTPUT_STDERR, &r.tail_sizes[1]);
        if (!r.tails[0] || !r.tails[1])
                k = -ENOMEM;
        else
                k = exec_job_result_write(j->dir, &r);
        free(r.tails[0]);
        free(r.tails[1]);
        if (k < 0)
                return log_error_errno(k, "Cannot record the result of the job in %s: %m", j->dir);
        return 0;
}

static int run_job(Job *j, const char *cg_root, CgroupMode mode, const char *cg_path) {
        int out[2] = { -1, -1 }, err[2] = { -1, -1 }, errpipe[2] = { -1, -1 }, procs[2] = { -1, -1 };
        _cleanup_free_ char *error = NULL, *output_path = NULL;
        ChildError child_error = {};
        int devnull = -1, pidfd = -1, r;
        bool exited = false;
        int64_t exit_code = -1;
        uint64_t drain_end = 0, ended_usec = 0;
        pid_t pid, self = getpid();

        r = cgroup_open(cg_root, mode, cg_path, &j->cgroup);
        if (r >= 0)
                r = cgroup_open_procs(j->cgroup, procs);
        if (r < 0) {
                (void) asprintf(&error, "cannot join the task's cgroup: %s", strerror(-r));
                return record_result(j, error, -1, 0);
        }
        if (asprintf(&output_path, "%s/output", j->dir) < 0)
                return log_oom();
        j->output_fd = open(output_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (j->output_fd < 0 || devnull < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
            pipe2(errpipe, O_CLOEXEC) < 0) {
                (void) asprintf(&error, "cannot start the command: %s", strerror(errno));
                return record_result(j, error, -1, 0);
        }

        pid = fork();
        if (pid < 0) {
                (void) asprintf(&error, "cannot start the command: %s", strerror(errno));
                return record_result(j, error, -1, 0);
        }
        if (pid == 0)
                task_child(j, self, procs, devnull, out[1], err[1], errpipe[1]);
        close(out[1]);
        close(err[1]);
        close(errpipe[1]);
        close(devnull);
        for (int i = 0; i < 2; i++)
                if (procs[i] >= 0)
                        close(procs[i]);
        /* Our child: its pid stays ours until we reap it. */
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0)
                log_warning_errno(errno, "pidfd_open(%d) failed, falling back to waitpid(): %m", (int) pid);

        while (out[0] >= 0 || err[0] >= 0 || errpipe[0] >= 0 || !exited) {
                struct pollfd p[4] = {
                        { .fd = out[0], .events = POLLIN },
                        { .fd = err[0], .events = POLLIN },
                        { .fd = errpipe[0], .events = POLLIN },
                        { .fd = exited ? -1 : pidfd, .events = POLLIN },
                };
                int timeout = -1, n;

                if (exited) {
                        uint64_t now = now_usec();
                        if (now >= drain_end) {
                                log_warning("The output pipes of the job in %s stayed open after it ended; not waiting for them.",
                                            j->dir);
                                break;
                        }
                        timeout = (int) ((drain_end - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
                } else if (pidfd < 0)
                        timeout = 100;

                n = poll(p, ELEMENTSOF(p), timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        log_error_errno(errno, "poll() failed: %m");
                        break;
                }
                for (size_t i = 0; i < 2; i++) {
                        int *fd = i == 0 ? &out[0] : &err[0];
                        char buf[65536];
                        ssize_t k;

                        if (*fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        k = read(*fd, buf, sizeof(buf));
                        if (k > 0)
                                add_output(j, i == 0 ? OUTPUT_STDOUT : OUTPUT_STDERR, buf, (size_t) k);
                        else if (k == 0 || (errno != EINTR && errno != EAGAIN)) {
                                close(*fd);
                                *fd = -1;
                        }
                }
                if (errpipe[0] >= 0 && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) {
                        ChildError e = {};
                        ssize_t k = read(errpipe[0], &e, sizeof(e));
                        if (k < 0 && errno == EINTR)
                                continue;
                        close(errpipe[0]);
                        errpipe[0] = -1;
                        if (k == (ssize_t) sizeof(e) && e.error > 0)
                                child_error = e;
                        else {
                                /* EOF: close-on-exec closed it, the command runs. */
                                r = exec_job_started_write(j->dir, &(ExecJobStarted) {
                                                .pid = pid, .realtime_usec = realtime_usec() });
                                if (r < 0)
                                        log_error_errno(r, "Cannot record the start of the job in %s: %m", j->dir);
                        }
                }
                if (!exited && (pidfd < 0 || (p[3].revents & POLLIN))) {
                        int status;
                        pid_t w = waitpid(pid, &status, pidfd < 0 ? WNOHANG : 0);
                        if (w == pid) {
                                exited = true;
                                exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                                /* For the agent, which may see it only later: whether it ended before
                                 * its lease's fence. */
                                ended_usec = now_usec();
                                /* Whatever it left running in its cgroup ends with it (and so the pipes
                                 * close). */
                                (void) cgroup_kill(j->cgroup, SIGKILL);
                                drain_end = now_usec() + DRAIN_TIMEOUT_USEC;
                        }
                }
        }
        for (size_t i = 0; i < 2; i++) {
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
                if (errpipe[i] >= 0)
                        close(errpipe[i]);
        }
        if (pidfd >= 0)
                close(pidfd);

        if (child_error.error > 0) {
                int s = child_error.step;
                const char *what = s >= CHILD_PRIVILEGES && s < CHILD_WORK_DIR ?
                                   exec_priv_step_to_string((ExecPrivStep) (s - CHILD_PRIVILEGES)) : NULL;

                if (what)
                        (void) asprintf(&error, "cannot %s (%u:%u) before running the command: %s", what,
                                        (unsigned) j->user.uid, (unsigned) j->user.gid, strerror(child_error.error));
                else if (s == CHILD_WORK_DIR)
                        (void) asprintf(&error, "cannot enter the work directory %s as uid %u: %s", j->work_dir,
                                        (unsigned) j->user.uid, strerror(child_error.error));
                else if (s == CHILD_EXECUTE)
                        (void) asprintf(&error, "cannot execute %s: %s", j->exe, strerror(child_error.error));
                else
                        (void) asprintf(&error, "cannot set the command up: %s", strerror(child_error.error));
                return record_result(j, error ?: "cannot execute the command", -1, 0);
        }
        return record_result(j, NULL, exit_code, ended_usec);
}

static int run(int argc, char *argv[]) {
        Job j = { .output_fd = -1 };
        const char *cg_root, *cg_path;
        int64_t cap, tail_max, n_env;
        CgroupMode mode;
        ssize_t n;
        char go;
        int r;

        log_setup("mc-exec-supervisor");
        if (argc < 12 || parse_int64(argv[5], &cap) < 0 || parse_int64(argv[6], &tail_max) < 0 ||
            exec_user_parse_numeric(argv[8], &j.user) < 0 ||
            parse_int64(argv[10], &n_env) < 0 || cap < 0 || tail_max < 0 || n_env < 0 || n_env > argc - 12 ||
            (!streq(argv[3], "v1") && !streq(argv[3], "v2"))) {
                fprintf(stderr, "Usage: %s JOB_DIR CGROUP_ROOT v1|v2 CGROUP_PATH CAP TAIL_MAX WORK_DIR UID:GID|- EXE N_ENV ENV... ARGV...\n"
                        "(started by mc-agent's exec driver, not by hand)\n", argv[0]);
                return 2;
        }
        j.dir = argv[1];
        cg_root = argv[2];
        mode = streq(argv[3], "v2") ? CGROUP_V2 : CGROUP_V1;
        cg_path = argv[4];
        j.cap = (size_t) cap;
        j.work_dir = argv[7];
        j.exe = argv[9];

        /* The env entries are copied into a NULL-terminated array of their own; the command's argv
         * runs to the end of ours, NULL included. */
        j.envp = calloc((size_t) n_env + 1, sizeof(char *));
        if (!j.envp)
                return log_oom();
        for (int64_t i = 0; i < n_env; i++)
                j.envp[i] = argv[11 + i];
        j.argv = argv + 11 + n_env;
        if (!j.argv[0]) {
                free(j.envp);
                return 2;
        }
        if (output_capture_init(&j.tails, 0, (size_t) tail_max) < 0) {
                free(j.envp);
                return log_oom();
        }

        /* A write to a pipe whose reader is gone must not kill us. */
        (void) signal(SIGPIPE, SIG_IGN);

        /* The agent's go: the job is recorded. EOF: the agent died before; the job never existed. */
        do
                n = read(STDIN_FILENO, &go, 1);
        while (n < 0 && errno == EINTR);
        if (n == 1)
                r = run_job(&j, cg_root, mode, cg_path);
        else {
                log_info("The agent went away before it recorded the job in %s; not running it.", j.dir);
                r = 0;
        }

        if (j.output_fd >= 0)
                close(j.output_fd);
        cgroup_free(j.cgroup);
        output_capture_done(&j.tails);
        free(j.envp);
        return r < 0 ? r : 0;
}

DEFINE_MAIN_FUNCTION(run);
