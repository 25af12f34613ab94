/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP server (http-server.h): libmicrohttpd on the loop, its callbacks, the requests, setting up.
 * Accepting and the connections' deadlines are in http-connections.c, the watchdog in
 * http-watchdog.c. */

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "daemon-util.h"
#include "http-server-internal.h"
#include "log.h"

#define MAX_EXTRA_HEADERS 8

struct HttpRequest {
        HttpServer *server;
        struct MHD_Connection *connection;
        char *method;
        char *path;
        char *body;
        size_t body_size, body_allocated;
        bool too_large;
        bool dispatched;
        bool suspended;
        struct MHD_Response *response;
        unsigned code;
        bool queued;
        const char *route;
        uint64_t headers_usec;          /* CLOCK_MONOTONIC when its headers were complete */
        char *extra_headers[MAX_EXTRA_HEADERS][2];
        size_t n_extra_headers;
        /* A streamed answer (http_request_reply_stream()): in server->streams from then on. */
        bool streaming;
        bool stream_suspended;          /* the reader had nothing: waiting for http_request_stream_wake() */
        bool stream_end;
        HttpStreamRead stream_read;
        HttpStreamClosed stream_closed;
        void *stream_userdata;
        LIST_FIELDS(HttpRequest);       /* in server->suspended, then (streams) in server->streams */
};

uint64_t http_server_now(HttpServer *s) {
        uint64_t t = 0;

        if (sd_event_now(s->event, CLOCK_MONOTONIC, &t) < 0)
                t = now_usec();
        return t;
}

void http_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "?";

        if (sa && sa->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in)) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
        } else if (sa && sa->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6)) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
        } else
                snprintf(buf, size, "local");
}
/* ---- running libmicrohttpd from the loop */

/* timeout_ms: MHD_get_timeout()'s, relative. */
static void server_arm_timer(HttpServer *s, MHD_UNSIGNED_LONG_LONG timeout_ms) {
        int r;

        /* Each change of the timer's state costs a timerfd_settime() when sd-event prepares its next
         * wait: switched off and on, set to now, or moved on by a request's few microseconds (several
         * per request, a quarter of mc-control's CPU time serving one push at a time, by perf and
         * strace). So: no timeout leaves the timer as it is (an extra MHD_run() is harmless); "now" is
         * the wake defer source; a timeout of a second or more, a connection's idle limit, which need
         * not be met to the microsecond, gets an accuracy of a second, within which sd-event keeps the
         * timerfd as it is armed; a shorter one is kept exactly. */
        if (timeout_ms == 0) {
                http_server_wake(s);
                return;
        }
        (void) sd_event_source_set_time_accuracy(s->timer_source, timeout_ms >= 1000 ? USEC_PER_SEC : 1);
        /* MHD's timeout is relative, in milliseconds. */
        r = sd_event_source_set_time_relative(s->timer_source, (uint64_t) timeout_ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->timer_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm HTTP timer: %m");
}

/* After an answer a keep-alive connection wants two more passes of MHD_run() at once (its timeout is 0:
 * the answer's end, then the read of the next request) before it waits for the client, and each pass
 * taken from the loop (the wake source) cost a turn of sd-event: two syscalls more per request. So a
 * few passes run here in a row while libmicrohttpd has work at once; the bound keeps the loop's other
 * sources served when it always has. */
#define SERVER_RUN_PASSES 4

static void server_run(HttpServer *s) {
        MHD_UNSIGNED_LONG_LONG timeout_ms = 0;

        for (unsigned pass = 0; pass < SERVER_RUN_PASSES && timeout_ms == 0; pass++) {
                if (MHD_run(s->daemon) != MHD_YES)
                        log_debug("MHD_run() failed.");
                /* No timeout: the timer stays as it is (server_arm_timer()). */
                if (MHD_get_timeout(s->daemon, &timeout_ms) != MHD_YES)
                        return;
        }
        server_arm_timer(s, timeout_ms);
}

/* Makes the loop call MHD_run() soon. libmicrohttpd 0.9.75 creates no inter-thread channel when it
 * runs without threads of its own (MHD_USE_ITC is ignored then), so nothing wakes its epoll fd after
 * MHD_resume_connection() or MHD_add_connection(): the request would wait for unrelated traffic.
 * MHD_run() must not be called from here directly, since a reply may be given from inside another
 * request's callback. */
void http_server_wake(HttpServer *s) {
        /* A defer source rather than a zero timer: it costs no timerfd_settime() calls, which showed as
         * several per cent of the control's CPU with one asynchronous answer per request. */
        int r = sd_event_source_set_enabled(s->wake_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule the HTTP server: %m");
}

static int on_server_wake(sd_event_source *source, void *userdata) {
        server_run(userdata);
        return 0;
}

static int on_server_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        server_run(userdata);
        return 0;
}

static int on_server_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        server_run(userdata);
        return 0;
}
/* ---- libmicrohttpd's callbacks */

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        HttpServer *s = cls;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                HttpConn *c = TAKE_PTR(s->adding);

                if (c)
                        c->connection = connection;
                *socket_context = c;
                return;
        }
        http_conn_free(*socket_context);
        *socket_context = NULL;
}

