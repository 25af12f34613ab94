/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The exec driver: a task's cmd runs as a child process of the agent, in a session and a cgroup of
 * its own (limits applied there), with its output read from pipes on the event loop. A stop signals
 * the whole cgroup, so that nothing the task forked survives it.
 *
 * Jobs cannot be adopted by a restarted agent: their output pipes ended with the old agent, and the
 * exit status of a process that is not our child cannot be had. A restarted agent kills what is left
 * (list_leftovers reports it as not adoptable); the control then runs the task again once its lease
 * has expired. */

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "config.h"
#include "daemon-util.h"
#include "driver.h"
#include "log.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* After the main process has exited and its cgroup was emptied, pipes still open somewhere (a process
 * that left the cgroup) must not keep the result back for long. */
#define DRAIN_TIMEOUT_USEC (2 * USEC_PER_SEC)

typedef struct ExecDriver {
        Driver driver;
        char *cgroup_root;
        char *cgroup_path;
        char *work_dir;
        CgroupMode mode;
        size_t output_cap, tail_max;
} ExecDriver;

typedef struct ExecJob {
        DriverJob job;
        char *name;             /* <task>-<lease>: cgroup and work directory */
        char *work_dir;
        char *handle;
        char *exe;
        Cgroup *cgroup;
        pid_t pid;
        sd_event_source *child_source, *out_source, *err_source, *errpipe_source;
        sd_event_source *kill_timer, *drain_timer;
        OutputCapture capture;
        bool exec_confirmed, process_exited, reported, failed_early;
        int status;             /* waitid() si_code/si_status turned into an exit code */
        char *early_error;
} ExecJob;

static ExecDriver *exec_driver(Driver *d) {
        return (ExecDriver *) d;
}

static ExecJob *exec_job(DriverJob *j) {
        return (ExecJob *) j;
}

static int rm_rf_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void rm_rf(const char *path) {
        (void) nftw(path, rm_rf_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++)
                if (*s == '/') {
                        *s = 0;
                        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                                return -errno;
                        *s = '/';
                }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static void job_sources_free(ExecJob *j) {
        j->child_source = sd_event_source_disable_unref(j->child_source);
        j->out_source = sd_event_source_disable_unref(j->out_source);
        j->err_source = sd_event_source_disable_unref(j->err_source);
        j->errpipe_source = sd_event_source_disable_unref(j->errpipe_source);
        j->kill_timer = sd_event_source_disable_unref(j->kill_timer);
        j->drain_timer = sd_event_source_disable_unref(j->drain_timer);
}

static void report(ExecJob *j) {
        DriverExit e = { .output = &j->capture };
        _cleanup_free_ char *reason = NULL;

        if (j->reported)
                return;
        j->reported = true;
        job_sources_free(j);

        if (j->failed_early || !j->exec_confirmed) {
                e.error = -EIO;
                e.exit_code = -1;
                e.reason = j->early_error ?: "the command could not be started";
        } else {
                e.exit_code = j->status;
                e.oom_killed = j->cgroup && cgroup_oom_killed(j->cgroup);
                if (e.oom_killed)
                        e.reason = "killed by the kernel: out of memory (the task's memory limit)";
                else if (j->status > 128 && j->status < 128 + 65) {
                        if (asprintf(&reason, "killed by signal %s", strsignal(j->status - 128)) >= 0)
                                e.reason = reason;
                }
        }
        j->job.cb.exited(&j->job, &e, j->job.userdata);
}

static int on_drain_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        ExecJob *j = userdata;

        log_warning("Task %s: its output pipes stayed open after it ended; not waiting for them.", j->job.task_id);
        j->out_source = sd_event_source_disable_unref(j->out_source);
        j->err_source = sd_event_source_disable_unref(j->err_source);
        report(j);
        return 0;
}

static void maybe_report(ExecJob *j) {
        if (j->reported || !j->process_exited || j->errpipe_source)
                return;
        if (j->out_source || j->err_source) {
                /* Output still to be read. */
                if (!j->drain_timer &&
                    sd_event_add_time_relative(j->job.driver->event, &j->drain_timer, CLOCK_MONOTONIC,
                                               DRAIN_TIMEOUT_USEC, 0, on_drain_timeout, j) < 0)
                        log_warning("Cannot arm the output drain timer of task %s.", j->job.task_id);
                return;
        }
        report(j);
}

