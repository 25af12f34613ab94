/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-fence-init: the lease file format and the decisions taken on it (fence-protocol.c), then the
 * static program itself (its path is the first argument), run outside a container as the exec driver
 * runs it: the command's exit status passed on, a fence that takes the command's whole process tree,
 * renewals that keep it alive past the first promise, a start never confirmed, no lease file, and a
 * SIGTERM passed on to the command. Times are generous: a loaded machine only makes a fence late, and
 * each check allows for that. */

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "agent-test.h"
#include "config.h"
#include "fence-protocol.h"
#include "file-util.h"

static const char *init_path;
static char dir[256], lease[300];

static void test_parse(void) {
        FenceLease l;
        char buf[256];
        int n;

        {
                const char *s = "mc-fence 1\nseq 7\nstate running\nremaining_ms 2666\n";
                ASSERT(fence_lease_parse(s, strlen(s), &l) == 0);
        }
        ASSERT(l.seq == 7 && l.state == FENCE_LEASE_RUNNING && l.remaining_ms == 2666);
        /* Any order, unknown lines ignored. */
        {
                const char *s = "remaining_ms 5\nfuture thing\nstate off\nmc-fence 1\nseq 18446744073709551615\n";
                ASSERT(fence_lease_parse(s, strlen(s), &l) == 0);
                ASSERT(l.seq == UINT64_MAX && l.state == FENCE_LEASE_OFF && l.remaining_ms == 5);
        }
        /* Not a whole lease file. */
        static const char *const bad[] = {
                "",
                "mc-fence 1\nseq 7\nstate running\nremaining_ms 2666",           /* cut short */
                "seq 7\nstate running\nremaining_ms 2666\n",                     /* no magic */
                "mc-fence 2\nseq 7\nstate running\nremaining_ms 2666\n",
                "mc-fence 1\nseq 7\nstate running\n",
                "mc-fence 1\nseq 7\nstate bogus\nremaining_ms 1\n",
                "mc-fence 1\nseq -7\nstate running\nremaining_ms 1\n",
                "mc-fence 1\nseq 7\nseq 8\nstate running\nremaining_ms 1\n",
                "mc-fence 1\nseq 18446744073709551616\nstate running\nremaining_ms 1\n",
                "mc-fence 1\nseq 7\nstate running\nremaining_ms 1x\n",
                "mc-fence 1\nseq \nstate running\nremaining_ms 1\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ASSERT(fence_lease_parse(bad[i], strlen(bad[i]), &l) == -EBADMSG);

        n = fence_lease_format(&(FenceLease) { .seq = 99, .state = FENCE_LEASE_CREATED, .remaining_ms = 12 }, buf,
                               sizeof(buf));
        ASSERT(n > 0 && fence_lease_parse(buf, (size_t) n, &l) == 0);
        ASSERT(l.seq == 99 && l.state == FENCE_LEASE_CREATED && l.remaining_ms == 12);
        ASSERT(fence_lease_format(&(FenceLease) { .state = FENCE_LEASE_RUNNING }, buf, 8) == -ENOBUFS);
}

static void test_watch(void) {
        FenceWatch w = {};
        FenceLease created = { .seq = 1, .state = FENCE_LEASE_CREATED, .remaining_ms = 1000 };
        FenceLease running = { .seq = 2, .state = FENCE_LEASE_RUNNING, .remaining_ms = 1000 };
        FenceLease off = { .seq = 3, .state = FENCE_LEASE_OFF, .remaining_ms = 0 };
        const uint64_t slack = 100000;

        /* Nothing read: nothing may run. */
        ASSERT(fence_watch_step(&w, NULL, 0, slack) == FENCE_KILL);
        /* Created: wait, until the time given runs out (counted from when we saw it, less the slack). */
        ASSERT(fence_watch_step(&w, &created, 10000000, slack) == FENCE_WAIT);
        ASSERT(fence_watch_step(&w, &created, 10899999, slack) == FENCE_WAIT);
        ASSERT(fence_watch_step(&w, NULL, 10899999, slack) == FENCE_WAIT);      /* unreadable: nothing changes */
        ASSERT(fence_watch_step(&w, &created, 10900000, slack) == FENCE_KILL);  /* the same write: no more time */
        /* Running: it may run; a new write gives new time from now. */
        ASSERT(fence_watch_step(&w, &running, 10500000, slack) == FENCE_RUN);
        ASSERT(fence_watch_step(&w, &running, 11399999, slack) == FENCE_RUN);
        ASSERT(fence_watch_step(&w, &running, 11400000, slack) == FENCE_KILL);
        running.seq = 4;
        ASSERT(fence_watch_step(&w, &running, 11400000, slack) == FENCE_RUN);
        /* A later "created" (an adopting agent) does not stop what runs. */
        created.seq = 5;
        ASSERT(fence_watch_step(&w, &created, 11500000, slack) == FENCE_RUN);
        /* Less time than the slack: at once. */
        running.seq = 6;
        running.remaining_ms = 50;
        ASSERT(fence_watch_step(&w, &running, 12000000, slack) == FENCE_KILL);
        /* Off: no deadline at all. */
        ASSERT(fence_watch_step(&w, &off, 13000000, slack) == FENCE_RUN);
        ASSERT(fence_watch_step(&w, NULL, UINT64_MAX / 2, slack) == FENCE_RUN);
        /* Huge values do not wrap. */
        running.seq = 7;
        running.remaining_ms = UINT64_MAX;
        ASSERT(fence_watch_step(&w, &running, 14000000, slack) == FENCE_RUN);
        ASSERT(w.deadline_usec > 14000000);
}

static void write_lease(uint64_t seq, FenceLeaseState state, uint64_t remaining_ms) {
        char buf[256];
        int n = fence_lease_format(&(FenceLease) { .seq = seq, .state = state, .remaining_ms = remaining_ms }, buf,
                                   sizeof(buf));
        ASSERT(n > 0);
        ASSERT(write_file_atomic(lease, buf, (size_t) n, 0644, 0) >= 0);
}

/* stderr_fd >= 0: the init's stderr; close_fd >= 0: closed in the child (a pipe's read end). */
static pid_t spawn_with_stderr(const char *script, int stderr_fd, int close_fd) {
        pid_t pid = fork();

        ASSERT(pid >= 0);
        if (pid == 0) {
                if (stderr_fd >= 0 && dup2(stderr_fd, STDERR_FILENO) < 0)
                        _exit(98);
                if (close_fd >= 0)
                        close(close_fd);
                /* As the supervisor starts it: SIGPIPE not ignored (whatever we inherited). */
                (void) signal(SIGPIPE, SIG_DFL);
                execl(init_path, init_path, lease, "--", "/bin/sh", "-c", script, (char *) NULL);
                _exit(99);
        }
        return pid;
}

static pid_t spawn(const char *script) {
        return spawn_with_stderr(script, -1, -1);
}

/* Its exit code, within timeout_usec (or abort). */
static int wait_exit(pid_t pid, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec;
        int st;

        for (;;) {
                pid_t w = waitpid(pid, &st, WNOHANG);
                ASSERT(w >= 0);
                if (w == pid)
                        break;
                ASSERT(now_usec() < end);
                (void) usleep(10000);
        }
        ASSERT(WIFEXITED(st));
        return WEXITSTATUS(st);
}

static bool pid_file_alive(const char *path) {
        _cleanup_free_ char *s = NULL;
        int64_t pid;

        if (read_one_line_file(path, &s) < 0 || parse_int64(s, &pid) < 0)
                return false;
        return kill((pid_t) pid, 0) == 0;
}

static void test_exit_code(void) {
        write_lease(1, FENCE_LEASE_RUNNING, 60000);
        ASSERT(wait_exit(spawn("exit 7"), 60 * USEC_PER_SEC) == 7);
        ASSERT(wait_exit(spawn("kill -KILL $$"), 60 * USEC_PER_SEC) == 128 + SIGKILL);
        {
                pid_t pid = fork();
                ASSERT(pid >= 0);
                if (pid == 0) {
                        execl(init_path, init_path, lease, "--", "/nonexistent/program", (char *) NULL);
                        _exit(99);
                }
                ASSERT(wait_exit(pid, 60 * USEC_PER_SEC) == FENCE_EXIT_NOT_FOUND);
        }
}

static void test_fence_kills_tree(void) {
        char pidfile[320], script[700];
        uint64_t t0;
        pid_t pid;

        snprintf(pidfile, sizeof(pidfile), "%s/bg.pid", dir);
        (void) unlink(pidfile);
        /* The shell's background child dies with it. */
        snprintf(script, sizeof(script), "sleep 600 & echo $! > %s; wait", pidfile);
        write_lease(2, FENCE_LEASE_RUNNING, 1000);
        t0 = now_usec();
        pid = spawn(script);
        ASSERT(wait_exit(pid, 60 * USEC_PER_SEC) == FENCE_EXIT_FENCED);
        /* Not before the time given, less its poll interval. */
        ASSERT(now_usec() - t0 >= 850 * USEC_PER_MSEC);
        ASSERT(!pid_file_alive(pidfile));
}

/* Its stderr a pipe nobody reads any more (the exec supervisor killed with every mc process): the
 * fence still takes everything, and the init says nothing rather than die of SIGPIPE. */
static void test_fence_with_stderr_gone(void) {
        char pidfile[320], script[700];
        int p[2];
        pid_t pid;

        snprintf(pidfile, sizeof(pidfile), "%s/bg2.pid", dir);
        (void) unlink(pidfile);
        snprintf(script, sizeof(script), "sleep 600 & echo $! > %s; wait", pidfile);
        write_lease(3, FENCE_LEASE_RUNNING, 500);
        ASSERT(pipe(p) == 0);
        pid = spawn_with_stderr(script, p[1], p[0]);
        close(p[1]);
        close(p[0]);
        ASSERT(wait_exit(pid, 60 * USEC_PER_SEC) == FENCE_EXIT_FENCED);
        ASSERT(!pid_file_alive(pidfile));
}

static void test_renewals_keep_it(void) {
        uint64_t end;
        pid_t pid;
        int st;

        write_lease(10, FENCE_LEASE_RUNNING, 400);
        pid = spawn("sleep 2; exit 3");
        /* Renewed every 100 ms with 400 ms each time: it outlives the first promise fivefold. */
        end = now_usec() + 60 * USEC_PER_SEC;
        for (uint64_t seq = 11;; seq++) {
                pid_t w = waitpid(pid, &st, WNOHANG);
                ASSERT(w >= 0);
                if (w == pid)
                        break;
                ASSERT(now_usec() < end);
                write_lease(seq, FENCE_LEASE_RUNNING, 400);
                (void) usleep(100000);
        }
        /* A loaded machine may have stalled us longer than 400 ms: then a fence is right too. */
        ASSERT(WIFEXITED(st) && (WEXITSTATUS(st) == 3 || WEXITSTATUS(st) == FENCE_EXIT_FENCED));
        if (WEXITSTATUS(st) == FENCE_EXIT_FENCED)
                fprintf(stderr, "(the renewals came late: fenced)\n");
}

static void test_gate(void) {
        char marker[320], script[700];
        pid_t pid;

        snprintf(marker, sizeof(marker), "%s/ran", dir);
        snprintf(script, sizeof(script), "touch %s", marker);
        /* Never confirmed: the command never runs. */
        (void) unlink(marker);
        write_lease(20, FENCE_LEASE_CREATED, 300);
        ASSERT(wait_exit(spawn(script), 60 * USEC_PER_SEC) == FENCE_EXIT_FENCED);
        ASSERT(access(marker, F_OK) < 0);
        /* Confirmed: it runs. */
        write_lease(21, FENCE_LEASE_CREATED, 60000);
        pid = spawn(script);
        (void) usleep(50000);
        ASSERT(access(marker, F_OK) < 0);
        write_lease(22, FENCE_LEASE_RUNNING, 60000);
        ASSERT(wait_exit(pid, 60 * USEC_PER_SEC) == 0);
        ASSERT(access(marker, F_OK) == 0);
}

static void test_no_lease(void) {
        ASSERT(unlink(lease) == 0);
        ASSERT(wait_exit(spawn("exit 0"), 60 * USEC_PER_SEC) == FENCE_EXIT_NO_LEASE);
        ASSERT(write_file_atomic(lease, "garbage\n", 8, 0644, 0) >= 0);
        ASSERT(wait_exit(spawn("exit 0"), 60 * USEC_PER_SEC) == FENCE_EXIT_NO_LEASE);
}

static void test_sigterm_forwarded(void) {
        char ready[320], script[700];
        uint64_t end = now_usec() + 60 * USEC_PER_SEC;
        pid_t pid;

        snprintf(ready, sizeof(ready), "%s/ready", dir);
        (void) unlink(ready);
        snprintf(script, sizeof(script), "trap 'exit 42' TERM; touch %s; while :; do sleep 0.1; done", ready);
        write_lease(30, FENCE_LEASE_RUNNING, 60000);
        pid = spawn(script);
        while (access(ready, F_OK) < 0) {
                ASSERT(now_usec() < end);
                (void) usleep(10000);
        }
        ASSERT(kill(pid, SIGTERM) == 0);
        ASSERT(wait_exit(pid, 60 * USEC_PER_SEC) == 42);
}

int main(int argc, char *argv[]) {
        ASSERT(argc == 2);
        init_path = argv[1];
        snprintf(dir, sizeof(dir), "/tmp/mc-test-fence-init-%d", (int) getpid());
        ASSERT(mkdir(dir, 0755) == 0);
        snprintf(lease, sizeof(lease), "%s/lease", dir);

        RUN_TEST(test_parse);
        RUN_TEST(test_watch);
        RUN_TEST(test_exit_code);
        RUN_TEST(test_fence_kills_tree);
        RUN_TEST(test_fence_with_stderr_gone);
        RUN_TEST(test_renewals_keep_it);
        RUN_TEST(test_gate);
        RUN_TEST(test_no_lease);
        RUN_TEST(test_sigterm_forwarded);

        {
                char cmd[300];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                (void) system(cmd);
        }
        return 0;
}
