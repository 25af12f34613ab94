/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The programs bench/seeder/run drives (figures, not tests).
 *
 *   seeder-bench send PATH FILE   block-sender (PATH: splice, send-zc, sendfile, auto) serves FILE as
 *                                 16 KiB piece messages over one loopback TCP connection to a reader
 *                                 that discards them; prints one JSON line.
 *   seeder-bench get PORT URLPATH the same reader against an HTTP server on 127.0.0.1:PORT (nginx):
 *                                 sends a GET and discards the response; prints one JSON line.
 *
 * A last argument "trunc" makes the reader discard with recv(MSG_TRUNC) (no copy: what is left is
 * the sender's cost), "copy" (the default) with read() into a buffer, as curl does.
 *
 * The sender runs in a child process, alone on its sd-event loop; its CPU time (getrusage of the
 * whole process after the stream: user + system, io-wq worker threads included) covers queueing the
 * blocks, the loop and the kernel work done on its behalf. The reader's wall time runs from connect()
 * to EOF. */

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "block-sender.h"
#include "log.h"

#define BLOCK (16U * 1024U)
#define PIECE (4U * 1024U * 1024U)
#define READ_BUF (256U * 1024U)

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double cpu_sec(void) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return -1;
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

static bool trunc_reader;

/* Reads and discards until EOF; returns bytes, or -1. "trunc": recv(MSG_TRUNC), which TCP answers by
 * dropping the bytes without copying them, so that the reader costs next to nothing. */
static int64_t drain(int fd) {
        static uint8_t buf[READ_BUF];
        int64_t total = 0;

        for (;;) {
                ssize_t n = trunc_reader ? recv(fd, NULL, 4U << 20, MSG_TRUNC) : read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                if (n == 0)
                        return total;
                total += n;
        }
}

typedef struct Result {
        double cpu;
        long nvcsw, nivcsw;
        int error;
        BlockSenderStats stats;
        BlockSendPath path;
} Result;

static bool done;
static int failure;

static void on_drained(BlockSenderConn *c, void *userdata) {
        done = true;
}

static void on_failed(BlockSenderConn *c, int error, void *userdata) {
        failure = error;
        done = true;
}

static int serve(int listen_fd, BlockSendPath path, const char *file_path, int result_fd) {
        Result res = {};
        BlockSender *s = NULL;
        BlockSenderConn *c = NULL;
        BlockFile *f = NULL;
        sd_event *e = NULL;
        double cpu0;
        int fd, r;

        fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return -errno;
        cpu0 = cpu_sec();
        r = sd_event_new(&e);
        if (r < 0)
                return r;
        r = block_sender_new(e, &(BlockSenderConfig) { .path = path }, &s);
        if (r < 0)
                return log_error_errno(r, "block_sender_new: %m");
        r = block_file_open(AT_FDCWD, file_path, &f);
        if (r < 0)
                return log_error_errno(r, "%s: %m", file_path);
        r = block_sender_attach(s, fd, &(BlockSenderCallbacks) { on_drained, on_failed }, NULL, &c);
        if (r < 0)
                return r;
        for (uint64_t off = 0; off < block_file_size(f); off += BLOCK) {
                uint32_t len = (uint32_t) MIN((uint64_t) BLOCK, block_file_size(f) - off);
                r = block_sender_queue(c, f, off, len, (uint32_t) (off / PIECE), (uint32_t) (off % PIECE));
                if (r < 0)
                        return r;
        }
        block_file_unref(f);
        while (!done) {
                r = sd_event_run(e, UINT64_MAX);
                if (r < 0)
                        return r;
        }
        block_sender_get_stats(s, &res.stats);
        res.path = block_sender_path(s);
        block_sender_detach(c);
        close(fd); /* the sender's duplicate goes with free(): then the reader sees EOF */
        block_sender_free(s);
        sd_event_unref(e);
        res.cpu = cpu_sec() - cpu0;
        {
                struct rusage ru;
                (void) getrusage(RUSAGE_SELF, &ru);
                res.nvcsw = ru.ru_nvcsw;
                res.nivcsw = ru.ru_nivcsw;
        }
        res.error = failure;
        if (write(result_fd, &res, sizeof(res)) != sizeof(res))
                return -EIO;
        return 0;
}

static int cmd_send(const char *path_name, const char *file_path) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        BlockSendPath path = block_send_path_from_string(path_name);
        int lfd, cfd, pfd[2], status;
        double t0, t1;
        int64_t got;
        Result res;
        pid_t pid;

        if (path < 0) {
                fprintf(stderr, "unknown path %s\n", path_name);
                return 2;
        }
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
            getsockname(lfd, (struct sockaddr *) &sa, &sl) < 0 || pipe2(pfd, O_CLOEXEC) < 0) {
                perror("setup");
                return 1;
        }
        pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                close(pfd[0]);
                signal(SIGPIPE, SIG_IGN);
                _exit(serve(lfd, path, file_path, pfd[1]) < 0 ? 1 : 0);
        }
        close(pfd[1]);
        cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        t0 = now_sec();
        if (cfd < 0 || connect(cfd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                perror("connect");
                return 1;
        }
        got = drain(cfd);
        t1 = now_sec();
        if (read(pfd[0], &res, sizeof(res)) != sizeof(res) || waitpid(pid, &status, 0) != pid || status != 0) {
                fprintf(stderr, "sender failed\n");
                return 1;
        }
        printf("{\"what\": \"block-sender\", \"path\": \"%s\", \"bytes\": %" PRId64 ", \"payload\": %" PRIu64
               ", \"seconds\": %.6f, \"cpu\": %.6f, \"switches\": %ld, \"preempted\": %ld, \"error\": %d, \"rounds\": %" PRIu64 ", \"short_writes\": %" PRIu64
               ", \"waits_writable\": %" PRIu64 ", \"submits\": %" PRIu64 ", \"cqes\": %" PRIu64
               ", \"zc_notifs\": %" PRIu64 ", \"zc_notifs_copied\": %" PRIu64 ", \"zc_bytes_copied\": %" PRIu64 "}\n",
               block_send_path_to_string(res.path), got, res.stats.payload_bytes, t1 - t0, res.cpu, res.nvcsw, res.nivcsw, res.error,
               res.stats.rounds, res.stats.short_writes, res.stats.waits_writable, res.stats.submits, res.stats.cqes,
               res.stats.zc_notifs, res.stats.zc_notifs_copied, res.stats.zc_bytes_copied);
        return res.error != 0 || got != (int64_t) (res.stats.bytes_sent) ? 1 : 0;
}

