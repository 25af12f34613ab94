/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The lease files of mc-fence-init (fence-init/fence-protocol.h): one directory per job under
 * <state>/fence, which the Docker driver bind-mounts read-only into the container and the exec driver
 * names on the init's command line. Each write promises the init the time until our own fence (the
 * lease deadline minus the margin), as a duration: when no write comes (every mc process on the node
 * killed, the agent stopped), the init kills the task then, on its own clock. */

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include "agent-internal.h"
#include "daemon-util.h"
#include "fence-protocol.h"
#include "file-util.h"

/* How much earlier than promised an init may act (its poll interval, and its poll's own delay), and
 * so how close to a promise a write may come too late for it. */
#define INIT_SLACK_USEC (500 * USEC_PER_MSEC)

int task_fence_init(Task *t) {
        Agent *a = t->agent;

        assert(!t->fence_dir);
        if (asprintf(&t->fence_dir, "%s/%s-%" PRIi64, a->fence_dir, t->id, t->lease_token) < 0) {
                t->fence_dir = NULL;
                return -ENOMEM;
        }
        return 0;
}

static FenceLeaseState task_fence_state(Task *t) {
        if (t->stop_reason == STOP_CANCEL)
                /* The control cancelled it: nobody runs it elsewhere, and its graceful stop is ours. */
                return FENCE_LEASE_OFF;
        /* Until its start is confirmed the init starts nothing: what it reads then was written after
         * it came up, never long before (the engine may take its time to start a container). */
        return t->state >= TASK_RUNNING ? FENCE_LEASE_RUNNING : FENCE_LEASE_CREATED;
}

/* create: make the directory (before the job is created); otherwise only a job's existing one is
 * written. */
static int task_fence_write(Task *t, bool create) {
        Agent *a = t->agent;
        _cleanup_free_ char *path = NULL;
        uint64_t now = now_usec(), margin = fence_margin(a), at;
        char buf[256];
        FenceLease l;
        int n, r;

        if (!t->fence_dir || (t->deadline_usec == 0 && task_fence_state(t) != FENCE_LEASE_OFF))
                return 0;       /* nothing known to promise */
        if (create && mkdir(t->fence_dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        at = t->deadline_usec > margin ? t->deadline_usec - margin : 0;
        a->fence_seq = MAX(a->fence_seq + 1, now);
        l = (FenceLease) {
                .seq = a->fence_seq,
                .state = task_fence_state(t),
                .remaining_ms = at > now ? (at - now) / USEC_PER_MSEC : 0,
        };
        n = fence_lease_format(&l, buf, sizeof(buf));
        if (n < 0)
                return n;
        if (asprintf(&path, "%s/" FENCE_LEASE_FILE_NAME, t->fence_dir) < 0)
                return -ENOMEM;
        r = write_file_atomic(path, buf, (size_t) n, 0644, 0);
        if (r == -ENOENT && !create)
                return 0;       /* a job of a previous run without one */
        if (r < 0)
                return r;
        /* Whether the promise this replaces had run out is judged once the keeper's lease file is
         * written too (fence_writes_done()). */
        if (t->fence_replaced_usec == 0)
                t->fence_replaced_usec = t->fence_promise_usec;
        t->fence_promise_usec = at;
        return 0;
}

int task_fence_prepare(Task *t) {
        return task_fence_write(t, true);
}

void fence_write_all(Agent *a) {
        for (Task *t = a->tasks; t; t = t->next) {
                int r;

                if (!t->job || t->state >= TASK_EXITED)
                        continue;
                r = task_fence_write(t, false);
                if (r < 0)
                        log_task(LOG_WARNING, t, MC_EVENT_NONE, "cannot write its lease file for the fence init: %s",
                                 strerror(-r));
        }
}

void task_fence_remove(Task *t) {
        _cleanup_free_ char *path = NULL;

        if (!t->fence_dir || asprintf(&path, "%s/" FENCE_LEASE_FILE_NAME, t->fence_dir) < 0)
                return;
        (void) unlink(path);
        (void) rmdir(t->fence_dir);
}

/* Whether a run that ended at ended_usec (CLOCK_MONOTONIC) ended before its lease's fence: neither our
 * kill nor the keeper's ended it. The init may act a little early; its kill is told by its exit code
 * (task_killed_by_fence()). */
bool task_ended_before_fence(Task *t, uint64_t ended_usec) {
        return t->deadline_usec == 0 || ended_usec + fence_margin(t->agent) < t->deadline_usec;
}

/* After the init's files and the keeper's lease file are written (save_leases()), with the clock read
 * again: an agent short of CPU may wait seconds between deciding a write and making it. A promise that
 * ran out before its replacement was in place (or so nearly that an init may have been first) may
 * have been acted on. */
void fence_writes_done(Agent *a) {
        uint64_t now = now_usec();

        for (Task *t = a->tasks; t; t = t->next) {
                if (t->fence_replaced_usec > 0 && now + INIT_SLACK_USEC >= t->fence_replaced_usec)
                        t->fence_gap = true;
                t->fence_replaced_usec = 0;
        }
}

/* Whether the run was killed by a fence that acts without the agent: the init's, or the keeper's. */
bool task_killed_by_fence(Task *t, const DriverExit *e) {
        /* Only when the time it was given had run out (or had before a later write): a command that
         * ends so on its own is not taken for a fence. Slack for the init's poll interval, by which it
         * acts early. */
        if (e->error < 0 || t->fence_promise_usec == 0 ||
            !(t->fence_gap || now_usec() + INIT_SLACK_USEC >= t->fence_promise_usec))
                return false;
        /* The init's own code; or SIGKILL, the fence keeper's (which kills the init too), when the
         * agent did not stop the task itself and the kernel's OOM killer did not strike. */
        return e->exit_code == FENCE_EXIT_FENCED ||
                (e->exit_code == 128 + SIGKILL && !e->oom_killed && t->stop_reason == STOP_NONE);
}

void fence_dirs_sweep(Agent *a) {
        struct dirent *de;
        DIR *d;

        d = opendir(a->fence_dir);
        if (!d)
                return;
        while ((de = readdir(d))) {
                _cleanup_free_ char *dir = NULL, *path = NULL;
                bool ours = false;

                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&dir, "%s/%s", a->fence_dir, de->d_name) < 0 ||
                    asprintf(&path, "%s/" FENCE_LEASE_FILE_NAME, dir) < 0)
                        break;
                for (Task *t = a->tasks; t && !ours; t = t->next)
                        ours = streq_ptr(t->fence_dir, dir);
                if (ours)
                        continue;
                (void) unlink(path);
                (void) rmdir(dir);
        }
        closedir(d);
}
