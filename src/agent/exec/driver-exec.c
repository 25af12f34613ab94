/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The exec driver: a task's cmd runs as a process in a session and a cgroup of its own (limits
 * applied there), as EXEC_USER with no capabilities and no_new_privs (exec-user.h), in a work
 * directory that user owns. A stop signals the whole cgroup, so that nothing the task forked survives it.
 *
 * Jobs survive an agent restart (systemctl restart, a crash) and are adopted by the next agent, as
 * containers are. For that the command is not our child: each job has a supervisor,
 * mc-exec-supervisor (../exec-supervisor/), which we start in a session of its own and outside the
 * task's cgroup, so that it outlives us (the unit has KillMode=process). It forks the command into
 * the cgroup, keeps its output (the first bytes up to the cap, and the tails) and records its exit
 * status in the job's directory (exec-job-files.h), then exits. We watch the supervisor with a pidfd,
 * which works for a process that is not our child too, and read what it recorded; the job's
 * directory tells when the command started (inotify). A restarted agent finds its jobs by their
 * cgroups (list_leftovers), and the supervisor again by its recorded pid and start time: it watches
 * one that still runs, or reports at once what one that has ended recorded.
 *
 * The supervisor runs the command only once we have recorded it (it waits for a byte from us), so a
 * job is never running unknown to the next agent: an agent that dies in between leaves nothing that
 * runs. Whoever kills a supervisor (a leftover discarded because its lease is gone) kills its command
 * too (PR_SET_PDEATHSIG), and the cgroup is killed with it; the fence keeper kills the command's
 * processes by their cgroup, the supervisor records that and exits.
 *
 * A job with a lease file runs under mc-fence-init (../fence-init/): the supervisor starts the init,
 * which starts the command and kills every process of the job's cgroup when the lease file stops
 * promising it time, even when the agent and the supervisor were killed with everything else of ours.
 *
 * The job's cgroup is made, its supervisor started, and the cgroup later removed, on threads of the
 * driver's (offload.h: one makes, one removes), never on the loop: mkdir(2) and rmdir(2) of a cgroup
 * wait on the kernel's one global cgroup lock, a process start on the lock every move between cgroups
 * takes, and on a host where many cgroups and processes come and go those waits lasted seconds,
 * during which an agent renewed no lease (1 000 agents on one host: thousands of leases lost by live agents). The
 * supervisor is started once the cgroup is there, so that the order on the host, cgroup then
 * supervisor, is what it always was, and what a restarted agent relies on (list_leftovers). Signals
 * for the cgroup go from the remover (job_kill), and the supervisor, not the agent, reads whether
 * the OOM killer struck: opening a cgroup file waited seconds as well. */

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "cgroup.h"
#include "config.h"
#include "daemon-util.h"
#include "driver.h"
#include "exec-job-files.h"
#include "exec-user.h"
#include "fence-protocol.h"
#include "log.h"
#include "offload.h"
#include "spawn-util.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#ifndef MC_EXEC_SUPERVISOR_PATH
#define MC_EXEC_SUPERVISOR_PATH "/usr/libexec/mc/mc-exec-supervisor"
#endif

typedef struct ExecDriver {
        Driver driver;
        char *cgroup_root;
        char *cgroup_path;
        char *work_dir;
        char *supervisor;       /* the program */
        char *fence_init;       /* mc-fence-init */
        CgroupMode mode;
        size_t output_cap, tail_max;
        ExecUser user;          /* whom the tasks run as */
        char *user_arg;         /* the same for the supervisor: "UID:GID" or "-" */
        Offload *maker;         /* makes cgroups and starts supervisors (JobSetup) */
        Offload *remover;       /* signals and removes cgroups (JobKill, JobCleanup) */
        sd_event_source *work_dir_watch;        /* keeps the loop's inotify descriptor open (watch_work_dir) */
} ExecDriver;

typedef struct ExecJob {
        DriverJob job;
        char *name;             /* <task>-<lease>: cgroup and work directory */
        char *work_dir;         /* the command's */
        char *job_dir;          /* ours and the supervisor's (exec-job-files.h) */
        char *handle;           /* "pid-<the command's pid>", once it runs */
        char *exe;
        Cgroup *cgroup;         /* named at once; on the host once setup is done */
        OffloadCall *setup;     /* the cgroup is being made, the supervisor started (JobSetup) */
        pid_t supervisor_pid;
        bool own_child;         /* we started the supervisor: we reap it */
        int pidfd;              /* the supervisor's */
        sd_event_source *pidfd_source, *inotify_source, *kick_source, *kill_timer;
        OutputCapture capture;
        bool started, reported;
        int stop_signal;        /* a stop is under way: the command gets it as soon as it runs */
        char *early_error;      /* it could not be run at all */
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
        j->pidfd_source = sd_event_source_disable_unref(j->pidfd_source);
        j->inotify_source = sd_event_source_disable_unref(j->inotify_source);
        j->kick_source = sd_event_source_disable_unref(j->kick_source);
        j->kill_timer = sd_event_source_disable_unref(j->kill_timer);
}

static void report(ExecJob *j, const DriverExit *e) {
        if (j->reported)
                return;
        j->reported = true;
        job_sources_free(j);
        j->job.cb.exited(&j->job, e, j->job.userdata);
}

static void report_error(ExecJob *j, const char *reason) {
        report(j, &(DriverExit) { .error = -EIO, .exit_code = -1, .reason = reason, .output = &j->capture });
}

/* A signal for everything in the job's cgroup, sent from the remover thread: cgroup_kill() opens a
 * cgroup file, and that open waited for seconds on a busy host. Not while the job is being set up: its
 * command does not run before job_setup_done(), which sees the stop and gives no go. */
typedef struct JobKill {
        Cgroup *cgroup;
        int sig;
} JobKill;

static void job_kill_free(void *userdata) {
        JobKill *k = userdata;

        cgroup_free(k->cgroup);
        free(k);
}

static int job_kill_work(void *userdata) {
        JobKill *k = userdata;

        return cgroup_kill(k->cgroup, k->sig);
}

