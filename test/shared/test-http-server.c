/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The HTTP server on a real sd-event loop and a real TCP socket: synchronous and suspended
 * (long-poll style) answers, body limits with and without Content-Length, keep-alive, many
 * concurrent suspended requests, and shutdown with requests still waiting. The loop runs in the main
 * thread; the tests are an HTTP client in a second thread. */

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

static sd_event *event;
static HttpServer *server;
static uint16_t port;
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

static int client_connect(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 30 };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                abort();
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                abort();
        return fd;
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

static void *client_main(void *arg) {
        RUN_TEST(test_sync_answer);
        RUN_TEST(test_binary_body);
        RUN_TEST(test_not_found);
        RUN_TEST(test_body_limit);
        RUN_TEST(test_suspended_answer);
        RUN_TEST(test_keep_alive);
        RUN_TEST(test_many_suspended);
        RUN_TEST(test_free_with_suspended); /* last: it frees the server */
        if (write(control_pipe[1], "q", 1) != 1)
                abort();
        return NULL;
}

int main(void) {
        HttpServerConfig config = { .max_body = MAX_BODY, .connection_timeout_sec = 30 };
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
        close(control_pipe[0]);
        close(control_pipe[1]);
        event = sd_event_unref(event);
        return TESTS_DONE();
}
