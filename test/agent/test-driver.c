/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Both drivers, on the real things: the exec driver on this host's cgroups (v1 or v2, whichever it
 * has), the Docker driver on the real dockerd. Output, exit codes, stop with and without grace,
 * limits as the kernel (or the engine) shows them, the OOM killer, processes the task forked, what
 * cannot run (a missing command or image, an unknown runtime), and what a previous run left behind.
 * Runs as root.
 *
 * Usage: test-driver exec MC-EXEC-SUPERVISOR
 *        test-driver docker ENSURE-DOCKER-SCRIPT */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "agent-test.h"
#include "cgroup.h"
#include "config.h"
#include "file-util.h"
#include "curl-event.h"
#include "docker-container.h"
#include "driver.h"
#include "exec-job-files.h"
#include "json-util.h"
#include "log.h"

#define IMAGE "mc-test/busybox:latest"

static sd_event *event;
static Driver *driver;
static bool docker;
static CurlEvent *curl;
static DockerClient *docker_client;
static char node_id[64];
static char cgroup_path[128];
static char work_dir[128];

typedef struct Job {
        DriverJob *job;
        bool started, exited;
        char *handle;
        int error;
        char *reason;
        int64_t exit_code;
        bool oom;
        uint64_t ended_usec, exited_seen_usec;
        char *out, *err, *output;
        bool truncated;
        /* Read from inside the cgroup while it runs. */
        int64_t seen_quota, seen_period, seen_memory;
        bool check_limits;
} Job;

static int64_t read_int(const char *path) {
        _cleanup_free_ char *s = NULL;
        int64_t v = -2;
        if (read_one_line_file(path, &s) < 0)
                return -2;
        if (streq(s, "max"))
                return -1;
        (void) parse_int64(s, &v);
        return v;
}

/* Whether a v1 hierarchy's controller list ("cpu,cpuacct", "cpuacct,cpu", "cpu", ...) names one. */
static bool controller_listed(const char *list, const char *controller) {
        size_t n = strlen(controller);

        for (const char *p = list; *p; p += strcspn(p, ","), p += strspn(p, ","))
                if (strncmp(p, controller, n) == 0 && (p[n] == ',' || p[n] == 0))
                        return true;
        return false;
}

/* The limits of the cgroup pid lives in, the way anybody can see them: /proc/PID/cgroup. */
static void read_limits(pid_t pid, Job *j) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        char path[256];
        size_t n = 0;
        CgroupMode mode;

        ASSERT(cgroup_detect(CGROUP_ROOT_DEFAULT, &mode) >= 0);
        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int) pid);
        f = fopen(path, "re");
        ASSERT(f);
        while (getline(&line, &n, f) > 0) {
                char *ctrl, *p;
                line[strcspn(line, "\n")] = 0;
                ctrl = strchr(line, ':');
                ASSERT(ctrl);
                p = strchr(ctrl + 1, ':');
                ASSERT(p);
                *p++ = 0;
                ctrl++;
                if (mode == CGROUP_V2 && streq(ctrl, "")) {
                        char f2[512];
                        _cleanup_free_ char *s = NULL;
                        snprintf(f2, sizeof(f2), "/sys/fs/cgroup%s/cpu.max", p);
                        ASSERT(read_one_line_file(f2, &s) >= 0);
                        long long q, per;
                        ASSERT(sscanf(s, "%lld %lld", &q, &per) == 2);
                        j->seen_quota = q;
                        j->seen_period = per;
                        snprintf(f2, sizeof(f2), "/sys/fs/cgroup%s/memory.max", p);
                        j->seen_memory = read_int(f2);
                } else if (mode == CGROUP_V1 && controller_listed(ctrl, "memory")) {
                        char f1[512];
                        snprintf(f1, sizeof(f1), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", p);
                        j->seen_memory = read_int(f1);
                } else if (mode == CGROUP_V1 && controller_listed(ctrl, "cpu")) {
                        char f1[512];
                        snprintf(f1, sizeof(f1), "/sys/fs/cgroup/cpu%s/cpu.cfs_quota_us", p);
                        j->seen_quota = read_int(f1);
                        snprintf(f1, sizeof(f1), "/sys/fs/cgroup/cpu%s/cpu.cfs_period_us", p);
                        j->seen_period = read_int(f1);
                }
        }
}

static void on_started(DriverJob *job, const char *handle, uint64_t started_realtime_usec, void *userdata) {
        Job *j = userdata;
        int pid;

        ASSERT(!j->started && !j->exited);
        j->started = true;
        j->handle = strdup(handle);
        ASSERT(started_realtime_usec > 0 && started_realtime_usec <= realtime_usec());
        if (docker) {
                ASSERT(strlen(handle) == 64);
                return;
        }
        ASSERT(sscanf(handle, "pid-%d", &pid) == 1);
        if (j->check_limits)
                read_limits(pid, j);
}

static void on_exited(DriverJob *job, const DriverExit *e, void *userdata) {
        Job *j = userdata;

        ASSERT(!j->exited);
        j->exited = true;
        j->error = e->error;
        j->reason = e->reason ? strdup(e->reason) : NULL;
        j->exit_code = e->exit_code;
        j->oom = e->oom_killed;
        j->ended_usec = e->ended_usec;
        j->exited_seen_usec = now_usec();
        j->out = output_capture_tail(e->output, OUTPUT_STDOUT);
        j->err = output_capture_tail(e->output, OUTPUT_STDERR);
        j->output = output_capture_output(e->output);
        j->truncated = e->output->truncated;
}

static const DriverJobCallbacks callbacks = { .started = on_started, .exited = on_exited };

static void job_clear(Job *j) {
        if (j->job)
                driver_job_free(j->job);
        free(j->handle);
        free(j->reason);
        free(j->out);
        free(j->err);
        free(j->output);
        *j = (Job) {};
}

static void run_until(bool *flag, unsigned seconds) {
        uint64_t deadline = now_usec() + seconds * USEC_PER_SEC;
        while (!*flag) {
                ASSERT(now_usec() < deadline);
                ASSERT(sd_event_run(event, 100 * USEC_PER_MSEC) >= 0);
        }
}

/* Runs the loop for a while (a sleep outside it would leave its idea of "now" behind). */
static void run_for(unsigned msec) {
        uint64_t end = now_usec() + msec * USEC_PER_MSEC;
        while (now_usec() < end)
                ASSERT(sd_event_run(event, end - now_usec()) >= 0);
}