static void job_kill(ExecJob *j, int sig) {
        JobKill *k;
        int r;

        if (!j->cgroup || j->setup)
                return;
        k = calloc(1, sizeof(JobKill));
        if (!k) {
                log_oom();
                return;
        }
        k->sig = sig;
        r = cgroup_dup(j->cgroup, &k->cgroup);
        if (r >= 0)
                r = offload_submit(exec_driver(j->job.driver)->remover, job_kill_work, NULL, job_kill_free, k, NULL);
        if (r < 0) {
                job_kill_free(k);
                /* Late rather than not at all. */
                log_warning_errno(r, "Task %s: cannot hand its signal to the driver's thread, sending it now: %m",
                                  j->job.task_id);
                (void) cgroup_kill(j->cgroup, sig);
        }
}

/* The supervisor has recorded that the command runs: say so (once). */
static void check_started(ExecJob *j) {
        ExecJobStarted st;

        if (j->started || j->reported || exec_job_started_read(j->job_dir, &st) < 0)
                return;
        j->started = true;
        free(j->handle);
        if (asprintf(&j->handle, "pid-%d", (int) st.pid) < 0)
                j->handle = NULL;
        if (j->job.cgroup_marker)
                driver_job_set_pid(&j->job, st.pid, j->job.cgroup_marker);
        /* A stop that came before the command ran. */
        if (j->stop_signal != 0)
                job_kill(j, j->stop_signal);
        if (j->job.cb.started)
                j->job.cb.started(&j->job, j->handle ?: "pid-?", st.realtime_usec, j->job.userdata);
}

/* The supervisor has ended: report what it recorded. */
static void supervisor_ended(ExecJob *j) {
        _cleanup_free_ char *reason = NULL, *output = NULL;
        ExecJobResult res = {};
        DriverExit e = { .output = &j->capture };
        size_t output_size = 0;
        int r;

        if (j->reported)
                return;
        if (j->own_child && j->supervisor_pid > 0)
                (void) waitpid(j->supervisor_pid, NULL, WNOHANG);
        j->pidfd_source = sd_event_source_disable_unref(j->pidfd_source);

        check_started(j);
        if (j->reported)
                return;         /* freed or stopped from the started callback: nothing more */

        r = exec_job_result_read(j->job_dir, &res);
        if (r < 0) {
                /* Killed, or it crashed: nobody watches what may be left of the command. */
                job_kill(j, SIGKILL);
                log_warning_errno(r, "Task %s: its supervisor (pid %d) ended without recording a result: %m",
                                  j->job.task_id, (int) j->supervisor_pid);
                report_error(j, "the task's supervisor ended without recording a result");
                return;
        }
        if (res.error) {
                report_error(j, res.error);
                exec_job_result_done(&res);
                return;
        }

        r = exec_job_output_read(j->job_dir, j->capture.cap, &output, &output_size);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Task %s: cannot read its output: %m", j->job.task_id);
        r = output_capture_restore(&j->capture, output, output_size, res.truncated, res.total,
                                   res.tails[0], res.tail_sizes[0], res.tails[1], res.tail_sizes[1]);
        if (r < 0)
                log_warning_errno(r, "Task %s: cannot take its output over: %m", j->job.task_id);

        e.exit_code = res.exit_code;
        e.ended_usec = res.ended_usec;
        /* The supervisor looked (a read of a cgroup file can wait long on a busy host: not here, on the
         * loop, unless a supervisor of an older version did not). */
        e.oom_killed = res.oom_killed > 0 || (res.oom_killed < 0 && j->cgroup && cgroup_oom_killed(j->cgroup));
        if (e.oom_killed)
                e.reason = "killed by the kernel: out of memory (the task's memory limit)";
        else if (res.exit_code > 128 && res.exit_code < 128 + 65) {
                if (asprintf(&reason, "killed by signal %s", strsignal((int) res.exit_code - 128)) >= 0)
                        e.reason = reason;
        }
        exec_job_result_done(&res);
        report(j, &e);
}

static int on_supervisor_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        supervisor_ended(userdata);
        return 0;
}

static int on_job_dir(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        ExecJob *j = userdata;

        if ((ev->mask & IN_Q_OVERFLOW) || (ev->len > 0 && streq(ev->name, "started")))
                check_started(j);
        return 0;
}

/* First thing on the loop after a start that failed, or an adoption. */
static int on_kick(sd_event_source *s, void *userdata) {
        ExecJob *j = userdata;

        j->kick_source = sd_event_source_disable_unref(j->kick_source);
        if (j->early_error) {
                report_error(j, j->early_error);
                return 0;
        }
        check_started(j);
        if (!j->pidfd_source)
                supervisor_ended(j);
        return 0;
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ExecJob *j = userdata;

        log_info("Task %s did not stop within its grace period; killing it.", j->job.task_id);
        j->stop_signal = SIGKILL;
        job_kill(j, SIGKILL);
        return 0;
}

/* The sources every job has: the kill timer (armed by job_stop), the supervisor's pidfd and the job
 * directory (unless the supervisor is gone already), and a kick for whatever is to be said at once. */