static int cmd_get(const char *port, const char *url_path) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                                  .sin_port = htons((uint16_t) atoi(port)) };
        char req[1024];
        double t0, t1;
        int64_t got;
        int fd, n;

        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", url_path);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        t0 = now_sec();
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || write(fd, req, (size_t) n) != n) {
                perror("connect");
                return 1;
        }
        got = drain(fd);
        t1 = now_sec();
        printf("{\"what\": \"http-get\", \"bytes\": %" PRId64 ", \"seconds\": %.6f}\n", got, t1 - t0);
        return got > 0 ? 0 : 1;
}

int main(int argc, char *argv[]) {
        log_setup("seeder-bench");
        if (argc == 5 && streq(argv[4], "trunc"))
                trunc_reader = true;
        else if (argc == 5 && !streq(argv[4], "copy"))
                argc = 0;
        if ((argc == 4 || argc == 5) && streq(argv[1], "send"))
                return cmd_send(argv[2], argv[3]);
        if ((argc == 4 || argc == 5) && streq(argv[1], "get"))
                return cmd_get(argv[2], argv[3]);
        fprintf(stderr, "usage: %s send splice|send-zc|sendfile|auto FILE [copy|trunc]\n"
                        "       %s get PORT URLPATH [copy|trunc]\n", argv[0], argv[0]);
        return 2;
}