static int on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ExecJob *j = userdata;
        OutputStream stream = s == j->out_source ? OUTPUT_STDOUT : OUTPUT_STDERR;
        char buf[16384];
        ssize_t n;

        /* A bounded number of reads per wakeup keeps one chatty task from starving the loop. */
        for (unsigned i = 0; i < 16; i++) {
                n = read(fd, buf, sizeof(buf));
                if (n > 0) {
                        (void) output_capture_add(&j->capture, stream, buf, (size_t) n);
                        continue;
                }
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                /* EOF or error: this stream is done. */
                if (stream == OUTPUT_STDOUT)
                        j->out_source = sd_event_source_disable_unref(j->out_source);
                else
                        j->err_source = sd_event_source_disable_unref(j->err_source);
                maybe_report(j);
                return 0;
        }
        return 0;
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        ExecJob *j = userdata;

        j->process_exited = true;
        if (si->si_code == CLD_EXITED)
                j->status = si->si_status;
        else
                j->status = 128 + si->si_status;
        j->child_source = sd_event_source_disable_unref(j->child_source);
        j->kill_timer = sd_event_source_disable_unref(j->kill_timer);

        /* Whatever it left running in its cgroup ends with it (and so the pipes close). */
        if (j->cgroup)
                (void) cgroup_kill(j->cgroup, SIGKILL);

        maybe_report(j);
        return 0;
}

static int on_errpipe(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ExecJob *j = userdata;
        int err = 0;
        ssize_t n;

        n = read(fd, &err, sizeof(err));
        if (n < 0 && errno == EAGAIN)
                return 0;
        j->errpipe_source = sd_event_source_disable_unref(j->errpipe_source);
        if (n == (ssize_t) sizeof(err) && err > 0) {
                j->failed_early = true;
                free(j->early_error);
                if (asprintf(&j->early_error, "cannot execute %s: %s", j->exe, strerror(err)) < 0)
                        j->early_error = NULL;
        } else {
                /* EOF: close-on-exec closed it, the command runs. */
                j->exec_confirmed = true;
                if (j->job.cb.started)
                        j->job.cb.started(&j->job, j->handle, realtime_usec(), j->job.userdata);
        }
        maybe_report(j);
        return 0;
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ExecJob *j = userdata;

        log_info("Task %s did not stop within its grace period; killing it.", j->job.task_id);
        if (j->cgroup)
                (void) cgroup_kill(j->cgroup, SIGKILL);
        if (j->pid > 0)
                (void) kill(j->pid, SIGKILL);
        return 0;
}

static char *find_executable(const char *name, const char *path) {
        const char *p = path;

        if (strchr(name, '/'))
                return access(name, X_OK) == 0 ? strdup(name) : NULL;
        while (p && *p) {
                size_t n = strcspn(p, ":");
                _cleanup_free_ char *f = NULL;
                if (n > 0 && asprintf(&f, "%.*s/%s", (int) n, p, name) >= 0 && access(f, X_OK) == 0)
                        return TAKE_PTR(f);
                p += n;
                p += strspn(p, ":");
        }
        return NULL;
}

static int build_env(const DriverJobSpec *spec, const char *work_dir, char ***ret, const char **ret_path) {
        _cleanup_strv_free_ char **env = calloc(1, sizeof(char *));
        const char *path = DEFAULT_PATH;
        char buf[64];
        int r;

        if (!env)
                return -ENOMEM;
        if (spec->env) {
                json_object_object_foreach(spec->env, k, v) {
                        _cleanup_free_ char *kv = NULL;
                        if (!json_object_is_type(v, json_type_string))
                                continue;
                        if (streq(k, "PATH"))
                                path = json_object_get_string(v);
                        if (asprintf(&kv, "%s=%s", k, json_object_get_string(v)) < 0 || strv_extend(&env, kv) < 0)
                                return -ENOMEM;
                }
        }
        if (!spec->env || !json_object_object_get_ex(spec->env, "PATH", NULL)) {
                _cleanup_free_ char *kv = NULL;
                if (asprintf(&kv, "PATH=%s", DEFAULT_PATH) < 0 || strv_extend(&env, kv) < 0)
                        return -ENOMEM;
        }
        {
                _cleanup_free_ char *home = NULL, *id = NULL;
                if (asprintf(&home, "HOME=%s", work_dir) < 0 || strv_extend(&env, home) < 0)
                        return -ENOMEM;
                if (asprintf(&id, "MC_TASK_ID=%s", spec->task_id) < 0 || strv_extend(&env, id) < 0)
                        return -ENOMEM;
        }
        snprintf(buf, sizeof(buf), "MC_ATTEMPT=%" PRIi64, spec->attempt);
        r = strv_extend(&env, buf);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(env);
        *ret_path = path;
        return 0;
}

