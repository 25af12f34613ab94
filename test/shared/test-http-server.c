/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HTTP server on a real sd-event loop and a real TCP socket: synchronous and suspended
 * (long-poll style) answers, body limits with and without Content-Length, keep-alive, many
 * concurrent suspended requests, and shutdown with requests still waiting; and, on a second server
 * with small limits, the defences against clients that hold connections: header, body and idle
 * deadlines, the cap per address (429 at once), the global cap (the oldest waiting connection makes
 * room), and every descriptor back after all that. The loop runs in the main thread; the tests are an
 * HTTP client in a second thread. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

#include "daemon-util.h"
#include "http-server.h"
#include "json-util.h"
#include "log.h"
#include "tests.h"

#define MAX_BODY 1024
#define N_CONCURRENT 64

/* The small server's limits. */
#define TIGHT_MAX 8
#define TIGHT_PER_ADDRESS 4

static sd_event *event;
static HttpServer *server, *tight;
static uint16_t port, tight_port;
static int control_pipe[2] = { -1, -1 };
static unsigned n_completed_many; /* written by the loop, read by the client: atomics */

/* ---- server side (loop thread) ---- */

static int on_later(sd_event_source *s, uint64_t usec, void *userdata) {
        HttpRequest *r = userdata;

        http_request_reply(r, 200, "text/plain", "later", 5);
        return 0;
}

static int on_free_server(sd_event_source *s, void *userdata) {
        /* A request is still suspended now: freeing must answer it with 503. */
        server = http_server_free(server);
        return 0;
}

static void handler(HttpRequest *r, void *userdata) {
        const char *path = http_request_path(r);

        if (streq(path, "/echo")) {
                _cleanup_json_ json_object *o = json_object_new_object();
                const char *values[8];
                size_t size, n = http_request_query_all(r, "a", values, ELEMENTSOF(values));
                const char *body = http_request_body(r, &size);

                json_add_string(o, "method", http_request_method(r));
                json_add_string(o, "path", path);
                json_add_int64(o, "n_a", (int64_t) n);
                json_add_string(o, "a0", n > 0 ? values[0] : NULL);
                json_add_string(o, "b", http_request_query(r, "b"));
                json_add_string(o, "x_test", http_request_header(r, "X-Test"));
                if (strlen(body) == size) /* a NUL would come out as \u0000, which we refuse to parse */
                        json_add_string(o, "body", body);
                json_add_int64(o, "body_size", (int64_t) size);
                http_request_set_route(r, "echo");
                http_request_add_header(r, "X-Reply", "yes");
                http_request_reply_json(r, 200, o);
                /* A second answer is refused and changes nothing. */
                if (http_request_reply(r, 500, NULL, "", 0) != -EALREADY)
                        abort();
        } else if (streq(path, "/later") || streq(path, "/many")) {
                /* Answered from a timer, after the handler returned: the request is suspended. */
                if (sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, 20 * USEC_PER_MSEC, 1, on_later, r) < 0)
                        abort();
        } else if (streq(path, "/stats")) {
                /* The counters of the server named by ?of= (the loop's thread reads them). */
                _cleanup_json_ json_object *o = json_object_new_object();
                const char *of = http_request_query(r, "of");
                HttpServerStats st;

                http_server_get_stats(of && streq(of, "tight") ? tight : server, &st);
                json_add_int64(o, "connections", st.connections);
                json_add_int64(o, "refused_address", (int64_t) st.refused_address);
                json_add_int64(o, "refused_global", (int64_t) st.refused_global);
                json_add_int64(o, "evicted", (int64_t) st.evicted);
                json_add_int64(o, "header_timeouts", (int64_t) st.header_timeouts);
                json_add_int64(o, "body_timeouts", (int64_t) st.body_timeouts);
                json_add_int64(o, "idle_timeouts", (int64_t) st.idle_timeouts);
                http_request_reply_json(r, 200, o);
        } else if (streq(path, "/never")) {
                if (sd_event_add_defer(event, NULL, on_free_server, NULL) < 0)
                        abort();
        } else
                http_request_reply_error(r, 404, "path", "No such thing: %s", path);
}

