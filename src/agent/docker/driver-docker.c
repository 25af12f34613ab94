/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The Docker driver: one container per job, named mc-<task>-<lease> and labelled with what a
 * restarted agent needs to take it over (mc.task_id, mc.lease_token, mc.attempt, mc.timeout_sec,
 * mc.node). create (pulling the image first when the engine does not have it), start, wait, then
 * inspect (exit code, OOM kill) and read the logs; the container is removed only when the agent says
 * so (after the result is safe on disk).
 *
 * A job with a lease file runs under mc-fence-init (../fence-init/): the init is bind-mounted
 * read-only at FENCE_INIT_CONTAINER_PATH and made the entrypoint, the job's lease directory is
 * bind-mounted read-only at FENCE_LEASE_CONTAINER_DIR, and the image's own entrypoint (read from the
 * image before the create) and the task's cmd follow on the init's command line, as the engine would
 * have run them. */

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>

#include "docker-container.h"
#include "docker-image.h"
#include "docker-logs.h"
#include "driver.h"
#include "fence-protocol.h"
#include "json-util.h"
#include "log.h"
#include "daemon-util.h"

/* The engine not answering (restarting, say): every call of a job is tried again this often, for as
 * long as it takes. The lease stays ours meanwhile, and a running container can still be killed
 * without the engine (its pidfd, the fence keeper, its init). */
#define ENGINE_RETRY_USEC (1 * USEC_PER_SEC)
/* An engine that answers a wait with an error (not "no such container") is asked again, this many times. */
#define WAIT_ERRORS_MAX 120

typedef struct DockerDriver {
        Driver driver;
        DockerClient *client;
        char *node_id;
        char *network;
        size_t output_cap, tail_max;
        char *fence_init;
        bool engine_away;               /* the last call of a job got no answer; claims wait */
        DockerCall *probe_call;         /* is it back? (asked when a claim would be made) */
} DockerDriver;

typedef enum DockerJobState {
        JOB_INSPECTING,                 /* the image's entrypoint, for the fence init */
        JOB_CREATING,
        JOB_PULLING,
        JOB_STARTING,
        JOB_RUNNING,
        JOB_COLLECTING,
        JOB_DONE,
} DockerJobState;

typedef struct DockerJob DockerJob;
typedef void (*DockerJobStep)(DockerJob *j);

struct DockerJob {
        DriverJob job;
        DockerJobState state;
        char *name;
        char *image;
        char *container_id;
        json_object *spec;
        DockerCall *call;               /* create, pull, start, inspect, logs: one at a time */
        DockerCall *wait_call;
        DockerCall *stop_call;
        sd_event_source *retry_timer;
        DockerJobStep retry_step;       /* what the retry timer runs again */
        bool engine_away;               /* the last call got no answer: said once, not every second */
        uint64_t lost_usec;             /* wall clock when the engine stopped answering while the container ran */
        bool lost_at_exit;              /* no engine (on a new connection) just after the container ended */
        OutputCapture capture;
        bool pulled, conflict_retried;
        bool fenced;                    /* runs under mc-fence-init */
        bool entrypoint_set;            /* the init's command line is in spec */
        bool stop_requested;
        unsigned stop_grace;
        unsigned wait_errors;
        int64_t exit_code;
        bool oom_killed;
        bool lost;                      /* ended by the engine's restart, not by the task */
        int error;
        char *reason;
        bool reported;
        int pidfd;                      /* the container's init, to kill it without the engine */
        DockerCall *pid_call;
        /* Live output: the container's logs followed while it runs, from the first time they are
         * asked for (docker_job_output_read()) until it exits; the result reads them again whole. */
        DockerCall *live_call;
        OutputCapture live;
        bool live_started;
};

static DockerDriver *docker_driver(Driver *d) {
        return (DockerDriver *) d;
}

static DockerJob *docker_job(DriverJob *j) {
        return (DockerJob *) j;
}

static DockerClient *client(DockerJob *j) {
        return docker_driver(j->job.driver)->client;
}

static const char *node_id(DockerJob *j) {
        return docker_driver(j->job.driver)->node_id;
}

/* A pidfd for the container's init process, checked to be in the container's cgroup, so that a
 * fencing SIGKILL lands at once even when the engine is slow (or stuck), and never on a process that
 * took the pid over. */
static int open_container_pidfd(const char *container_id, int64_t pid) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t n = 0;
        bool ours = false;
        int fd;

        if (pid <= 0)
                return -ESRCH;
#ifdef SYS_pidfd_open
        fd = (int) syscall(SYS_pidfd_open, (pid_t) pid, 0);
#else
        fd = -1;
        errno = ENOSYS;
#endif
        if (fd < 0)
                return -errno;
        if (asprintf(&path, "/proc/%" PRIi64 "/cgroup", pid) < 0) {
                close(fd);
                return -ENOMEM;
        }
        f = fopen(path, "re");
        while (f && getline(&line, &n, f) > 0)
                if (strstr(line, container_id))
                        ours = true;
        if (!ours) {
                close(fd);
                return -ESRCH;
        }
        return fd;
}