/* Between fork() and execve(): only async-signal-safe calls (the agent has threads: libcurl's resolver). */
static _noreturn_ void child(const char *exe, char *const *argv, char *const *envp, const char *work_dir,
                             const int procs[2], int devnull, int out_w, int err_w, int errpipe) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t ss;
        int err;

        for (int sig = 1; sig < _NSIG; sig++)
                (void) sigaction(sig, &sa, NULL);
        sigemptyset(&ss);
        (void) sigprocmask(SIG_SETMASK, &ss, NULL);

        if (setsid() < 0)
                goto fail;
        for (int i = 0; i < 2; i++)
                if (procs[i] >= 0 && write(procs[i], "0", 1) != 1)
                        goto fail;
        if (dup2(devnull, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
                goto fail;
        if (chdir(work_dir) < 0)
                goto fail;
        /* Nothing of the agent's (sockets, journal) leaks into the task. */
#ifdef SYS_close_range
        (void) syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
#endif
        execve(exe, argv, envp);
fail:
        err = errno;
        (void) write(errpipe, &err, sizeof(err));
        _exit(127);
}

static int add_output_source(ExecJob *j, int fd, sd_event_source **ret) {
        int r = sd_event_add_io(j->job.driver->event, ret, fd, EPOLLIN, on_output, j);
        if (r < 0)
                return r;
        (void) sd_event_source_set_io_fd_own(*ret, true);
        return 0;
}

static void fail_later_cb(void *userdata) {
        report(userdata);
}

static int exec_job_start(Driver *d, const DriverJobSpec *spec, const DriverJobCallbacks *cb, void *userdata,
                          DriverJob **ret) {
        ExecDriver *ed = exec_driver(d);
        ExecJob *j;
        _cleanup_strv_free_ char **env = NULL;
        _cleanup_free_ char *cgpath = NULL;
        int out[2] = { -1, -1 }, err[2] = { -1, -1 }, errpipe[2] = { -1, -1 }, procs[2] = { -1, -1 };
        int devnull = -1, r;
        const char *path;
        pid_t pid;

        j = calloc(1, sizeof(ExecJob));
        if (!j)
                return -ENOMEM;
        r = driver_job_init(&j->job, d, spec->task_id, spec->lease_token, spec->attempt, spec->timeout_sec, cb, userdata);
        if (r < 0)
                goto fail_alloc;
        r = output_capture_init(&j->capture, ed->output_cap, ed->tail_max);
        if (r < 0)
                goto fail_alloc;
        if (asprintf(&j->name, "%s-%" PRIi64, spec->task_id, spec->lease_token) < 0 ||
            asprintf(&j->work_dir, "%s/%s", ed->work_dir, j->name) < 0 ||
            asprintf(&cgpath, "%s/%s", ed->cgroup_path, j->name) < 0) {
                r = -ENOMEM;
                goto fail_alloc;
        }

        /* From here on, a failure is the task's (reported through exited), not the caller's. */
        r = mkdir_p(j->work_dir, 0700);
        if (r < 0) {
                (void) asprintf(&j->early_error, "cannot create the work directory %s: %s", j->work_dir, strerror(-r));
                goto fail_task;
        }
        r = build_env(spec, j->work_dir, &env, &path);
        if (r < 0)
                goto fail_alloc;
        j->exe = find_executable(spec->cmd[0], path);
        if (!j->exe) {
                (void) asprintf(&j->early_error, "command not found: %s (PATH=%s)", spec->cmd[0], path);
                goto fail_task;
        }
        r = cgroup_create(ed->cgroup_root, ed->mode, cgpath, spec->nano_cpus, spec->memory_bytes, &j->cgroup);
        if (r < 0) {
                (void) asprintf(&j->early_error, "cannot set up the task's cgroup (%s) with its limits: %s",
                                cgroup_mode_to_string(ed->mode), strerror(-r));
                goto fail_task;
        }
        r = cgroup_open_procs(j->cgroup, procs);
        if (r < 0) {
                (void) asprintf(&j->early_error, "cannot join the task's cgroup: %s", strerror(-r));
                goto fail_task;
        }

        /* Recorded before the fork, for the fence keeper: "/<task>-<lease>" ending the line of
         * /proc/PID/cgroup, so that task "a-1" is never taken for "a-12" or "xa-1". */
        {
                _cleanup_free_ char *marker = NULL;
                if (asprintf(&marker, "/%s\n", j->name) >= 0)
                        driver_job_set_pid(&j->job, 0, marker);
        }

        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(errpipe, O_CLOEXEC) < 0) {
                r = -errno;
                goto fail_fds;
        }

        pid = fork();
        if (pid < 0) {
                r = -errno;
                goto fail_fds;
        }
        if (pid == 0)
                child(j->exe, spec->cmd, env, j->work_dir, procs, devnull, out[1], err[1], errpipe[1]);

        j->pid = pid;
        close(out[1]);
        close(err[1]);
        close(errpipe[1]);
        close(devnull);
        for (int i = 0; i < 2; i++)
                if (procs[i] >= 0)
                        close(procs[i]);
        if (asprintf(&j->handle, "pid-%d", (int) pid) < 0)
                j->handle = NULL;

        (void) fcntl(out[0], F_SETFL, O_NONBLOCK);
        (void) fcntl(err[0], F_SETFL, O_NONBLOCK);
        (void) fcntl(errpipe[0], F_SETFL, O_NONBLOCK);

        r = sd_event_add_child(d->event, &j->child_source, pid, WEXITED, on_child, j);
        if (r < 0) {
                log_error_errno(r, "Cannot watch the child process of task %s: %m", spec->task_id);
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                close(out[0]);
                close(err[0]);
                close(errpipe[0]);
                goto fail_started;
        }
        if (add_output_source(j, out[0], &j->out_source) < 0)
                close(out[0]);
        if (add_output_source(j, err[0], &j->err_source) < 0)
                close(err[0]);
        r = sd_event_add_io(d->event, &j->errpipe_source, errpipe[0], EPOLLIN, on_errpipe, j);
        if (r < 0) {
                close(errpipe[0]);
                j->exec_confirmed = true;       /* cannot know better */
                if (cb->started)
                        cb->started(&j->job, j->handle, realtime_usec(), userdata);
        } else
                (void) sd_event_source_set_io_fd_own(j->errpipe_source, true);
        {
                sd_event_source *t = NULL;
                /* Prepared now, armed by job_stop. */
                r = sd_event_add_time(d->event, &t, CLOCK_MONOTONIC, UINT64_MAX, 0, on_kill_timer, j);
                if (r >= 0) {
                        (void) sd_event_source_set_enabled(t, SD_EVENT_OFF);
                        j->kill_timer = t;
                }
        }
        log_debug("Task %s runs as pid %d in cgroup %s.", spec->task_id, (int) pid, cgpath);
        j->job.pid = pid;
        *ret = &j->job;
        return 0;

fail_fds:
        for (int i = 0; i < 2; i++) {
                if (out[i] >= 0)
                        close(out[i]);
                if (err[i] >= 0)
                        close(err[i]);
                if (errpipe[i] >= 0)
                        close(errpipe[i]);
                if (procs[i] >= 0)
                        close(procs[i]);
        }
        if (devnull >= 0)
                close(devnull);
        (void) asprintf(&j->early_error, "cannot start the command: %s", strerror(-r));
fail_task:
fail_started:
        j->failed_early = true;
        r = driver_call_later(d->event, fail_later_cb, j);
        if (r < 0)
                goto fail_alloc;
        *ret = &j->job;
        return 0;

fail_alloc:
        output_capture_done(&j->capture);
        driver_job_done(&j->job);
        free(j->name);
        free(j->work_dir);
        free(j->exe);
        free(j->early_error);
        if (j->cgroup) {
                (void) cgroup_destroy(j->cgroup);
                cgroup_free(j->cgroup);
        }
        free(j);
        return r;
}

