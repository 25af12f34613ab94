/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* curl-event against a real HTTP server (Python's http.server, over TCP and a unix socket):
 * completion, concurrency, timeouts, refused connections, streaming, cancellation from every place it
 * may happen, and requests started from callbacks.
 *
 * Usage: test-curl-event PYTHON SERVER-SCRIPT */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "curl-event.h"
#include "daemon-util.h"
#include "json-util.h"
#include "log.h"

#define ASSERT(expr)                                                                    \
        do {                                                                            \
                if (!(expr)) {                                                          \
                        fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,      \
                                __LINE__, #expr);                                       \
                        abort();                                                        \
                }                                                                       \
        } while (0)

static sd_event *event;
static CurlEvent *curl;
static char base[64];
static char sock_path[256];
static unsigned pending;

typedef struct Result {
        bool done;
        int error;
        long code;
        char *body;
        size_t size;
        bool truncated;
        char *streamed;
        size_t n_chunks;
        unsigned order;
} Result;

static unsigned completion_counter;

static void on_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        Result *res = userdata;

        ASSERT(!res->done);
        res->done = true;
        res->error = resp->error;
        res->code = resp->code;
        res->body = strndup(resp->body, resp->size);
        res->size = resp->size;
        res->truncated = resp->truncated;
        res->order = ++completion_counter;
        ASSERT(pending > 0);
        pending--;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        fprintf(stderr, "test timed out with %u requests pending\n", pending);
        abort();
}

/* Runs the loop until every started request has completed. */
static void run(void) {
        _cleanup_event_source_unref_ sd_event_source *t = NULL;

        if (pending == 0)
                return;
        ASSERT(sd_event_add_time_relative(event, &t, CLOCK_MONOTONIC, 60 * USEC_PER_SEC, 0, on_timeout, NULL) >= 0);
        /* Not sd_event_loop(): an exited loop cannot be used again. */
        while (pending > 0)
                ASSERT(sd_event_run(event, UINT64_MAX) >= 0);
}

static CurlRequest *start(const CurlRequestOptions *o, Result *res) {
        CurlRequest *req = NULL;

        ASSERT(curl_event_request(curl, o, on_done, res, &req) >= 0);
        pending++;
        return req;
}

static char *url(const char *path) {
        char *u;
        ASSERT(asprintf(&u, "%s%s", base, path) >= 0);
        return u;
}

static void result_clear(Result *r) {
        free(r->body);
        free(r->streamed);
        *r = (Result) {};
}

static void test_get(void) {
        _cleanup_free_ char *u = url("/hello");
        Result res = {};

        start(&(CurlRequestOptions) { .url = u }, &res);
        run();
        ASSERT(res.done && res.error == 0 && res.code == 200);
        ASSERT(streq(res.body, "hello"));
        result_clear(&res);
}

static void test_post_echo(void) {
        _cleanup_free_ char *u = url("/echo?x=1");
        _cleanup_json_ json_object *o = NULL;
        const char *s;
        /* Over 1 KiB, so that a forgotten "Expect:" would show as a 100-continue round. */
        char body[3000];
        Result res = {};

        memset(body, 'a', sizeof(body));
        memcpy(body, "{\"k\":\"", 6);
        memcpy(body + sizeof(body) - 2, "\"}", 2);

        start(&(CurlRequestOptions) {
                .method = "POST", .url = u, .body = body, .body_size = sizeof(body),
                .bearer_token = "sekrit", .headers = (const char *[]) { "X-Test: yes", NULL },
        }, &res);
        run();
        ASSERT(res.error == 0 && res.code == 200);
        ASSERT(json_parse_strict(res.body, res.size, &o, NULL) >= 0);
        ASSERT(json_get_string(o, "method", &s) >= 0 && streq(s, "POST"));
        ASSERT(json_get_string(o, "path", &s) >= 0 && streq(s, "/echo?x=1"));
        ASSERT(json_get_string(o, "body", &s) >= 0 && strlen(s) == sizeof(body) && strncmp(s, body, sizeof(body)) == 0);
        ASSERT(json_get_string(o, "content_type", &s) >= 0 && streq(s, "application/json"));
        ASSERT(json_get_string(o, "authorization", &s) >= 0 && streq(s, "Bearer sekrit"));
        ASSERT(json_get_string(o, "x_test", &s) >= 0 && streq(s, "yes"));
        ASSERT(json_get_string(o, "expect", &s) == -ENOENT);
        result_clear(&res);

        /* DELETE and an empty POST. */
        json_object_put(TAKE_PTR(o));
        start(&(CurlRequestOptions) { .method = "DELETE", .url = u }, &res);
        run();
        ASSERT(res.error == 0 && res.code == 200);
        ASSERT(json_parse_strict(res.body, res.size, &o, NULL) >= 0);
        ASSERT(json_get_string(o, "method", &s) >= 0 && streq(s, "DELETE"));
        result_clear(&res);
        json_object_put(TAKE_PTR(o));

        start(&(CurlRequestOptions) { .method = "POST", .url = u }, &res);
        run();
        ASSERT(res.error == 0 && res.code == 200);
        ASSERT(json_parse_strict(res.body, res.size, &o, NULL) >= 0);
        ASSERT(json_get_string(o, "method", &s) >= 0 && streq(s, "POST"));
        ASSERT(json_get_string(o, "body", &s) >= 0 && streq(s, ""));
        result_clear(&res);
}