static void take_pid(DockerJob *j, json_object *inspect) {
        json_object *state;
        int64_t pid;
        int fd;

        if (j->pidfd >= 0 || !json_object_object_get_ex(inspect, "State", &state) ||
            json_get_int64(state, "Pid", &pid) < 0)
                return;
        fd = open_container_pidfd(j->container_id, pid);
        if (fd < 0) {
                log_debug("Task %s: no pidfd for container %s (pid %" PRIi64 "): %s", j->job.task_id,
                          j->container_id, pid, strerror(-fd));
                return;
        }
        j->pidfd = fd;
        driver_job_set_pid(&j->job, (pid_t) pid, j->container_id);
        /* A kill asked for while we looked: now it can land directly. */
        if (j->stop_requested && j->stop_grace == 0)
#ifdef SYS_pidfd_send_signal
                (void) syscall(SYS_pidfd_send_signal, j->pidfd, SIGKILL, NULL, 0);
#else
                ;
#endif
}

static void on_pid_inspect(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->pid_call = NULL;
        if (res->error >= 0)
                take_pid(j, res->json);
}

static void report(DockerJob *j) {
        DriverExit e = {
                .error = j->error,
                .reason = j->reason,
                .exit_code = j->error < 0 ? -1 : j->exit_code,
                .oom_killed = j->oom_killed,
                .lost = j->lost,
                .output = &j->capture,
        };

        if (j->reported)
                return;
        j->reported = true;
        j->state = JOB_DONE;
        docker_call_cancel(TAKE_PTR(j->pid_call));
        if (j->pidfd >= 0)
                j->pidfd = (close(j->pidfd), -1);
        j->job.cb.exited(&j->job, &e, j->job.userdata);
}

_printf_(3, 4) static void fail(DockerJob *j, int error, const char *fmt, ...) {
        va_list ap;

        free(j->reason);
        va_start(ap, fmt);
        if (vasprintf(&j->reason, fmt, ap) < 0)
                j->reason = NULL;
        va_end(ap);
        j->error = error < 0 ? error : -EIO;
        log_info("Task %s: %s", j->job.task_id, strna(j->reason));
        report(j);
}

/* No answer at all, or one cut off: the engine is restarting or gone, which says nothing about the
 * job. (An answer, even an error, is the engine's word.) */
static bool engine_unreachable(const DockerResult *res) {
        return res->error < 0 && res->error != -ENOMEM && (res->code == 0 || (res->code >= 200 && res->code < 300));
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        DockerJob *j = userdata;

        j->retry_timer = sd_event_source_disable_unref(j->retry_timer);
        if (j->stop_requested && (j->state == JOB_INSPECTING || j->state == JOB_PULLING || j->state == JOB_CREATING)) {
                /* Nothing of it can run yet: no need to wait for the engine to say so. */
                fail(j, -ECANCELED, "stopped before the container was started");
                return 0;
        }
        j->retry_step(j);
        return 0;
}

/* step (the one whose call got no answer, or an error worth asking again) runs again in a while. */
static void retry_later(DockerJob *j, DockerJobStep step, const DockerResult *res) {
        int r;

        if (engine_unreachable(res) && !docker_driver(j->job.driver)->engine_away) {
                log_event(LOG_WARNING, MC_EVENT_ENGINE_UNAVAILABLE, LOG_FIELDS("NODE_ID", node_id(j)),
                          "The Docker engine does not answer: claiming no tasks until it does.");
                docker_driver(j->job.driver)->engine_away = true;
        }
        if (!engine_unreachable(res))
                log_warning("Task %s: the Docker engine answered: %s; asking again.", j->job.task_id, res->message);
        else if (!j->engine_away) {
                log_warning("Task %s: the Docker engine does not answer (%s); trying again every %u s until it does.",
                            j->job.task_id, res->message, (unsigned) (ENGINE_RETRY_USEC / USEC_PER_SEC));
                j->engine_away = true;
        } else
                log_debug("Task %s: the Docker engine still does not answer (%s).", j->job.task_id, res->message);
        j->retry_step = step;
        r = sd_event_add_time_relative(j->job.driver->event, &j->retry_timer, CLOCK_MONOTONIC, ENGINE_RETRY_USEC, 0,
                                       on_retry, j);
        if (r < 0)
                fail(j, r, "cannot wait for the Docker engine to come back: %s", strerror(-r));
}

static void driver_engine_answered(DockerDriver *dd) {
        if (dd->engine_away)
                log_event(LOG_INFO, MC_EVENT_ENGINE_AVAILABLE, LOG_FIELDS("NODE_ID", dd->node_id),
                          "The Docker engine answers again: claiming tasks again.");
        dd->engine_away = false;
}

static void engine_answered(DockerJob *j) {
        if (j->engine_away)
                log_info("Task %s: the Docker engine answers again.", j->job.task_id);
        j->engine_away = false;
        driver_engine_answered(docker_driver(j->job.driver));
}

