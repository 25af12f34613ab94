/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>

#include "log.h"
#include "piece-verifier.h"

typedef enum JobKind {
        JOB_PIECE,
        JOB_SYNC,
} JobKind;

typedef struct Job Job;
struct Job {
        Job *next;
        JobKind kind;
        uint32_t index;
        const void *data;
        size_t size;
        uint8_t *snapshot;              /* JOB_SYNC: the present pieces when it started */
        int result;
};

typedef struct JobQueue {
        Job *head, *tail;
} JobQueue;

struct PieceVerifier {
        ContentStore *store;
        int fd;                         /* the store's data file */
        int efd;
        sd_event_source *source;
        PieceVerifierCallbacks cb;
        void *userdata;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        JobQueue queued, done;          /* under lock */
        bool stopping;                  /* under lock */
        pthread_t *threads;
        unsigned n_threads;             /* started */

        unsigned pending;               /* loop thread only */
        bool syncing;
};

static void queue_push(JobQueue *q, Job *j) {
        j->next = NULL;
        if (q->tail)
                q->tail->next = j;
        else
                q->head = j;
        q->tail = j;
}

static Job *queue_pop(JobQueue *q) {
        Job *j = q->head;
        if (j) {
                q->head = j->next;
                if (!q->head)
                        q->tail = NULL;
        }
        return j;
}

static void job_free(Job *j) {
        free(j->snapshot);
        free(j);
}

static void *worker(void *userdata) {
        PieceVerifier *v = userdata;
        uint64_t one = 1;

        pthread_mutex_lock(&v->lock);
        for (;;) {
                Job *j;

                while (!v->queued.head && !v->stopping)
                        pthread_cond_wait(&v->cond, &v->lock);
                if (v->stopping)
                        break;
                j = queue_pop(&v->queued);
                pthread_mutex_unlock(&v->lock);

                if (j->kind == JOB_PIECE)
                        j->result = content_store_write_piece(v->store, j->index, j->data, j->size);
                else
                        j->result = fdatasync(v->fd) < 0 ? -errno : 0;

                pthread_mutex_lock(&v->lock);
                queue_push(&v->done, j);
                /* The loop reads the count; a full counter (never, at 2^64 - 2) would only delay. */
                (void) !write(v->efd, &one, sizeof(one));
        }
        pthread_mutex_unlock(&v->lock);
        return NULL;
}

static int on_results(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        PieceVerifier *v = userdata;
        uint64_t count;
        JobQueue done;

        (void) !read(v->efd, &count, sizeof(count));
        pthread_mutex_lock(&v->lock);
        done = v->done;
        v->done = (JobQueue) {};
        pthread_mutex_unlock(&v->lock);

        for (Job *j; (j = queue_pop(&done)); job_free(j)) {
                int r = j->result;

                if (j->kind == JOB_PIECE) {
                        assert(v->pending > 0);
                        v->pending--;
                        if (r == 0) {
                                r = content_store_piece_written(v->store, j->index);
                                if (r == -EALREADY)
                                        r = 0;
                        }
                        if (v->cb.piece)
                                v->cb.piece(v, j->index, r, v->userdata);
                } else {
                        v->syncing = false;
                        if (r == 0)
                                r = content_store_durable_commit(v->store, j->snapshot);
                        if (v->cb.synced)
                                v->cb.synced(v, r, v->userdata);
                }
        }
        return 0;
}

int piece_verifier_new(sd_event *e, ContentStore *store, unsigned n_threads, const PieceVerifierCallbacks *cb,
                       void *userdata, PieceVerifier **ret) {
        _cleanup_(piece_verifier_freep) PieceVerifier *v = NULL;
        sigset_t all, saved;
        int r;

        assert(e);
        assert(store);
        assert(cb);
        assert(ret);
        if (n_threads == 0)
                n_threads = PIECE_VERIFIER_THREADS_DEFAULT;
        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->efd = -1;
        pthread_mutex_init(&v->lock, NULL);
        pthread_cond_init(&v->cond, NULL);
        v->store = content_store_ref(store);
        v->fd = content_store_fd(store);
        v->cb = *cb;
        v->userdata = userdata;
        v->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (v->efd < 0)
                return -errno;
        r = sd_event_add_io(e, &v->source, v->efd, EPOLLIN, on_results, v);
        if (r < 0)
                return r;
        v->threads = calloc(n_threads, sizeof(pthread_t));
        if (!v->threads)
                return -ENOMEM;
        /* The workers take no signal: a daemon's signals (SIGTERM, SIGUSR1 ... through sd-event's
         * signalfd, blocked on its own thread maybe only later) must not land on a worker, whose
         * default action would end the process. A thread inherits its creator's mask. */
        sigfillset(&all);
        r = -pthread_sigmask(SIG_SETMASK, &all, &saved);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < n_threads; i++) {
                r = -pthread_create(&v->threads[i], NULL, worker, v);
                if (r < 0)
                        break;
                v->n_threads++;
        }
        (void) pthread_sigmask(SIG_SETMASK, &saved, NULL);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        return 0;
}

PieceVerifier *piece_verifier_free(PieceVerifier *v) {
        if (!v)
                return NULL;
        pthread_mutex_lock(&v->lock);
        v->stopping = true;
        pthread_cond_broadcast(&v->cond);
        pthread_mutex_unlock(&v->lock);
        for (unsigned i = 0; i < v->n_threads; i++)
                pthread_join(v->threads[i], NULL);
        for (Job *j; (j = queue_pop(&v->queued)); )
                job_free(j);
        for (Job *j; (j = queue_pop(&v->done)); )
                job_free(j);
        free(v->threads);
        sd_event_source_disable_unref(v->source);
        if (v->efd >= 0)
                close(v->efd);
        content_store_unref(v->store);
        pthread_cond_destroy(&v->cond);
        pthread_mutex_destroy(&v->lock);
        free(v);
        return NULL;
}

static void submit(PieceVerifier *v, Job *j) {
        pthread_mutex_lock(&v->lock);
        queue_push(&v->queued, j);
        pthread_cond_signal(&v->cond);
        pthread_mutex_unlock(&v->lock);
}

int piece_verifier_submit(PieceVerifier *v, uint32_t index, const void *data, size_t size) {
        Job *j;

        assert(v);
        assert(data || size == 0);
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (Job) { .kind = JOB_PIECE, .index = index, .data = data, .size = size };
        v->pending++;
        submit(v, j);
        return 0;
}

int piece_verifier_sync(PieceVerifier *v) {
        Job *j;
        int r;

        assert(v);
        if (v->syncing)
                return -EBUSY;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->kind = JOB_SYNC;
        r = content_store_durable_begin(v->store, &j->snapshot);
        if (r < 0) {
                free(j);
                return r;
        }
        v->syncing = true;
        submit(v, j);
        return 0;
}

bool piece_verifier_syncing(const PieceVerifier *v) {
        return v->syncing;
}

unsigned piece_verifier_pending(const PieceVerifier *v) {
        return v->pending;
}