static void test_not_found(void) {
        _cleanup_free_ char *u = url("/nope");
        Result res = {};

        start(&(CurlRequestOptions) { .url = u }, &res);
        run();
        ASSERT(res.error == 0 && res.code == 404);
        result_clear(&res);
}

/* A fast request started after slow ones finishes first: nothing waits on anything else. */
static void test_concurrent(void) {
        _cleanup_free_ char *slow = url("/slow?ms=1500"), *fast = url("/hello");
        Result slow_res[8] = {}, fast_res[40] = {};

        for (size_t i = 0; i < ELEMENTSOF(slow_res); i++)
                start(&(CurlRequestOptions) { .url = slow }, slow_res + i);
        for (size_t i = 0; i < ELEMENTSOF(fast_res); i++)
                start(&(CurlRequestOptions) { .url = fast }, fast_res + i);
        run();
        for (size_t i = 0; i < ELEMENTSOF(slow_res); i++) {
                ASSERT(slow_res[i].error == 0 && slow_res[i].code == 200 && streq(slow_res[i].body, "slow"));
                for (size_t j = 0; j < ELEMENTSOF(fast_res); j++)
                        ASSERT(fast_res[j].order < slow_res[i].order);
                result_clear(slow_res + i);
        }
        for (size_t j = 0; j < ELEMENTSOF(fast_res); j++) {
                ASSERT(fast_res[j].error == 0 && streq(fast_res[j].body, "hello"));
                result_clear(fast_res + j);
        }
}

static void test_timeout(void) {
        _cleanup_free_ char *u = url("/slow?ms=3000");
        Result res = {};

        start(&(CurlRequestOptions) { .url = u, .timeout_usec = 200 * USEC_PER_MSEC }, &res);
        run();
        ASSERT(res.error == -ETIMEDOUT && res.code == 0);
        result_clear(&res);
}

static void test_refused(void) {
        Result res = {};
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);
        char u[64];
        int fd;

        /* A port that was just free: bound, never listened on, closed. */
        fd = socket(AF_INET, SOCK_STREAM, 0);
        ASSERT(fd >= 0);
        ASSERT(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT(getsockname(fd, (struct sockaddr *) &sa, &l) == 0);
        snprintf(u, sizeof(u), "http://127.0.0.1:%u/", ntohs(sa.sin_port));
        close(fd);

        start(&(CurlRequestOptions) { .url = u }, &res);
        run();
        ASSERT(res.error == -ECONNREFUSED);
        result_clear(&res);

        /* A unix socket that does not exist. */
        start(&(CurlRequestOptions) { .url = "http://localhost/hello", .unix_socket = "/nonexistent/sock" }, &res);
        run();
        ASSERT(res.error < 0);
        result_clear(&res);
}

static void test_unix(void) {
        Result res[5] = {};

        for (size_t i = 0; i < ELEMENTSOF(res); i++)
                start(&(CurlRequestOptions) { .url = "http://localhost/hello", .unix_socket = sock_path }, res + i);
        run();
        for (size_t i = 0; i < ELEMENTSOF(res); i++) {
                ASSERT(res[i].error == 0 && res[i].code == 200 && streq(res[i].body, "hello"));
                result_clear(res + i);
        }
}