/* What an agent that dies does to its jobs: forgets them without stopping them. */
static void forget(Job *j) {
        driver_job_free(j->job);
        j->job = NULL;
}

static unsigned lease_counter;

static void start_full(Job *j, char *const *cmd, json_object *env, int64_t nano_cpus, int64_t memory,
                       const char *image, const char *runtime) {
        char task_id[64];

        snprintf(task_id, sizeof(task_id), "task-%u", ++lease_counter);
        ASSERT(driver_job_start(driver, &(DriverJobSpec) {
                        .task_id = task_id,
                        .lease_token = 100 + lease_counter,
                        .attempt = 1,
                        .timeout_sec = 60,
                        .image = image,
                        .cmd = cmd,
                        .env = env,
                        .nano_cpus = nano_cpus,
                        .memory_bytes = memory,
                        .runtime = runtime,
                }, &callbacks, j, &j->job) >= 0);
}

static void start(Job *j, char *const *cmd, json_object *env, int64_t nano_cpus, int64_t memory) {
        start_full(j, cmd, env, nano_cpus, memory, IMAGE, NULL);
}

typedef struct Inspect {
        bool done;
        int error;
        json_object *json;
} Inspect;

static void on_inspect(const DockerResult *res, void *userdata) {
        Inspect *i = userdata;
        i->done = true;
        i->error = res->error;
        i->json = res->json ? json_object_get(res->json) : NULL;
}

static void run_until(bool *flag, unsigned seconds);

/* The engine's view of a container (or -ENOENT). */
static int inspect(const char *id, json_object **ret) {
        Inspect i = {};
        ASSERT(docker_container_inspect(docker_client, id, on_inspect, &i, NULL) >= 0);
        run_until(&i.done, 30);
        if (ret)
                *ret = i.json;
        else
                json_object_put(i.json);
        return i.error;
}

static void removed_cb(int error, void *userdata) {
        *(bool *) userdata = true;
}

static void remove_job(Job *j) {
        bool done = false;
        ASSERT(driver_job_remove(j->job, removed_cb, &done) >= 0);
        run_until(&done, 10);
}

static void test_success(void) {
        _cleanup_json_ json_object *env = json_object_new_object();
        Job j = {};
        char wd[256];
        struct stat st;
        uint64_t before = now_usec();

        json_object_object_add(env, "FOO", json_object_new_string("bar baz"));
        start(&j, (char *[]) { "sh", "-c", "echo hello $FOO; echo oops >&2; pwd", NULL }, env, 0, 0);
        run_until(&j.exited, 60);
        ASSERT(j.started && j.error == 0 && j.exit_code == 0 && !j.oom);
        /* The exec supervisor says when the command ended (the agent may see it later); Docker's end is
         * the time it is seen. */
        if (docker)
                ASSERT(j.ended_usec == 0);
        else
                ASSERT(j.ended_usec > before && j.ended_usec <= j.exited_seen_usec);
        ASSERT(strncmp(j.out, "hello bar baz\n", 14) == 0);
        ASSERT(streq(j.err, "oops\n"));
        ASSERT(!j.truncated);
        if (docker) {
                json_object *config, *labels;
                const char *v;
                _cleanup_json_ json_object *o = NULL;

                ASSERT(inspect(j.handle, &o) == 0);
                ASSERT(streq(docker_inspect_state(o), "exited"));
                ASSERT(json_object_object_get_ex(o, "Config", &config) && json_object_object_get_ex(config, "Labels", &labels));
                ASSERT(json_get_string(labels, "mc.task_id", &v) >= 0 && strncmp(v, "task-", 5) == 0);
                ASSERT(json_get_string(labels, "mc.node", &v) >= 0 && streq(v, node_id));
                ASSERT(json_get_string(labels, "mc.timeout_sec", &v) >= 0 && streq(v, "60"));
                remove_job(&j);
                ASSERT(inspect(j.handle, NULL) == -ENOENT);
        } else {
                snprintf(wd, sizeof(wd), "%s/task-%u-%u", work_dir, lease_counter, 100 + lease_counter);
                ASSERT(strstr(j.out, wd));
                ASSERT(stat(wd, &st) == 0);
                remove_job(&j);
                ASSERT(stat(wd, &st) < 0 && errno == ENOENT);
                job_clear(&j);

                /* What the exec driver sets besides the task's env: its home is its work directory,
                 * it knows its task and attempt, and PATH has a default. */
                start(&j, (char *[]) { "sh", "-c", "echo \"$HOME|$MC_TASK_ID|$MC_ATTEMPT|$PATH\"", NULL }, NULL, 0, 0);
                run_until(&j.exited, 60);
                ASSERT(j.started && j.exit_code == 0);
                char want[512];
                snprintf(want, sizeof(want), "%s/task-%u-%u|task-%u|1|/usr/local/sbin:", work_dir, lease_counter,
                         100 + lease_counter, lease_counter);
                ASSERT(strncmp(j.out, want, strlen(want)) == 0);
                remove_job(&j);
        }
        job_clear(&j);
}

