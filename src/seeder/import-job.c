/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>

#include "import-job.h"

struct ImportJob {
        sd_event_source *source;        /* the eventfd the thread signals when it is done */
        int event_fd;
        pthread_t thread;
        bool started;
        atomic_bool cancel;
        int dir_fd;                     /* borrowed */
        char *dir_path;
        int src_fd;
        ImportJobDone done;
        void *userdata;
        /* written by the thread, read after the join */
        int error;
        const char *reason;
        ContentImport result;
};

static void *job_thread(void *p) {
        ImportJob *j = p;
        uint64_t one = 1;

        j->error = content_import(j->dir_fd, j->dir_path, j->src_fd, &j->result, &j->reason, &j->cancel);
        /* Nothing of the job is touched after this write: the loop may join and free it at once. */
        (void) write(j->event_fd, &one, sizeof(one));
        return NULL;
}

static void job_join(ImportJob *j) {
        if (j->started) {
                (void) pthread_join(j->thread, NULL);
                j->started = false;
        }
}

ImportJob *import_job_free(ImportJob *j) {
        if (!j)
                return NULL;
        atomic_store(&j->cancel, true);
        job_join(j);
        content_import_done(&j->result);
        j->source = sd_event_source_disable_unref(j->source);
        if (j->event_fd >= 0)
                close(j->event_fd);
        if (j->src_fd >= 0)
                close(j->src_fd);
        free(j->dir_path);
        free(j);
        return NULL;
}

static int on_job_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ImportJob *j = userdata;
        ContentImport result;

        job_join(j);
        j->source = sd_event_source_disable_unref(j->source);
        result = j->result;
        j->result = (ContentImport) {};
        j->done(j, j->error, j->reason, j->error < 0 ? NULL : &result, j->userdata);
        if (j->error >= 0)
                content_import_done(&result);   /* what the callee did not take */
        import_job_free(j);
        return 0;
}

int import_job_start(sd_event *e, int dir_fd, const char *dir_path, int src_fd, ImportJobDone done,
                     void *userdata, ImportJob **ret) {
        _cleanup_(import_job_freep) ImportJob *j = NULL;
        sigset_t all, old;
        int r;

        assert(e);
        assert(dir_fd >= 0);
        assert(src_fd >= 0);
        assert(done);
        assert(ret);

        j = calloc(1, sizeof(ImportJob));
        if (!j) {
                close(src_fd);
                return -ENOMEM;
        }
        j->src_fd = src_fd;
        j->dir_fd = dir_fd;
        j->done = done;
        j->userdata = userdata;
        j->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (j->event_fd < 0)
                return -errno;
        j->dir_path = strdup(dir_path);
        if (!j->dir_path)
                return -ENOMEM;
        r = sd_event_add_io(e, &j->source, j->event_fd, EPOLLIN, on_job_done, j);
        if (r < 0)
                return r;

        /* The thread takes no signal: SIGTERM and the rest are the event loop's (signalfd). */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&j->thread, NULL, job_thread, j);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0)
                return r;
        j->started = true;
        *ret = TAKE_PTR(j);
        return 0;
}
