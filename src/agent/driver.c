/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "driver.h"

void driver_leftovers_free(DriverLeftover *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(l[i].task_id);
                free(l[i].handle);
                free(l[i].state);
        }
        free(l);
}

int driver_job_init(DriverJob *job, Driver *d, const char *task_id, int64_t lease_token, int64_t attempt,
                    int64_t timeout_sec, const DriverJobCallbacks *cb, void *userdata) {
        *job = (DriverJob) {
                .driver = d,
                .cb = *cb,
                .userdata = userdata,
                .lease_token = lease_token,
                .attempt = attempt,
                .timeout_sec = timeout_sec,
        };
        job->task_id = strdup(task_id);
        return job->task_id ? 0 : -ENOMEM;
}

void driver_job_done(DriverJob *job) {
        free(job->task_id);
        job->task_id = NULL;
        free(job->cgroup_marker);
        job->cgroup_marker = NULL;
        free(job->cgroup_dir);
        job->cgroup_dir = NULL;
}

void driver_job_set_pid(DriverJob *job, pid_t pid, const char *marker) {
        char *m = strdup(marker);

        if (!m)
                return;
        free(job->cgroup_marker);
        job->cgroup_marker = m;
        job->pid = pid;
        if (job->cb.pid_known)
                job->cb.pid_known(job, job->userdata);
}

typedef struct Later {
        void (*fn)(void *userdata);
        void (*destroy)(void *userdata);
        void *userdata;
} Later;

static void later_free(void *p) {
        Later *l = p;

        if (l->destroy)
                l->destroy(l->userdata);
        free(l);
}

static int on_later(sd_event_source *s, void *userdata) {
        Later l = *(Later *) userdata;

        /* Unfloating drops the loop's reference, the only one: the source goes (and with it, through the
         * destroy callback, the Later) once this dispatch is over. */
        (void) sd_event_source_set_floating(s, false);
        l.fn(l.userdata);
        return 0;
}

int driver_call_later(sd_event *e, void (*fn)(void *userdata), void (*destroy)(void *userdata), void *userdata) {
        sd_event_source *s = NULL;
        Later *l;
        int r;

        l = malloc(sizeof(Later));
        if (!l)
                return -ENOMEM;
        *l = (Later) { fn, destroy, userdata };
        r = sd_event_add_defer(e, &s, on_later, l);
        if (r < 0) {
                free(l);
                return r;
        }
        /* Owned by the loop: if it never fires (the agent stops first), freeing the loop frees it, l
         * and userdata. */
        (void) sd_event_source_set_destroy_callback(s, later_free);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        (void) sd_event_source_set_floating(s, true);
        sd_event_source_unref(s);
        return 0;
}