static void test_failure(void) {
        Job j = {};

        start(&j, (char *[]) { "sh", "-c", "echo failing; exit 7", NULL }, NULL, 0, 0);
        run_until(&j.exited, 60);
        ASSERT(j.started && j.error == 0 && j.exit_code == 7);
        ASSERT(streq(j.out, "failing\n"));
        remove_job(&j);
        job_clear(&j);

        if (!docker) {
                start(&j, (char *[]) { "no-such-command-mc", NULL }, NULL, 0, 0);
                run_until(&j.exited, 30);
                ASSERT(!j.started && j.error < 0 && j.reason && strstr(j.reason, "command not found"));
                remove_job(&j);
                job_clear(&j);

                /* Exists, is not executable. */
                start(&j, (char *[]) { "/etc/hostname", NULL }, NULL, 0, 0);
                run_until(&j.exited, 30);
                ASSERT(j.error < 0 && j.reason);
                remove_job(&j);
                job_clear(&j);
                return;
        }

        /* No such image, and no registry to pull it from. */
        start_full(&j, (char *[]) { "true", NULL }, NULL, 0, 0, "mc-test/no-such-image:1", NULL);
        run_until(&j.exited, 60);
        ASSERT(!j.started && j.error < 0 && j.reason);
        ASSERT(strstr(j.reason, "mc-test/no-such-image:1") && strstr(j.reason, "pulling it failed"));
        fprintf(stderr, "  reason: %s\n", j.reason);
        remove_job(&j);
        job_clear(&j);

        /* An unknown runtime. */
        start_full(&j, (char *[]) { "true", NULL }, NULL, 0, 0, IMAGE, "kata-runtime");
        run_until(&j.exited, 60);
        ASSERT(!j.started && j.error < 0 && j.reason);
        ASSERT(strstr(j.reason, "kata-runtime") && strstr(j.reason, "not available"));
        fprintf(stderr, "  reason: %s\n", j.reason);
        remove_job(&j);
        job_clear(&j);

        /* A command the image does not have: the engine refuses to start it. */
        start(&j, (char *[]) { "no-such-command-mc", NULL }, NULL, 0, 0);
        run_until(&j.exited, 60);
        ASSERT(!j.started && j.error < 0 && j.reason && strstr(j.reason, "no-such-command-mc"));
        fprintf(stderr, "  reason: %s\n", j.reason);
        remove_job(&j);
        job_clear(&j);
}

/* The task's main process: the exec driver's child itself, or the container's PID 1 as the engine
 * reports it. */
static pid_t job_pid(const Job *j) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *state, *pid;
        int p;

        if (!docker) {
                ASSERT(sscanf(j->handle, "pid-%d", &p) == 1);
                return p;
        }
        ASSERT(inspect(j->handle, &o) == 0);
        ASSERT(json_object_object_get_ex(o, "State", &state));
        ASSERT(json_object_object_get_ex(state, "Pid", &pid));
        p = json_object_get_int(pid);
        ASSERT(p > 0);
        return p;
}

/* Waits until the task's shell has set its trap for SIGTERM, as the kernel shows it (SigCgt for a
 * handler, SigIgn for trap ''): a fixed sleep loses the race on a loaded machine, and a SIGTERM
 * that comes first kills the shell without its trap ever running. */
static void wait_term_trapped(const Job *j) {
        uint64_t deadline = now_usec() + 30 * USEC_PER_SEC;
        pid_t pid = job_pid(j);
        char path[64];

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        for (;;) {
                _cleanup_fclose_ FILE *f = fopen(path, "re");
                _cleanup_free_ char *line = NULL;
                size_t n = 0;
                bool trapped = false;

                ASSERT(f);
                while (getline(&line, &n, f) > 0) {
                        unsigned long long mask;
                        if ((sscanf(line, "SigCgt: %llx", &mask) == 1 || sscanf(line, "SigIgn: %llx", &mask) == 1) &&
                            (mask & (1ULL << (SIGTERM - 1))))
                                trapped = true;
                }
                if (trapped)
                        return;
                ASSERT(now_usec() < deadline);
                run_for(20);
        }
}

static void test_stop(void) {
        Job j = {};
        uint64_t t;

        /* SIGTERM first: a task that handles it ends on its own terms. (A shell with a trap: a
         * container's PID 1 ignores signals it has no handler for.) */
        start(&j, (char *[]) { "sh", "-c", "trap 'echo got-term; exit 143' TERM; sleep 100 & wait", NULL }, NULL, 0, 0);
        run_until(&j.started, 60);
        wait_term_trapped(&j);
        ASSERT(driver_job_stop(j.job, 20) >= 0);
        run_until(&j.exited, 15);
        ASSERT(j.exit_code == 128 + SIGTERM);
        ASSERT(streq(j.out, "got-term\n"));
        remove_job(&j);
        job_clear(&j);

        /* A task that ignores SIGTERM is killed after the grace. */
        start(&j, (char *[]) { "sh", "-c", "trap '' TERM; sleep 100; echo not-reached", NULL }, NULL, 0, 0);
        run_until(&j.started, 60);
        wait_term_trapped(&j);
        t = now_usec();
        ASSERT(driver_job_stop(j.job, 1) >= 0);
        run_until(&j.exited, 15);
        ASSERT(now_usec() - t >= 900 * USEC_PER_MSEC);
        ASSERT(j.exit_code == 128 + SIGKILL);
        ASSERT(j.reason && strstr(j.reason, "signal"));
        remove_job(&j);
        job_clear(&j);

        /* No grace: SIGKILL at once, even over a graceful stop under way. */
        /* (The first stop's grace is far longer than any stall of a loaded machine: ending well
         * before it tells the SIGKILL from the grace, whatever the machine's speed.) */
        start(&j, (char *[]) { "sh", "-c", "trap '' TERM; sleep 1000", NULL }, NULL, 0, 0);
        run_until(&j.started, 60);
        wait_term_trapped(&j);
        ASSERT(driver_job_stop(j.job, 600) >= 0);
        t = now_usec();
        ASSERT(driver_job_stop(j.job, 0) >= 0);
        run_until(&j.exited, 120);
        ASSERT(now_usec() - t < 300 * USEC_PER_SEC);
        ASSERT(j.exit_code == 128 + SIGKILL);
        remove_job(&j);
        job_clear(&j);

        /* Stopped before it even started: it never runs (exec: its cgroup is made on the driver's
         * thread, and the stop comes before the loop hears of it). */
        start(&j, (char *[]) { "sleep", "100", NULL }, NULL, 0, 0);
        ASSERT(driver_job_stop(j.job, 0) >= 0);
        run_until(&j.exited, 30);
        ASSERT(!j.started && j.error < 0);
        remove_job(&j);
        job_clear(&j);
}

/* Creates the file a task's command waits for. */
static void gate_open(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

        ASSERT(fd >= 0);
        close(fd);
}