/* The request line of a request has arrived. A keep-alive connection that was idle has a new request:
 * the header deadline runs from now. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *connection) {
        HttpConn *c = http_conn_of(connection);

        if (c && c->phase == CONN_IDLE)
                http_conn_set_phase(c, CONN_HEADERS);
        return NULL;
}

static void request_free(HttpRequest *r) {
        if (!r)
                return;
        if (r->response)
                MHD_destroy_response(r->response);
        for (size_t i = 0; i < r->n_extra_headers; i++) {
                free(r->extra_headers[i][0]);
                free(r->extra_headers[i][1]);
        }
        free(r->method);
        free(r->path);
        free(r->body);
        free(r);
}

static void suspended_remove(HttpRequest *r) {
        HttpServer *s = r->server;

        if (!r->suspended)
                return;
        LIST_REMOVE(s->suspended, r);
        r->suspended = false;
}

static enum MHD_Result queue_prepared_response(HttpRequest *r) {
        enum MHD_Result ret;

        http_conn_set_phase(http_conn_of(r->connection), CONN_BUSY);
        ret = MHD_queue_response(r->connection, r->code, r->response);
        MHD_destroy_response(r->response);
        r->response = NULL;
        r->queued = true;
        return ret;
}

static bool request_has_body(struct MHD_Connection *connection, const char *content_length) {
        if (content_length)
                return !streq(content_length, "0");
        return MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
        HttpServer *s = cls;
        HttpRequest *r = *con_cls;

        if (!r) {
                const char *cl;

                /* The headers are complete: now the body's deadline runs. */
                http_conn_set_phase(http_conn_of(connection), CONN_BODY);

                r = calloc(1, sizeof(HttpRequest));
                if (!r)
                        return MHD_NO;
                r->server = s;
                r->connection = connection;
                r->headers_usec = http_server_now(s);
                r->method = strdup(method);
                r->path = strdup(url);
                if (!r->method || !r->path) {
                        request_free(r);
                        return MHD_NO;
                }
                *con_cls = r;

                /* Refuse an announced oversized body before reading any of it. */
                cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl) {
                        char *end;
                        unsigned long long n;

                        errno = 0;
                        n = strtoull(cl, &end, 10);
                        if (errno != 0 || *end != 0 || n > s->config.max_body) {
                                r->too_large = true;
                                r->route = "too_large";
                                http_request_reply_error(r, 413, NULL, "Request body larger than %zu bytes.",
                                                         s->config.max_body);
                                return queue_prepared_response(r);
                        }
                }
                /* Only a request with a body is answered before it: libmicrohttpd closes the
                 * connection after an answer given this early, which a bodyless request, answered
                 * as soon as it is handled anyway, need not pay with its keep-alive. */
                if (s->headers_handler && !s->stopping && request_has_body(connection, cl)) {
                        s->headers_handler(r, s->userdata);
                        if (r->response)
                                return queue_prepared_response(r);
                }
                return MHD_YES;
        }

        if (r->response)       /* resumed with an answer, or answered synchronously */
                return queue_prepared_response(r);
        if (r->queued)
                return MHD_YES;

        if (*upload_data_size > 0) {
                size_t n = *upload_data_size;

                *upload_data_size = 0;
                if (r->too_large)
                        return MHD_YES;
                if (r->body_size + n > s->config.max_body) {
                        /* Chunked bodies have no Content-Length: keep discarding, answer at the end. */
                        r->too_large = true;
                        free(r->body);
                        r->body = NULL;
                        r->body_size = r->body_allocated = 0;
                        return MHD_YES;
                }
                if (r->body_size + n + 1 > r->body_allocated) {
                        size_t a = MAX(r->body_allocated * 2, r->body_size + n + 1);
                        char *b = realloc(r->body, a);
                        if (!b)
                                return MHD_NO;
                        r->body = b;
                        r->body_allocated = a;
                }
                memcpy(r->body + r->body_size, upload_data, n);
                r->body_size += n;
                r->body[r->body_size] = 0;
                return MHD_YES;
        }

        if (r->dispatched)
                return MHD_YES; /* spurious call while waiting */
        r->dispatched = true;
        /* Handled from now on: the application decides how long that takes (long polls). */
        http_conn_set_phase(http_conn_of(connection), CONN_BUSY);

        if (r->too_large) {
                r->route = "too_large";
                http_request_reply_error(r, 413, NULL, "Request body larger than %zu bytes.", s->config.max_body);
                return queue_prepared_response(r);
        }
        if (s->stopping) {
                http_request_reply_error(r, 503, NULL, "Server is shutting down.");
                return queue_prepared_response(r);
        }

        s->handler(r, s->userdata);

        if (r->response)
                return queue_prepared_response(r);

        /* The application answers later. */
        MHD_suspend_connection(connection);
        r->suspended = true;
        LIST_PREPEND(s->suspended, r);
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        HttpServer *s = cls;
        HttpRequest *r = *con_cls;

        /* Answered (or given up): until its next request line, the connection is idle. */
        http_conn_set_phase(http_conn_of(connection), CONN_IDLE);
        if (!r)
                return;
        *con_cls = NULL;
        if (s->completed)
                s->completed(r, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->code : 0, s->userdata);
        suspended_remove(r);
        if (r->streaming) {
                LIST_REMOVE(s->streams, r);
                s->n_streams--;
                if (r->stream_closed)
                        r->stream_closed(r->stream_userdata);
        }
        request_free(r);
}

