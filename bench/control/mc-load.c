/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-load: the load generator of the mc-control benchmark. N keep-alive HTTP/1.1 connections on one
 * thread (epoll), each sending the same request again as soon as the answer to the last one arrived.
 *
 * Written instead of using wrk because the benchmark needs exact counts: when the time is up every
 * connection stops sending but still waits for the answer to the request it has in flight, so the
 * number of 201s it reports can be compared with the rows in the database (wrk drops what is in flight
 * at the end). It also stops a connection at a given status (a claimer stops at its first 204: the
 * queue is empty) and can save the bodies of the answers (to check which tasks were claimed).
 *
 * "{i}" in the body and in headers is replaced by the connection's number (0..N-1), so each connection
 * can be another agent. Prints one JSON object: counts by status, rate, latency percentiles. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define MAX_STATUS 600

typedef struct Conn {
        unsigned index;
        int fd;
        char *request;
        size_t request_len, request_sent;
        char *buf;
        size_t buf_len, buf_size;
        uint64_t sent_usec;
        bool in_flight;
        bool done;
} Conn;

typedef struct Options {
        const char *host;
        unsigned port;
        const char *method;
        const char *path;
        const char *body_file;
        const char *headers[MAX_HEADERS];
        unsigned n_headers;
        unsigned connections;
        double duration_sec;
        uint64_t max_requests;
        unsigned stop_status;
        const char *bodies_file;
} Options;

static Options arg = {
        .host = "127.0.0.1",
        .method = "POST",
        .path = "/",
        .connections = 1,
};

static uint64_t status_count[MAX_STATUS];
static uint64_t n_errors, n_sent, n_done;
static uint32_t *latencies;     /* microseconds, one per answer */
static size_t n_latencies, latencies_size;
static FILE *bodies;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void *xrealloc(void *p, size_t size) {
        void *q = realloc(p, size);

        if (!q) {
                fprintf(stderr, "mc-load: out of memory\n");
                exit(EXIT_FAILURE);
        }
        return q;
}

/* Replaces every "{i}" in s with n; returns a new string. */
static char *substitute(const char *s, unsigned n) {
        char num[16], *out;
        size_t len = 0, size = strlen(s) * 2 + 64;
        int k = snprintf(num, sizeof(num), "%u", n);

        out = xrealloc(NULL, size);
        for (const char *p = s; *p;) {
                if (len + (size_t) k + 2 > size)
                        out = xrealloc(out, size *= 2);
                if (strncmp(p, "{i}", 3) == 0) {
                        memcpy(out + len, num, (size_t) k);
                        len += (size_t) k;
                        p += 3;
                } else
                        out[len++] = *p++;
        }
        out[len] = 0;
        return out;
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *s = NULL;
        size_t len = 0, size = 0, n;

        if (!f) {
                fprintf(stderr, "mc-load: %s: %s\n", path, strerror(errno));
                exit(EXIT_FAILURE);
        }
        do {
                if (size - len < 4096)
                        s = xrealloc(s, size = size * 2 + 4096);
                n = fread(s + len, 1, size - len - 1, f);
                len += n;
        } while (n > 0);
        fclose(f);
        s[len] = 0;
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
                s[--len] = 0;
        return s;
}

static void build_request(Conn *c, const char *body_template) {
        char *body = substitute(body_template ?: "", c->index), *req;
        size_t body_len = strlen(body), size = body_len + 4096;
        int n;

        req = xrealloc(NULL, size);
        n = snprintf(req, size, "%s %s HTTP/1.1\r\nHost: %s:%u\r\n", arg.method, arg.path, arg.host, arg.port);
        for (unsigned i = 0; i < arg.n_headers; i++) {
                char *h = substitute(arg.headers[i], c->index);
                n += snprintf(req + n, size - (size_t) n, "%s\r\n", h);
                free(h);
        }
        if (body_template)
                n += snprintf(req + n, size - (size_t) n, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
                              body_len);
        n += snprintf(req + n, size - (size_t) n, "\r\n");
        if ((size_t) n + body_len >= size) {
                fprintf(stderr, "mc-load: headers too long\n");
                exit(EXIT_FAILURE);
        }
        memcpy(req + n, body, body_len);
        c->request = req;
        c->request_len = (size_t) n + body_len;
        free(body);
}