static void test_limits(void) {
        Job j = { .check_limits = true };
        _cleanup_free_ char *gate = NULL, *cmd = NULL;

        if (docker) {
                _cleanup_json_ json_object *o = NULL;
                json_object *host;
                const char *rt;
                int64_t v;

                start_full(&j, (char *[]) { "sleep", "0.5", NULL }, NULL, 250000000, 64 * 1024 * 1024, IMAGE, "mc-runc2");
                run_until(&j.started, 60);
                ASSERT(inspect(j.handle, &o) == 0);
                ASSERT(docker_inspect_host_config_int(o, "NanoCpus", &v) >= 0 && v == 250000000);
                ASSERT(docker_inspect_host_config_int(o, "Memory", &v) >= 0 && v == 64 * 1024 * 1024);
                ASSERT(json_object_object_get_ex(o, "HostConfig", &host));
                ASSERT(json_get_string(host, "Runtime", &rt) >= 0 && streq(rt, "mc-runc2"));
                run_until(&j.exited, 60);
                ASSERT(j.exit_code == 0);
                remove_job(&j);
                job_clear(&j);
                return;
        }

        /* The limits are read (on_started) from /proc/PID/cgroup: the command must still run then,
         * however late the loop hears of its start, so it waits for a file we create afterwards. */
        ASSERT(asprintf(&gate, "%s/limits-gate", work_dir) >= 0);
        ASSERT(asprintf(&cmd, "while [ ! -e %s ]; do sleep 0.02; done", gate) >= 0);
        start(&j, (char *[]) { "sh", "-c", cmd, NULL }, NULL, 250000000, 64 * 1024 * 1024);
        run_until(&j.started, 30);
        gate_open(gate);
        run_until(&j.exited, 30);
        ASSERT(unlink(gate) == 0);
        ASSERT(j.exit_code == 0);
        ASSERT(j.seen_period == CGROUP_CPU_PERIOD_USEC);
        ASSERT(j.seen_quota == CGROUP_CPU_PERIOD_USEC / 4);
        ASSERT(j.seen_memory == 64 * 1024 * 1024);
        remove_job(&j);
        job_clear(&j);

        /* No limits asked: none set. */
        j = (Job) { .check_limits = true };
        start(&j, (char *[]) { "sh", "-c", cmd, NULL }, NULL, 0, 0);
        run_until(&j.started, 30);
        gate_open(gate);
        run_until(&j.exited, 30);
        ASSERT(unlink(gate) == 0);
        ASSERT(j.exit_code == 0);
        ASSERT(j.seen_quota == -1);
        ASSERT(j.seen_memory == -1 || j.seen_memory >= INT64_MAX / 2);
        remove_job(&j);
        job_clear(&j);
}

static void test_oom(void) {
        Job j = {};

        /* Far more memory than the 32 MiB limit: python's bytearray on the host, busybox tail's
         * buffer in the image. */
        if (docker)
                start(&j, (char *[]) { "sh", "-c", "yes | head -c 300000000 | tail -c 200000000 >/dev/null && echo survived", NULL },
                      NULL, 0, 32 * 1024 * 1024);
        else
                start(&j, (char *[]) { "/usr/bin/python3", "-c", "b = bytearray(200 << 20); print('survived')", NULL },
                      NULL, 0, 32 * 1024 * 1024);
        run_until(&j.exited, 120);
        ASSERT(j.oom);
        ASSERT(j.reason && strstr(j.reason, "out of memory"));
        ASSERT(!strstr(j.output, "survived"));
        remove_job(&j);
        job_clear(&j);
}

/* The supervisor records whether the OOM killer struck (the agent's loop does not open cgroup files),
 * and when the command ended; a result from a supervisor older than those records says nothing either
 * way, and the driver looks itself (the end: when it is seen). */
static void test_result_oom_record(void) {
        char dir[] = "/tmp/mc-test-result-XXXXXX";
        _cleanup_free_ char *old = NULL;
        ExecJobResult r = {};
        int fd;

        ASSERT(!docker);        /* the exec driver's files */
        ASSERT(mkdtemp(dir));
        for (int oom = 0; oom <= 1; oom++) {
                ASSERT(exec_job_result_write(dir, &(ExecJobResult) { .exit_code = 137, .oom_killed = oom,
                                                                     .ended_usec = 1234567 + oom,
                                                                     .tails = { (char *) "", (char *) "" } }) >= 0);
                ASSERT(exec_job_result_read(dir, &r) >= 0);
                ASSERT(r.oom_killed == oom && r.exit_code == 137 && r.ended_usec == 1234567U + oom);
                exec_job_result_done(&r);
        }

        ASSERT(asprintf(&old, "%s/result", dir) > 0);
        fd = open(old, O_WRONLY | O_TRUNC | O_CLOEXEC);
        ASSERT(fd >= 0);
        ASSERT(dprintf(fd, "exit_code=0\ntotal=2\ntruncated=0\nstdout_tail=2\nstderr_tail=0\n\nok") > 0);
        close(fd);
        ASSERT(exec_job_result_read(dir, &r) >= 0);
        ASSERT(r.oom_killed == -1 && r.ended_usec == 0 && r.exit_code == 0 && r.tail_sizes[0] == 2);
        exec_job_result_done(&r);

        ASSERT(unlink(old) == 0);
        ASSERT(rmdir(dir) == 0);
}

static void test_forked(void) {
        Job j = {};
        uint64_t t = now_usec();

        /* The main process ends at once; what it left running goes with it. */
        /* (Its child would sleep far longer than the wait: ending within it, it was killed.) */
        start(&j, (char *[]) { "sh", "-c", "sleep 1000 & echo parent-done", NULL }, NULL, 0, 0);
        run_until(&j.exited, 120);
        ASSERT(now_usec() - t < 300 * USEC_PER_SEC);
        ASSERT(j.exit_code == 0 && streq(j.out, "parent-done\n"));
        remove_job(&j);
        job_clear(&j);
}

static void test_big_output(void) {
        Job j = {};

        start(&j, (char *[]) { "sh", "-c", "yes x | head -c 300000; echo; echo the-end", NULL }, NULL, 0, 0);
        run_until(&j.exited, 60);
        ASSERT(j.exit_code == 0 && j.truncated);
        ASSERT(strlen(j.output) == 65536);
        ASSERT(strncmp(j.output, "x\nx\nx\n", 6) == 0);
        ASSERT(strstr(j.out, "the-end\n"));
        remove_job(&j);
        job_clear(&j);
}

static DriverLeftover *leftovers;
static size_t n_leftovers;
static bool listed;

static void on_list(int error, DriverLeftover *l, size_t n, void *userdata) {
        ASSERT(error == 0);
        leftovers = calloc(n + 1, sizeof(DriverLeftover));
        for (size_t i = 0; i < n; i++) {
                leftovers[i] = l[i];
                leftovers[i].task_id = strdup(l[i].task_id);
                leftovers[i].handle = strdup(l[i].handle);
                leftovers[i].state = strdup(l[i].state);
        }
        n_leftovers = n;
        listed = true;
}