static int exec_job_stop(DriverJob *job, unsigned grace_sec) {
        ExecJob *j = exec_job(job);

        if (j->process_exited || j->pid <= 0)
                return 0;
        if (grace_sec == 0) {
                if (j->cgroup)
                        (void) cgroup_kill(j->cgroup, SIGKILL);
                (void) kill(j->pid, SIGKILL);
                return 0;
        }
        /* The whole session first (it is the task's own), then whatever else sits in its cgroup. */
        (void) kill(-j->pid, SIGTERM);
        if (j->cgroup)
                (void) cgroup_kill(j->cgroup, SIGTERM);
        if (j->kill_timer) {
                (void) sd_event_source_set_time_relative(j->kill_timer, (uint64_t) grace_sec * USEC_PER_SEC);
                (void) sd_event_source_set_enabled(j->kill_timer, SD_EVENT_ONESHOT);
        }
        return 0;
}

typedef struct RemoveLater {
        DriverDoneCallback done;
        void *userdata;
        int error;
} RemoveLater;

static void remove_later_cb(void *userdata) {
        RemoveLater rl = *(RemoveLater *) userdata;
        free(userdata);
        rl.done(rl.error, rl.userdata);
}

static int exec_job_remove(DriverJob *job, DriverDoneCallback done, void *userdata) {
        ExecJob *j = exec_job(job);
        RemoveLater *rl;
        int r = 0;

        if (j->cgroup) {
                r = cgroup_destroy(j->cgroup);
                if (r < 0)
                        log_warning_errno(r, "Cannot remove the cgroup of task %s: %m", job->task_id);
                j->cgroup = cgroup_free(j->cgroup);
        }
        if (j->work_dir)
                rm_rf(j->work_dir);
        if (!done)
                return 0;
        rl = malloc(sizeof(RemoveLater));
        if (!rl)
                return -ENOMEM;
        *rl = (RemoveLater) { done, userdata, r };
        r = driver_call_later(job->driver->event, remove_later_cb, rl);
        if (r < 0)
                free(rl);
        return r;
}