static int conn_open(Conn *c, int epfd) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) arg.port) };
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        int one = 1;

        if (inet_pton(AF_INET, arg.host, &sa.sin_addr) != 1) {
                fprintf(stderr, "mc-load: %s is not an IPv4 address\n", arg.host);
                exit(EXIT_FAILURE);
        }
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return -errno;
        (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* Blocking connect on loopback: done before the clock starts, or at once on a reconnect. */
        if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(c->fd);
                c->fd = -1;
                return r;
        }
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                return -errno;
        c->buf_len = 0;
        return 0;
}

static void conn_close(Conn *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

static int conn_send(Conn *c, int epfd) {
        struct epoll_event ev = { .data.ptr = c };
        ssize_t n;

        if (!c->in_flight) {
                c->in_flight = true;
                c->request_sent = 0;
                c->sent_usec = now_usec();
                n_sent++;
        }
        while (c->request_sent < c->request_len) {
                n = send(c->fd, c->request + c->request_sent, c->request_len - c->request_sent, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN) {
                                ev.events = EPOLLIN | EPOLLOUT;
                                return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
                        }
                        return -errno;
                }
                c->request_sent += (size_t) n;
        }
        ev.events = EPOLLIN;
        return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
}

/* Returns the length of the complete answer at the start of buf, 0 if it is not complete yet, or -1 if
 * it cannot be parsed. */
static ssize_t parse_answer(const char *buf, size_t len, unsigned *ret_status, size_t *ret_body_offset) {
        const char *end, *line;
        size_t header_len, content_length = SIZE_MAX;
        unsigned status;

        end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end)
                return 0;
        header_len = (size_t) (end - buf) + 4;
        if (sscanf(buf, "HTTP/1.%*1d %3u", &status) != 1)
                return -1;
        for (line = memchr(buf, '\n', header_len); line && line < end; line = memchr(line, '\n', (size_t) (end - line))) {
                line++;
                if (strncasecmp(line, "Content-Length:", 15) == 0) {
                        content_length = strtoul(line + 15, NULL, 10);
                        break;
                }
        }
        if (content_length == SIZE_MAX) {
                if (status == 204 || status == 304 || (status >= 100 && status < 200))
                        content_length = 0;
                else
                        return -1; /* chunked or close-delimited: the server under test uses neither */
        }
        if (len < header_len + content_length)
                return 0;
        *ret_status = status;
        *ret_body_offset = header_len;
        return (ssize_t) (header_len + content_length);
}

static bool should_stop(uint64_t deadline_usec) {
        if (deadline_usec && now_usec() >= deadline_usec)
                return true;
        if (arg.max_requests && n_sent >= arg.max_requests)
                return true;
        return false;
}

static void finish_conn(Conn *c) {
        c->done = true;
        n_done++;
        conn_close(c);
}

