/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* daemon-util: listening sockets for every address form, the directories systemd hands over, and
 * what sd_notify sends (received on a real datagram socket, as systemd would), and the sockets systemd
 * passes, taken by name (real sockets at fd 3 and up, $LISTEN_FDS as systemd sets it). */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "daemon-util.h"
#include "log.h"
#include "tests.h"

static int bound_family(int fd, uint16_t *ret_port) {
        struct sockaddr_storage ss;
        socklen_t l = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &l) < 0)
                return -errno;
        if (ss.ss_family == AF_INET)
                *ret_port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
        else
                *ret_port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        return ss.ss_family;
}

static bool connects(int family, const char *address, uint16_t port) {
        _cleanup_close_ int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t l;

        if (family == AF_INET) {
                sa.in = (struct sockaddr_in) { .sin_family = AF_INET, .sin_port = htons(port) };
                inet_pton(AF_INET, address, &sa.in.sin_addr);
                l = sizeof(sa.in);
        } else {
                sa.in6 = (struct sockaddr_in6) { .sin6_family = AF_INET6, .sin6_port = htons(port) };
                inet_pton(AF_INET6, address, &sa.in6.sin6_addr);
                l = sizeof(sa.in6);
        }
        return fd >= 0 && connect(fd, &sa.sa, l) == 0;
}

static bool has_ipv6_loopback(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/net/if_inet6", "re");
        char line[256];

        while (f && fgets(line, sizeof(line), f))
                if (startswith(line, "00000000000000000000000000000001"))
                        return true;
        return false;
}

static void test_listen_tcp(void) {
        _cleanup_close_ int v4 = -1, v6 = -1, any = -1;
        uint16_t port;

        v4 = daemon_listen_tcp("127.0.0.1", 0);
        ASSERT_TRUE(v4 >= 0);
        ASSERT_INT_EQ(bound_family(v4, &port), AF_INET);
        ASSERT_TRUE(port != 0);
        ASSERT_TRUE(connects(AF_INET, "127.0.0.1", port));

        /* No address: every address, IPv4 included (mapped). */
        any = daemon_listen_tcp(NULL, 0);
        ASSERT_TRUE(any >= 0);
        ASSERT_TRUE(bound_family(any, &port) > 0);
        ASSERT_TRUE(connects(AF_INET, "127.0.0.1", port));

        if (!has_ipv6_loopback()) {
                /* Containers often run with IPv6 off: then ::1 is refused, with the reason. */
                ASSERT_INT_EQ(daemon_listen_tcp("::1", 0), -EADDRNOTAVAIL);
                return;
        }
        ASSERT_TRUE(connects(AF_INET6, "::1", port));
        v6 = daemon_listen_tcp("::1", 0);
        ASSERT_TRUE(v6 >= 0);
        ASSERT_INT_EQ(bound_family(v6, &port), AF_INET6);
        ASSERT_TRUE(connects(AF_INET6, "::1", port));
}

static void test_listen_tcp_errors(void) {
        _cleanup_close_ int fd = -1;
        uint16_t port;

        ASSERT_INT_EQ(daemon_listen_tcp("localhost", 0), -EINVAL); /* names are not resolved */
        ASSERT_INT_EQ(daemon_listen_tcp("300.1.1.1", 0), -EINVAL);
        fd = daemon_listen_tcp("127.0.0.1", 0);
        ASSERT_TRUE(fd >= 0);
        bound_family(fd, &port);
        ASSERT_INT_EQ(daemon_listen_tcp("127.0.0.1", port), -EADDRINUSE);
}

static void test_directories(void) {
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
        ASSERT_STREQ(daemon_state_directory("/var/lib/mc-x"), "/var/lib/mc-x");
        setenv("STATE_DIRECTORY", "/var/lib/a:/var/lib/b", 1);
        setenv("RUNTIME_DIRECTORY", "/run/r", 1);
        ASSERT_STREQ(daemon_state_directory("/fallback"), "/var/lib/a");
        ASSERT_STREQ(daemon_runtime_directory("/fallback"), "/run/r");
        ASSERT_STREQ(daemon_state_directory("/fallback"), "/var/lib/a"); /* still, after the other */
        setenv("STATE_DIRECTORY", "", 1);
        ASSERT_STREQ(daemon_state_directory("/fallback"), "/fallback");
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
}