static void completed(HttpRequest *r, unsigned code, void *userdata) {
        if (code == 200 && streq(http_request_path(r), "/many"))
                __atomic_add_fetch(&n_completed_many, 1, __ATOMIC_SEQ_CST);
}

static int on_control(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        char c;

        if (read(fd, &c, 1) == 1 && c == 'q')
                return sd_event_exit(event, 0);
        return 0;
}

/* ---- client side (test thread) ---- */

/* A connection to to_port from 127.0.0.from (0: the default source). */
static int client_connect_from(uint16_t to_port, uint8_t from) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(to_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 30 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                abort();
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (from != 0) {
                struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000000u | from) };
                if (bind(fd, (struct sockaddr *) &src, sizeof(src)) < 0)
                        abort();
        }
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                abort();
        return fd;
}

static int client_connect(void) {
        return client_connect_from(port, 0);
}

static void send_all(int fd, const char *data, size_t size) {
        while (size > 0) {
                ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
                if (n <= 0)
                        return; /* the server may close early (413): what it answered is what counts */
                data += n;
                size -= (size_t) n;
        }
}

/* Reads one response: returns the status code and copies the body (NUL-terminated). */
static int read_response(int fd, char *body, size_t body_max) {
        static char buf[65536];
        size_t have = 0, content_length = SIZE_MAX;
        char *end = NULL;
        int code;

        for (;;) {
                ssize_t n;

                if (!end && (end = memmem(buf, have, "\r\n\r\n", 4))) {
                        const char *cl = NULL;
                        for (char *p = buf; p < end; p++)
                                if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0)
                                        cl = p + 15;
                        if (cl)
                                content_length = strtoull(cl, NULL, 10);
                }
                if (end && content_length != SIZE_MAX && have >= (size_t) (end + 4 - buf) + content_length)
                        break;
                if (have >= sizeof(buf) - 1)
                        return -E2BIG;
                n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                have += (size_t) n;
        }
        buf[have] = 0;
        if (!end || sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
                return -EBADMSG;
        if (body)
                snprintf(body, body_max, "%.*s", (int) (have - (size_t) (end + 4 - buf)), end + 4);
        return code;
}

static int request(const char *raw, char *body, size_t body_max) {
        _cleanup_close_ int fd = client_connect();
        send_all(fd, raw, strlen(raw));
        return read_response(fd, body, body_max);
}

static void test_sync_answer(void) {
        char body[4096];
        _cleanup_json_ json_object *o = NULL;
        const char *s;
        int64_t i;

        ASSERT_INT_EQ(request("POST /echo?a=1&b=x%20y&a=2 HTTP/1.1\r\nHost: t\r\nX-Test: hdr\r\n"
                              "Content-Length: 5\r\nConnection: close\r\n\r\nhello", body, sizeof(body)), 200);
        ASSERT_INT_EQ(json_parse_strict(body, strlen(body), &o, NULL), 0);
        ASSERT_INT_EQ(json_get_string(o, "method", &s), 0);
        ASSERT_STREQ(s, "POST");
        ASSERT_INT_EQ(json_get_string(o, "path", &s), 0);
        ASSERT_STREQ(s, "/echo");
        ASSERT_INT_EQ(json_get_int64(o, "n_a", &i), 0);
        ASSERT_INT_EQ(i, 2);
        ASSERT_INT_EQ(json_get_string(o, "a0", &s), 0);
        ASSERT_STREQ(s, "1");
        ASSERT_INT_EQ(json_get_string(o, "b", &s), 0);
        ASSERT_STREQ(s, "x y");
        ASSERT_INT_EQ(json_get_string(o, "x_test", &s), 0);
        ASSERT_STREQ(s, "hdr");
        ASSERT_INT_EQ(json_get_string(o, "body", &s), 0);
        ASSERT_STREQ(s, "hello");
}

static void test_binary_body(void) {
        char req[256], body[4096];
        _cleanup_json_ json_object *o = NULL;
        int64_t i;
        size_t n;

        /* A NUL inside the body is kept, and the size says so. */
        n = (size_t) snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
        memcpy(req + n, "a\0b", 3);
        _cleanup_close_ int fd = client_connect();
        send_all(fd, req, n + 3);
        ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 200);
        ASSERT_INT_EQ(json_parse_strict(body, strlen(body), &o, NULL), 0);
        ASSERT_INT_EQ(json_get_int64(o, "body_size", &i), 0);
        ASSERT_INT_EQ(i, 3);
}