static void test_truncate(void) {
        _cleanup_free_ char *u = url("/big?bytes=100000");
        Result res = {};

        start(&(CurlRequestOptions) { .url = u, .max_body = 1000 }, &res);
        run();
        ASSERT(res.error == 0 && res.code == 200 && res.truncated && res.size == 1000);
        result_clear(&res);

        start(&(CurlRequestOptions) { .url = u }, &res);
        run();
        ASSERT(res.error == 0 && !res.truncated && res.size == 100000);
        result_clear(&res);
}

/* Streaming: pieces arrive as the server sends them. */
typedef struct Stream {
        Result res;
        char buf[4096];
        size_t size;
        unsigned calls;
        int cancel_after;       /* cancel from on_data after this many chunks (-1: never) */
        int fail_after;         /* return an error after this many chunks (-1: never) */
        CurlRequest *req;
} Stream;

static int on_stream_data(CurlRequest *req, const void *data, size_t size, void *userdata) {
        Stream *s = (Stream *) userdata;

        ASSERT(s->size + size < sizeof(s->buf));
        memcpy(s->buf + s->size, data, size);
        s->size += size;
        s->calls++;
        if (s->cancel_after >= 0 && s->calls >= (unsigned) s->cancel_after) {
                curl_request_cancel(req);
                ASSERT(pending > 0);
                pending--;
                s->cancel_after = -1;
        }
        if (s->fail_after >= 0 && s->calls >= (unsigned) s->fail_after)
                return -EBADMSG;
        return 0;
}

static void test_stream(void) {
        _cleanup_free_ char *u = url("/stream?n=5&ms=100");
        Stream s = { .cancel_after = -1, .fail_after = -1 };

        s.req = start(&(CurlRequestOptions) { .url = u, .on_data = on_stream_data }, &s.res);
        run();
        ASSERT(s.res.error == 0 && s.res.code == 200 && s.res.size == 0);
        s.buf[s.size] = 0;
        ASSERT(streq(s.buf, "chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\n"));
        ASSERT(s.calls >= 2); /* they came apart */
        result_clear(&s.res);

        /* An error from the data handler ends the request with that error. */
        s = (Stream) { .cancel_after = -1, .fail_after = 2 };
        s.req = start(&(CurlRequestOptions) { .url = u, .on_data = on_stream_data }, &s.res);
        run();
        ASSERT(s.res.done && s.res.error == -EBADMSG);
        result_clear(&s.res);

        /* Cancelling from inside the data handler: no completion, ever. */
        s = (Stream) { .cancel_after = 1, .fail_after = -1 };
        s.req = start(&(CurlRequestOptions) { .url = u, .on_data = on_stream_data }, &s.res);
        run();
        ASSERT(!s.res.done);
        /* Let the loop run the deferred removal; then a fresh request works. */
        {
                _cleanup_free_ char *h = url("/hello");
                Result res = {};
                start(&(CurlRequestOptions) { .url = h }, &res);
                run();
                ASSERT(res.error == 0 && streq(res.body, "hello"));
                result_clear(&res);
        }
        ASSERT(!s.res.done);
        ASSERT(curl_event_n_running(curl) == 0);
}

/* Cancelling from the loop (a timer), and cancelling one request from another one's completion. */
static CurlRequest *victim;

static int on_cancel_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        curl_request_cancel(userdata);
        pending--;
        return 0;
}

static void on_done_cancel_victim(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        curl_request_cancel(victim);
        pending--;
        on_done(req, resp, userdata);
}

static void test_cancel(void) {
        _cleanup_free_ char *slow = url("/slow?ms=2000"), *fast = url("/hello");
        _cleanup_event_source_unref_ sd_event_source *t = NULL;
        Result a = {}, b = {}, c = {};
        CurlRequest *req;

        req = start(&(CurlRequestOptions) { .url = slow }, &a);
        ASSERT(sd_event_add_time_relative(event, &t, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC, 0, on_cancel_timer, req) >= 0);
        run();
        ASSERT(!a.done);

        victim = start(&(CurlRequestOptions) { .url = slow }, &b);
        ASSERT(curl_event_request(curl, &(CurlRequestOptions) { .url = fast }, on_done_cancel_victim, &c, NULL) >= 0);
        pending++;
        run();
        ASSERT(c.done && c.error == 0 && !b.done);
        ASSERT(curl_event_n_running(curl) == 0);
        result_clear(&a);
        result_clear(&b);
        result_clear(&c);

        /* Cancelling a request that was just started, before the loop ran at all. */
        req = start(&(CurlRequestOptions) { .url = fast }, &a);
        curl_request_cancel(req);
        pending--;
        ASSERT(curl_event_n_running(curl) == 0);
}

