/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* How a task is run: the Docker driver (a container) or the exec driver (a child process in its own
 * cgroup). A driver runs jobs; a job is one attempt of one task. It reports, through its callbacks,
 * when the job's process is running and when it has ended (or could not be run), with the output.
 * Everything is asynchronous on the event loop. */

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "output-capture.h"

typedef struct Driver Driver;
typedef struct DriverJob DriverJob;

/* An input file for the task: the cache's read-only file, and where the task finds it. */
typedef struct DriverInput {
        const char *source;             /* absolute path on the host (0444) */
        const char *path;               /* the task's absolute path (docs/api.md "Task inputs") */
} DriverInput;

typedef struct DriverJobSpec {
        const char *task_id;
        int64_t lease_token;
        int64_t attempt;
        int64_t timeout_sec;            /* recorded with the job, so that an adopted one keeps it */
        const char *image;
        char *const *cmd;               /* NULL-terminated */
        json_object *env;               /* {"K": "v"} or NULL */
        int64_t nano_cpus;              /* 0: no limit */
        int64_t memory_bytes;           /* 0: no limit */
        const char *runtime;            /* Docker runtime; NULL: the engine's default */
        /* Docker: bind-mounted read-only at path. exec: $MC_INPUTS<path>, a link in the job's own
         * directory, with MC_INPUTS in the environment. */
        const DriverInput *inputs;
        size_t n_inputs;
        /* The directory of the job's lease file (fence-init/fence-protocol.h): the job runs under
         * mc-fence-init, which reads it. NULL: the command runs bare (the drivers' own tests). */
        const char *fence_dir;
} DriverJobSpec;

typedef struct DriverExit {
        int error;                      /* < 0: the job could not be run at all (reason says why) */
        const char *reason;             /* for a person; also set for an OOM kill */
        int64_t exit_code;              /* 0..255 when it ran (128 + signal when killed) */
        bool oom_killed;
        uint64_t ended_usec;            /* CLOCK_MONOTONIC when it ended, as its supervisor saw it; 0: unknown
                                         * (then the time the agent sees it counts) */
        bool lost;                      /* ended by the engine (it restarted without live-restore), not by the
                                         * task: to be run again, not reported */
        OutputCapture *output;          /* what it printed, valid during the callback */
} DriverExit;

typedef struct DriverJobCallbacks {
        /* The process runs; handle names it (a container id, "pid-1234"); started_realtime_usec is
         * when it started (wall clock: an adopted container started before we saw it). */
        void (*started)(DriverJob *job, const char *handle, uint64_t started_realtime_usec, void *userdata);
        /* It ended, or never ran. Called once; the job stays valid until driver_job_free(). */
        void (*exited)(DriverJob *job, const DriverExit *exit, void *userdata);
        /* job->pid and job->cgroup_marker are now known (optional). */
        void (*pid_known)(DriverJob *job, void *userdata);
} DriverJobCallbacks;

/* A job a previous run of the agent left behind (found by labels or in the state directory). */
typedef struct DriverLeftover {
        char *task_id;
        int64_t lease_token;
        int64_t attempt;
        int64_t timeout_sec;
        char *handle;                   /* container id */
        char *state;                    /* "created", "running", "exited", ... */
        uint64_t started_realtime_usec; /* 0 if unknown or not started */
        bool adoptable;                 /* false: can only be killed (an exec job that was never recorded) */
} DriverLeftover;

void driver_leftovers_free(DriverLeftover *l, size_t n);

typedef void (*DriverListCallback)(int error, DriverLeftover *leftovers, size_t n, void *userdata);
typedef void (*DriverDoneCallback)(int error, void *userdata);

typedef struct DriverOps {
        const char *name;
        int (*job_start)(Driver *d, const DriverJobSpec *spec, const DriverJobCallbacks *cb, void *userdata,
                         DriverJob **ret);
        /* Ends the job's process: SIGTERM, then SIGKILL after grace_sec (0: SIGKILL at once). The
         * exited callback follows. */
        int (*job_stop)(DriverJob *job, unsigned grace_sec);
        /* Releases whatever the job holds on the host (container, cgroup, work directory); done is
         * called when that is finished (may be NULL). The job must have exited. */
        int (*job_remove)(DriverJob *job, DriverDoneCallback done, void *userdata);
        /* Forgets the job: no more callbacks; does not stop or remove anything. */
        void (*job_free)(DriverJob *job);
        /* What a previous run left behind. */
        int (*list_leftovers)(Driver *d, DriverListCallback cb, void *userdata);
        /* Takes a leftover over: its callbacks follow as for a started job (started is called for one
         * that was running, or that gets started now because it was only created). */
        int (*job_adopt)(Driver *d, const DriverLeftover *l, const DriverJobCallbacks *cb, void *userdata,
                         DriverJob **ret);
        /* Kills and removes a leftover that is not to be adopted. */
        int (*leftover_discard)(Driver *d, const DriverLeftover *l, DriverDoneCallback done, void *userdata);
        const char *(*job_handle)(DriverJob *job);
        /* false while what runs the jobs does not answer (the Docker engine restarting): a task claimed
         * now would only wait here. Asking may start a check of it. NULL: always true. */
        bool (*available)(Driver *d);
        /* While the job runs: up to max bytes of its output (both streams, as captured) from offset on,
         * for the live output the agent sends the control. NULL: the driver cannot. */
        int (*job_output_read)(DriverJob *job, uint64_t offset, void *buf, size_t max, size_t *ret_size);
        Driver *(*free)(Driver *d);
} DriverOps;