static void test_not_found(void) {
        char body[4096];

        ASSERT_INT_EQ(request("GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", body, sizeof(body)), 404);
        ASSERT_STREQ(body, "{\"error\":\"No such thing: /nope\",\"field\":\"path\"}");
}

static void test_body_limit(void) {
        char req[8192], body[4096];
        int n;

        /* Announced too large: refused before the body is read. */
        ASSERT_INT_EQ(request("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\nConnection: close\r\n\r\n",
                              body, sizeof(body)), 413);
        ASSERT_INT_EQ(request("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n"
                              "Connection: close\r\n\r\n", body, sizeof(body)), 413);
        /* Exactly the limit is fine. */
        n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", MAX_BODY);
        memset(req + n, 'x', MAX_BODY);
        req[n + MAX_BODY] = 0;
        ASSERT_INT_EQ(request(req, NULL, 0), 200);
        /* Chunked, no Content-Length: discarded as it comes, refused at the end. */
        n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for (int i = 0; i < 3; i++) {
                n += snprintf(req + n, sizeof(req) - (size_t) n, "200\r\n");
                memset(req + n, 'y', 0x200);
                n += 0x200;
                n += snprintf(req + n, sizeof(req) - (size_t) n, "\r\n");
        }
        n += snprintf(req + n, sizeof(req) - (size_t) n, "0\r\n\r\n");
        ASSERT_INT_EQ(request(req, body, sizeof(body)), 413);
}

static void test_suspended_answer(void) {
        char body[64];

        ASSERT_INT_EQ(request("GET /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", body, sizeof(body)), 200);
        ASSERT_STREQ(body, "later");
}

static void test_keep_alive(void) {
        static const char req[] = "GET /later HTTP/1.1\r\nHost: t\r\n\r\n";
        _cleanup_close_ int fd = client_connect();
        char body[64];

        for (int i = 0; i < 3; i++) {
                send_all(fd, req, sizeof(req) - 1);
                ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 200);
                ASSERT_STREQ(body, "later");
        }
}

static void test_many_suspended(void) {
        static const char req[] = "GET /many HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        int fds[N_CONCURRENT];
        char body[64];

        /* All sent before any is read: they wait in the server at the same time. */
        for (size_t i = 0; i < N_CONCURRENT; i++) {
                fds[i] = client_connect();
                send_all(fds[i], req, sizeof(req) - 1);
        }
        for (size_t i = 0; i < N_CONCURRENT; i++) {
                int code = read_response(fds[i], body, sizeof(body));
                close(fds[i]);
                ASSERT_INT_EQ(code, 200);
                ASSERT_STREQ(body, "later");
        }
        /* Every one was reported complete (the callback may trail the last byte a little). */
        for (int i = 0; i < 30000 && __atomic_load_n(&n_completed_many, __ATOMIC_SEQ_CST) < N_CONCURRENT; i++)
                usleep(1000);
        ASSERT_UINT_EQ(__atomic_load_n(&n_completed_many, __ATOMIC_SEQ_CST), N_CONCURRENT);
}

static void test_free_with_suspended(void) {
        char body[4096];

        /* The handler frees the server while this request waits: it must get 503, not a hang. */
        ASSERT_INT_EQ(request("GET /never HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", body, sizeof(body)), 503);
        ASSERT_TRUE(strstr(body, "shutting down"));
}

/* ---- the small server: deadlines and caps ---- */

static int64_t stat_of(const char *name) {
        _cleanup_json_ json_object *o = NULL;
        char body[4096];
        int64_t v = -1;

        /* (Not ASSERT_*: they return from void functions.) */
        if (request("GET /stats?of=tight HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", body, sizeof(body)) != 200 ||
            json_parse_strict(body, strlen(body), &o, NULL) < 0 || json_get_int64(o, name, &v) < 0) {
                fprintf(stderr, "GET /stats failed: %s\n", body);
                abort();
        }
        return v;
}