/* Chains: a completion starts the next request, a data handler starts another one. */
static unsigned chain_left;

static void on_chain_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        _cleanup_free_ char *u = url("/hello");

        ASSERT(resp->error == 0 && resp->code == 200);
        if (--chain_left > 0) {
                ASSERT(curl_event_request(curl, &(CurlRequestOptions) { .url = u }, on_chain_done, NULL, NULL) >= 0);
                return;
        }
        pending--;
}

static Result from_data_res;

static int on_data_start(CurlRequest *req, const void *data, size_t size, void *userdata) {
        static bool started = false;
        _cleanup_free_ char *u = url("/hello");

        if (!started) {
                started = true;
                ASSERT(curl_event_request(curl, &(CurlRequestOptions) { .url = u }, on_done, &from_data_res, NULL) >= 0);
                pending++;
        }
        return 0;
}

static void test_chain(void) {
        _cleanup_free_ char *u = url("/hello"), *s = url("/stream?n=3&ms=50");
        Result res = {};

        chain_left = 20;
        ASSERT(curl_event_request(curl, &(CurlRequestOptions) { .url = u }, on_chain_done, NULL, NULL) >= 0);
        pending++;
        run();
        ASSERT(chain_left == 0);

        start(&(CurlRequestOptions) { .url = s, .on_data = on_data_start }, &res);
        run();
        ASSERT(res.error == 0 && from_data_res.done && from_data_res.error == 0 && streq(from_data_res.body, "hello"));
        result_clear(&res);
        result_clear(&from_data_res);
}

#define RUN_TEST(f)                                                                      \
        do {                                                                            \
                uint64_t _t = now_usec();                                               \
                f();                                                                    \
                fprintf(stderr, "%s: %" PRIu64 " ms\n", #f, (now_usec() - _t) / 1000); \
        } while (0)

int main(int argc, char *argv[]) {
        int in_pipe[2], out_pipe[2];
        char tmpdir[] = "/tmp/test-curl-event-XXXXXX";
        char port[16] = {};
        pid_t pid;
        ssize_t n;

        log_setup("test-curl-event");
        if (argc != 3) {
                fprintf(stderr, "Usage: %s PYTHON SERVER-SCRIPT\n", argv[0]);
                return 2;
        }
        ASSERT(mkdtemp(tmpdir));
        snprintf(sock_path, sizeof(sock_path), "%s/http.sock", tmpdir);

        ASSERT(pipe2(in_pipe, O_CLOEXEC) == 0 && pipe2(out_pipe, O_CLOEXEC) == 0);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                dup2(in_pipe[0], 0);
                dup2(out_pipe[1], 1);
                execl(argv[1], argv[1], argv[2], sock_path, (char *) NULL);
                _exit(127);
        }
        close(in_pipe[0]);
        close(out_pipe[1]);
        n = read(out_pipe[0], port, sizeof(port) - 1);
        ASSERT(n > 0);
        port[strcspn(port, "\n")] = 0;
        snprintf(base, sizeof(base), "http://127.0.0.1:%s", port);

        signal(SIGPIPE, SIG_IGN);
        ASSERT(sd_event_new(&event) >= 0);
        ASSERT(curl_event_new(event, &curl) >= 0);

        RUN_TEST(test_get);
        RUN_TEST(test_post_echo);
        RUN_TEST(test_not_found);
        RUN_TEST(test_concurrent);
        RUN_TEST(test_timeout);
        RUN_TEST(test_refused);
        RUN_TEST(test_unix);
        RUN_TEST(test_truncate);
        RUN_TEST(test_stream);
        RUN_TEST(test_cancel);
        RUN_TEST(test_chain);

        /* Freeing with requests still running cancels them quietly. */
        {
                _cleanup_free_ char *u = url("/slow?ms=2000");
                Result res = {};
                start(&(CurlRequestOptions) { .url = u }, &res);
                curl = curl_event_free(curl);
                ASSERT(!res.done);
        }
        sd_event_unref(event);

        close(in_pipe[1]);
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        unlink(sock_path);
        rmdir(tmpdir);
        printf("test-curl-event: all passed\n");
        return 0;
}