static void list(void) {
        listed = false;
        ASSERT(driver->ops->list_leftovers(driver, on_list, NULL) >= 0);
        run_until(&listed, 30);
}

static DriverLeftover *find_leftover(const char *task_id) {
        for (size_t i = 0; i < n_leftovers; i++)
                if (streq(leftovers[i].task_id, task_id))
                        return leftovers + i;
        return NULL;
}

static char *job_dir_of(const char *handle) {
        char *p = NULL;
        ASSERT(asprintf(&p, "%s/%s" EXEC_JOB_DIR_SUFFIX, work_dir, handle) >= 0);
        return p;
}

static char *name_of(unsigned counter) {
        char *p = NULL;
        ASSERT(asprintf(&p, "task-%u-%u", counter, 100 + counter) >= 0);
        return p;
}

static bool file_exists(const char *dir, const char *name) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        return access(p, F_OK) == 0;
}

static void wait_file(const char *dir, const char *name) {
        uint64_t deadline = now_usec() + 30 * USEC_PER_SEC;
        while (!file_exists(dir, name)) {
                ASSERT(now_usec() < deadline);
                run_for(20);
        }
}

/* A pidfd for a process that is surely there when we ask: our child that nobody can have reaped yet
 * (the driver reaps the supervisors it forked, but only from its loop, when it sees them end), or a
 * command that waits for us. Whatever happens to the pid afterwards (reaped by its parent, by PID 1 or
 * a subreaper, or by nobody; taken by another process), the pidfd stays this process's. */
static int pidfd_of(pid_t pid) {
        int fd = pidfd_open(pid, 0);

        ASSERT(fd >= 0);
        return fd;
}

/* Until the process has ended: its pidfd polls readable once it has exited, zombie or reaped. The
 * loop runs meanwhile (what ends it may be the driver's doing). */
static void wait_ended(int pidfd) {
        uint64_t deadline = now_usec() + 30 * USEC_PER_SEC;

        for (;;) {
                struct pollfd p = { .fd = pidfd, .events = POLLIN };
                int n = poll(&p, 1, 0);

                ASSERT(n >= 0 || errno == EINTR);
                if (n > 0 && (p.revents & POLLIN))
                        return;
                ASSERT(now_usec() < deadline);
                run_for(20);
        }
}

static pid_t supervisor_of(const char *job_dir) {
        uint64_t deadline = now_usec() + 60 * USEC_PER_SEC;
        ExecJobRecord rec = {};
        pid_t pid;

        /* The driver starts a job's supervisor on its thread once the job's cgroup is made, and records
         * it on the loop: one turn of the loop at a time until it is recorded. It is surely there then,
         * since the driver reaps it only in another turn. */
        while (!file_exists(job_dir, "job")) {
                ASSERT(now_usec() < deadline);
                ASSERT(sd_event_run(event, 20 * USEC_PER_MSEC) >= 0);
        }

        ASSERT(exec_job_record_read(job_dir, &rec) >= 0);
        pid = rec.supervisor_pid;
        ASSERT(rec.attempt == 1 && rec.timeout_sec == 60);
        exec_job_record_done(&rec);
        return pid;
}

/* A supervisor we forked, once it has ended. Who reaps it depends on timing: the driver reaps the ones
 * it forked when it sees them end, so one that ended before its job was forgotten is reaped already
 * (ECHILD); one that ended later, or that another job (an adoption) watched, is still our zombie, and
 * we reap it. Closes the pidfd. */
static void reap(int pidfd) {
        siginfo_t si = {};

        wait_ended(pidfd);
        if (waitid(P_PIDFD, (id_t) pidfd, &si, WEXITED | WNOHANG) < 0)
                ASSERT(errno == ECHILD);
        else
                ASSERT(si.si_pid > 0);
        close(pidfd);
}

/* A restarted agent takes over: a job still running (its command waits for a file, so that it is
 * surely running when adopted), one that ended while nobody watched, one forgotten right after its
 * recording (created, running or even exited by the time it is listed), one forgotten before its
 * cgroup was made (never recorded, never run), one whose supervisor was killed, and one that was
 * never recorded; a discarded one is killed, supervisor and all. */