/* Waits (30 s at most) until the server closes fd: returns the seconds it took, or -1. */
static double wait_closed(int fd) {
        uint64_t start = now_usec();
        char buf[4096];

        for (;;) {
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n == 0 || (n < 0 && errno == ECONNRESET))
                        return (double) (now_usec() - start) / USEC_PER_SEC;
                if (n < 0)
                        return -1;      /* SO_RCVTIMEO: never closed */
        }
}

static void wait_tight_idle(void) {
        /* Closing is asynchronous: the server notices on its next turn. */
        for (int i = 0; i < 3000 && stat_of("connections") != 0; i++)
                usleep(10000);
        ASSERT_INT_EQ(stat_of("connections"), 0);
}

static void test_header_deadline(void) {
        static const char part[] = "GET /echo HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        _cleanup_close_ int idle = client_connect_from(tight_port, 2);
        _cleanup_close_ int trickle = client_connect_from(tight_port, 2);
        int64_t before = stat_of("header_timeouts");

        /* One sends half its headers and stops; the other keeps sending a byte every 100 ms, which
         * an inactivity timeout alone would never end. Both are closed after the 1 s deadline. */
        send_all(idle, part, sizeof(part) - 1);
        send_all(trickle, part, sizeof(part) - 1);
        for (int i = 0; i < 300; i++) {
                struct pollfd p = { .fd = trickle, .events = POLLIN };
                if (send(trickle, "x", 1, MSG_NOSIGNAL) != 1 || poll(&p, 1, 100) != 0)
                        break;
        }
        ASSERT_TRUE(wait_closed(trickle) >= 0);
        ASSERT_TRUE(wait_closed(idle) >= 0);
        ASSERT_TRUE(stat_of("header_timeouts") >= before + 2);
        wait_tight_idle();
}

static void test_body_deadline(void) {
        static const char req[] = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-some";
        _cleanup_close_ int fd = client_connect_from(tight_port, 2);
        int64_t before = stat_of("body_timeouts");

        send_all(fd, req, sizeof(req) - 1);
        ASSERT_TRUE(wait_closed(fd) >= 0);
        ASSERT_INT_EQ(stat_of("body_timeouts"), before + 1);
        wait_tight_idle();
}

static void test_idle_deadline(void) {
        static const char req[] = "GET /later HTTP/1.1\r\nHost: t\r\n\r\n";
        _cleanup_close_ int fd = client_connect_from(tight_port, 2);
        int64_t before = stat_of("idle_timeouts");
        char body[64];

        /* Answered, kept alive, then left idle: closed after the 1 s idle deadline. */
        send_all(fd, req, sizeof(req) - 1);
        ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 200);
        ASSERT_TRUE(wait_closed(fd) >= 0);
        ASSERT_INT_EQ(stat_of("idle_timeouts"), before + 1);
        wait_tight_idle();
}

static void test_per_address_cap(void) {
        static const char part[] = "GET /echo HTTP/1.1\r\n";
        int fds[TIGHT_PER_ADDRESS];
        int64_t before = stat_of("refused_address");
        char body[256];

        for (size_t i = 0; i < TIGHT_PER_ADDRESS; i++) {
                fds[i] = client_connect_from(tight_port, 3);
                send_all(fds[i], part, sizeof(part) - 1);
        }
        /* One more from that address is answered 429 before it sends anything... */
        {
                _cleanup_close_ int fd = client_connect_from(tight_port, 3);
                ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 429);
        }
        ASSERT_INT_EQ(stat_of("refused_address"), before + 1);
        /* ... while another address is served. */
        {
                _cleanup_close_ int fd = client_connect_from(tight_port, 4);
                static const char req[] = "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                send_all(fd, req, sizeof(req) - 1);
                ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 200);
        }
        for (size_t i = 0; i < TIGHT_PER_ADDRESS; i++)
                close(fds[i]);
        wait_tight_idle();
}