/* Percent-decoding as MHD does it, except that an encoded NUL becomes DEL (0x7f): a NUL would cut the
 * path or value short where we can no longer see it ("/api/tasks/a%00b" would read as "/api/tasks/a"),
 * while DEL fails every syntax check, so such a request is refused instead of misread. */
static size_t unescape_without_nul(void *cls, struct MHD_Connection *c, char *s) {
        char *w = s;

        for (const char *r = s; *r; ) {
                if (r[0] == '%' && isxdigit((unsigned char) r[1]) && isxdigit((unsigned char) r[2])) {
                        char hex[3] = { r[1], r[2], 0 };
                        char v = (char) strtoul(hex, NULL, 16);
                        *w++ = v == 0 ? 0x7f : v;
                        r += 3;
                } else
                        *w++ = *r++;
        }
        *w = 0;
        return (size_t) (w - s);
}

static void on_mhd_log(void *arg, const char *fmt, va_list ap) {
        char buf[512];
        vsnprintf(buf, sizeof(buf), fmt, ap);
        buf[strcspn(buf, "\n")] = 0;
        log_debug("microhttpd: %s", buf);
}
/* ---- setting up and tearing down */

static int listener_init(HttpServer *s, HttpListener *l, int fd) {
        int flags, r;

        l->server = s;
        l->fd = fd;
        l->probe_fd = -1;
        /* Sockets passed by systemd come blocking: accept() would then wait inside the loop. */
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return log_error_errno(errno, "Failed to make the HTTP socket non-blocking: %m");
        r = sd_event_add_io(s->event, &l->source, fd, EPOLLIN, http_on_accept, l);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the HTTP socket: %m");
        (void) sd_event_source_set_description(l->source, "http-accept");
        return 0;
}

static uint64_t server_longest_deadline_usec(HttpServer *s) {
        return MAX(MAX(s->config.header_timeout_usec, s->config.body_timeout_usec), s->config.idle_timeout_usec);
}