/* Reads what arrived; on a complete answer records it and sends the next request (or stops). */
static void conn_readable(Conn *c, int epfd, uint64_t deadline_usec) {
        for (;;) {
                ssize_t n, answer_len;
                unsigned status = 0;
                size_t body_offset = 0;

                if (c->buf_size - c->buf_len < 16384)
                        c->buf = xrealloc(c->buf, c->buf_size = c->buf_size * 2 + 65536);
                n = recv(c->fd, c->buf + c->buf_len, c->buf_size - c->buf_len - 1, MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        /* The server closed the connection (or it broke): count the request in flight as an
                         * error and carry on with a new connection. */
                        n_errors++;
                        c->in_flight = false;
                        conn_close(c);
                        if (should_stop(deadline_usec) || conn_open(c, epfd) < 0 || conn_send(c, epfd) < 0)
                                finish_conn(c);
                        return;
                }
                c->buf_len += (size_t) n;
                c->buf[c->buf_len] = 0;

                answer_len = parse_answer(c->buf, c->buf_len, &status, &body_offset);
                if (answer_len < 0) {
                        fprintf(stderr, "mc-load: cannot parse an answer: %.200s\n", c->buf);
                        exit(EXIT_FAILURE);
                }
                if (answer_len == 0)
                        continue;

                if (status < MAX_STATUS)
                        status_count[status]++;
                if (n_latencies == latencies_size)
                        latencies = xrealloc(latencies, (latencies_size = latencies_size * 2 + 65536) * sizeof(uint32_t));
                latencies[n_latencies++] = (uint32_t) (now_usec() - c->sent_usec);
                if (bodies && status >= 200 && status < 300 && (size_t) answer_len > body_offset)
                        fprintf(bodies, "%.*s\n", (int) ((size_t) answer_len - body_offset), c->buf + body_offset);
                c->in_flight = false;
                c->buf_len = 0; /* no pipelining: nothing follows the answer */

                if ((arg.stop_status && status == arg.stop_status) || should_stop(deadline_usec)) {
                        finish_conn(c);
                        return;
                }
                if (conn_send(c, epfd) < 0) {
                        n_errors++;
                        finish_conn(c);
                }
                return;
        }
}

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
        return x < y ? -1 : x > y;
}

static double percentile_ms(double p) {
        size_t i;

        if (n_latencies == 0)
                return 0;
        i = (size_t) (p / 100.0 * (double) (n_latencies - 1) + 0.5);
        return latencies[i] / 1000.0;
}

static void usage(void) {
        printf("mc-load [OPTIONS]\n"
               "  --host=ADDR          IPv4 address (127.0.0.1)\n"
               "  --port=PORT\n"
               "  --method=METHOD      (POST)\n"
               "  --path=PATH\n"
               "  --body-file=FILE     request body; {i} is replaced by the connection number\n"
               "  --header='K: V'      extra header, {i} replaced likewise (repeatable)\n"
               "  --connections=N      concurrent keep-alive connections (1)\n"
               "  --duration=SEC       stop sending after SEC seconds\n"
               "  --requests=N         stop sending after N requests in all\n"
               "  --stop-status=CODE   a connection stops at its first answer with CODE\n"
               "  --bodies=FILE        write the body of every 2xx answer to FILE, one a line\n");
}

static void parse_args(int argc, char *argv[]) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "host", required_argument, NULL, 'H' },
                { "port", required_argument, NULL, 'p' },
                { "method", required_argument, NULL, 'm' },
                { "path", required_argument, NULL, 'P' },
                { "body-file", required_argument, NULL, 'b' },
                { "header", required_argument, NULL, 'e' },
                { "connections", required_argument, NULL, 'c' },
                { "duration", required_argument, NULL, 'd' },
                { "requests", required_argument, NULL, 'n' },
                { "stop-status", required_argument, NULL, 's' },
                { "bodies", required_argument, NULL, 'o' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage();
                        exit(EXIT_SUCCESS);
                case 'H':
                        arg.host = optarg;
                        break;
                case 'p':
                        arg.port = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'm':
                        arg.method = optarg;
                        break;
                case 'P':
                        arg.path = optarg;
                        break;
                case 'b':
                        arg.body_file = optarg;
                        break;
                case 'e':
                        if (arg.n_headers == MAX_HEADERS) {
                                fprintf(stderr, "mc-load: too many headers\n");
                                exit(EXIT_FAILURE);
                        }
                        arg.headers[arg.n_headers++] = optarg;
                        break;
                case 'c':
                        arg.connections = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'd':
                        arg.duration_sec = strtod(optarg, NULL);
                        break;
                case 'n':
                        arg.max_requests = strtoull(optarg, NULL, 10);
                        break;
                case 's':
                        arg.stop_status = (unsigned) strtoul(optarg, NULL, 10);
                        break;
                case 'o':
                        arg.bodies_file = optarg;
                        break;
                default:
                        exit(EXIT_FAILURE);
                }
        if (arg.port == 0 || arg.connections == 0 ||
            (arg.duration_sec <= 0 && arg.max_requests == 0 && arg.stop_status == 0)) {
                fprintf(stderr, "mc-load: need --port, --connections >= 1, and one of --duration, --requests, "
                                "--stop-status\n");
                exit(EXIT_FAILURE);
        }
}

