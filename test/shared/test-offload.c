/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* offload: blocking calls on a thread of their own, their results on the event loop. Every wait here
 * is for a condition, with the loop's 60 s deadline as the only clock. */

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "offload.h"
#include "tests.h"

#define DEADLINE_USEC (60ULL * 1000000ULL)
#define N_CALLS 64

typedef struct Record {
        pthread_t loop;
        int order[N_CALLS], n_done, n_destroyed, n_worked;
        bool work_on_loop, done_off_loop, done_after_cancel;
        size_t expect;                  /* dones to wait for */
} Record;

typedef struct Call {
        Record *rec;
        int index;
        int block_fd;                   /* >= 0: the work waits for a byte on it */
        OffloadCall *handle;
} Call;

static pthread_mutex_t worked_lock = PTHREAD_MUTEX_INITIALIZER;

static int work(void *userdata) {
        Call *c = userdata;
        char b;

        if (pthread_equal(pthread_self(), c->rec->loop))
                c->rec->work_on_loop = true;
        if (c->block_fd >= 0 && read(c->block_fd, &b, 1) != 1)
                return -EIO;
        pthread_mutex_lock(&worked_lock);
        c->rec->n_worked++;
        pthread_mutex_unlock(&worked_lock);
        return c->index * 3;
}

static void done(int result, void *userdata) {
        Call *c = userdata;
        Record *rec = c->rec;

        if (!pthread_equal(pthread_self(), rec->loop))
                rec->done_off_loop = true;
        if (c->handle == NULL)
                rec->done_after_cancel = true;
        if (result == c->index * 3 && rec->n_done < N_CALLS)
                rec->order[rec->n_done] = c->index;
        else if (rec->n_done < N_CALLS)
                rec->order[rec->n_done] = -1;
        rec->n_done++;
        c->handle = NULL;
}

static void destroy(void *userdata) {
        Call *c = userdata;
        c->rec->n_destroyed++;
        free(c);
}

static Call *call_new(Record *rec, int index, int block_fd) {
        Call *c = calloc(1, sizeof(Call));
        if (c)
                *c = (Call) { .rec = rec, .index = index, .block_fd = block_fd };
        return c;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), -ETIMEDOUT);
}

/* Runs the loop until rec->expect dones have come or the deadline; 0 or -ETIMEDOUT. */
static int run_until_done(sd_event *e, Record *rec) {
        _cleanup_(sd_event_source_unrefp) sd_event_source *deadline = NULL;
        int r;

        r = sd_event_add_time_relative(e, &deadline, CLOCK_MONOTONIC, DEADLINE_USEC, 0, on_deadline, NULL);
        if (r < 0)
                return r;
        while ((size_t) rec->n_done < rec->expect) {
                r = sd_event_run(e, UINT64_MAX);
                if (r < 0)
                        return r;
                if (sd_event_get_state(e) == SD_EVENT_FINISHED) {
                        int code = 0;
                        (void) sd_event_get_exit_code(e, &code);
                        return code;
                }
        }
        return 0;
}

/* Every call's done comes on the loop, in order, with its work's result, then its destroy. */
static void test_order_and_threads(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(offload_freep) Offload *o = NULL;
        Record rec = { .loop = pthread_self(), .expect = N_CALLS };

        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(offload_new(e, "test", &o), 0);
        for (int i = 0; i < N_CALLS; i++) {
                Call *c = call_new(&rec, i, -1);
                ASSERT_TRUE(c);
                ASSERT_INT_EQ(offload_submit(o, work, done, destroy, c, &c->handle), 0);
        }
        ASSERT_UINT_EQ(offload_pending(o), N_CALLS);
        ASSERT_INT_EQ(run_until_done(e, &rec), 0);
        ASSERT_INT_EQ(rec.n_done, N_CALLS);
        for (int i = 0; i < N_CALLS; i++)
                ASSERT_INT_EQ(rec.order[i], i);
        ASSERT_INT_EQ(rec.n_destroyed, N_CALLS);
        ASSERT_UINT_EQ(offload_pending(o), 0);
        ASSERT_TRUE(!rec.work_on_loop);
        ASSERT_TRUE(!rec.done_off_loop);
}

typedef struct Unblock {
        int fd;
        bool ran;
} Unblock;

static int on_unblock(sd_event_source *s, uint64_t usec, void *userdata) {
        Unblock *u = userdata;
        u->ran = write(u->fd, "x", 1) == 1;
        return 0;
}

/* A work that blocks does not hold the loop: the loop itself unblocks it. Run on the loop, the work
 * would wait for the loop forever (and the deadline would end the test). */
