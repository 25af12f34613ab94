/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <sys/epoll.h>

#include "daemon-util.h"
#include "http-server.h"
#include "list.h"
#include "log.h"

#define MAX_EXTRA_HEADERS 8

typedef struct HttpListener {
        HttpServer *server;
        struct MHD_Daemon *daemon;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        sd_event_source *wake_source;   /* runs MHD once more after a resume (a defer source) */
} HttpListener;

struct HttpServer {
        sd_event *event;
        HttpServerConfig config;
        HttpHandler handler;
        HttpCompleted completed;
        void *userdata;
        HttpListener *listeners;
        size_t n_listeners;
        HttpRequest *suspended;        /* list of requests waiting for the application */
        bool stopping;
};

struct HttpRequest {
        HttpServer *server;
        HttpListener *listener;
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
        char *extra_headers[MAX_EXTRA_HEADERS][2];
        size_t n_extra_headers;
        LIST_FIELDS(HttpRequest);       /* in server->suspended */
};

static void listener_arm_timer(HttpListener *l) {
        MHD_UNSIGNED_LONG_LONG timeout_ms;
        int r;

        if (MHD_get_timeout(l->daemon, &timeout_ms) != MHD_YES) {
                (void) sd_event_source_set_enabled(l->timer_source, SD_EVENT_OFF);
                return;
        }
        /* MHD's timeout is relative, in milliseconds. */
        r = sd_event_source_set_time_relative(l->timer_source, (uint64_t) timeout_ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(l->timer_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm HTTP timer: %m");
}

static void listener_run(HttpListener *l) {
        if (MHD_run(l->daemon) != MHD_YES)
                log_debug("MHD_run() failed.");
        listener_arm_timer(l);
}

/* Makes the loop call MHD_run() soon. libmicrohttpd 0.9.75 creates no inter-thread channel when it
 * runs without threads of its own (MHD_USE_ITC is ignored then), so nothing wakes its epoll fd after
 * MHD_resume_connection(): the resumed request would wait for unrelated traffic. MHD_run() must not
 * be called from here directly, since a reply may be given from inside another request's callback. */
static void listener_wake(HttpListener *l) {
        /* A defer source rather than a zero timer: it costs no timerfd_settime() calls, which showed as
         * several per cent of the control's CPU with one asynchronous answer per request. */
        int r = sd_event_source_set_enabled(l->wake_source, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to schedule the HTTP server: %m");
}

static int on_listener_wake(sd_event_source *s, void *userdata) {
        listener_run(userdata);
        return 0;
}

static int on_listener_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        listener_run(userdata);
        return 0;
}

static int on_listener_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        listener_run(userdata);
        return 0;
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

        ret = MHD_queue_response(r->connection, r->code, r->response);
        MHD_destroy_response(r->response);
        r->response = NULL;
        r->queued = true;
        return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *connection, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
        HttpListener *l = cls;
        HttpServer *s = l->server;
        HttpRequest *r = *con_cls;

        if (!r) {
                const char *cl;

                r = calloc(1, sizeof(HttpRequest));
                if (!r)
                        return MHD_NO;
                r->server = s;
                r->listener = l;
                r->connection = connection;
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
        HttpListener *l = cls;
        HttpServer *s = l->server;
        HttpRequest *r = *con_cls;

        if (!r)
                return;
        *con_cls = NULL;
        if (s->completed)
                s->completed(r, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->code : 0, s->userdata);
        suspended_remove(r);
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

static int listener_init(HttpServer *s, HttpListener *l, int fd) {
        /* HTTPS: what tls-server.c adds (certificate callback, TLS versions, client CA); plain HTTP: nothing. */
        struct MHD_OptionItem tls_options[TLS_SERVER_MHD_OPTIONS_MAX] = { { MHD_OPTION_END, 0, NULL } };
        const union MHD_DaemonInfo *info;
        int r;

        l->server = s;
        if (s->config.tls)
                tls_server_mhd_options(s->config.tls, tls_options);
        l->daemon = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                (s->config.tls ? MHD_USE_TLS : 0),
                0, NULL, NULL,
                on_access, l,
                /* First, so that MHD logs nothing of its own before it knows where to. */
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                MHD_OPTION_UNESCAPE_CALLBACK, unescape_without_nul, NULL,
                MHD_OPTION_CONNECTION_TIMEOUT, s->config.connection_timeout_sec,
                MHD_OPTION_CONNECTION_LIMIT, s->config.connection_limit,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 64 * 1024,
                MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096U,
                MHD_OPTION_ARRAY, tls_options,
                MHD_OPTION_END);
        if (!l->daemon) {
                close(fd);
                return log_error_errno(EINVAL, "Failed to start the HTTP server on fd %d.", fd);
        }

        info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return log_error_errno(EINVAL, "libmicrohttpd gave no epoll fd.");

        r = sd_event_add_io(s->event, &l->io_source, info->epoll_fd, EPOLLIN, on_listener_io, l);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the HTTP server: %m");
        (void) sd_event_source_set_description(l->io_source, "http-io");

        /* Created disarmed; listener_arm_timer() sets it from MHD's timeout. (A relative time of
         * UINT64_MAX would be refused with EOVERFLOW.) Accuracy 1 µs: the default (0) lets sd-event
         * coalesce it by up to 250 ms, which listener_wake() would add to every suspended answer. */
        r = sd_event_add_time(s->event, &l->timer_source, CLOCK_MONOTONIC, 0, 1, on_listener_timer, l);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP timer: %m");
        (void) sd_event_source_set_description(l->timer_source, "http-timer");
        r = sd_event_add_defer(s->event, &l->wake_source, on_listener_wake, l);
        if (r < 0)
                return log_error_errno(r, "Failed to add the HTTP wake source: %m");
        (void) sd_event_source_set_description(l->wake_source, "http-wake");
        (void) sd_event_source_set_enabled(l->wake_source, SD_EVENT_OFF);
        r = sd_event_source_set_enabled(l->timer_source, SD_EVENT_OFF);
        if (r < 0)
                return log_error_errno(r, "Failed to disarm the HTTP timer: %m");
        return 0;
}

int http_server_new(sd_event *e, const int *listen_fds, size_t n_fds, const HttpServerConfig *config,
                    HttpHandler handler, HttpCompleted completed, void *userdata, HttpServer **ret) {
        _cleanup_(http_server_freep) HttpServer *s = NULL;
        int r;

        if (n_fds == 0)
                return log_error_errno(EINVAL, "No socket to serve HTTP on.");

        s = calloc(1, sizeof(HttpServer));
        if (!s)
                return log_oom();
        s->event = sd_event_ref(e);
        s->config = *config;
        if (s->config.max_body == 0)
                s->config.max_body = 1024 * 1024;
        if (s->config.connection_limit == 0)
                s->config.connection_limit = 4096;
        s->handler = handler;
        s->completed = completed;
        s->userdata = userdata;
        s->listeners = calloc(n_fds, sizeof(HttpListener));
        if (!s->listeners) {
                for (size_t i = 0; i < n_fds; i++)
                        close(listen_fds[i]);
                return log_oom();
        }
        for (size_t i = 0; i < n_fds; i++) {
                s->n_listeners++;
                r = listener_init(s, s->listeners + i, listen_fds[i]);
                if (r < 0) {
                        for (size_t j = i + 1; j < n_fds; j++)
                                close(listen_fds[j]);
                        return r;
                }
        }
        *ret = TAKE_PTR(s);
        return 0;
}

void http_server_set_stopping(HttpServer *s) {
        if (s)
                s->stopping = true;
}

HttpServer *http_server_free(HttpServer *s) {
        if (!s)
                return NULL;

        /* MHD refuses to stop with suspended connections: answer them first. */
        s->stopping = true;
        while (s->suspended) {
                HttpRequest *r = s->suspended;
                suspended_remove(r);
                if (!r->response)
                        http_request_reply_error(r, 503, NULL, "Server is shutting down.");
                MHD_resume_connection(r->connection);
        }
        for (size_t i = 0; i < s->n_listeners; i++) {
                HttpListener *l = s->listeners + i;
                if (l->daemon) {
                        (void) MHD_run(l->daemon);
                        MHD_stop_daemon(l->daemon);
                }
                sd_event_source_disable_unref(l->io_source);
                sd_event_source_disable_unref(l->timer_source);
                sd_event_source_disable_unref(l->wake_source);
        }
        free(s->listeners);
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

int http_request_reply(HttpRequest *r, unsigned code, const char *content_type, const char *body, size_t size) {
        struct MHD_Response *resp;

        if (r->response || r->queued)
                return log_warning_errno(EALREADY, "Request %s %s answered twice; ignoring the second answer.",
                                         r->method, r->path);

        resp = MHD_create_response_from_buffer(size, (void *) body, MHD_RESPMEM_MUST_COPY);
        if (!resp)
                return log_oom();
        if (content_type)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        for (size_t i = 0; i < r->n_extra_headers; i++)
                MHD_add_response_header(resp, r->extra_headers[i][0], r->extra_headers[i][1]);
        r->response = resp;
        r->code = code;

        if (r->suspended) {
                suspended_remove(r);
                MHD_resume_connection(r->connection);
                listener_wake(r->listener);
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