struct Driver {
        const DriverOps *ops;
        sd_event *event;
};

/* What every driver's job starts with. */
struct DriverJob {
        Driver *driver;
        DriverJobCallbacks cb;
        void *userdata;
        char *task_id;
        int64_t lease_token;
        int64_t attempt;
        int64_t timeout_sec;
        /* The process to kill to end the job without the driver (0: not known yet), and a string its
         * /proc/PID/cgroup contains, which tells it from a process that took the pid over later. */
        pid_t pid;
        char *cgroup_marker;
        /* The job's cgroup directory, when the driver made it itself (the exec driver): whoever fences
         * without the driver empties it, with no need of a process or of a scan. */
        char *cgroup_dir;
};

/* For the drivers: fills the common part. */
int driver_job_init(DriverJob *job, Driver *d, const char *task_id, int64_t lease_token, int64_t attempt,
                    int64_t timeout_sec, const DriverJobCallbacks *cb, void *userdata);
void driver_job_done(DriverJob *job);
/* Records the job's process for whoever fences without the driver, and says so. */
void driver_job_set_pid(DriverJob *job, pid_t pid, const char *marker);

static inline int driver_job_stop(DriverJob *job, unsigned grace_sec) {
        return job->driver->ops->job_stop(job, grace_sec);
}
static inline int driver_job_remove(DriverJob *job, DriverDoneCallback done, void *userdata) {
        return job->driver->ops->job_remove(job, done, userdata);
}
static inline void driver_job_free(DriverJob *job) {
        if (job)
                job->driver->ops->job_free(job);
}
static inline const char *driver_job_handle(DriverJob *job) {
        return job->driver->ops->job_handle(job);
}
static inline int driver_job_output_read(DriverJob *job, uint64_t offset, void *buf, size_t max, size_t *ret_size) {
        if (!job->driver->ops->job_output_read)
                return -EOPNOTSUPP;
        return job->driver->ops->job_output_read(job, offset, buf, max, ret_size);
}

/* Calls fn(userdata) from the event loop soon, never from within the caller; then, or when the loop
 * is freed before that, destroy(userdata) if given. */
int driver_call_later(sd_event *e, void (*fn)(void *userdata), void (*destroy)(void *userdata), void *userdata);

static inline int driver_job_start(Driver *d, const DriverJobSpec *spec, const DriverJobCallbacks *cb,
                                   void *userdata, DriverJob **ret) {
        return d->ops->job_start(d, spec, cb, userdata, ret);
}

static inline bool driver_available(Driver *d) {
        return !d->ops->available || d->ops->available(d);
}

static inline Driver *driver_free(Driver *d) {
        return d ? d->ops->free(d) : NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Driver *, driver_free);

/* The Docker driver: containers named mc-<task>-<lease>, labelled mc.task_id, mc.lease_token,
 * mc.node, mc.attempt, mc.timeout_sec. */
typedef struct DockerDriverConfig {
        const char *socket_path;
        const char *node_id;
        const char *network;            /* NULL: the engine's default */
        size_t output_cap, tail_max;
        const char *fence_init;         /* mc-fence-init on the host, bind-mounted into every container */
} DockerDriverConfig;

typedef struct CurlEvent CurlEvent;
int docker_driver_new(sd_event *e, CurlEvent *curl, const DockerDriverConfig *config, Driver **ret);

/* The exec driver: cmd run as a process in cgroup <cgroup_path>/<task>-<lease>, working directory
 * <work_dir>/<task>-<lease>, watched by a supervisor process of its own that outlives the agent (its
 * record in <work_dir>/<task>-<lease>.job), so that a restarted agent adopts it. */
typedef struct ExecDriverConfig {
        const char *cgroup_root;        /* NULL: /sys/fs/cgroup */
        const char *cgroup_path;        /* relative to the root, e.g. "mc.agent/node-a" */
        const char *work_dir;
        const char *supervisor_path;    /* NULL: mc-exec-supervisor next to our binary, else installed */
        size_t output_cap, tail_max;
        const char *fence_init;         /* mc-fence-init: the command's parent when a job has a fence_dir */
        const char *user;               /* EXEC_USER (exec-user.h); NULL: the default */
} ExecDriverConfig;

int exec_driver_new(sd_event *e, const ExecDriverConfig *config, Driver **ret);