static void start_container(DockerJob *j);
static void create_container(DockerJob *j);
static void prepare_container(DockerJob *j);
static void wait_container(DockerJob *j);

/* "2026-11-27T01:02:59.074153137Z" → microseconds since the epoch; 0 when it cannot be read (or is
 * Docker's "0001-01-01T00:00:00Z" for never). */
static uint64_t parse_docker_time(const char *s) {
        struct tm tm = {};
        const char *p;
        uint64_t usec = 0, scale = 100000;
        time_t t;

        if (!s)
                return 0;
        p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p || tm.tm_year < 70)
                return 0;
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++) {
                        usec += (uint64_t) (*p - '0') * scale;
                        scale /= 10;
                }
        t = timegm(&tm);
        if (t < 0)
                return 0;
        return (uint64_t) t * USEC_PER_SEC + usec;
}

static void collect_logs(DockerJob *j);

static void on_logs(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;
        int r;

        j->call = NULL;
        if (engine_unreachable(res)) {
                /* Read again from the start once the engine is back: the container (and its log) stays
                 * until the agent removes it. */
                OutputCapture fresh;

                r = output_capture_init(&fresh, docker_driver(j->job.driver)->output_cap,
                                        docker_driver(j->job.driver)->tail_max);
                if (r < 0) {
                        log_oom();
                        report(j);      /* with what came */
                        return;
                }
                output_capture_done(&j->capture);
                j->capture = fresh;
                retry_later(j, collect_logs, res);
                return;
        }
        if (res->error < 0)
                /* The exit code is what matters; output that cannot be read is said so in it. */
                log_warning("Task %s: cannot read the container's output: %s", j->job.task_id, res->message);
        report(j);
}

static void collect_logs(DockerJob *j) {
        int r;

        j->state = JOB_COLLECTING;
        r = docker_container_logs(client(j), j->container_id, false, &j->capture, on_logs, j, &j->call);
        if (r < 0) {
                log_warning_errno(r, "Task %s: cannot read the container's output: %m", j->job.task_id);
                report(j);
        }
}

static void finish_exited(DockerJob *j);

/* Killed by SIGTERM or SIGKILL (not by the agent, not out of memory) while the engine went away: what
 * an engine without live-restore does to its containers when it stops (it stops accepting connections
 * first, then stops the containers, answering our wait on the connection it has, then exits: the
 * inspect that follows, on a new connection, finds nobody), or when it starts again after a crash (the
 * container ended after our wait lost the engine). Not the task's doing, as far as anyone can tell:
 * run again. A task that ended otherwise meanwhile keeps its result. */
static bool killed_by_engine(DockerJob *j, json_object *state) {
        const char *finished = NULL;
        uint64_t t;

        if (j->stop_requested || j->oom_killed || (j->exit_code != 128 + SIGTERM && j->exit_code != 128 + SIGKILL))
                return false;
        if (j->lost_at_exit)
                return true;
        if (j->lost_usec == 0)
                return false;
        (void) json_get_string(state, "FinishedAt", &finished);
        t = parse_docker_time(finished);
        return t == 0 || t >= j->lost_usec;
}

static void on_final_inspect(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;
        json_object *state = NULL;
        bool oom;

        j->call = NULL;
        if (engine_unreachable(res)) {
                j->lost_at_exit = true;
                retry_later(j, finish_exited, res);
                return;
        }
        engine_answered(j);
        if (res->error >= 0 && json_object_object_get_ex(res->json, "State", &state)) {
                int64_t code;
                if (json_get_bool(state, "OOMKilled", &oom) >= 0)
                        j->oom_killed = oom;
                if (j->exit_code < 0 && json_get_int64(state, "ExitCode", &code) >= 0)
                        j->exit_code = code;
        }
        if (state && killed_by_engine(j, state)) {
                j->lost = true;
                free(j->reason);
                if (asprintf(&j->reason, "the Docker engine ended the container (exit %" PRIi64 ") while it "
                             "restarted", j->exit_code) < 0)
                        j->reason = NULL;
        }
        if (j->oom_killed) {
                free(j->reason);
                j->reason = strdup("killed by the kernel: out of memory (the task's memory limit)");
        } else if (j->exit_code > 128 && j->exit_code < 128 + 65 && !j->reason) {
                if (asprintf(&j->reason, "killed by signal %s", strsignal((int) j->exit_code - 128)) < 0)
                        j->reason = NULL;
        }
        collect_logs(j);
}

static void finish_exited(DockerJob *j) {
        int r;

        docker_call_cancel(TAKE_PTR(j->live_call));
        j->state = JOB_COLLECTING;
        /* On a new connection: whether the engine is going away as the container ended (see above). */
        r = docker_container_inspect_fresh(client(j), j->container_id, on_final_inspect, j, &j->call);
        if (r < 0)
                collect_logs(j);
}