static void test_leftovers_exec(void) {
        Job running = {}, exited = {}, early = {}, lost = {}, doomed = {}, unmade = {};
        Job a = {}, b = {}, c = {}, d = {};
        _cleanup_free_ char *gate = NULL, *cmd = NULL;
        _cleanup_free_ char *running_name = NULL, *exited_name = NULL, *early_name = NULL, *lost_name = NULL,
                            *doomed_name = NULL, *exited_dir = NULL, *lost_dir = NULL, *doomed_dir = NULL,
                            *running_dir = NULL, *early_dir = NULL, *unmade_name = NULL, *unmade_dir = NULL,
                            *unmade_cgroup = NULL;
        /* pidfds: the supervisors', taken before the loop runs (until then none can have been reaped);
         * the commands', taken while they surely run. */
        int running_sup, exited_sup, early_sup, lost_sup, doomed_sup, lost_cmd, doomed_cmd;
        int lost_pid, doomed_pid;
        _cleanup_(cgroup_freep) Cgroup *stray = NULL;
        char stray_path[256];
        DriverLeftover *l;
        bool done = false;
        CgroupMode mode;

        ASSERT(asprintf(&gate, "%s/gate-%d", work_dir, (int) getpid()) >= 0);
        ASSERT(asprintf(&cmd, "echo adopted-run; echo to-err >&2; while [ ! -e %s ]; do sleep 0.02; done; echo end; exit 3",
                        gate) >= 0);
        start(&running, (char *[]) { "sh", "-c", cmd, NULL }, NULL, 0, 0);
        running_name = name_of(lease_counter);
        running_dir = job_dir_of(running_name);
        running_sup = pidfd_of(supervisor_of(running_dir));
        start(&exited, (char *[]) { "sh", "-c", "echo was-done; exit 4", NULL }, NULL, 0, 0);
        exited_name = name_of(lease_counter);
        exited_dir = job_dir_of(exited_name);
        exited_sup = pidfd_of(supervisor_of(exited_dir));
        start(&lost, (char *[]) { "sleep", "100", NULL }, NULL, 0, 0);
        lost_name = name_of(lease_counter);
        lost_dir = job_dir_of(lost_name);
        lost_sup = pidfd_of(supervisor_of(lost_dir));
        start(&doomed, (char *[]) { "sleep", "100", NULL }, NULL, 0, 0);
        doomed_name = name_of(lease_counter);
        doomed_dir = job_dir_of(doomed_name);
        doomed_sup = pidfd_of(supervisor_of(doomed_dir));
        run_until(&running.started, 60);
        run_until(&exited.started, 60);
        run_until(&lost.started, 60);
        run_until(&doomed.started, 60);
        ASSERT(sscanf(lost.handle, "pid-%d", &lost_pid) == 1);
        ASSERT(sscanf(doomed.handle, "pid-%d", &doomed_pid) == 1);
        /* Sleeping until they are killed. */
        lost_cmd = pidfd_of(lost_pid);
        doomed_cmd = pidfd_of(doomed_pid);
        /* The agent "dies": it forgets its jobs without stopping them. */
        forget(&running);
        forget(&exited);
        forget(&lost);
        forget(&doomed);
        start(&early, (char *[]) { "sh", "-c", "echo late-start", NULL }, NULL, 0, 0);
        early_name = name_of(lease_counter);
        early_dir = job_dir_of(early_name);
        early_sup = pidfd_of(supervisor_of(early_dir));
        forget(&early);
        /* Forgotten before its cgroup was even made (the agent stopping right after the start): its
         * supervisor is never forked, and what the driver's thread makes is an unrecorded leftover. */
        start(&unmade, (char *[]) { "sh", "-c", "echo must-not-run", NULL }, NULL, 0, 0);
        unmade_name = name_of(lease_counter);
        unmade_dir = job_dir_of(unmade_name);
        forget(&unmade);
        ASSERT(cgroup_detect(CGROUP_ROOT_DEFAULT, &mode) >= 0);
        ASSERT(asprintf(&unmade_cgroup, "%s/%s", cgroup_path, unmade_name) >= 0);
        {
                uint64_t deadline = now_usec() + 60 * USEC_PER_SEC;
                _cleanup_(cgroup_freep) Cgroup *cg = NULL;

                while (cgroup_open(CGROUP_ROOT_DEFAULT, mode, unmade_cgroup, &cg) < 0) {
                        ASSERT(now_usec() < deadline);
                        run_for(20);
                }
        }
        ASSERT(!file_exists(unmade_dir, "job"));

        /* While nobody watches: one ends, one loses its supervisor (its command dies with it). */
        wait_file(exited_dir, "result");
        ASSERT(pidfd_send_signal(lost_sup, SIGKILL, NULL, 0) == 0);
        reap(lost_sup);
        wait_ended(lost_cmd);
        close(lost_cmd);
        /* And one cgroup that no job recorded (an agent that died between creating it and recording). */
        snprintf(stray_path, sizeof(stray_path), "%s/task-stray-7", cgroup_path);
        ASSERT(cgroup_create(CGROUP_ROOT_DEFAULT, mode, stray_path, 0, 0, &stray) >= 0);

        /* Directories of a job whose cgroup is gone go at the listing. */
        {
                char stray_dir[512];
                snprintf(stray_dir, sizeof(stray_dir), "%s/task-gone-9", work_dir);
                ASSERT(mkdir(stray_dir, 0700) == 0);
                snprintf(stray_dir, sizeof(stray_dir), "%s/task-gone-9" EXEC_JOB_DIR_SUFFIX, work_dir);
                ASSERT(mkdir(stray_dir, 0700) == 0);
                list();
                ASSERT(access(stray_dir, F_OK) < 0);
                stray_dir[strlen(stray_dir) - strlen(EXEC_JOB_DIR_SUFFIX)] = 0;
                ASSERT(access(stray_dir, F_OK) < 0);
                driver_leftovers_free(leftovers, n_leftovers);
        }
        /* And one recorded, whose supervisor ended before its go (a pid that is not it any more): its
         * command never ran. */
        {
                char nostart_path[256], nostart_dir[512];
                _cleanup_(cgroup_freep) Cgroup *cg = NULL;

                snprintf(nostart_path, sizeof(nostart_path), "%s/task-nostart-11", cgroup_path);
                ASSERT(cgroup_create(CGROUP_ROOT_DEFAULT, mode, nostart_path, 0, 0, &cg) >= 0);
                snprintf(nostart_dir, sizeof(nostart_dir), "%s/task-nostart-11" EXEC_JOB_DIR_SUFFIX, work_dir);
                ASSERT(mkdir(nostart_dir, 0700) == 0);
                ASSERT(exec_job_record_write(nostart_dir, &(ExecJobRecord) {
                                .task_id = (char *) "task-nostart", .lease_token = 11, .attempt = 1,
                                .timeout_sec = 60, .supervisor_pid = getpid(), .supervisor_start = 1 }) >= 0);
        }

        list();
        ASSERT(n_leftovers == 8);
        l = find_leftover(strndupa(unmade_name, strrchr(unmade_name, '-') - unmade_name));
        ASSERT(l && !l->adoptable && streq(l->state, "unrecorded"));
        ASSERT(driver->ops->leftover_discard(driver, l, removed_cb, &done) >= 0);
        run_until(&done, 30);
        done = false;
        ASSERT(access(unmade_dir, F_OK) < 0);
        {
                _cleanup_(cgroup_freep) Cgroup *cg = NULL;
                ASSERT(cgroup_open(CGROUP_ROOT_DEFAULT, mode, unmade_cgroup, &cg) == -ENOENT);
        }
        l = find_leftover("task-stray");
        ASSERT(l && !l->adoptable && l->lease_token == 7);
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &d, &d.job) == -EOPNOTSUPP);
        ASSERT(driver->ops->leftover_discard(driver, l, removed_cb, &done) >= 0);
        run_until(&done, 10);
        done = false;
        l = find_leftover("task-nostart");
        ASSERT(l && !l->adoptable && l->lease_token == 11 && streq(l->state, "never-started"));
        ASSERT(driver->ops->leftover_discard(driver, l, removed_cb, &done) >= 0);
        run_until(&done, 10);
        done = false;

        l = find_leftover(strndupa(running_name, strrchr(running_name, '-') - running_name));
        ASSERT(l && l->adoptable && streq(l->state, "running") && l->attempt == 1 && l->timeout_sec == 60);
        ASSERT(l->lease_token == 100 + (int64_t) atoi(running_name + 5) && l->started_realtime_usec > 0);
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &a, &a.job) >= 0);
        l = find_leftover(strndupa(exited_name, strrchr(exited_name, '-') - exited_name));
        ASSERT(l && l->adoptable && streq(l->state, "exited"));
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &b, &b.job) >= 0);
        l = find_leftover(strndupa(early_name, strrchr(early_name, '-') - early_name));
        ASSERT(l && l->adoptable);
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &c, &c.job) >= 0);
        l = find_leftover(strndupa(lost_name, strrchr(lost_name, '-') - lost_name));
        ASSERT(l && l->adoptable && streq(l->state, "lost"));
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &d, &d.job) >= 0);
        l = find_leftover(strndupa(doomed_name, strrchr(doomed_name, '-') - doomed_name));
        ASSERT(l && streq(l->state, "running"));
        ASSERT(driver->ops->leftover_discard(driver, l, removed_cb, &done) >= 0);
        driver_leftovers_free(leftovers, n_leftovers);

        /* The running one: started again (with its first start time), then its end, its whole output. */
        run_until(&a.started, 30);
        ASSERT(streq(a.handle, running.handle));
        ASSERT(!a.exited);
        gate_open(gate);
        run_until(&a.exited, 30);
        ASSERT(a.error == 0 && a.exit_code == 3);
        ASSERT(streq(a.out, "adopted-run\nend\n") && streq(a.err, "to-err\n"));
        ASSERT(strstr(a.output, "adopted-run\n") && strstr(a.output, "to-err\n") && strstr(a.output, "end\n"));
        /* The one that ended: its result as recorded, no start. */
        run_until(&b.exited, 30);
        ASSERT(!b.started && b.error == 0 && b.exit_code == 4 && streq(b.out, "was-done\n"));
        ASSERT(streq(b.output, "was-done\n") && !b.truncated);
        /* The one forgotten at once: it ran, once. */
        run_until(&c.exited, 30);
        ASSERT(c.error == 0 && c.exit_code == 0 && streq(c.out, "late-start\n"));
        /* The one whose supervisor was killed: a failure that says so. */
        run_until(&d.exited, 30);
        ASSERT(d.started && d.error < 0 && d.reason && strstr(d.reason, "supervisor"));
        /* The discarded one: supervisor, command, cgroup and directories gone. */
        run_until(&done, 30);
        reap(doomed_sup);
        wait_ended(doomed_cmd);
        close(doomed_cmd);
        ASSERT(access(doomed_dir, F_OK) < 0);

        remove_job(&a);
        remove_job(&b);
        remove_job(&c);
        remove_job(&d);
        ASSERT(access(running_dir, F_OK) < 0 && access(exited_dir, F_OK) < 0);
        reap(running_sup);
        reap(exited_sup);
        reap(early_sup);
        (void) unlink(gate);
        job_clear(&a);
        job_clear(&b);
        job_clear(&c);
        job_clear(&d);
        job_clear(&running);
        job_clear(&exited);
        job_clear(&early);
        job_clear(&lost);
        job_clear(&doomed);
        job_clear(&unmade);

        list();
        ASSERT(n_leftovers == 0);
        driver_leftovers_free(leftovers, n_leftovers);
}