static int server_start_mhd(HttpServer *s) {
        /* HTTPS: what tls-server.c adds (certificate callback, TLS versions, client CA); plain HTTP: nothing. */
        struct MHD_OptionItem tls_options[TLS_SERVER_MHD_OPTIONS_MAX] = { { MHD_OPTION_END, 0, NULL } };
        const union MHD_DaemonInfo *info;
        int r;

        if (s->config.tls)
                tls_server_mhd_options(s->config.tls, tls_options);
        s->daemon = MHD_start_daemon(
                /* We accept connections ourselves (server_take()): libmicrohttpd's own accepting stops
                 * at its connection limit and lets the backlog fill, and in 0.9.75 it then also left
                 * connections that clients had closed unnoticed until its timeout. */
                MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                (s->config.tls ? MHD_USE_TLS : 0),
                0, NULL, NULL,
                on_access, s,
                /* First, so that MHD logs nothing of its own before it knows where to. */
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                MHD_OPTION_URI_LOG_CALLBACK, on_request_line, s,
                MHD_OPTION_UNESCAPE_CALLBACK, unescape_without_nul, NULL,
                /* Inactivity while an answer is sent: our deadlines cover the request, and must be
                 * the ones that end it (they are counted and logged), so this one is longer. */
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) (server_longest_deadline_usec(s) / USEC_PER_SEC + 1),
                /* Ours is the cap; libmicrohttpd's must only never be the one reached. */
                MHD_OPTION_CONNECTION_LIMIT, s->config.max_connections + 2 * ACCEPT_BURST,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
                MHD_OPTION_ARRAY, tls_options,
                MHD_OPTION_END);
        if (!s->daemon)
                return log_error_errno(EINVAL, "Failed to start the HTTP server.");

        info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return log_error_errno(EINVAL, "libmicrohttpd gave no epoll fd.");

        r = sd_event_add_io(s->event, &s->io_source, info->epoll_fd, EPOLLIN, on_server_io, s);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the HTTP server: %m");
        (void) sd_event_source_set_description(s->io_source, "http-io");

        /* Created disarmed; server_arm_timer() sets it from MHD's timeout. (A relative time of
         * UINT64_MAX would be refused with EOVERFLOW.) Accuracy 1 µs: the default (0) lets sd-event
         * coalesce it by up to 250 ms, which http_server_wake() would add to every suspended answer. */
        r = sd_event_add_time(s->event, &s->timer_source, CLOCK_MONOTONIC, 0, 1, on_server_timer, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP timer: %m");
        (void) sd_event_source_set_description(s->timer_source, "http-timer");
        r = sd_event_source_set_enabled(s->timer_source, SD_EVENT_OFF);
        if (r < 0)
                return log_error_errno(r, "Failed to disarm the HTTP timer: %m");
        r = sd_event_add_defer(s->event, &s->wake_source, on_server_wake, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP wake source: %m");
        (void) sd_event_source_set_description(s->wake_source, "http-wake");
        (void) sd_event_source_set_enabled(s->wake_source, SD_EVENT_OFF);

        /* Deadlines need no precision: coalesced within 100 ms. */
        r = sd_event_add_time(s->event, &s->deadline_source, CLOCK_MONOTONIC, 0, 100 * USEC_PER_MSEC, http_on_deadline, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP deadline timer: %m");
        (void) sd_event_source_set_description(s->deadline_source, "http-deadlines");
        (void) sd_event_source_set_enabled(s->deadline_source, SD_EVENT_OFF);
        r = sd_event_add_time(s->event, &s->accept_pause_source, CLOCK_MONOTONIC, 0, 0, http_on_accept_resume, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP accept timer: %m");
        (void) sd_event_source_set_enabled(s->accept_pause_source, SD_EVENT_OFF);
        return 0;
}

static int server_check_config(HttpServer *s) {
        struct rlimit rl;

        if (s->config.max_body == 0)
                s->config.max_body = 1024 * 1024;
        if (s->config.max_connections == 0)
                s->config.max_connections = http_default_max_connections();
        if (s->config.max_connections_per_address == 0)
                s->config.max_connections_per_address = HTTP_DEFAULT_MAX_PER_ADDRESS;
        if (s->config.header_timeout_usec == 0)
                s->config.header_timeout_usec = HTTP_DEFAULT_HEADER_TIMEOUT_SEC * USEC_PER_SEC;
        if (s->config.body_timeout_usec == 0)
                s->config.body_timeout_usec = HTTP_DEFAULT_BODY_TIMEOUT_SEC * USEC_PER_SEC;
        if (s->config.idle_timeout_usec == 0)
                s->config.idle_timeout_usec = HTTP_DEFAULT_IDLE_TIMEOUT_SEC * USEC_PER_SEC;

        /* Every connection is a descriptor, and so is each evicted one until it is closed: the cap
         * plus a burst must leave room for the rest of the daemon. */
        if (getrlimit(RLIMIT_NOFILE, &rl) >= 0 && rl.rlim_cur != RLIM_INFINITY &&
            (rlim_t) s->config.max_connections + ACCEPT_BURST + HTTP_RESERVED_FDS > rl.rlim_cur)
                return log_error_errno(EINVAL, "HTTP_MAX_CONNECTIONS=%u does not fit in this process's descriptor limit "
                                       "(RLIMIT_NOFILE=%llu, of which %u are kept for the rest of the daemon and %u for "
                                       "connections being closed): lower it, or raise LimitNOFILE=.",
                                       s->config.max_connections, (unsigned long long) rl.rlim_cur,
                                       HTTP_RESERVED_FDS, ACCEPT_BURST);
        s->config.max_connections_per_address = MIN(s->config.max_connections_per_address, s->config.max_connections);

        s->timeouts[CONN_HEADERS] = s->config.header_timeout_usec;
        s->timeouts[CONN_BODY] = s->config.body_timeout_usec;
        s->timeouts[CONN_IDLE] = s->config.idle_timeout_usec;
        s->timeouts[CONN_BUSY] = 0;
        s->stats.max_connections = s->config.max_connections;
        s->stats.max_connections_per_address = s->config.max_connections_per_address;
        return 0;
}

int http_server_new(sd_event *e, const int *listen_fds, size_t n_fds, const HttpServerConfig *config,
                    HttpHandler handler, HttpCompleted completed, void *userdata, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        size_t taken = 0;
        int r;

        if (n_fds == 0)
                return log_error_errno(EINVAL, "No socket to serve HTTP on.");

        s = calloc(1, sizeof(HttpServer));
        if (!s) {
                r = log_oom();
                goto fail;
        }
        s->event = sd_event_ref(e);
        s->config = *config;
        s->spare_fd = -1;
        s->handler = handler;
        s->completed = completed;
        s->userdata = userdata;
        s->listeners = calloc(n_fds, sizeof(HttpListener));
        if (!s->listeners) {
                r = log_oom();
                goto fail;
        }
        for (size_t i = 0; i < n_fds; i++)
                s->listeners[i].fd = s->listeners[i].probe_fd = -1;
        s->n_listeners = n_fds;
        for (; taken < n_fds; taken++) {
                r = listener_init(s, s->listeners + taken, listen_fds[taken]);
                if (r < 0) {
                        taken++;        /* this one is the listener's now */
                        goto fail;
                }
        }

        r = server_check_config(s);
        if (r < 0)
                return r;
        r = address_table_new(s->config.max_connections, &s->addresses);
        if (r < 0)
                return log_oom();
        s->spare_fd = daemon_spare_fd();
        if (s->spare_fd < 0)
                return log_error_errno(s->spare_fd, "Failed to open /dev/null: %m");
        r = server_start_mhd(s);
        if (r < 0)
                return r;
        log_debug("HTTP: at most %u connections, %u per address; deadlines %" PRIu64 " s for headers, %" PRIu64
                  " s for a body, %" PRIu64 " s idle.", s->config.max_connections, s->config.max_connections_per_address,
                  s->config.header_timeout_usec / USEC_PER_SEC, s->config.body_timeout_usec / USEC_PER_SEC,
                  s->config.idle_timeout_usec / USEC_PER_SEC);
        *ret = TAKE_PTR(s);
        return 0;

fail:
        for (size_t i = taken; i < n_fds; i++)
                close(listen_fds[i]);
        return r;
}

void http_server_set_headers_handler(HttpServer *s, HttpHandler headers) {
        assert(s);
        s->headers_handler = headers;
}

void http_server_set_stopping(HttpServer *s) {
        if (s)
                s->stopping = true;
}

void http_server_get_stats(const HttpServer *s, HttpServerStats *ret) {
        assert(s);
        assert(ret);
        *ret = s->stats;
        ret->connections = s->n_conns;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;

        /* MHD refuses to stop with suspended connections: answer them first, and end the streams (the
         * application hears nothing more of them). */
        s->stopping = true;
        while (s->suspended) {
                HttpRequest *r = s->suspended;
                suspended_remove(r);
                if (!r->response)
                        http_request_reply_error(r, 503, NULL, "Server is shutting down.");
                MHD_resume_connection(r->connection);
        }
        for (HttpRequest *r = s->streams; r; r = r->next) {
                r->stream_read = NULL;
                r->stream_closed = NULL;
                r->stream_end = true;
                if (r->stream_suspended) {
                        r->stream_suspended = false;
                        MHD_resume_connection(r->connection);
                }
        }
        if (s->daemon) {
                (void) MHD_run(s->daemon);
                MHD_stop_daemon(s->daemon);     /* tells on_connection() of every connection closed */
        }
        sd_event_source_disable_unref(s->io_source);
        sd_event_source_disable_unref(s->timer_source);
        sd_event_source_disable_unref(s->wake_source);
        sd_event_source_disable_unref(s->deadline_source);
        sd_event_source_disable_unref(s->accept_pause_source);
        sd_event_source_disable_unref(s->watchdog_source);
        for (size_t i = 0; i < s->n_listeners; i++) {
                HttpListener *l = s->listeners + i;
                sd_event_source_disable_unref(l->source);
                safe_close(l->fd);
                safe_close(l->probe_fd);
        }
        free(s->listeners);
        address_table_free(s->addresses);
        safe_close(s->spare_fd);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

const char *http_request_method(HttpRequest *r) {
        return r->method;
}

const char *http_request_path(HttpRequest *r) {
        return r->path;
}

const char *http_request_query(HttpRequest *r, const char *key) {
        return MHD_lookup_connection_value(r->connection, MHD_GET_ARGUMENT_KIND, key);
}

typedef struct QueryCollect {
        const char *key;
        const char **values;
        size_t n, max;
} QueryCollect;

static enum MHD_Result collect_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        QueryCollect *c = cls;

        if (key && streq(key, c->key) && c->n < c->max)
                c->values[c->n++] = value ?: "";
        return MHD_YES;
}

size_t http_request_query_all(HttpRequest *r, const char *key, const char **values, size_t max) {
        QueryCollect c = { .key = key, .values = values, .max = max };
        MHD_get_connection_values(r->connection, MHD_GET_ARGUMENT_KIND, collect_query, &c);
        return c.n;
}

typedef struct QueryUnknown {
        const char *const *allowed;
        const char *found;
} QueryUnknown;

static enum MHD_Result find_unknown_query(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        QueryUnknown *u = cls;

        for (const char *const *a = u->allowed; *a; a++)
                if (key && streq(key, *a))
                        return MHD_YES;
        u->found = key ?: "";
        return MHD_NO;
}

const char *http_request_query_unknown(HttpRequest *r, const char *const *allowed) {
        QueryUnknown u = { .allowed = allowed };
        MHD_get_connection_values(r->connection, MHD_GET_ARGUMENT_KIND, find_unknown_query, &u);
        return u.found;
}

const char *http_request_header(HttpRequest *r, const char *name) {
        return MHD_lookup_connection_value(r->connection, MHD_HEADER_KIND, name);
}

const char *http_request_body(HttpRequest *r, size_t *ret_size) {
        if (ret_size)
                *ret_size = r->body_size;
        return r->body ?: "";
}

void *http_request_tls_session(HttpRequest *r) {
        const union MHD_ConnectionInfo *info;

        if (!r->server->config.tls)
                return NULL;
        info = MHD_get_connection_info(r->connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        return info ? info->tls_session : NULL;
}

void http_request_set_route(HttpRequest *r, const char *route) {
        r->route = route;
}

const char *http_request_route(HttpRequest *r) {
        return r->route;
}

uint64_t http_request_age_usec(HttpRequest *r) {
        uint64_t now = now_usec();
        return now > r->headers_usec ? now - r->headers_usec : 0;
}

int http_request_add_header(HttpRequest *r, const char *name, const char *value) {
        if (r->n_extra_headers >= MAX_EXTRA_HEADERS)
                return -E2BIG;
        r->extra_headers[r->n_extra_headers][0] = strdup(name);
        r->extra_headers[r->n_extra_headers][1] = strdup(value);
        if (!r->extra_headers[r->n_extra_headers][0] || !r->extra_headers[r->n_extra_headers][1]) {
                free(r->extra_headers[r->n_extra_headers][0]);
                free(r->extra_headers[r->n_extra_headers][1]);
                return -ENOMEM;
        }
        r->n_extra_headers++;
        return 0;
}

static int request_set_response(HttpRequest *r, unsigned code, const char *content_type, struct MHD_Response *resp);

int http_request_reply(HttpRequest *r, unsigned code, const char *content_type, const char *body, size_t size) {
        struct MHD_Response *resp;

        if (r->response || r->queued)
                return log_warning_errno(EALREADY, "Request %s %s answered twice; ignoring the second answer.",
                                         r->method, r->path);

        resp = MHD_create_response_from_buffer(size, (void *) body, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return log_oom();
        return request_set_response(r, code, content_type, resp);
}

/* libmicrohttpd asks for the next bytes of a streamed answer. With none to give, the connection is
 * suspended (no deadline, no busy loop) until the application wakes it. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
        HttpRequest *r = cls;
        ssize_t n;

        if (r->stream_end || !r->stream_read)
                return MHD_CONTENT_READER_END_OF_STREAM;
        n = r->stream_read(r->stream_userdata, buf, max);
        if (n < 0) {
                r->stream_end = true;
                return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (n == 0) {
                MHD_suspend_connection(r->connection);
                r->stream_suspended = true;
        }
        return n;
}

int http_request_reply_stream(HttpRequest *r, unsigned code, const char *content_type, HttpStreamRead read,
                              HttpStreamClosed closed, void *userdata) {
        struct MHD_Response *resp;
        int ret;

        assert(read);
        if (r->response || r->queued)
                return log_warning_errno(EALREADY, "Request %s %s answered twice; ignoring the second answer.",
                                         r->method, r->path);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, r, NULL);
        if (!resp)
                return log_oom();
        r->stream_read = read;
        r->stream_closed = closed;
        r->stream_userdata = userdata;
        /* Not in server->suspended any more once the response is set below: the list fields are free. */
        ret = request_set_response(r, code, content_type, resp);
        if (ret < 0)
                return ret;
        r->streaming = true;
        LIST_PREPEND(r->server->streams, r);
        r->server->n_streams++;
        return 0;
}

void http_request_stream_wake(HttpRequest *r) {
        assert(r);
        if (!r->stream_suspended)
                return;
        r->stream_suspended = false;
        MHD_resume_connection(r->connection);
        http_server_wake(r->server);
}

void http_request_stream_end(HttpRequest *r) {
        assert(r);
        r->stream_end = true;
        http_request_stream_wake(r);
}

void http_request_stream_detach(HttpRequest *r) {
        assert(r);
        r->stream_read = NULL;
        r->stream_closed = NULL;
        r->stream_userdata = NULL;
        http_request_stream_end(r);
}

bool http_request_peer_gone(HttpRequest *r) {
        const union MHD_ConnectionInfo *info;
        struct pollfd p = { .events = POLLRDHUP };

        info = MHD_get_connection_info(r->connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!info)
                return false;
        p.fd = info->connect_fd;
        if (poll(&p, 1, 0) <= 0)
                return false;
        return p.revents & (POLLRDHUP | POLLHUP | POLLERR);
}

size_t http_server_n_streams(const HttpServer *s) {
        return s ? s->n_streams : 0;
}

static int request_set_response(HttpRequest *r, unsigned code, const char *content_type, struct MHD_Response *resp) {
        if (content_type)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        for (size_t i = 0; i < r->n_extra_headers; i++)
                MHD_add_response_header(resp, r->extra_headers[i][0], r->extra_headers[i][1]);
        r->response = resp;
        r->code = code;

        if (r->suspended) {
                suspended_remove(r);
                MHD_resume_connection(r->connection);
                http_server_wake(r->server);
        }
        return 0;
}

int http_request_reply_json(HttpRequest *r, unsigned code, json_object *o) {
        size_t len;
        const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        return http_request_reply(r, code, "application/json", s, len);
}

int http_request_reply_error(HttpRequest *r, unsigned code, const char *field, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        json_object *o;
        va_list ap;
        int ret;

        va_start(ap, format);
        ret = vasprintf(&msg, format, ap);
        va_end(ap);
        if (ret < 0)
                return log_oom();

        o = json_object_new_object();
        if (!o)
                return log_oom();
        json_object_object_add(o, "error", json_object_new_string(msg));
        if (field)
                json_object_object_add(o, "field", json_object_new_string(field));
        ret = http_request_reply_json(r, code, o);
        json_object_put(o);
        return ret;
}
