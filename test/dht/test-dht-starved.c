/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Loaded hosts. Node B runs in a child process.
 * 1. A is not scheduled for a while: A sends its queries, then sleeps well past its query timeout
 *    while B answers, then runs its loop again; every query must count as answered.
 * 2. B is not scheduled for a while (SIGSTOP): A's query times out, but a lookup whose only node is
 *    slow must wait for its late answer rather than fail. */

#include <signal.h>
#include <sys/wait.h>

#include "daemon-util.h"
#include "dht-test.h"
#include "dht.h"
#include "log.h"

static int child(int fd) {
        sd_event *e = NULL;
        Dht *b = NULL;
        uint16_t port;

        ASSERT(sd_event_new(&e) >= 0);
        ASSERT(dht_new(e, &(DhtConfig) { .bind_address = "127.0.0.1" }, &b) >= 0);
        port = dht_port(b);
        ASSERT(write(fd, &port, sizeof(port)) == sizeof(port));
        close(fd);
        for (;;)
                sd_event_run(e, UINT64_MAX);
}

static bool done;
static DhtResult result;

static void on_done(Dht *d, const DhtResult *r, void *userdata) {
        result = *r;
        done = true;
}

int main(void) {
        char boot[64], *bootv[] = { boot, NULL };
        sd_event *e = NULL;
        DhtStats st;
        uint16_t port;
        Dht *a = NULL;
        int fds[2];
        pid_t pid;

        log_setup("test-dht-starved");
        ASSERT(pipe(fds) == 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                close(fds[0]);
                _exit(child(fds[1]));
        }
        close(fds[1]);
        ASSERT(read(fds[0], &port, sizeof(port)) == sizeof(port));
        close(fds[0]);

        ASSERT(sd_event_new(&e) >= 0);
        snprintf(boot, sizeof(boot), "127.0.0.1:%u", port);
        ASSERT(dht_new(e, &(DhtConfig) { .bind_address = "127.0.0.1", .bootstrap = bootv,
                                         .tuning = &(DhtTuning) { .no_initial_refresh = true } }, &a) >= 0);
        ASSERT(dht_when_ready(a, on_done, NULL) >= 0);
        while (!done)
                ASSERT(sd_event_run(e, UINT64_MAX) >= 0);
        done = false;

        ASSERT(dht_put(a, "5:hello", 7, 0, NULL, on_done, NULL) >= 0);
        dht_get_stats(a, &st);
        uint64_t sent = st.queries_sent;
        /* Run until the get query is out, then be "descheduled" for 20 timeouts' worth. */
        while (!done) {
                ASSERT(sd_event_run(e, UINT64_MAX) >= 0);
                dht_get_stats(a, &st);
                if (st.queries_sent > sent) {
                        usleep(1000 * 1000);
                        break;
                }
        }
        while (!done)
                ASSERT(sd_event_run(e, UINT64_MAX) >= 0);
        dht_get_stats(a, &st);
        log_info("put: error %d, stored on %u, %" PRIu64 " timeouts", result.error, result.n_stored, st.timeouts);
        ASSERT_EQ(result.error, 0);
        ASSERT_EQ(result.n_stored, 1U);
        ASSERT_EQ(st.timeouts, 0U);

        /* 2. */
        uint8_t target[DHT_ID_SIZE];
        ASSERT(dht_put(a, "5:world", 7, 0, target, on_done, NULL) >= 0);
        done = false;
        while (!done)
                ASSERT(sd_event_run(e, UINT64_MAX) >= 0);
        ASSERT_EQ(result.error, 0);
        /* A fresh node, whose timeout estimate knows only fast answers. */
        dht_free(a);
        ASSERT(dht_new(e, &(DhtConfig) { .bind_address = "127.0.0.1", .bootstrap = bootv,
                                         .tuning = &(DhtTuning) { .no_initial_refresh = true } }, &a) >= 0);
        done = false;
        ASSERT(dht_when_ready(a, on_done, NULL) >= 0);
        while (!done)
                ASSERT(sd_event_run(e, UINT64_MAX) >= 0);
        done = false;
        ASSERT(dht_get(a, target, on_done, NULL) >= 0);
        dht_get_stats(a, &st);
        sent = st.queries_sent;
        ASSERT(kill(pid, SIGSTOP) == 0);
        uint64_t until = 0;
        while (!done) {
                ASSERT(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
                dht_get_stats(a, &st);
                if (until == 0 && st.queries_sent > sent)
                        until = now_usec() + 400 * USEC_PER_MSEC;
                if (until != 0 && now_usec() > until) {
                        ASSERT(kill(pid, SIGCONT) == 0);
                        until = UINT64_MAX;
                }
        }
        dht_get_stats(a, &st);
        log_info("get from a stopped node: error %d, %" PRIu64 " timeouts, %" PRIu64 " late answers", result.error,
                 st.timeouts, st.late_replies);
        ASSERT_EQ(result.error, 0);
        ASSERT(result.item && result.item->v_len == 7 && memcmp(result.item->v, "5:world", 7) == 0);
        ASSERT(st.late_replies >= 1);

        dht_free(a);
        sd_event_unref(e);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 0;
}