static void test_blocking_work_leaves_loop_free(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(offload_freep) Offload *o = NULL;
        _cleanup_(sd_event_source_unrefp) sd_event_source *t = NULL;
        Record rec = { .loop = pthread_self(), .expect = 2 };
        int p[2];
        Unblock u;
        Call *blocked, *after;

        ASSERT_INT_EQ(pipe(p), 0);
        u = (Unblock) { .fd = p[1] };
        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(offload_new(e, "test", &o), 0);
        blocked = call_new(&rec, 0, p[0]);
        after = call_new(&rec, 1, -1);
        ASSERT_TRUE(blocked && after);
        ASSERT_INT_EQ(offload_submit(o, work, done, destroy, blocked, &blocked->handle), 0);
        ASSERT_INT_EQ(offload_submit(o, work, done, destroy, after, &after->handle), 0);
        /* The loop's own event, while the work waits for it. */
        ASSERT_INT_EQ(sd_event_add_time_relative(e, &t, CLOCK_MONOTONIC, 1000, 0, on_unblock, &u), 0);
        ASSERT_INT_EQ(run_until_done(e, &rec), 0);
        ASSERT_TRUE(u.ran);
        ASSERT_INT_EQ(rec.order[0], 0);
        ASSERT_INT_EQ(rec.order[1], 1);
        close(p[0]);
        close(p[1]);
}

/* A cancelled call's work runs, its done does not, its userdata is destroyed; the calls around it
 * are not disturbed. */
static void test_cancel(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(offload_freep) Offload *o = NULL;
        Record rec = { .loop = pthread_self(), .expect = 2 };
        Call *c[3];

        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(offload_new(e, "test", &o), 0);
        for (int i = 0; i < 3; i++) {
                c[i] = call_new(&rec, i, -1);
                ASSERT_TRUE(c[i]);
                ASSERT_INT_EQ(offload_submit(o, work, done, destroy, c[i], &c[i]->handle), 0);
        }
        offload_call_cancel(c[1]->handle);
        c[1]->handle = NULL;
        ASSERT_INT_EQ(run_until_done(e, &rec), 0);
        /* The cancelled one finished before the third: it is destroyed by now. */
        ASSERT_INT_EQ(rec.n_done, 2);
        ASSERT_INT_EQ(rec.order[0], 0);
        ASSERT_INT_EQ(rec.order[1], 2);
        ASSERT_INT_EQ(rec.n_destroyed, 3);
        ASSERT_INT_EQ(rec.n_worked, 3);
        ASSERT_TRUE(!rec.done_after_cancel);
}

/* Freed with calls queued (a daemon stopping): every work runs, no done is called, every userdata
 * is destroyed. */
static void test_free_runs_what_is_queued(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        Record rec = { .loop = pthread_self() };
        Offload *o = NULL;

        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(offload_new(e, "test", &o), 0);
        for (int i = 0; i < N_CALLS; i++) {
                Call *c = call_new(&rec, i, -1);
                ASSERT_TRUE(c);
                ASSERT_INT_EQ(offload_submit(o, work, done, destroy, c, NULL), 0);
        }
        o = offload_free(o);
        ASSERT_INT_EQ(rec.n_worked, N_CALLS);
        ASSERT_INT_EQ(rec.n_done, 0);
        ASSERT_INT_EQ(rec.n_destroyed, N_CALLS);
}

typedef struct Chain {
        Offload *o;
        Record *rec;
        int left;
} Chain;

static int chain_work(void *userdata) {
        return 0;
}

static void chain_done(int result, void *userdata) {
        Chain *ch = userdata;

        ch->rec->n_done++;
        if (--ch->left > 0)
                (void) offload_submit(ch->o, chain_work, chain_done, NULL, ch, NULL);
}

/* A done may submit the next call. */
static void test_submit_from_done(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(offload_freep) Offload *o = NULL;
        Record rec = { .loop = pthread_self(), .expect = 10 };
        Chain ch = { .rec = &rec, .left = 10 };

        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(offload_new(e, "test", &o), 0);
        ch.o = o;
        ASSERT_INT_EQ(offload_submit(o, chain_work, chain_done, NULL, &ch, NULL), 0);
        ASSERT_INT_EQ(run_until_done(e, &rec), 0);
        ASSERT_INT_EQ(rec.n_done, 10);
        ASSERT_UINT_EQ(offload_pending(o), 0);
}

int main(void) {
        RUN_TEST(test_order_and_threads);
        RUN_TEST(test_blocking_work_leaves_loop_free);
        RUN_TEST(test_cancel);
        RUN_TEST(test_free_runs_what_is_queued);
        RUN_TEST(test_submit_from_done);
        return TESTS_DONE();
}