static int job_watch(ExecJob *j, bool kick) {
        sd_event *e = j->job.driver->event;
        int r;

        r = sd_event_add_time(e, &j->kill_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_kill_timer, j);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(j->kill_timer, SD_EVENT_OFF);
        if (j->pidfd >= 0) {
                r = sd_event_add_inotify(e, &j->inotify_source, j->job_dir, IN_MOVED_TO | IN_ONLYDIR, on_job_dir, j);
                if (r < 0)
                        return r;
                r = sd_event_add_io(e, &j->pidfd_source, j->pidfd, EPOLLIN, on_supervisor_exit, j);
                if (r < 0)
                        return r;
        }
        if (kick) {
                r = sd_event_add_defer(e, &j->kick_source, on_kick, j);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_enabled(j->kick_source, SD_EVENT_ONESHOT);
        }
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

/* Where an exec task finds its inputs: it runs on the host, without a mount namespace of its own, so
 * each input is a link in the job's work directory, <work_dir>/inputs<path>, to the cache's read-only
 * file, and MC_INPUTS names that directory (docs/api.md: for exec tasks an input's path is relative to
 * $MC_INPUTS). A hard link when the cache is on the same file system, so that the file stays whole for
 * the job even should the cache let it go; a symbolic link otherwise. The work directory, links and
 * all, goes with the job. */
#define EXEC_INPUTS_DIR "inputs"

static int place_inputs(const DriverJobSpec *spec, const char *work_dir, char **ret_error) {
        for (size_t i = 0; i < spec->n_inputs; i++) {
                _cleanup_free_ char *target = NULL;
                char *slash;
                int r;

                if (asprintf(&target, "%s/" EXEC_INPUTS_DIR "%s", work_dir, spec->inputs[i].path) < 0)
                        return -ENOMEM;
                slash = strrchr(target, '/');
                *slash = 0;
                r = mkdir_p(target, 0755);
                *slash = '/';
                if (r >= 0 && link(spec->inputs[i].source, target) < 0)
                        r = errno == EXDEV && symlink(spec->inputs[i].source, target) >= 0 ? 0 : -errno;
                if (r < 0) {
                        (void) asprintf(ret_error, "cannot place the input %s at %s: %s", spec->inputs[i].path, target,
                                        strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int build_env(const DriverJobSpec *spec, const char *work_dir, char ***ret, const char **ret_path) {
        _cleanup_strv_free_ char **env = calloc(1, sizeof(char *));
        const char *path = DEFAULT_PATH;

        if (!env)
                return -ENOMEM;
        if (spec->n_inputs > 0 && strv_extendf(&env, "MC_INPUTS=%s/" EXEC_INPUTS_DIR, work_dir) < 0)
                return -ENOMEM;
        if (spec->env) {
                json_object_object_foreach(spec->env, k, v) {
                        if (!json_object_is_type(v, json_type_string))
                                continue;
                        if (spec->n_inputs > 0 && streq(k, "MC_INPUTS"))
                                continue;       /* ours */
                        if (streq(k, "PATH"))
                                path = json_object_get_string(v);
                        if (strv_extendf(&env, "%s=%s", k, json_object_get_string(v)) < 0)
                                return -ENOMEM;
                }
        }
        if ((!spec->env || !json_object_object_get_ex(spec->env, "PATH", NULL)) &&
            strv_extendf(&env, "PATH=%s", DEFAULT_PATH) < 0)
                return -ENOMEM;
        if (strv_extendf(&env, "HOME=%s", work_dir) < 0 || strv_extendf(&env, "MC_TASK_ID=%s", spec->task_id) < 0 ||
            strv_extendf(&env, "MC_ATTEMPT=%" PRIi64, spec->attempt) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(env);
        *ret_path = path;
        return 0;
}

/* The supervisor's command line: see ../exec-supervisor/exec-supervisor.c. With a fence_dir the
 * supervisor runs the init, which runs the command (found already: its full path) and fences the
 * job's cgroup (the directory whose cgroup.procs lists every process of the job). */
static int supervisor_argv(ExecDriver *ed, ExecJob *j, const char *cgpath, char *const *env, char *const *cmd,
                           const char *fence_dir, char ***ret) {
        _cleanup_strv_free_ char **a = calloc(1, sizeof(char *));
        const char *exe = fence_dir ? ed->fence_init : j->exe;

        if (!a || strv_extend(&a, ed->supervisor) < 0 || strv_extend(&a, j->job_dir) < 0 ||
            strv_extend(&a, ed->cgroup_root) < 0 || strv_extend(&a, cgroup_mode_to_string(ed->mode)) < 0 ||
            strv_extend(&a, cgpath) < 0 || strv_extendf(&a, "%zu", ed->output_cap) < 0 ||
            strv_extendf(&a, "%zu", ed->tail_max) < 0 || strv_extend(&a, j->work_dir) < 0 ||
            strv_extend(&a, ed->user_arg) < 0 || strv_extend(&a, exe) < 0 || strv_extendf(&a, "%zu", strv_length(env)) < 0)
                return -ENOMEM;
        for (char *const *e = env; *e; e++)
                if (strv_extend(&a, *e) < 0)
                        return -ENOMEM;
        if (fence_dir && (strv_extend(&a, ed->fence_init) < 0 ||
                          strv_extendf(&a, "%s/" FENCE_LEASE_FILE_NAME, fence_dir) < 0 ||
                          strv_extend(&a, "--cgroup") < 0 ||
                          strv_extend(&a, j->cgroup->mode == CGROUP_V2 ? j->cgroup->v2 : j->cgroup->memory) < 0 ||
                          strv_extend(&a, "--") < 0 || strv_extend(&a, j->exe) < 0))
                return -ENOMEM;
        for (char *const *c = fence_dir ? cmd + 1 : cmd; *c; c++)
                if (strv_extend(&a, *c) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(a);
        return 0;
}

static ExecJob *job_new(Driver *d, const char *task_id, int64_t lease_token, int64_t attempt, int64_t timeout_sec,
                        const char *name, const DriverJobCallbacks *cb, void *userdata, char **ret_cgpath) {
        ExecDriver *ed = exec_driver(d);
        ExecJob *j;

        j = calloc(1, sizeof(ExecJob));
        if (!j)
                return NULL;
        j->pidfd = -1;
        if (driver_job_init(&j->job, d, task_id, lease_token, attempt, timeout_sec, cb, userdata) < 0 ||
            output_capture_init(&j->capture, ed->output_cap, ed->tail_max) < 0) {
                driver_job_done(&j->job);
                free(j);
                return NULL;
        }
        if ((name ? !(j->name = strdup(name)) : asprintf(&j->name, "%s-%" PRIi64, task_id, lease_token) < 0) ||
            asprintf(&j->work_dir, "%s/%s", ed->work_dir, j->name) < 0 ||
            asprintf(&j->job_dir, "%s/%s" EXEC_JOB_DIR_SUFFIX, ed->work_dir, j->name) < 0 ||
            asprintf(ret_cgpath, "%s/%s", ed->cgroup_path, j->name) < 0) {
                driver_job_free(&j->job);
                return NULL;
        }
        return j;
}

static void job_set_marker(ExecJob *j, pid_t pid) {
        _cleanup_free_ char *marker = NULL;

        /* For the fence keeper: "/<task>-<lease>" ending the line of /proc/PID/cgroup, so that task
         * "a-1" is never taken for "a-12" or "xa-1". */
        if (asprintf(&marker, "/%s\n", j->name) >= 0)
                driver_job_set_pid(&j->job, pid, marker);
}

/* The job's setup, on the maker thread: its cgroup made, then its supervisor started and the job
 * recorded. Both wait on the kernel's cgroup locks: mkdir(2) on the global cgroup mutex, and a process
 * start (clone) on the lock that every move of a process between cgroups takes for writing. On a host
 * where many cgroups and processes come and go (1 000 agents) either waited for seconds, and on the
 * loop that meant leases not renewed (a node's first task fenced by its own agent, its start never
 * reported). The work has its own copy of everything, since the job may be freed (the agent
 * stopping) while it runs; then the call is cancelled, and the job is only looked at by the done, on
 * the loop, which records the job and gives the supervisor its go. A supervisor started for a job
 * freed meanwhile is never recorded and never gets its go: the free kills it (it would end at the
 * EOF anyway), and what the thread made is an unrecorded leftover to the next agent. */
typedef enum SetupStage {
        SETUP_CGROUP,
        SETUP_SUPERVISOR,
} SetupStage;

typedef struct JobSetup {
        ExecJob *job;
        char *root, *path;
        CgroupMode mode;
        int64_t nano_cpus, memory_bytes;
        char *supervisor, **argv;
        SetupStage stage;               /* where a failure came from */
        uint64_t start;                 /* the supervisor's start time (pid_start_time()) */
        pid_t pid;                      /* the supervisor, until the done takes it */
        int pidfd;
        int go;                         /* the write end of its go pipe */
} JobSetup;

static void job_setup_free(void *userdata) {
        JobSetup *js = userdata;

        /* Not taken by a done (cancelled, or failed after the start): without its go the supervisor
         * does nothing and ends at the EOF; killed and reaped all the same, as our child. */
        if (js->go >= 0)
                close(js->go);
        if (js->pid > 0) {
                (void) kill(js->pid, SIGKILL);
                (void) waitpid(js->pid, NULL, 0);
        }
        if (js->pidfd >= 0)
                close(js->pidfd);
        free(js->root);
        free(js->path);
        free(js->supervisor);
        strv_free(js->argv);
        free(js);
}

/* Starts the supervisor; the record and the go are left to the loop (job_setup_done()). */
static int setup_supervisor(JobSetup *js) {
        _cleanup_close_ int devnull = -EBADF, go_read = -EBADF;
        int go[2];
        int r;

        devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull < 0)
                return -errno;
        if (pipe2(go, O_CLOEXEC) < 0)
                return -errno;
        go_read = go[0];
        js->go = go[1];
        /* The go pipe as its stdin, /dev/null as its stdout, our stderr (the journal) for what it has
         * to say. */
        r = spawn_helper(js->supervisor, js->argv, go_read, devnull, &js->pid);
        if (r < 0) {
                js->pid = 0;
                return r;
        }
        /* Our child: its pid is ours until we reap it, so neither can be had for another process. */
        js->pidfd = pidfd_open(js->pid, 0);
        if (js->pidfd < 0)
                return -errno;
        return pid_start_time(js->pid, &js->start);
}

static int job_setup_work(void *userdata) {
        JobSetup *js = userdata;
        _cleanup_(cgroup_freep) Cgroup *cg = NULL;
        int r;

        js->stage = SETUP_CGROUP;
        r = cgroup_create(js->root, js->mode, js->path, js->nano_cpus, js->memory_bytes, &cg);
        if (r < 0)
                return r;
        js->stage = SETUP_SUPERVISOR;
        return setup_supervisor(js);
}

/* The cgroup and the supervisor are there (or could not be): the supervisor gets its go, unless the
 * job was stopped meanwhile, in which case nothing is to run at all. */
static void job_setup_done(int result, void *userdata) {
        JobSetup *js = userdata;
        ExecJob *j = js->job;
        ExecDriver *ed = exec_driver(j->job.driver);
        _cleanup_free_ char *error = NULL;
        int r;

        j->setup = NULL;
        if (result < 0) {
                if (js->stage == SETUP_CGROUP)
                        (void) asprintf(&error, "cannot set up the task's cgroup (%s) with its limits: %s",
                                        cgroup_mode_to_string(ed->mode), strerror(-result));
                else
                        (void) asprintf(&error, "cannot start the command's supervisor: %s", strerror(-result));
                report_error(j, error ?: "cannot start the task");
                return;
        }
        if (j->stop_signal != 0) {
                report(j, &(DriverExit) { .error = -ECANCELED, .exit_code = -1, .reason = "stopped before it ran",
                                          .output = &j->capture });
                return;
        }
        /* The job recorded before its command can run: a next agent knows every job that runs. */
        r = exec_job_record_write(j->job_dir, &(ExecJobRecord) {
                                .task_id = j->job.task_id,
                                .lease_token = j->job.lease_token,
                                .attempt = j->job.attempt,
                                .timeout_sec = j->job.timeout_sec,
                                .supervisor_pid = js->pid,
                                .supervisor_start = js->start,
                        });
        if (r >= 0 && write(js->go, "g", 1) != 1)
                r = -errno;
        if (r < 0) {
                (void) asprintf(&error, "cannot start the command's supervisor: %s", strerror(-r));
                report_error(j, error ?: "cannot start the command's supervisor");
                return;
        }
        js->go = safe_close(js->go);
        j->supervisor_pid = js->pid;
        js->pid = 0;
        j->own_child = true;
        j->pidfd = TAKE_FD(js->pidfd);

        /* With a kick: the supervisor may have recorded "started" before the directory's watch was
         * added (a busy agent, a quick supervisor), and that rename raises no event then. The kick looks
         * once the watch is there, so a start is seen either way. Without it such a task stayed
         * `starting` for good while its lease was renewed (found by experiments/ under load). */
        r = job_watch(j, true);
        if (r < 0) {
                /* It runs, but we cannot follow it: stop it, and say so now that it has gone. */
                log_error_errno(r, "Cannot watch the supervisor of task %s: %m", j->job.task_id);
                (void) kill(j->supervisor_pid, SIGKILL);
                (void) waitpid(j->supervisor_pid, NULL, 0);
                job_kill(j, SIGKILL);
                (void) asprintf(&error, "cannot watch the command's supervisor: %s", strerror(-r));
                report_error(j, error ?: "cannot watch the command's supervisor");
                return;
        }
        log_debug("Task %s: supervisor %d.", j->job.task_id, (int) j->supervisor_pid);
}

/* Takes argv. */
static int job_setup_submit(ExecDriver *ed, ExecJob *j, const char *cgpath, int64_t nano_cpus, int64_t memory_bytes,
                            char **argv) {
        JobSetup *js;
        int r;

        js = calloc(1, sizeof(JobSetup));
        if (!js) {
                strv_free(argv);
                return -ENOMEM;
        }
        *js = (JobSetup) {
                .job = j, .root = strdup(ed->cgroup_root), .path = strdup(cgpath), .mode = ed->mode,
                .nano_cpus = nano_cpus, .memory_bytes = memory_bytes,
                .supervisor = strdup(ed->supervisor), .argv = argv,
                .pidfd = -EBADF,
                .go = -EBADF,
        };
        if (!js->root || !js->path || !js->supervisor) {
                job_setup_free(js);
                return -ENOMEM;
        }
        r = offload_submit(ed->maker, job_setup_work, job_setup_done, job_setup_free, js, &j->setup);
        if (r < 0)
                job_setup_free(js);
        return r;
}

static int exec_job_start(Driver *d, const DriverJobSpec *spec, const DriverJobCallbacks *cb, void *userdata,
                          DriverJob **ret) {
        ExecDriver *ed = exec_driver(d);
        _cleanup_strv_free_ char **env = NULL, **argv = NULL;
        _cleanup_free_ char *cgpath = NULL;
        const char *path;
        ExecJob *j;
        int r;

        j = job_new(d, spec->task_id, spec->lease_token, spec->attempt, spec->timeout_sec, NULL, cb, userdata, &cgpath);
        if (!j)
                return -ENOMEM;

        /* From here on, a failure is the task's (reported through exited), not the caller's. */
        rm_rf(j->job_dir);
        r = mkdir_p(j->work_dir, 0700);
        if (r >= 0)
                r = mkdir_p(j->job_dir, 0700);
        if (r < 0) {
                (void) asprintf(&j->early_error, "cannot create the work directory %s: %s", j->work_dir, strerror(-r));
                goto fail_task;
        }
        r = place_inputs(spec, j->work_dir, &j->early_error);
        if (r == -ENOMEM && !j->early_error)
                goto fail_alloc;
        if (r < 0)
                goto fail_task;
        /* The task's own, to write in; the inputs in it stay root's and read-only, the job's files
         * next to it are out of its reach. */
        if (ed->user.change && chown(j->work_dir, ed->user.uid, ed->user.gid) < 0) {
                (void) asprintf(&j->early_error, "cannot give the work directory %s to uid %u: %s", j->work_dir,
                                (unsigned) ed->user.uid, strerror(errno));
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
        r = cgroup_at(ed->cgroup_root, ed->mode, cgpath, &j->cgroup);
        if (r < 0)
                goto fail_alloc;
        /* Recorded before the command can run, for the fence keeper. */
        j->job.cgroup_dir = strdup(j->cgroup->mode == CGROUP_V2 ? j->cgroup->v2 : j->cgroup->memory);
        if (!j->job.cgroup_dir)
                goto fail_alloc;
        job_set_marker(j, 0);

        if (spec->fence_dir && !ed->fence_init) {
                r = -EINVAL;
                goto fail_alloc;
        }
        r = supervisor_argv(ed, j, cgpath, env, spec->cmd, spec->fence_dir, &argv);
        if (r < 0)
                goto fail_alloc;
        r = job_setup_submit(ed, j, cgpath, spec->nano_cpus, spec->memory_bytes, TAKE_PTR(argv));
        if (r < 0)
                goto fail_alloc;
        log_debug("Task %s: making its cgroup %s.", spec->task_id, cgpath);
        *ret = &j->job;
        return 0;

fail_task:
        if (!j->early_error)
                goto fail_alloc;
        r = sd_event_add_defer(d->event, &j->kick_source, on_kick, j);
        if (r < 0)
                goto fail_alloc;
        (void) sd_event_source_set_enabled(j->kick_source, SD_EVENT_ONESHOT);
        *ret = &j->job;
        return 0;

fail_alloc:
        rm_rf(j->job_dir);
        driver_job_free(&j->job);
        return r < 0 ? r : -ENOMEM;
}

static int exec_job_stop(DriverJob *job, unsigned grace_sec) {
        ExecJob *j = exec_job(job);
        int sig = grace_sec == 0 ? SIGKILL : SIGTERM;

        if (j->reported)
                return 0;
        if (j->stop_signal != SIGKILL)
                j->stop_signal = sig;
        /* Every process of the task is in its cgroup (a command not yet running gets it when it does:
         * check_started). */
        job_kill(j, j->stop_signal);
        if (j->stop_signal == SIGTERM && j->kill_timer) {
                (void) sd_event_source_set_time_relative(j->kill_timer, (uint64_t) grace_sec * USEC_PER_SEC);
                (void) sd_event_source_set_enabled(j->kill_timer, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* A job's traces on the host, removed on the remover thread: what is left in its cgroup is killed
 * (which may take a while: processes in uninterruptible sleep), then the cgroup and the directories
 * go. The caller's done follows on the loop. */
typedef struct JobCleanup {
        char *task_id;
        Cgroup *cgroup;         /* NULL: it has none; it may not be there (cgroup_destroy() is fine with that) */
        char *work_dir, *job_dir;
        DriverDoneCallback done;
        void *userdata;
} JobCleanup;

static void job_cleanup_free(void *userdata) {
        JobCleanup *c = userdata;

        free(c->task_id);
        cgroup_free(c->cgroup);
        free(c->work_dir);
        free(c->job_dir);
        free(c);
}

static int job_cleanup_work(void *userdata) {
        JobCleanup *c = userdata;
        int r = 0;

        if (c->cgroup) {
                r = cgroup_destroy(c->cgroup);
                if (r < 0)
                        log_warning_errno(r, "Cannot remove the cgroup of task %s: %m", c->task_id);
        }
        rm_rf(c->work_dir);
        rm_rf(c->job_dir);
        return r;
}

static void job_cleanup_done(int result, void *userdata) {
        JobCleanup *c = userdata;

        if (c->done)
                c->done(result, c->userdata);
}

/* Takes cgroup over (NULL: none). */
static int job_cleanup_submit(ExecDriver *ed, const char *task_id, Cgroup *cgroup, const char *work_dir,
                              const char *job_dir, DriverDoneCallback done, void *userdata) {
        JobCleanup *c;
        int r;

        c = calloc(1, sizeof(JobCleanup));
        if (!c) {
                cgroup_free(cgroup);
                return -ENOMEM;
        }
        *c = (JobCleanup) { .task_id = strdup(task_id), .cgroup = cgroup, .work_dir = strdup(work_dir),
                            .job_dir = strdup(job_dir), .done = done, .userdata = userdata };
        if (!c->task_id || !c->work_dir || !c->job_dir) {
                job_cleanup_free(c);
                return -ENOMEM;
        }
        r = offload_submit(ed->remover, job_cleanup_work, job_cleanup_done, job_cleanup_free, c, NULL);
        if (r < 0)
                job_cleanup_free(c);
        return r;
}

static int exec_job_remove(DriverJob *job, DriverDoneCallback done, void *userdata) {
        ExecJob *j = exec_job(job);

        assert(!j->setup);      /* it has exited: its setup is over */
        return job_cleanup_submit(exec_driver(job->driver), job->task_id, TAKE_PTR(j->cgroup), j->work_dir, j->job_dir,
                                  done, userdata);
}

static void exec_job_free(DriverJob *job) {
        ExecJob *j = exec_job(job);

        if (!j)
                return;
        job_sources_free(j);
        /* A cgroup being made is left to the next agent, as one whose supervisor never ran: it is
         * discarded as a leftover. */
        offload_call_cancel(j->setup);
        if (j->pidfd >= 0)
                close(j->pidfd);
        output_capture_done(&j->capture);
        cgroup_free(j->cgroup);
        free(j->name);
        free(j->work_dir);
        free(j->job_dir);
        free(j->handle);
        free(j->exe);
        free(j->early_error);
        driver_job_done(&j->job);
        free(j);
}

static const char *exec_job_handle(DriverJob *job) {
        return exec_job(job)->handle;
}

/* The supervisor appends to <job>/output as the command prints (exec-job-files.h). */
static int exec_job_output_read_live(DriverJob *job, uint64_t offset, void *buf, size_t max, size_t *ret_size) {
        ExecJob *j = exec_job(job);
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        ssize_t n;

        if (asprintf(&path, "%s/output", j->job_dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                if (errno != ENOENT)
                        return -errno;
                *ret_size = 0;          /* not started yet */
                return 0;
        }
        n = pread(fd, buf, max, (off_t) offset);
        if (n < 0)
                return -errno;
        *ret_size = (size_t) n;
        return 0;
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

static bool job_file_exists(const char *job_dir, const char *name) {
        _cleanup_free_ char *p = NULL;

        return asprintf(&p, "%s/%s", job_dir, name) >= 0 && access(p, F_OK) == 0;
}

/* What a leftover is: "exited" (its result is recorded), "running" or "created" (its supervisor lives,
 * and the command has started or not yet), "lost" (its command ran, but its supervisor ended without a
 * result: adopting it reports that). Not adoptable: a job never recorded, or whose supervisor ended
 * before it started the command (the agent that forked it died before its go): its command never ran,
 * and the task runs again once its lease has expired. */
static int describe_leftover(ExecDriver *ed, const char *name, DriverLeftover *lo) {
        _cleanup_free_ char *job_dir = NULL;
        ExecJobRecord rec = {};
        ExecJobStarted st;
        const char *state;
        int fd;

        if (asprintf(&job_dir, "%s/%s" EXEC_JOB_DIR_SUFFIX, ed->work_dir, name) < 0)
                return -ENOMEM;
        if (exec_job_record_read(job_dir, &rec) < 0 || !streq(rec.task_id, lo->task_id) ||
            rec.lease_token != lo->lease_token) {
                exec_job_record_done(&rec);
                lo->state = strdup("unrecorded");
                return lo->state ? 0 : -ENOMEM;
        }
        lo->attempt = rec.attempt;
        lo->timeout_sec = rec.timeout_sec;
        if (exec_job_started_read(job_dir, &st) >= 0)
                lo->started_realtime_usec = st.realtime_usec;
        if (job_file_exists(job_dir, "result"))
                state = "exited";
        else if (exec_job_supervisor_open(&rec, &fd) >= 0) {
                close(fd);
                state = lo->started_realtime_usec > 0 ? "running" : "created";
        } else if (lo->started_realtime_usec > 0)
                state = "lost";
        else {
                exec_job_record_done(&rec);
                lo->state = strdup("never-started");
                return lo->state ? 0 : -ENOMEM;
        }
        exec_job_record_done(&rec);
        lo->adoptable = true;
        lo->state = strdup(state);
        return lo->state ? 0 : -ENOMEM;
}

typedef struct ListLater {
        DriverListCallback cb;
        void *userdata;
        DriverLeftover *l;
        size_t n;
        int error;
} ListLater;

static void list_later_cb(void *userdata) {
        ListLater *ll = userdata;
        ll->cb(ll->error, ll->l, ll->n, ll->userdata);
}

static void list_later_free(void *userdata) {
        ListLater *ll = userdata;
        driver_leftovers_free(ll->l, ll->n);
        free(ll);
}

/* Directories of jobs whose cgroup is gone: an agent that died between creating them and creating
 * the cgroup (nothing ran), or between removing the cgroup and them. Called only while no job of ours
 * is being started. */
static void remove_stray_dirs(ExecDriver *ed, char *const *names) {
        DIR *dir = opendir(ed->work_dir);
        struct dirent *de;

        if (!dir)
                return;
        while ((de = readdir(dir))) {
                _cleanup_free_ char *base = NULL, *task = NULL, *path = NULL;
                const char *suffix;
                int64_t lease;
                bool known = false;

                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                suffix = strstr(de->d_name, EXEC_JOB_DIR_SUFFIX);
                base = suffix && streq(suffix, EXEC_JOB_DIR_SUFFIX) ? strndup(de->d_name, (size_t) (suffix - de->d_name))
                                                                   : strdup(de->d_name);
                if (!base || parse_job_name(base, &task, &lease) < 0)
                        continue;
                for (char *const *n = names; *n && !known; n++)
                        known = streq(*n, base);
                if (known || asprintf(&path, "%s/%s", ed->work_dir, de->d_name) < 0)
                        continue;
                log_info("Removing %s, left by a job that has no cgroup.", path);
                rm_rf(path);
        }
        closedir(dir);
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
                remove_stray_dirs(ed, names);
                for (char **n = names; *n; n++) {
                        DriverLeftover *lo = ll->l + ll->n;
                        if (parse_job_name(*n, &lo->task_id, &lo->lease_token) < 0)
                                continue;
                        ll->n++;
                        lo->handle = strdup(*n);
                        if (!lo->handle || describe_leftover(ed, *n, lo) < 0) {
                                ll->error = -ENOMEM;
                                break;
                        }
                }
        }
        r = driver_call_later(d->event, list_later_cb, list_later_free, ll);
        if (r < 0)
                list_later_free(ll);
        return r;
}

static int exec_job_adopt(Driver *d, const DriverLeftover *l, const DriverJobCallbacks *cb, void *userdata,
                          DriverJob **ret) {
        ExecDriver *ed = exec_driver(d);
        _cleanup_free_ char *cgpath = NULL;
        ExecJobRecord rec = {};
        ExecJob *j;
        int r;

        if (!l->adoptable)
                return -EOPNOTSUPP;
        j = job_new(d, l->task_id, l->lease_token, l->attempt, l->timeout_sec, l->handle, cb, userdata, &cgpath);
        if (!j)
                return -ENOMEM;
        r = cgroup_open(ed->cgroup_root, ed->mode, cgpath, &j->cgroup);
        if (r < 0)
                log_warning_errno(r, "Task %s: cannot open its cgroup %s: %m", l->task_id, cgpath);
        else
                j->job.cgroup_dir = strdup(j->cgroup->mode == CGROUP_V2 ? j->cgroup->v2 : j->cgroup->memory);
        job_set_marker(j, 0);

        /* One that ended while nobody watched is reported as a container found exited is: without a
         * start. */
        if (job_file_exists(j->job_dir, "result"))
                j->started = true;
        if (exec_job_record_read(j->job_dir, &rec) >= 0) {
                j->supervisor_pid = rec.supervisor_pid;
                if (exec_job_supervisor_open(&rec, &j->pidfd) < 0)
                        j->pidfd = -1;
                exec_job_record_done(&rec);
        }
        if (j->started) {
                /* Still for the fence keeper, until it is reported. */
                ExecJobStarted st;
                if (exec_job_started_read(j->job_dir, &st) >= 0)
                        job_set_marker(j, st.pid);
        }
        /* The start (if it has started) and, if the supervisor has ended, the end, from the loop: the
         * caller has not got the job yet. */
        r = job_watch(j, true);
        if (r < 0) {
                driver_job_free(&j->job);
                return r;
        }
        log_debug("Task %s: adopted supervisor %d (%s).", l->task_id, (int) j->supervisor_pid,
                  j->pidfd >= 0 ? "running" : "ended");
        *ret = &j->job;
        return 0;
}

static int exec_leftover_discard(Driver *d, const DriverLeftover *l, DriverDoneCallback done, void *userdata) {
        ExecDriver *ed = exec_driver(d);
        _cleanup_free_ char *cgpath = NULL, *wd = NULL, *jd = NULL;
        ExecJobRecord rec = {};
        Cgroup *cg = NULL;
        int fd;

        if (asprintf(&cgpath, "%s/%s", ed->cgroup_path, l->handle) < 0 ||
            asprintf(&wd, "%s/%s", ed->work_dir, l->handle) < 0 ||
            asprintf(&jd, "%s/%s" EXEC_JOB_DIR_SUFFIX, ed->work_dir, l->handle) < 0)
                return -ENOMEM;
        /* The supervisor first, so that it starts nothing more (its command dies with it), then
         * whatever is in the cgroup. */
        if (exec_job_record_read(jd, &rec) >= 0) {
                if (exec_job_supervisor_open(&rec, &fd) >= 0) {
                        (void) pidfd_send_signal(fd, SIGKILL, NULL, 0);
                        close(fd);
                }
                exec_job_record_done(&rec);
        }
        /* Named only: the thread kills and removes what is there of it. */
        if (cgroup_at(ed->cgroup_root, ed->mode, cgpath, &cg) < 0)
                return -ENOMEM;
        return job_cleanup_submit(ed, l->task_id, cg, wd, jd, done, userdata);
}

static int on_work_dir_gone(sd_event_source *s, const struct inotify_event *ev, void *userdata) {
        ExecDriver *ed = userdata;

        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF))
                log_warning("exec driver: %s, which holds the jobs' directories, was %s; jobs started from now on "
                            "cannot be set up until the agent is restarted.", ed->work_dir,
                            ev->mask & IN_DELETE_SELF ? "removed" : "moved away");
        return 0;
}

/* Each job watches its directory (job_watch). sd-event closes its inotify descriptor when the last watch
 * on it goes, and closing an inotify descriptor waits until the kernel has released its marks: on a busy
 * host that wait took seconds, on the loop, at the end of every job of an agent with one job at a time.
 * A watch for the driver's whole life keeps the descriptor open, so that a job's watch goes with
 * inotify_rm_watch(), which does not wait. It also tells the operator when the work directory goes. */
static int watch_work_dir(ExecDriver *ed) {
        return sd_event_add_inotify(ed->driver.event, &ed->work_dir_watch, ed->work_dir,
                                    IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR, on_work_dir_gone, ed);
}

static Driver *exec_driver_free(Driver *d) {
        ExecDriver *ed = exec_driver(d);

        if (!ed)
                return NULL;
        free(ed->cgroup_root);
        free(ed->cgroup_path);
        free(ed->work_dir);
        free(ed->supervisor);
        free(ed->fence_init);
        free(ed->user_arg);
        ed->work_dir_watch = sd_event_source_disable_unref(ed->work_dir_watch);
        offload_free(ed->maker);
        offload_free(ed->remover);
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
        .job_output_read = exec_job_output_read_live,
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
        if (config->supervisor_path)
                ed->supervisor = strdup(config->supervisor_path);
        else
                (void) daemon_helper_path("mc-exec-supervisor", MC_EXEC_SUPERVISOR_PATH, &ed->supervisor);
        ed->fence_init = config->fence_init ? strdup(config->fence_init) : NULL;
        if (!ed->cgroup_root || !ed->cgroup_path || !ed->work_dir || !ed->supervisor ||
            (config->fence_init && !ed->fence_init)) {
                exec_driver_free(&ed->driver);
                return log_oom();
        }
        if (access(ed->supervisor, X_OK) < 0) {
                r = log_error_errno(errno, "Cannot run %s, which runs the exec driver's jobs: %m", ed->supervisor);
                exec_driver_free(&ed->driver);
                return r;
        }
        r = cgroup_detect(ed->cgroup_root, &ed->mode);
        if (r < 0) {
                exec_driver_free(&ed->driver);
                return log_error_errno(r, "No cgroup hierarchy found under %s (neither v2 nor v1 with a memory controller).",
                                       config->cgroup_root ?: CGROUP_ROOT_DEFAULT);
        }
        /* Two threads: a job's removal, which its result waits for, is not queued behind the next
         * jobs' setups (with 1 000 agents on one host, one setup took a minute, and a result that
         * waited behind it was sent 49 s after its task had ended). */
        r = offload_new(e, "mc-cgroup-make", &ed->maker);
        if (r >= 0)
                r = offload_new(e, "mc-cgroup-rm", &ed->remover);
        if (r < 0) {
                exec_driver_free(&ed->driver);
                return log_error_errno(r, "Cannot start the threads that make and remove cgroups: %m");
        }
        r = exec_user_resolve(config->user, &ed->user);
        if (r < 0) {
                exec_driver_free(&ed->driver);
                if (r == -ESRCH)
                        return log_error_errno(r, "EXEC_USER=%s: no such user or group.", config->user);
                if (r == -EPERM)
                        return log_error_errno(r, "EXEC_USER=%s: cannot run tasks as another user while the agent "
                                               "is not root (uid %u).", config->user, (unsigned) geteuid());
                if (r == -EINVAL)
                        return log_error_errno(r, "EXEC_USER=%s is not a user: NAME, UID, NAME:GROUP or UID:GID.",
                                               config->user);
                return log_error_errno(r, "Cannot resolve EXEC_USER=%s: %m", strempty(config->user));
        }
        r = exec_user_format(&ed->user, &ed->user_arg);
        if (r < 0) {
                exec_driver_free(&ed->driver);
                return log_oom();
        }
        /* Searchable by all (not listable): the task reaches its own directory, not the others' names. */
        r = mkdir_p(ed->work_dir, 0711);
        if (r >= 0 && chmod(ed->work_dir, 0711) < 0)
                r = -errno;
        if (r < 0) {
                log_error_errno(r, "Cannot create %s: %m", ed->work_dir);
                exec_driver_free(&ed->driver);
                return r;
        }
        r = watch_work_dir(ed);
        if (r < 0) {
                if (r == -EMFILE)
                        log_error_errno(r, "Cannot watch %s: %m; most likely this user's inotify instances are "
                                        "all taken (fs.inotify.max_user_instances; each exec agent holds one).",
                                        ed->work_dir);
                else
                        log_error_errno(r, "Cannot watch %s: %m", ed->work_dir);
                exec_driver_free(&ed->driver);
                return r;
        }
        if (ed->user.change) {
                _cleanup_free_ char *blocking = NULL;
                r = exec_user_path_check(&ed->user, ed->work_dir, &blocking);
                if (r < 0) {
                        log_error_errno(r, "Cannot check the way to %s: %m", ed->work_dir);
                        exec_driver_free(&ed->driver);
                        return r;
                }
                if (blocking) {
                        log_error("exec driver: tasks run as uid %u, which cannot get through %s to their work "
                                  "directories under %s: give it the search bit (chmod o+x), or set EXEC_USER.",
                                  (unsigned) ed->user.uid, blocking, ed->work_dir);
                        exec_driver_free(&ed->driver);
                        return -EACCES;
                }
        }
        log_info("exec driver: cgroup %s under %s/%s, jobs supervised by %s, tasks run as uid %u gid %u.",
                 cgroup_mode_to_string(ed->mode), ed->cgroup_root, ed->cgroup_path, ed->supervisor,
                 (unsigned) ed->user.uid, (unsigned) ed->user.gid);
        *ret = &ed->driver;
        return 0;
}