static void on_wait(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->wait_call = NULL;
        if (res->error == -ENOENT) {
                fail(j, -ENOENT, "the container %s disappeared (removed outside the agent?)", j->container_id);
                return;
        }
        if (engine_unreachable(res)) {
                /* The engine restarting: the container may live on (live-restore), or be stopped by
                 * it. Which one, and when, the engine says once it answers again. */
                if (j->lost_usec == 0)
                        j->lost_usec = realtime_usec();
                retry_later(j, wait_container, res);
                return;
        }
        if (res->error < 0) {
                /* The engine answered, with an error: it may be in the middle of restoring. */
                if (++j->wait_errors > WAIT_ERRORS_MAX) {
                        fail(j, res->error, "cannot wait for the container: %s", res->message);
                        return;
                }
                retry_later(j, wait_container, res);
                return;
        }
        engine_answered(j);
        j->exit_code = res->exit_code;
        log_debug("Task %s: container exited with %" PRIi64 ".", j->job.task_id, j->exit_code);
        finish_exited(j);
}

static void wait_container(DockerJob *j) {
        int r;

        j->state = JOB_RUNNING;
        r = docker_container_wait(client(j), j->container_id, on_wait, j, &j->wait_call);
        if (r < 0)
                fail(j, r, "cannot wait for the container: %s", strerror(-r));
}

static void on_stop_done(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->stop_call = NULL;
        if (res->error < 0 && res->error != -EBUSY && res->error != -ENOENT)
                log_warning("Task %s: stopping the container failed: %s", j->job.task_id, res->message);
}