static void test_notify(void) {
        char dir[] = "/tmp/mc-test-notify-XXXXXX", path[64], buf[256];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        _cleanup_close_ int fd = -1;
        ssize_t n;

        ASSERT_TRUE(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/notify", dir);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_TRUE(fd >= 0);
        ASSERT_INT_EQ(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setenv("NOTIFY_SOCKET", path, 1);

        daemon_notify_ready("Serving on port 1.");
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        ASSERT_TRUE(n > 0);
        buf[n] = 0;
        ASSERT_STREQ(buf, "READY=1\nSTATUS=Serving on port 1.");

        daemon_notify_status("%u tasks", 3u);
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        ASSERT_TRUE(n > 0);
        buf[n] = 0;
        ASSERT_STREQ(buf, "STATUS=3 tasks");

        daemon_notify_stopping();
        n = recv(fd, buf, sizeof(buf) - 1, 0);
        ASSERT_TRUE(n > 0);
        buf[n] = 0;
        ASSERT_TRUE(startswith(buf, "STOPPING=1\n"));

        unsetenv("NOTIFY_SOCKET");
        unlink(path);
        rmdir(dir);
}

static int fd_open(int fd) {
        return fcntl(fd, F_GETFD) >= 0;
}

static void tcp_socket(bool listening, int *ret) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        ASSERT_TRUE(fd >= 0);
        ASSERT_INT_EQ(bind(fd, (struct sockaddr *) &in, sizeof(in)), 0);
        if (listening)
                ASSERT_INT_EQ(listen(fd, 8), 0);
        *ret = fd;
}

static void udp_socket(int family, int *ret) {
        int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

        ASSERT_TRUE(fd >= 0);
        if (family == AF_INET) {
                struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                ASSERT_INT_EQ(bind(fd, (struct sockaddr *) &in, sizeof(in)), 0);
        }
        *ret = fd;
}

static void unix_listening(const char *path, int *ret) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un un = { .sun_family = AF_UNIX };

        ASSERT_TRUE(fd >= 0);
        snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
        ASSERT_INT_EQ(bind(fd, (struct sockaddr *) &un, sizeof(un)), 0);
        ASSERT_INT_EQ(listen(fd, 8), 0);
        *ret = fd;
}

/* Puts fds[] at 3, 4, ... as systemd would (without FD_CLOEXEC, blocking) and sets $LISTEN_*. */
static void pass(const int *fds, size_t n, const char *names) {
        char buf[32];
        int high[16];

        ASSERT_TRUE(n <= ELEMENTSOF(high));
        /* Out of the way first: a socket may already sit at one of the target numbers. */
        for (size_t i = 0; i < n; i++) {
                high[i] = fcntl(fds[i], F_DUPFD, 100);
                ASSERT_TRUE(high[i] >= 100);
                close(fds[i]);
        }
        for (size_t i = 0; i < n; i++) {
                ASSERT_INT_EQ(dup2(high[i], SD_LISTEN_FDS_START + (int) i), SD_LISTEN_FDS_START + (int) i);
                close(high[i]);
        }
        snprintf(buf, sizeof(buf), "%d", (int) getpid());
        setenv("LISTEN_PID", buf, 1);
        snprintf(buf, sizeof(buf), "%zu", n);
        setenv("LISTEN_FDS", buf, 1);
        setenv("LISTEN_FDNAMES", names, 1);
}