typedef struct Created {
        bool done;
        int error;
} Created;

static void on_created(const DockerResult *res, void *userdata) {
        Created *c = userdata;
        c->done = true;
        c->error = res->error;
}

/* A container created, not started, with the labels driver-docker gives its jobs (task id, lease,
 * node, attempt, timeout), under the next task id. */
static void create_only(char *ret_task_id, size_t size, char *const *cmd) {
        _cleanup_json_ json_object *spec = NULL;
        char lease[32];
        Created c = {};

        snprintf(ret_task_id, size, "task-%u", ++lease_counter);
        snprintf(lease, sizeof(lease), "%u", 100 + lease_counter);
        ASSERT(docker_container_spec_to_json(&(DockerContainerSpec) {
                        .image = IMAGE,
                        .cmd = cmd,
                        .labels = (const char *[]) {
                                "mc.task_id", ret_task_id,
                                "mc.lease_token", lease,
                                "mc.node", node_id,
                                "mc.attempt", "1",
                                "mc.timeout_sec", "60",
                                NULL,
                        },
                }, &spec) >= 0);
        ASSERT(docker_container_create(docker_client, NULL, spec, on_created, &c, NULL) >= 0);
        run_until(&c.done, 60);
        ASSERT(c.error >= 0);
}

/* A restarted agent takes over a running container, an exited one and one that was only created. */
static void test_leftovers_docker(void) {
        Job running = {}, exited = {}, created = {}, doomed = {};
        Job a = {}, b = {}, c = {};
        char running_id[64], exited_id[64], created_id[64], doomed_id[64];
        DriverLeftover *l;
        bool done = false;
        _cleanup_json_ json_object *o = NULL;

        /* Runs until we stop it (a fixed sleep would let it end before the listing on a slow
         * machine, and it would not be "running"). */
        start(&running, (char *[]) { "sh", "-c", "trap 'echo end; exit 3' TERM; echo adopted-run; sleep 100 & wait", NULL },
              NULL, 0, 0);
        snprintf(running_id, sizeof(running_id), "task-%u", lease_counter);
        start(&exited, (char *[]) { "sh", "-c", "echo was-done; exit 4", NULL }, NULL, 0, 0);
        snprintf(exited_id, sizeof(exited_id), "task-%u", lease_counter);
        start(&doomed, (char *[]) { "sleep", "100", NULL }, NULL, 0, 0);
        snprintf(doomed_id, sizeof(doomed_id), "task-%u", lease_counter);
        run_until(&running.started, 60);
        run_until(&exited.exited, 60);
        run_until(&doomed.started, 60);
        /* "created": what an agent that died between create and start leaves. Made through the
         * engine with the driver's labels, since a job of ours forgotten right after its create may
         * still have the create's answer to come, on which the driver removes the orphan (as it
         * should): whether it did would depend on the machine's speed. */
        create_only(created_id, sizeof(created_id), (char *[]) { "sh", "-c", "echo late-start", NULL });
        forget(&running);
        forget(&exited);
        forget(&doomed);

        list();
        ASSERT(n_leftovers >= 4);
        l = find_leftover(running_id);
        ASSERT(l && l->adoptable && streq(l->state, "running") && l->timeout_sec == 60 && l->attempt == 1);
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &a, &a.job) >= 0);
        l = find_leftover(exited_id);
        ASSERT(l && streq(l->state, "exited"));
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &b, &b.job) >= 0);
        l = find_leftover(created_id);
        ASSERT(l && l->adoptable && streq(l->state, "created"));
        ASSERT(driver->ops->job_adopt(driver, l, &callbacks, &c, &c.job) >= 0);
        l = find_leftover(doomed_id);
        ASSERT(l && streq(l->state, "running"));
        snprintf(doomed_id, sizeof(doomed_id), "%s", l->handle);
        ASSERT(driver->ops->leftover_discard(driver, l, removed_cb, &done) >= 0);
        driver_leftovers_free(leftovers, n_leftovers);

        run_until(&a.started, 60);
        wait_term_trapped(&a);
        ASSERT(driver_job_stop(a.job, 30) >= 0);
        run_until(&a.exited, 60);
        ASSERT(a.started && a.exit_code == 3);
        ASSERT(streq(a.out, "adopted-run\nend\n"));
        run_until(&b.exited, 60);
        ASSERT(!b.started && b.exit_code == 4 && streq(b.out, "was-done\n"));
        run_until(&c.exited, 60);
        ASSERT(c.exit_code == 0 && streq(c.out, "late-start\n"));
        run_until(&done, 30);
        ASSERT(inspect(doomed_id, NULL) == -ENOENT);
        (void) o;

        remove_job(&a);
        remove_job(&b);
        remove_job(&c);
        job_clear(&a);
        job_clear(&b);
        job_clear(&c);
        job_clear(&running);
        job_clear(&exited);
        job_clear(&created);
        job_clear(&doomed);

        list();
        ASSERT(n_leftovers == 0);
        driver_leftovers_free(leftovers, n_leftovers);
}