static void exec_job_free(DriverJob *job) {
        ExecJob *j = exec_job(job);

        if (!j)
                return;
        job_sources_free(j);
        output_capture_done(&j->capture);
        cgroup_free(j->cgroup);
        free(j->name);
        free(j->work_dir);
        free(j->handle);
        free(j->exe);
        free(j->early_error);
        driver_job_done(&j->job);
        free(j);
}

static const char *exec_job_handle(DriverJob *job) {
        return exec_job(job)->handle;
}

/* "<task>-<lease>": the task id may itself contain '-', the lease token never does. */
static int parse_job_name(const char *name, char **ret_task, int64_t *ret_lease) {
        const char *dash = strrchr(name, '-');
        int64_t lease;

        if (!dash || dash == name || parse_int64(dash + 1, &lease) < 0)
                return -EINVAL;
        *ret_task = strndup(name, (size_t) (dash - name));
        if (!*ret_task)
                return -ENOMEM;
        *ret_lease = lease;
        return 0;
}

typedef struct ListLater {
        DriverListCallback cb;
        void *userdata;
        DriverLeftover *l;
        size_t n;
        int error;
} ListLater;

static void list_later_cb(void *userdata) {
        ListLater ll = *(ListLater *) userdata;
        free(userdata);
        ll.cb(ll.error, ll.l, ll.n, ll.userdata);
        driver_leftovers_free(ll.l, ll.n);
}

static int exec_list_leftovers(Driver *d, DriverListCallback cb, void *userdata) {
        ExecDriver *ed = exec_driver(d);
        _cleanup_strv_free_ char **names = NULL;
        ListLater *ll;
        int r;

        ll = calloc(1, sizeof(ListLater));
        if (!ll)
                return -ENOMEM;
        ll->cb = cb;
        ll->userdata = userdata;
        r = cgroup_list_children(ed->cgroup_root, ed->mode, ed->cgroup_path, &names);
        if (r < 0)
                ll->error = r;
        else {
                ll->l = calloc(strv_length(names) + 1, sizeof(DriverLeftover));
                if (!ll->l) {
                        free(ll);
                        return -ENOMEM;
                }
                for (char **n = names; *n; n++) {
                        DriverLeftover *lo = ll->l + ll->n;
                        if (parse_job_name(*n, &lo->task_id, &lo->lease_token) < 0)
                                continue;
                        lo->handle = strdup(*n);
                        lo->state = strdup("running");
                        lo->adoptable = false;
                        ll->n++;
                }
        }
        r = driver_call_later(d->event, list_later_cb, ll);
        if (r < 0) {
                driver_leftovers_free(ll->l, ll->n);
                free(ll);
        }
        return r;
}

