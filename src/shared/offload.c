/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "offload.h"

/* A call is on exactly one of the three queues, in this order: queued (for the thread), finished
 * (for the loop, under the mutex), then freed by the loop. */
struct OffloadCall {
        OffloadCall *next;
        OffloadWorkFn work;
        OffloadDoneFn done;             /* NULL once cancelled; touched by the loop only */
        OffloadDestroyFn destroy;
        void *userdata;
        int result;
};

typedef struct CallQueue {
        OffloadCall *head, *tail;
} CallQueue;

struct Offload {
        sd_event_source *source;        /* the eventfd: something has finished */
        int efd;
        pthread_t thread;
        bool thread_started;
        char name[16];                  /* the thread's, for ps and gdb */

        pthread_mutex_t lock;
        pthread_cond_t wake;
        CallQueue queued, finished;     /* under lock */
        bool quit;                      /* under lock */

        size_t pending;                 /* loop only */
};

static void queue_push(CallQueue *q, OffloadCall *c) {
        c->next = NULL;
        if (q->tail)
                q->tail->next = c;
        else
                q->head = c;
        q->tail = c;
}

static OffloadCall *queue_pop(CallQueue *q) {
        OffloadCall *c = q->head;

        if (c) {
                q->head = c->next;
                if (!q->head)
                        q->tail = NULL;
                c->next = NULL;
        }
        return c;
}

static void call_free(OffloadCall *c) {
        if (c->destroy)
                c->destroy(c->userdata);
        free(c);
}

static void *offload_thread(void *p) {
        Offload *o = p;

        (void) prctl(PR_SET_NAME, o->name);
        pthread_mutex_lock(&o->lock);
        for (;;) {
                OffloadCall *c = queue_pop(&o->queued);

                if (!c) {
                        if (o->quit)
                                break;
                        pthread_cond_wait(&o->wake, &o->lock);
                        continue;
                }
                pthread_mutex_unlock(&o->lock);
                c->result = c->work(c->userdata);
                pthread_mutex_lock(&o->lock);
                queue_push(&o->finished, c);
                /* A full counter (2^64 - 2 finishes unread) cannot happen; EAGAIN would only mean
                 * the loop has a wake-up pending anyway. */
                (void) eventfd_write(o->efd, 1);
        }
        pthread_mutex_unlock(&o->lock);
        return NULL;
}

static int on_finished(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Offload *o = userdata;
        CallQueue done;
        eventfd_t v;
        OffloadCall *c;

        (void) eventfd_read(o->efd, &v);
        pthread_mutex_lock(&o->lock);
        done = o->finished;
        o->finished = (CallQueue) {};
        pthread_mutex_unlock(&o->lock);

        while ((c = queue_pop(&done))) {
                assert(o->pending > 0);
                o->pending--;
                if (c->done)
                        c->done(c->result, c->userdata);
                call_free(c);
        }
        return 0;
}

int offload_new(sd_event *e, const char *name, Offload **ret) {
        _cleanup_(offload_freep) Offload *o = NULL;
        sigset_t all, old;
        int r;

        assert(e);
        assert(ret);

        o = calloc(1, sizeof(Offload));
        if (!o)
                return -ENOMEM;
        o->efd = -1;
        pthread_mutex_init(&o->lock, NULL);
        pthread_cond_init(&o->wake, NULL);
        snprintf(o->name, sizeof(o->name), "%s", name ?: "offload");

        o->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (o->efd < 0)
                return -errno;
        r = sd_event_add_io(e, &o->source, o->efd, EPOLLIN, on_finished, o);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(o->source, "offload");

        /* The thread takes no signal: the loop has them (signalfd), and a blocking call interrupted by
         * one would only be restarted. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&o->thread, NULL, offload_thread, o);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0)
                return r;
        o->thread_started = true;

        *ret = TAKE_PTR(o);
        return 0;
}

Offload *offload_free(Offload *o) {
        OffloadCall *c;

        if (!o)
                return NULL;
        if (o->thread_started) {
                pthread_mutex_lock(&o->lock);
                o->quit = true;
                pthread_cond_signal(&o->wake);
                pthread_mutex_unlock(&o->lock);
                (void) pthread_join(o->thread, NULL);
        }
        /* The thread has run everything queued; nobody is left to tell. */
        while ((c = queue_pop(&o->finished)))
                call_free(c);
        while ((c = queue_pop(&o->queued)))
                call_free(c);
        sd_event_source_disable_unref(o->source);
        if (o->efd >= 0)
                close(o->efd);
        pthread_cond_destroy(&o->wake);
        pthread_mutex_destroy(&o->lock);
        free(o);
        return NULL;
}

int offload_submit(Offload *o, OffloadWorkFn work, OffloadDoneFn done, OffloadDestroyFn destroy, void *userdata,
                   OffloadCall **ret_call) {
        OffloadCall *c;

        assert(o);
        assert(work);

        c = calloc(1, sizeof(OffloadCall));
        if (!c)
                return -ENOMEM;
        *c = (OffloadCall) { .work = work, .done = done, .destroy = destroy, .userdata = userdata };
        pthread_mutex_lock(&o->lock);
        queue_push(&o->queued, c);
        pthread_cond_signal(&o->wake);
        pthread_mutex_unlock(&o->lock);
        o->pending++;
        if (ret_call)
                *ret_call = c;
        return 0;
}

void offload_call_cancel(OffloadCall *c) {
        if (c)
                c->done = NULL;
}

size_t offload_pending(Offload *o) {
        assert(o);
        return o->pending;
}