static void test_take_sockets(void) {
        char dir[] = "/tmp/mc-test-sockets-XXXXXX", path[64];
        DaemonSocket table[] = {
                { .name = "metrics", .type = SOCK_STREAM, .unix_ok = true, .max = 1 },
                { .name = "dht", .type = SOCK_DGRAM, .max = 1 },
                { .name = "peer", .type = SOCK_STREAM, .max = 1 },
                { .name = "admin", .type = SOCK_STREAM, .max = 2 },
        };
        int fds[9];
        uint16_t port;

        /* Nothing passed: nothing taken. */
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        ASSERT_INT_EQ(daemon_take_sockets("test", table, ELEMENTSOF(table)), 0);
        for (size_t j = 0; j < ELEMENTSOF(table); j++)
                ASSERT_UINT_EQ(table[j].n_fds, 0);

        ASSERT_TRUE(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/metrics.sock", dir);
        udp_socket(AF_INET, &fds[0]);           /* "dht": taken */
        tcp_socket(true, &fds[1]);              /* "bogus": no such name, closed */
        udp_socket(AF_INET, &fds[2]);           /* "dht" again: one too many, closed */
        unix_listening(path, &fds[3]);          /* "metrics": unix is fine there, taken */
        udp_socket(AF_INET, &fds[4]);           /* "peer": a datagram socket, the wrong kind, closed */
        tcp_socket(false, &fds[5]);             /* "admin": a stream socket that is not listening, closed */
        tcp_socket(true, &fds[6]);              /* "admin": taken */
        tcp_socket(true, &fds[7]);              /* "peer": taken, since the first was refused */
        tcp_socket(true, &fds[8]);              /* "admin": the second, taken */
        port = daemon_socket_port(fds[7]);
        ASSERT_TRUE(port != 0);
        pass(fds, 9, "dht:bogus:dht:metrics:peer:admin:admin:peer:admin");

        ASSERT_INT_EQ(daemon_take_sockets("test", table, ELEMENTSOF(table)), 5);
        /* Taken off the environment: a child must not think they are its own. */
        ASSERT_NULL(getenv("LISTEN_FDS"));
        ASSERT_NULL(getenv("LISTEN_FDNAMES"));

        ASSERT_UINT_EQ(table[0].n_fds, 1);
        ASSERT_INT_EQ(table[0].fds[0], 6);
        ASSERT_UINT_EQ(table[1].n_fds, 1);
        ASSERT_INT_EQ(table[1].fds[0], 3);
        ASSERT_UINT_EQ(table[2].n_fds, 1);
        ASSERT_INT_EQ(table[2].fds[0], 10);
        ASSERT_UINT_EQ(daemon_socket_port(table[2].fds[0]), port);
        ASSERT_UINT_EQ(table[3].n_fds, 2);
        ASSERT_INT_EQ(table[3].fds[0], 9);
        ASSERT_INT_EQ(table[3].fds[1], 11);
        /* The rejected ones are closed, not leaked. */
        ASSERT_TRUE(!fd_open(4));
        ASSERT_TRUE(!fd_open(5));
        ASSERT_TRUE(!fd_open(7));
        ASSERT_TRUE(!fd_open(8));
        /* The taken ones: close-on-exec and non-blocking, whatever systemd handed over. */
        for (size_t j = 0; j < ELEMENTSOF(table); j++)
                for (unsigned i = 0; i < table[j].n_fds; i++) {
                        ASSERT_TRUE(fcntl(table[j].fds[i], F_GETFD) & FD_CLOEXEC);
                        ASSERT_TRUE(fcntl(table[j].fds[i], F_GETFL) & O_NONBLOCK);
                }

        char what[256];
        daemon_socket_describe(table[2].fds[0], what, sizeof(what));
        ASSERT_TRUE(startswith(what, "TCP listening socket on 127.0.0.1:"));
        daemon_socket_describe(table[1].fds[0], what, sizeof(what));
        ASSERT_TRUE(startswith(what, "UDP socket on 127.0.0.1:"));
        daemon_socket_describe(table[0].fds[0], what, sizeof(what));
        ASSERT_TRUE(startswith(what, "unix listening stream socket /tmp/mc-test-sockets-"));
        daemon_socket_describe(1000, what, sizeof(what));
        ASSERT_STREQ(what, "not a socket");

        daemon_sockets_close(table, ELEMENTSOF(table));
        for (size_t j = 0; j < ELEMENTSOF(table); j++)
                ASSERT_UINT_EQ(table[j].n_fds, 0);
        ASSERT_TRUE(!fd_open(3));
        ASSERT_TRUE(!fd_open(11));

        /* Passed to another process (LISTEN_PID is not ours): not taken, not touched. */
        udp_socket(AF_INET, &fds[0]);
        pass(fds, 1, "dht");
        setenv("LISTEN_PID", "1", 1);
        ASSERT_INT_EQ(daemon_take_sockets("test", table, ELEMENTSOF(table)), 0);
        ASSERT_TRUE(fd_open(3));
        close(3);

        unlink(path);
        rmdir(dir);
}

static void test_clocks(void) {
        uint64_t a = now_usec(), b = now_usec();

        ASSERT_TRUE(b >= a);
        ASSERT_TRUE(realtime_usec() > UINT64_C(1600000000) * USEC_PER_SEC); /* after 2020 */
}

int main(void) {
        log_set_target(LOG_TARGET_CONSOLE);
        RUN_TEST(test_listen_tcp);
        RUN_TEST(test_listen_tcp_errors);
        RUN_TEST(test_directories);
        RUN_TEST(test_notify);
        RUN_TEST(test_take_sockets);
        RUN_TEST(test_clocks);
        return TESTS_DONE();
}
