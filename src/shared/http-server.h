/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An HTTP server on an sd-event loop: libmicrohttpd in epoll mode, its epoll fd watched by the loop,
 * as systemd-journal-remote does it. The handler is called once per request, after the whole body has
 * arrived. It may answer at once or later (after a database round trip, or a long-poll wait): a
 * request that has not been answered when the handler returns is suspended, and resumed when
 * http_request_reply*() is called. Every request must be answered exactly once. */

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "tls-server.h"

typedef struct HttpServer HttpServer;
typedef struct HttpRequest HttpRequest;

typedef void (*HttpHandler)(HttpRequest *req, void *userdata);
/* Called when a response has been sent (or the connection failed), for metrics. */
typedef void (*HttpCompleted)(HttpRequest *req, unsigned code, void *userdata);

typedef struct HttpServerConfig {
        size_t max_body;                /* larger bodies get 413 without being read further */
        unsigned connection_timeout_sec;
        unsigned connection_limit;
        TlsServer *tls;                 /* serve HTTPS with it (borrowed; outlives the server); NULL: plain HTTP */
} HttpServerConfig;

/* Serves every fd in listen_fds (taking ownership of them). */
int http_server_new(sd_event *e, const int *listen_fds, size_t n_fds, const HttpServerConfig *config,
                    HttpHandler handler, HttpCompleted completed, void *userdata, HttpServer **ret);
/* Answers every still-suspended request with 503 and stops serving. */
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);
/* New requests get 503 from now on; those in progress are answered normally. */
void http_server_set_stopping(HttpServer *s);

const char *http_request_method(HttpRequest *r);
const char *http_request_path(HttpRequest *r);
const char *http_request_query(HttpRequest *r, const char *key);
/* All values of a repeated query argument, in order. Returns the number found, up to max. */
size_t http_request_query_all(HttpRequest *r, const char *key, const char **values, size_t max);
/* The first query argument whose key is not in allowed (NULL-terminated), or NULL if all are known. */
const char *http_request_query_unknown(HttpRequest *r, const char *const *allowed);
const char *http_request_header(HttpRequest *r, const char *name);
const char *http_request_body(HttpRequest *r, size_t *ret_size);
/* The connection's gnutls_session_t (for tls_server_peer_name()), NULL over plain HTTP. */
void *http_request_tls_session(HttpRequest *r);

/* A label the application sets for metrics ("push", "claim", ...); not copied. */
void http_request_set_route(HttpRequest *r, const char *route);
const char *http_request_route(HttpRequest *r);

/* Takes a copy of body. */
int http_request_reply(HttpRequest *r, unsigned code, const char *content_type, const char *body, size_t size);
/* Serialises o (the caller keeps its reference). */
int http_request_reply_json(HttpRequest *r, unsigned code, json_object *o);
/* {"error": "<message>", "field": "<field>"} (field omitted when NULL). */
int http_request_reply_error(HttpRequest *r, unsigned code, const char *field, const char *format, ...) _printf_(4, 5);
/* Adds a header to the response that will be sent; call before replying. */
int http_request_add_header(HttpRequest *r, const char *name, const char *value);