static int exec_job_adopt(Driver *d, const DriverLeftover *l, const DriverJobCallbacks *cb, void *userdata,
                          DriverJob **ret) {
        return -EOPNOTSUPP;
}

static int exec_leftover_discard(Driver *d, const DriverLeftover *l, DriverDoneCallback done, void *userdata) {
        ExecDriver *ed = exec_driver(d);
        _cleanup_(cgroup_freep) Cgroup *cg = NULL;
        _cleanup_free_ char *cgpath = NULL, *wd = NULL;
        RemoveLater *rl;
        int r = 0;

        if (asprintf(&cgpath, "%s/%s", ed->cgroup_path, l->handle) < 0 ||
            asprintf(&wd, "%s/%s", ed->work_dir, l->handle) < 0)
                return -ENOMEM;
        if (cgroup_open(ed->cgroup_root, ed->mode, cgpath, &cg) >= 0) {
                (void) cgroup_kill(cg, SIGKILL);
                r = cgroup_destroy(cg);
        }
        rm_rf(wd);
        if (!done)
                return 0;
        rl = malloc(sizeof(RemoveLater));
        if (!rl)
                return -ENOMEM;
        *rl = (RemoveLater) { done, userdata, r };
        r = driver_call_later(d->event, remove_later_cb, rl);
        if (r < 0)
                free(rl);
        return r;
}

static Driver *exec_driver_free(Driver *d) {
        ExecDriver *ed = exec_driver(d);

        if (!ed)
                return NULL;
        free(ed->cgroup_root);
        free(ed->cgroup_path);
        free(ed->work_dir);
        sd_event_unref(ed->driver.event);
        free(ed);
        return NULL;
}

static const DriverOps exec_ops = {
        .name = "exec",
        .job_start = exec_job_start,
        .job_stop = exec_job_stop,
        .job_remove = exec_job_remove,
        .job_free = exec_job_free,
        .list_leftovers = exec_list_leftovers,
        .job_adopt = exec_job_adopt,
        .leftover_discard = exec_leftover_discard,
        .job_handle = exec_job_handle,
        .free = exec_driver_free,
};

int exec_driver_new(sd_event *e, const ExecDriverConfig *config, Driver **ret) {
        ExecDriver *ed;
        int r;

        ed = calloc(1, sizeof(ExecDriver));
        if (!ed)
                return log_oom();
        ed->driver.ops = &exec_ops;
        ed->driver.event = sd_event_ref(e);
        ed->cgroup_root = strdup(config->cgroup_root ?: CGROUP_ROOT_DEFAULT);
        ed->cgroup_path = strdup(config->cgroup_path);
        ed->work_dir = strdup(config->work_dir);
        ed->output_cap = config->output_cap;
        ed->tail_max = config->tail_max;
        if (!ed->cgroup_root || !ed->cgroup_path || !ed->work_dir) {
                exec_driver_free(&ed->driver);
                return log_oom();
        }
        r = cgroup_detect(ed->cgroup_root, &ed->mode);
        if (r < 0) {
                exec_driver_free(&ed->driver);
                return log_error_errno(r, "No cgroup hierarchy found under %s (neither v2 nor v1 with a memory controller).",
                                       config->cgroup_root ?: CGROUP_ROOT_DEFAULT);
        }
        r = mkdir_p(ed->work_dir, 0700);
        if (r < 0) {
                log_error_errno(r, "Cannot create %s: %m", ed->work_dir);
                exec_driver_free(&ed->driver);
                return r;
        }
        log_info("exec driver: cgroup %s under %s/%s.", cgroup_mode_to_string(ed->mode), ed->cgroup_root, ed->cgroup_path);
        *ret = &ed->driver;
        return 0;
}