static int send_stop(DockerJob *j) {
        int r;

        if (j->stop_call) {
                /* A kill overrides a graceful stop that is still waiting. */
                if (j->stop_grace > 0)
                        return 0;
                docker_call_cancel(j->stop_call);
                j->stop_call = NULL;
        }
        if (j->stop_grace == 0) {
#ifdef SYS_pidfd_send_signal
                if (j->pidfd >= 0 && syscall(SYS_pidfd_send_signal, j->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
                        log_warning_errno(errno, "Task %s: cannot signal the container's init: %m", j->job.task_id);
#endif
                /* Through the engine as well: it may have other processes in there, and it keeps books. */
                r = docker_container_kill(client(j), j->container_id, "SIGKILL", on_stop_done, j, &j->stop_call);
        }
        else
                r = docker_container_stop(client(j), j->container_id, j->stop_grace, on_stop_done, j, &j->stop_call);
        return r;
}

static void on_start(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->call = NULL;
        if (engine_unreachable(res)) {
                /* Started or not, the engine says when it is back: a second start of a running
                 * container answers 304. */
                retry_later(j, start_container, res);
                return;
        }
        if (res->error < 0) {
                fail(j, res->error, "Docker could not start the container: %s", res->message);
                return;
        }
        engine_answered(j);
        if (j->job.cb.started)
                j->job.cb.started(&j->job, j->container_id, realtime_usec(), j->job.userdata);
        if (j->reported)
                return;
        wait_container(j);
        (void) docker_container_inspect(client(j), j->container_id, on_pid_inspect, j, &j->pid_call);
        if (j->stop_requested && !j->reported)
                (void) send_stop(j);
}

static void start_container(DockerJob *j) {
        int r;

        if (j->stop_requested) {
                /* Stopped before it ran: it never will. */
                fail(j, -ECANCELED, "stopped before the container started");
                return;
        }
        j->state = JOB_STARTING;
        /* With the wall clock, for the dispatch benchmark (bench/agent). */
        log_debug("Task %s: start requested at %.6f.", j->job.task_id, (double) realtime_usec() / 1e6);
        r = docker_container_start(client(j), j->container_id, on_start, j, &j->call);
        if (r < 0)
                fail(j, r, "cannot start the container: %s", strerror(-r));
}

static void on_pull(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->call = NULL;
        if (engine_unreachable(res)) {
                /* Asked again from the start: the image may have come meanwhile. */
                j->pulled = false;
                retry_later(j, prepare_container, res);
                return;
        }
        if (res->error < 0) {
                fail(j, -ENOENT, "image %s is not on node %s and pulling it failed: %s", j->image, node_id(j),
                     res->message);
                return;
        }
        log_info("Task %s: pulled image %s.", j->job.task_id, j->image);
        prepare_container(j);
}

/* The image is not on the node (the create or the inspect said so): pulled once, then a failure. */
static void image_missing(DockerJob *j, const DockerResult *res) {
        int r;

        assert(res->error == -ENOENT);
        if (j->pulled) {
                fail(j, -ENOENT, "image %s is not on node %s: %s", j->image, node_id(j), res->message);
                return;
        }
        j->pulled = true;
        j->state = JOB_PULLING;
        j->entrypoint_set = false;      /* the image pulled may not be the one inspected */
        log_info("Task %s: image %s is not here; pulling it.", j->job.task_id, j->image);
        r = docker_image_pull(client(j), j->image, on_pull, j, &j->call);
        if (r < 0)
                fail(j, r, "cannot pull image %s: %s", j->image, strerror(-r));
}

static void on_conflict_removed(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        j->call = NULL;
        create_container(j);
}

static void on_create(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;
        int r;

        j->call = NULL;
        if (engine_unreachable(res)) {
                /* Created or not: a second create of the same name is a conflict, handled below. */
                retry_later(j, create_container, res);
                return;
        }
        engine_answered(j);
        if (res->error == -ENOENT) {
                image_missing(j, res);
                return;
        }
        if (res->error == -EBUSY && !j->conflict_retried) {
                /* A container of this very lease exists: a create whose answer we lost. Start afresh. */
                j->conflict_retried = true;
                r = docker_container_remove(client(j), j->name, true, on_conflict_removed, j, &j->call);
                if (r < 0)
                        fail(j, r, "cannot remove the old container %s: %s", j->name, strerror(-r));
                return;
        }
        if (res->error < 0) {
                const char *rt = NULL;
                json_object *host;

                if (json_object_object_get_ex(j->spec, "HostConfig", &host))
                        (void) json_get_string(host, "Runtime", &rt);
                if (rt && res->message && strstr(res->message, "untime"))
                        fail(j, -EINVAL, "container runtime \"%s\" is not available on node %s (Docker: %s)", rt,
                             node_id(j), res->message);
                else
                        fail(j, res->error, "Docker refused to create the container: %s", res->message);
                return;
        }
        if (!res->id) {
                fail(j, -EBADMSG, "Docker created a container but did not say its id");
                return;
        }
        j->container_id = strdup(res->id);
        if (!j->container_id) {
                fail(j, -ENOMEM, "out of memory");
                return;
        }
        /* Recorded before the start is asked for: if we die in between, the fence keeper can still
         * find the container by its id. */
        driver_job_set_pid(&j->job, 0, j->container_id);
        start_container(j);
}

static void create_container(DockerJob *j) {
        int r;

        j->state = JOB_CREATING;
        log_debug("Task %s: create requested at %.6f.", j->job.task_id, (double) realtime_usec() / 1e6);
        r = docker_container_create(client(j), j->name, j->spec, on_create, j, &j->call);
        if (r < 0)
                fail(j, r, "cannot create the container: %s", strerror(-r));
}

/* The init's command line: the init, its lease file, then what the engine would have run (the
 * image's entrypoint; the task's cmd stays the container's Cmd and follows it). */
static int set_entrypoint(DockerJob *j, json_object *image) {
        _cleanup_json_ json_object *ep = json_object_new_array();
        json_object *config, *own = NULL;

        if (!ep)
                return -ENOMEM;
        if (json_object_object_get_ex(image, "Config", &config))
                (void) json_object_object_get_ex(config, "Entrypoint", &own);
        if (json_object_array_add(ep, json_object_new_string(FENCE_INIT_CONTAINER_PATH)) < 0 ||
            json_object_array_add(ep, json_object_new_string(FENCE_LEASE_CONTAINER_DIR "/" FENCE_LEASE_FILE_NAME)) < 0 ||
            json_object_array_add(ep, json_object_new_string("--")) < 0)
                return -ENOMEM;
        if (own && json_object_is_type(own, json_type_array))
                for (size_t i = 0; i < json_object_array_length(own); i++) {
                        json_object *a = json_object_array_get_idx(own, i);
                        if (!json_object_is_type(a, json_type_string))
                                return -EBADMSG;
                        if (json_object_array_add(ep, json_object_get(a)) < 0)
                                return -ENOMEM;
                }
        else if (own && !json_object_is_type(own, json_type_null))
                return -EBADMSG;
        json_object_object_add(j->spec, "Entrypoint", TAKE_PTR(ep));
        j->entrypoint_set = true;
        return 0;
}

static void on_image_inspect(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;
        int r;

        j->call = NULL;
        if (engine_unreachable(res)) {
                retry_later(j, prepare_container, res);
                return;
        }
        engine_answered(j);
        if (res->error == -ENOENT) {
                image_missing(j, res);
                return;
        }
        if (res->error < 0) {
                fail(j, res->error, "cannot inspect image %s: %s", j->image, res->message);
                return;
        }
        r = set_entrypoint(j, res->json);
        if (r < 0) {
                fail(j, r, "cannot read the entrypoint of image %s: %s", j->image,
                     r == -EBADMSG ? "Config.Entrypoint is not a list of strings" : strerror(-r));
                return;
        }
        create_container(j);
}

/* A fenced job needs the image's entrypoint before the create; others go straight to it. */
static void prepare_container(DockerJob *j) {
        int r;

        if (!j->fenced || j->entrypoint_set) {
                create_container(j);
                return;
        }
        if (j->stop_requested) {
                fail(j, -ECANCELED, "stopped before the container was created");
                return;
        }
        j->state = JOB_INSPECTING;
        r = docker_image_inspect(client(j), j->image, on_image_inspect, j, &j->call);
        if (r < 0)
                fail(j, r, "cannot inspect image %s: %s", j->image, strerror(-r));
}

static DockerJob *job_new(DockerDriver *dd, const char *task_id, int64_t lease, int64_t attempt, int64_t timeout_sec,
                          const DriverJobCallbacks *cb, void *userdata) {
        DockerJob *j = calloc(1, sizeof(DockerJob));

        if (!j)
                return NULL;
        if (driver_job_init(&j->job, &dd->driver, task_id, lease, attempt, timeout_sec, cb, userdata) < 0 ||
            output_capture_init(&j->capture, dd->output_cap, dd->tail_max) < 0 ||
            asprintf(&j->name, "mc-%s-%" PRIi64, task_id, lease) < 0) {
                output_capture_done(&j->capture);
                driver_job_done(&j->job);
                free(j);
                return NULL;
        }
        j->exit_code = -1;
        j->pidfd = -1;
        return j;
}

static void docker_job_free(DriverJob *job) {
        DockerJob *j = docker_job(job);

        if (!j)
                return;
        docker_call_cancel(j->call);
        docker_call_cancel(j->wait_call);
        docker_call_cancel(j->stop_call);
        docker_call_cancel(j->pid_call);
        docker_call_cancel(j->live_call);
        if (j->pidfd >= 0)
                close(j->pidfd);
        sd_event_source_disable_unref(j->retry_timer);
        json_object_put(j->spec);
        output_capture_done(&j->capture);
        output_capture_done(&j->live);
        free(j->name);
        free(j->image);
        free(j->container_id);
        free(j->reason);
        driver_job_done(&j->job);
        free(j);
}

static void on_live_logs(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;

        /* The container stopped, or the engine went away: what came stays readable. */
        j->live_call = NULL;
}

static int docker_job_output_read(DriverJob *job, uint64_t offset, void *buf, size_t max, size_t *ret_size) {
        DockerJob *j = docker_job(job);
        int r;

        if (!j->live_started) {
                if (j->state != JOB_RUNNING || !j->container_id) {
                        *ret_size = 0;
                        return 0;
                }
                r = output_capture_init(&j->live, docker_driver(job->driver)->output_cap, 1);
                if (r < 0)
                        return r;
                j->live_started = true;
                r = docker_container_logs(client(j), j->container_id, true, &j->live, on_live_logs, j, &j->live_call);
                if (r < 0)
                        return r;
        }
        if (offset >= j->live.output_size) {
                *ret_size = 0;
                return 0;
        }
        *ret_size = MIN(max, j->live.output_size - (size_t) offset);
        memcpy(buf, j->live.output + offset, *ret_size);
        return 0;
}

static int docker_job_start(Driver *d, const DriverJobSpec *spec, const DriverJobCallbacks *cb, void *userdata,
                            DriverJob **ret) {
        DockerDriver *dd = docker_driver(d);
        _cleanup_free_ const char **binds = NULL;
        DockerJob *j;
        char lease[32], attempt[32], timeout[32];
        int r;

        binds = calloc(2 * spec->n_inputs + 5, sizeof(char *));
        if (!binds)
                return -ENOMEM;
        for (size_t i = 0; i < spec->n_inputs; i++) {
                binds[2 * i] = spec->inputs[i].source;
                binds[2 * i + 1] = spec->inputs[i].path;
        }
        if (spec->fence_dir) {
                size_t k = 2 * spec->n_inputs;

                if (!dd->fence_init)
                        return -EINVAL;
                binds[k] = dd->fence_init;
                binds[k + 1] = FENCE_INIT_CONTAINER_PATH;
                binds[k + 2] = spec->fence_dir;
                binds[k + 3] = FENCE_LEASE_CONTAINER_DIR;
        }
        j = job_new(dd, spec->task_id, spec->lease_token, spec->attempt, spec->timeout_sec, cb, userdata);
        if (!j)
                return -ENOMEM;
        j->image = strdup(spec->image ?: "");
        if (!j->image) {
                docker_job_free(&j->job);
                return -ENOMEM;
        }
        snprintf(lease, sizeof(lease), "%" PRIi64, spec->lease_token);
        snprintf(attempt, sizeof(attempt), "%" PRIi64, spec->attempt);
        snprintf(timeout, sizeof(timeout), "%" PRIi64, spec->timeout_sec);
        r = docker_container_spec_to_json(&(DockerContainerSpec) {
                        .image = spec->image,
                        .cmd = spec->cmd,
                        .env = spec->env,
                        .labels = (const char *[]) {
                                "mc.task_id", spec->task_id,
                                "mc.lease_token", lease,
                                "mc.node", dd->node_id,
                                "mc.attempt", attempt,
                                "mc.timeout_sec", timeout,
                                NULL,
                        },
                        .nano_cpus = spec->nano_cpus,
                        .memory_bytes = spec->memory_bytes,
                        .runtime = spec->runtime,
                        .network = dd->network,
                        .ro_binds = binds,
                }, &j->spec);
        if (r < 0) {
                docker_job_free(&j->job);
                return r;
        }
        j->fenced = spec->fence_dir != NULL;
        /* Callbacks cannot come before we return: curl-event never completes a request synchronously. */
        prepare_container(j);
        *ret = &j->job;
        return 0;
}

static int docker_job_stop(DriverJob *job, unsigned grace_sec) {
        DockerJob *j = docker_job(job);

        if (j->reported)
                return 0;
        if (j->stop_requested && grace_sec >= j->stop_grace)
                return 0;       /* as strong a stop is under way */
        j->stop_requested = true;
        j->stop_grace = grace_sec;
        if (j->state == JOB_RUNNING)
                return send_stop(j);
        /* Creating, pulling or starting: acted on when that step ends. */
        return 0;
}

typedef struct RemoveCall {
        DriverDoneCallback done;
        void *userdata;
} RemoveCall;

static void on_removed(const DockerResult *res, void *userdata) {
        RemoveCall *rc = userdata;

        if (rc->done)
                rc->done(res->error == -ENOENT ? 0 : res->error, rc->userdata);
}

static int remove_by_name(DockerDriver *dd, const char *name, DriverDoneCallback done, void *userdata) {
        DockerCall *call;
        RemoveCall *rc;
        int r;

        rc = malloc(sizeof(RemoveCall));
        if (!rc)
                return -ENOMEM;
        *rc = (RemoveCall) { done, userdata };
        /* Not tied to the job: the job may be freed before the engine answers. */
        r = docker_container_remove(dd->client, name, true, on_removed, rc, &call);
        if (r < 0) {
                free(rc);
                return r;
        }
        docker_call_set_destroy(call, free);
        return 0;
}

static int docker_job_remove(DriverJob *job, DriverDoneCallback done, void *userdata) {
        DockerJob *j = docker_job(job);

        return remove_by_name(docker_driver(job->driver), j->container_id ?: j->name, done, userdata);
}

static const char *docker_job_handle(DriverJob *job) {
        DockerJob *j = docker_job(job);
        return j->container_id ?: j->name;
}

typedef struct ListCall {
        DriverListCallback cb;
        void *userdata;
} ListCall;

static int64_t label_int(json_object *c, const char *key, int64_t fallback) {
        const char *v = docker_list_label(c, key);
        int64_t i;

        if (!v)
                return fallback;
        errno = 0;
        i = strtoll(v, NULL, 10);
        return errno == 0 ? i : fallback;
}

static void on_list(const DockerResult *res, void *userdata) {
        ListCall *lc = userdata;
        DriverLeftover *l = NULL;
        size_t n = 0, m;

        if (res->error < 0 || !json_object_is_type(res->json, json_type_array)) {
                log_error("Cannot list this node's containers: %s", strna(res->message));
                lc->cb(res->error < 0 ? res->error : -EBADMSG, NULL, 0, lc->userdata);
                return;
        }
        m = json_object_array_length(res->json);
        l = calloc(m + 1, sizeof(DriverLeftover));
        if (!l) {
                lc->cb(-ENOMEM, NULL, 0, lc->userdata);
                return;
        }
        for (size_t i = 0; i < m; i++) {
                json_object *c = json_object_array_get_idx(res->json, i);
                const char *id, *state, *task = docker_list_label(c, "mc.task_id");
                int64_t lease = label_int(c, "mc.lease_token", -1);

                if (json_get_string(c, "Id", &id) < 0)
                        continue;
                if (json_get_string(c, "State", &state) < 0)
                        state = "unknown";
                l[n] = (DriverLeftover) {
                        .task_id = strdup(task ?: ""),
                        .lease_token = lease,
                        .attempt = label_int(c, "mc.attempt", 0),
                        .timeout_sec = label_int(c, "mc.timeout_sec", 0),
                        .handle = strdup(id),
                        .state = strdup(state),
                        /* One without our labels (a hand-made look-alike) can only be removed. */
                        .adoptable = task && lease > 0,
                };
                if (!l[n].task_id || !l[n].handle || !l[n].state) {
                        driver_leftovers_free(l, n + 1);
                        lc->cb(-ENOMEM, NULL, 0, lc->userdata);
                        return;
                }
                n++;
        }
        lc->cb(0, l, n, lc->userdata);
        driver_leftovers_free(l, n);
}

static int docker_list_leftovers(Driver *d, DriverListCallback cb, void *userdata) {
        DockerDriver *dd = docker_driver(d);
        _cleanup_free_ char *label = NULL;
        DockerCall *call;
        ListCall *lc;
        int r;

        if (asprintf(&label, "mc.node=%s", dd->node_id) < 0)
                return -ENOMEM;
        lc = malloc(sizeof(ListCall));
        if (!lc)
                return -ENOMEM;
        *lc = (ListCall) { cb, userdata };
        r = docker_container_list(dd->client, (const char *[]) { label, NULL }, on_list, lc, &call);
        if (r < 0) {
                free(lc);
                return r;
        }
        docker_call_set_destroy(call, free);
        return 0;
}

static void on_adopt_inspect(const DockerResult *res, void *userdata) {
        DockerJob *j = userdata;
        json_object *state;
        const char *status = NULL, *started_at = NULL;
        int64_t code;

        j->call = NULL;
        if (res->error < 0) {
                fail(j, res->error, "cannot inspect the container left by the previous run: %s", res->message);
                return;
        }
        if (json_object_object_get_ex(res->json, "State", &state)) {
                (void) json_get_string(state, "Status", &status);
                (void) json_get_string(state, "StartedAt", &started_at);
        }
        if (streq_ptr(status, "created")) {
                log_info("Task %s: adopted container %s was never started; starting it.", j->job.task_id,
                         j->container_id);
                start_container(j);
                return;
        }
        if (streq_ptr(status, "running") || streq_ptr(status, "paused") || streq_ptr(status, "restarting")) {
                uint64_t t = parse_docker_time(started_at);

                take_pid(j, res->json);
                if (j->job.cb.started)
                        j->job.cb.started(&j->job, j->container_id, t ?: realtime_usec(), j->job.userdata);
                if (j->reported)
                        return;
                wait_container(j);
                if (j->stop_requested && !j->reported)
                        (void) send_stop(j);
                return;
        }
        /* exited, dead: it ended while nobody watched. */
        if (json_get_int64(state, "ExitCode", &code) >= 0)
                j->exit_code = code;
        finish_exited(j);
}

static int docker_job_adopt(Driver *d, const DriverLeftover *l, const DriverJobCallbacks *cb, void *userdata,
                            DriverJob **ret) {
        DockerDriver *dd = docker_driver(d);
        DockerJob *j;
        int r;

        if (!l->adoptable)
                return -EINVAL;
        j = job_new(dd, l->task_id, l->lease_token, l->attempt, l->timeout_sec, cb, userdata);
        if (!j)
                return -ENOMEM;
        j->container_id = strdup(l->handle);
        if (!j->container_id) {
                docker_job_free(&j->job);
                return -ENOMEM;
        }
        j->job.cgroup_marker = strdup(l->handle);
        j->state = JOB_STARTING;
        r = docker_container_inspect(dd->client, j->container_id, on_adopt_inspect, j, &j->call);
        if (r < 0) {
                docker_job_free(&j->job);
                return r;
        }
        *ret = &j->job;
        return 0;
}

static int docker_leftover_discard(Driver *d, const DriverLeftover *l, DriverDoneCallback done, void *userdata) {
        return remove_by_name(docker_driver(d), l->handle, done, userdata);
}

static void on_probe(const DockerResult *res, void *userdata) {
        DockerDriver *dd = userdata;

        dd->probe_call = NULL;
        if (!engine_unreachable(res))
                driver_engine_answered(dd);
}

static bool docker_available(Driver *d) {
        DockerDriver *dd = docker_driver(d);

        if (!dd->engine_away)
                return true;
        /* Nothing else may ask it (no job left): a ping, on a new connection, says when it is back. */
        if (!dd->probe_call)
                (void) docker_call(dd->client, &(DockerCallOptions) {
                                .method = "GET",
                                .path = "/_ping",
                                .timeout_usec = 5 * USEC_PER_SEC,
                                .fresh_connect = true,
                        }, on_probe, dd, &dd->probe_call);
        return false;
}

static Driver *docker_driver_free(Driver *d) {
        DockerDriver *dd = docker_driver(d);

        if (!dd)
                return NULL;
        docker_client_free(dd->client);
        free(dd->node_id);
        free(dd->network);
        free(dd->fence_init);
        sd_event_unref(dd->driver.event);
        free(dd);
        return NULL;
}

static const DriverOps docker_ops = {
        .name = "docker",
        .job_start = docker_job_start,
        .job_stop = docker_job_stop,
        .job_remove = docker_job_remove,
        .job_free = docker_job_free,
        .list_leftovers = docker_list_leftovers,
        .job_adopt = docker_job_adopt,
        .leftover_discard = docker_leftover_discard,
        .job_handle = docker_job_handle,
        .available = docker_available,
        .job_output_read = docker_job_output_read,
        .free = docker_driver_free,
};

int docker_driver_new(sd_event *e, CurlEvent *curl, const DockerDriverConfig *config, Driver **ret) {
        DockerDriver *dd;
        int r;

        dd = calloc(1, sizeof(DockerDriver));
        if (!dd)
                return log_oom();
        dd->driver.ops = &docker_ops;
        dd->driver.event = sd_event_ref(e);
        dd->node_id = strdup(config->node_id);
        dd->network = config->network ? strdup(config->network) : NULL;
        dd->output_cap = config->output_cap;
        dd->tail_max = config->tail_max;
        dd->fence_init = config->fence_init ? strdup(config->fence_init) : NULL;
        if (!dd->node_id || (config->network && !dd->network) || (config->fence_init && !dd->fence_init)) {
                docker_driver_free(&dd->driver);
                return log_oom();
        }
        r = docker_client_new(e, curl, config->socket_path, &dd->client);
        if (r < 0) {
                docker_driver_free(&dd->driver);
                return log_oom();
        }
        *ret = &dd->driver;
        return 0;
}