int main(int argc, char *argv[]) {
        struct epoll_event events[64];
        char *body = NULL;
        uint64_t start, end, deadline = 0, last = 0;
        Conn *conns;
        int epfd;
        double elapsed;

        parse_args(argc, argv);
        if (arg.body_file)
                body = read_file(arg.body_file);
        if (arg.bodies_file) {
                bodies = fopen(arg.bodies_file, "we");
                if (!bodies) {
                        fprintf(stderr, "mc-load: %s: %s\n", arg.bodies_file, strerror(errno));
                        return EXIT_FAILURE;
                }
        }

        epfd = epoll_create1(EPOLL_CLOEXEC);
        conns = calloc(arg.connections, sizeof(Conn));
        if (epfd < 0 || !conns) {
                perror("mc-load");
                return EXIT_FAILURE;
        }
        for (unsigned i = 0; i < arg.connections; i++) {
                int r;

                conns[i].index = i;
                conns[i].fd = -1;
                build_request(conns + i, body);
                r = conn_open(conns + i, epfd);
                if (r < 0) {
                        fprintf(stderr, "mc-load: cannot connect to %s:%u: %s\n", arg.host, arg.port, strerror(-r));
                        return EXIT_FAILURE;
                }
        }

        start = now_usec();
        if (arg.duration_sec > 0)
                deadline = start + (uint64_t) (arg.duration_sec * 1e6);
        for (unsigned i = 0; i < arg.connections; i++) {
                if (should_stop(deadline)) {
                        finish_conn(conns + i);
                        continue;
                }
                if (conn_send(conns + i, epfd) < 0) {
                        n_errors++;
                        finish_conn(conns + i);
                }
        }

        while (n_done < arg.connections) {
                int n = epoll_wait(epfd, events, (int) (sizeof(events) / sizeof(events[0])), 1000);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        perror("mc-load: epoll_wait");
                        return EXIT_FAILURE;
                }
                for (int i = 0; i < n; i++) {
                        Conn *c = events[i].data.ptr;

                        if (c->done)
                                continue;
                        if (events[i].events & EPOLLOUT) {
                                if (conn_send(c, epfd) < 0) {
                                        n_errors++;
                                        finish_conn(c);
                                        continue;
                                }
                        }
                        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                conn_readable(c, epfd, deadline);
                }
                last = now_usec();
        }
        end = n_latencies > 0 ? last : now_usec();
        elapsed = (double) (end - start) / 1e6;

        if (bodies && fclose(bodies) != 0) {
                perror("mc-load: writing bodies");
                return EXIT_FAILURE;
        }

        qsort(latencies, n_latencies, sizeof(uint32_t), cmp_u32);
        printf("{\"connections\": %u, \"elapsed_s\": %.4f, \"answers\": %zu, \"errors\": %" PRIu64
               ", \"rate\": %.1f, \"status\": {",
               arg.connections, elapsed, n_latencies, n_errors, elapsed > 0 ? (double) n_latencies / elapsed : 0.0);
        for (unsigned s = 0, first = 1; s < MAX_STATUS; s++)
                if (status_count[s] > 0) {
                        printf("%s\"%u\": %" PRIu64, first ? "" : ", ", s, status_count[s]);
                        first = 0;
                }
        {
                double sum = 0;
                for (size_t i = 0; i < n_latencies; i++)
                        sum += latencies[i];
                printf("}, \"latency_ms\": {\"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}}\n",
                       n_latencies ? sum / (double) n_latencies / 1000.0 : 0.0, percentile_ms(50), percentile_ms(90),
                       percentile_ms(99), n_latencies ? latencies[n_latencies - 1] / 1000.0 : 0.0);
        }
        for (unsigned i = 0; i < arg.connections; i++) {
                conn_close(conns + i);
                free(conns[i].request);
                free(conns[i].buf);
        }
        free(conns);
        free(body);
        free(latencies);
        close(epfd);
        return n_errors > 0 ? 2 : EXIT_SUCCESS;
}
