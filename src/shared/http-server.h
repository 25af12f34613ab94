/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An HTTP server on an sd-event loop: libmicrohttpd in epoll mode, its epoll fd watched by the loop,
 * as systemd-journal-remote does it. The handler is called once per request, after the whole body has
 * arrived. It may answer at once or later (after a database round trip, or a long-poll wait): a
 * request that has not been answered when the handler returns is suspended, and resumed when
 * http_request_reply*() is called. Every request must be answered exactly once.
 *
 * No client can use it up (docs/api.md, "Connections: caps and deadlines"):
 *  - the server accepts connections itself, always, and hands them to libmicrohttpd; over a cap it
 *    answers 429 (too many from that address) or 503 (too many in all) and closes at once, so the
 *    listen backlog never fills and a client that is let in is served at once;
 *  - at most max_connections at once, which must stay below RLIMIT_NOFILE; when a new connection
 *    comes at that cap, the connection that has been waiting longest for its request (headers not
 *    complete, or idle between keep-alive requests) is closed to make room; only when every
 *    connection is past its headers is the new one refused;
 *  - at most max_connections_per_address from one IPv4 address or IPv6 /64;
 *  - deadlines: a request's headers must be complete header_timeout after the connection was
 *    accepted (or after the request line of a later request on it); its body body_timeout after its
 *    headers; an idle keep-alive connection is closed after idle_timeout. A request being handled
 *    has none (long polls); sending the answer is bounded by libmicrohttpd's inactivity timeout
 *    (the longest of the three deadlines plus a second without progress);
 *  - EMFILE on accept() does not leave the connection in the backlog: a spare descriptor is given
 *    up for a moment to accept and refuse it;
 *  - refusals, evictions and timeouts are counted (http_server_get_stats()) and logged as
 *    `http_limit` and `http_timeout` events, at most one of each every 10 s, with the counts.
 *
 * http_server_take_watchdog() makes the service watchdog (WatchdogSec=) depend on the server really
 * accepting: the daemon pings only after each listening socket accepted a connection the daemon made
 * to itself. */

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
        size_t max_body;                        /* larger bodies get 413 without being read further (0: 1 MiB) */
        unsigned max_connections;               /* 0: http_default_max_connections() */
        unsigned max_connections_per_address;   /* 0: HTTP_DEFAULT_MAX_PER_ADDRESS */
        uint64_t header_timeout_usec;           /* 0: HTTP_DEFAULT_HEADER_TIMEOUT_SEC */
        uint64_t body_timeout_usec;             /* 0: HTTP_DEFAULT_BODY_TIMEOUT_SEC */
        uint64_t idle_timeout_usec;             /* 0: HTTP_DEFAULT_IDLE_TIMEOUT_SEC */
        TlsServer *tls;                         /* serve HTTPS with it (borrowed; outlives the server); NULL: plain HTTP */
} HttpServerConfig;

#define HTTP_DEFAULT_MAX_PER_ADDRESS 64U
#define HTTP_DEFAULT_HEADER_TIMEOUT_SEC 10U
#define HTTP_DEFAULT_BODY_TIMEOUT_SEC 60U
#define HTTP_DEFAULT_IDLE_TIMEOUT_SEC 30U
/* Descriptors kept for everything else the daemon opens (database, bus, journal, probes). */
#define HTTP_RESERVED_FDS 64U

/* The soft RLIMIT_NOFILE minus a quarter of it (at least 128: HTTP_RESERVED_FDS and a burst of
 * connections being closed), at most 16384. */
unsigned http_default_max_connections(void);

typedef struct HttpServerStats {
        uint64_t accepted;                      /* handed to the HTTP parser */
        uint64_t refused_address;               /* over max_connections_per_address (429) */
        uint64_t refused_global;                /* over max_connections, none to evict (503) */
        uint64_t refused_descriptors;           /* EMFILE/ENFILE on accept() */
        uint64_t evicted;                       /* closed at max_connections to make room */
        uint64_t header_timeouts, body_timeouts, idle_timeouts;
        uint64_t watchdog_pings, watchdog_withheld;
        unsigned connections;                   /* open now */
        unsigned max_connections, max_connections_per_address;
} HttpServerStats;