static void test_leftovers(void) {
        if (docker)
                test_leftovers_docker();
        else
                test_leftovers_exec();
}

/* Several at once, all from the loop. */
static void test_concurrent(void) {
        Job j[6] = {};

        for (size_t i = 0; i < ELEMENTSOF(j); i++) {
                char cmd[64];
                snprintf(cmd, sizeof(cmd), "sleep 0.5; exit %zu", i);
                start(j + i, (char *[]) { "sh", "-c", cmd, NULL }, NULL, 100000000, 32 * 1024 * 1024);
        }
        for (size_t i = 0; i < ELEMENTSOF(j); i++) {
                run_until(&j[i].exited, 60);
                ASSERT(j[i].exit_code == (int64_t) i);
                remove_job(j + i);
                job_clear(j + i);
        }
}

int main(int argc, char *argv[]) {
        sigset_t ss;
        CgroupMode mode;
        char base[256];

        log_setup("test-driver");
        if (argc != 3 || (!streq(argv[1], "exec") && !streq(argv[1], "docker"))) {
                fprintf(stderr, "Usage: %s exec MC-EXEC-SUPERVISOR | docker ENSURE-DOCKER-SCRIPT\n", argv[0]);
                return 2;
        }
        docker = streq(argv[1], "docker");
        if (geteuid() != 0) {
                fprintf(stderr, "test-driver needs root\n");
                return 1;
        }
        if (docker && system(argv[2]) != 0) {
                fprintf(stderr, "%s failed: no Docker engine to test against\n", argv[2]);
                return 1;
        }
        ASSERT(cgroup_detect(CGROUP_ROOT_DEFAULT, &mode) >= 0);
        fprintf(stderr, "cgroup layout: %s\n", cgroup_mode_to_string(mode));

        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        ASSERT(sigprocmask(SIG_BLOCK, &ss, NULL) == 0);

        snprintf(cgroup_path, sizeof(cgroup_path), "mc.test/driver-exec-%d", (int) getpid());
        snprintf(work_dir, sizeof(work_dir), "/tmp/mc-test-driver-exec-%d", (int) getpid());
        snprintf(node_id, sizeof(node_id), "test-driver-%d-%" PRIu64, (int) getpid(), now_usec());
        ASSERT(sd_event_new(&event) >= 0);
        if (docker) {
                ASSERT(curl_event_new(event, &curl) >= 0);
                ASSERT(docker_client_new(event, curl, NULL, &docker_client) >= 0);
                ASSERT(docker_driver_new(event, curl, &(DockerDriverConfig) {
                                .node_id = node_id,
                                .output_cap = 65536,
                                .tail_max = 4096,
                        }, &driver) >= 0);
        } else
                ASSERT(exec_driver_new(event, &(ExecDriverConfig) {
                                .cgroup_path = cgroup_path,
                                .work_dir = work_dir,
                                .supervisor_path = argv[2],
                                .output_cap = 65536,
                                .tail_max = 4096,
                        }, &driver) >= 0);

        RUN_TEST(test_success);
        RUN_TEST(test_failure);
        RUN_TEST(test_stop);
        RUN_TEST(test_limits);
        RUN_TEST(test_oom);
        if (!docker)
                RUN_TEST(test_result_oom_record);
        RUN_TEST(test_forked);
        RUN_TEST(test_big_output);
        RUN_TEST(test_leftovers);
        RUN_TEST(test_concurrent);

        driver = driver_free(driver);
        docker_client = docker_client_free(docker_client);
        curl = curl_event_free(curl);
        sd_event_unref(event);

        if (docker)
                return 0;
        /* Nothing left behind. */
        rmdir(work_dir);
        ASSERT(access(work_dir, F_OK) < 0);
        if (mode == CGROUP_V1) {
                snprintf(base, sizeof(base), "/sys/fs/cgroup/memory/%s", cgroup_path);
                ASSERT(rmdir(base) == 0);
                snprintf(base, sizeof(base), "/sys/fs/cgroup/cpu/%s", cgroup_path);
                ASSERT(rmdir(base) == 0);
        } else {
                snprintf(base, sizeof(base), "/sys/fs/cgroup/%s", cgroup_path);
                ASSERT(rmdir(base) == 0);
        }
        return 0;
}