static void test_global_cap_evicts_oldest(void) {
        static const char part[] = "GET /echo HTTP/1.1\r\n";
        static const char req[] = "GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        int fds[TIGHT_MAX];
        int64_t before = stat_of("evicted");
        char body[256];

        /* The cap filled by connections that sent half a request, from several addresses. */
        for (size_t i = 0; i < TIGHT_MAX; i++) {
                fds[i] = client_connect_from(tight_port, (uint8_t) (10 + i / 2));
                send_all(fds[i], part, sizeof(part) - 1);
                usleep(20000);          /* accepted in this order */
        }
        for (int i = 0; i < 3000 && stat_of("connections") < TIGHT_MAX; i++)
                usleep(10000);
        /* A new client is served: the oldest waiting connection made room for it. */
        {
                _cleanup_close_ int fd = client_connect_from(tight_port, 20);
                send_all(fd, req, sizeof(req) - 1);
                ASSERT_INT_EQ(read_response(fd, body, sizeof(body)), 200);
        }
        ASSERT_TRUE(wait_closed(fds[0]) >= 0);
        ASSERT_INT_EQ(stat_of("evicted"), before + 1);
        for (size_t i = 0; i < TIGHT_MAX; i++)
                close(fds[i]);
        wait_tight_idle();
}

static void *client_main(void *arg) {
        RUN_TEST(test_sync_answer);
        RUN_TEST(test_binary_body);
        RUN_TEST(test_not_found);
        RUN_TEST(test_body_limit);
        RUN_TEST(test_suspended_answer);
        RUN_TEST(test_keep_alive);
        RUN_TEST(test_many_suspended);
        RUN_TEST(test_header_deadline);
        RUN_TEST(test_body_deadline);
        RUN_TEST(test_idle_deadline);
        RUN_TEST(test_per_address_cap);
        RUN_TEST(test_global_cap_evicts_oldest);
        RUN_TEST(test_free_with_suspended); /* last: it frees the server */
        if (write(control_pipe[1], "q", 1) != 1)
                abort();
        return NULL;
}

int main(void) {
        HttpServerConfig config = { .max_body = MAX_BODY, .max_connections_per_address = 4 * N_CONCURRENT };
        HttpServerConfig tight_config = {
                .max_body = MAX_BODY,
                .max_connections = TIGHT_MAX,
                .max_connections_per_address = TIGHT_PER_ADDRESS,
                .header_timeout_usec = USEC_PER_SEC,
                .body_timeout_usec = USEC_PER_SEC,
                .idle_timeout_usec = USEC_PER_SEC,
        };
        struct sockaddr_in sa;
        socklen_t salen = sizeof(sa);
        pthread_t client;
        int fd, r;

        log_set_target(LOG_TARGET_CONSOLE);
        if (getenv("DEBUG"))
                log_set_max_level(LOG_DEBUG);
        if (sd_event_new(&event) < 0 || pipe2(control_pipe, O_CLOEXEC) < 0)
                return 2;
        fd = daemon_listen_tcp("127.0.0.1", 0);
        if (fd < 0 || getsockname(fd, (struct sockaddr *) &sa, &salen) < 0)
                return 2;
        port = ntohs(sa.sin_port);
        r = http_server_new(event, &fd, 1, &config, handler, completed, NULL, &server);
        if (r < 0)
                return 2;
        salen = sizeof(sa);
        fd = daemon_listen_tcp("127.0.0.1", 0);
        if (fd < 0 || getsockname(fd, (struct sockaddr *) &sa, &salen) < 0)
                return 2;
        tight_port = ntohs(sa.sin_port);
        r = http_server_new(event, &fd, 1, &tight_config, handler, completed, NULL, &tight);
        if (r < 0)
                return 2;
        if (sd_event_add_io(event, NULL, control_pipe[0], EPOLLIN, on_control, NULL) < 0)
                return 2;

        if (pthread_create(&client, NULL, client_main, NULL) != 0)
                return 2;
        r = sd_event_loop(event);
        pthread_join(client, NULL);
        if (r < 0) {
                fprintf(stderr, "event loop failed: %s\n", strerror(-r));
                return 2;
        }
        server = http_server_free(server);
        tight = http_server_free(tight);
        close(control_pipe[0]);
        close(control_pipe[1]);
        event = sd_event_unref(event);
        return TESTS_DONE();
}