/* Serves every fd in listen_fds (taking ownership of them). */
int http_server_new(sd_event *e, const int *listen_fds, size_t n_fds, const HttpServerConfig *config,
                    HttpHandler handler, HttpCompleted completed, void *userdata, HttpServer **ret);
/* Answers every still-suspended request with 503 and stops serving. */
HttpServer *http_server_free(HttpServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(HttpServer *, http_server_free);
/* Called when the headers of a request that has a body (Content-Length > 0, or chunked) are complete,
 * before its body is read: it may answer the request at once (the body is then never read, and the
 * connection is closed after the answer), which is how a request without a valid token is refused
 * before a client can hold its connection by sending a body slowly; or leave it to the handler. The
 * request's path, method, query and headers are there; its body is not. A request without a body
 * goes straight to the handler, keeping its connection alive whatever the answer. */
void http_server_set_headers_handler(HttpServer *s, HttpHandler headers);
/* New requests get 503 from now on; those in progress are answered normally. */
void http_server_set_stopping(HttpServer *s);
void http_server_get_stats(const HttpServer *s, HttpServerStats *ret);
/* When the service has a watchdog (WATCHDOG_USEC), stops the event loop's own pings and pings instead
 * each time every listening socket accepted a probe connection the server makes to itself, a quarter
 * of the watchdog interval apart. A server that cannot accept (no descriptors, loop stuck, socket
 * broken) then stops pinging, and systemd restarts it; `http_not_serving` says why. 0 when there is no
 * watchdog, 1 when taken over, negative errno. */
int http_server_take_watchdog(HttpServer *s);

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
/* How long ago its headers were complete: in the completion callback, the time it took to answer. */
uint64_t http_request_age_usec(HttpRequest *r);

/* Takes a copy of body. */
int http_request_reply(HttpRequest *r, unsigned code, const char *content_type, const char *body, size_t size);
/* Serialises o (the caller keeps its reference). */
int http_request_reply_json(HttpRequest *r, unsigned code, json_object *o);
/* {"error": "<message>", "field": "<field>"} (field omitted when NULL). */
int http_request_reply_error(HttpRequest *r, unsigned code, const char *field, const char *format, ...) _printf_(4, 5);
/* Adds a header to the response that will be sent; call before replying. */
int http_request_add_header(HttpRequest *r, const char *name, const char *value);

/* Streamed answers (chunked): long-lived, like GET /api/events. read fills buf with up to max bytes
 * and returns their number; 0 when it has nothing now (the connection then waits, with no deadline
 * and no busy loop, until http_request_stream_wake()); negative to end the answer. closed is called
 * once the request is gone (the answer ended, or the client left): r must not be used after it.
 * While it waits for data the server does not see a client leave; http_request_peer_gone() looks. A
 * stream is a request being handled (phase busy): the header, body and idle deadlines do not apply,
 * and a stream is never closed to make room; sending must make progress within the longest deadline
 * plus a second, as for any answer. The application counts and caps its streams. */
typedef ssize_t (*HttpStreamRead)(void *userdata, char *buf, size_t max);
typedef void (*HttpStreamClosed)(void *userdata);
int http_request_reply_stream(HttpRequest *r, unsigned code, const char *content_type, HttpStreamRead read,
                              HttpStreamClosed closed, void *userdata);
/* There is more to read (or the end): calls read again soon. */
void http_request_stream_wake(HttpRequest *r);
/* Ends the answer after what read gave so far; closed still follows. */
void http_request_stream_end(HttpRequest *r);
/* Ends it and forgets the callbacks: neither read nor closed is called any more. */
void http_request_stream_detach(HttpRequest *r);
/* Whether the client closed its end (poll()s the connection's socket). */
bool http_request_peer_gone(HttpRequest *r);
size_t http_server_n_streams(const HttpServer *s);
