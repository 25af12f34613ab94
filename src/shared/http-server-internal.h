/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The insides of the HTTP server (http-server.h), shared by its files:
 *   http-server.c       libmicrohttpd on the loop, its callbacks, the requests, setting up;
 *   http-connections.c  accepting: the caps, refusals, evictions, and each connection's deadlines;
 *   http-watchdog.c     the watchdog pinged only when the listening sockets accept. */

#include <microhttpd.h>
#include <sys/socket.h>

#include "address-table.h"
#include "http-server.h"
#include "list.h"
#include "rate-log.h"

/* Connections accepted per wake-up of a listening socket, before the loop serves anything else. It is
 * also how far the count may pass max_connections while evicted connections wait to be closed. */
#define ACCEPT_BURST 64U
#define LOG_INTERVAL_USEC (10 * USEC_PER_SEC)
/* How long accepting pauses when not even the spare descriptor can be had. */
#define ACCEPT_PAUSE_USEC (100 * USEC_PER_MSEC)
#define DEFAULT_MAX_CONNECTIONS_CEILING 16384U

typedef enum ConnPhase {
        CONN_HEADERS,   /* waiting for a request's headers (deadline: header timeout) */
        CONN_BODY,      /* waiting for its body (deadline: body timeout) */
        CONN_IDLE,      /* between keep-alive requests (deadline: idle timeout) */
        CONN_BUSY,      /* being handled or answered: no deadline of ours */
        _CONN_PHASE_MAX,
} ConnPhase;

typedef struct HttpConn HttpConn;
struct HttpConn {
        HttpServer *server;
        struct MHD_Connection *connection;
        int fd;                         /* owned by libmicrohttpd */
        AddressKey key;
        struct sockaddr_storage sa;     /* for the journal */
        socklen_t sa_len;
        ConnPhase phase;
        uint64_t deadline_usec;
        bool queued;                    /* in server->queue[phase] */
        bool closing;                   /* shut down by us; libmicrohttpd closes it on its next run */
        LIST_FIELDS(HttpConn);
};

typedef struct HttpListener {
        HttpServer *server;
        int fd;
        sd_event_source *source;
        /* The watchdog's probe: a connection of ours to this socket, and the address of our end. */
        int probe_fd;
        struct sockaddr_storage probe_local;
        socklen_t probe_local_len;
        bool probe_accepted;
} HttpListener;


struct HttpServer {
        sd_event *event;
        HttpServerConfig config;
        uint64_t timeouts[_CONN_PHASE_MAX];
        HttpHandler handler;
        HttpHandler headers_handler;
        HttpCompleted completed;
        void *userdata;
        struct MHD_Daemon *daemon;
        sd_event_source *io_source;
        sd_event_source *timer_source;
        sd_event_source *wake_source;   /* runs MHD once more after a resume (a defer source) */
        sd_event_source *deadline_source;
        sd_event_source *accept_pause_source;
        HttpListener *listeners;
        size_t n_listeners;
        HttpRequest *suspended;         /* list of requests waiting for the application */
        HttpRequest *streams;           /* requests answered with a stream, until they complete */
        size_t n_streams;
        bool stopping;

        AddressTable *addresses;
        HttpConn *queue[_CONN_PHASE_MAX], *queue_tail[_CONN_PHASE_MAX];   /* oldest first */
        unsigned n_conns, n_closing;
        HttpConn *adding;               /* being handed to MHD_add_connection() */
        int spare_fd;                   /* given up for a moment when accept() hits EMFILE */
        HttpServerStats stats;
        RateLog limit_log, timeout_log, watchdog_log;

        sd_event_source *watchdog_source;
        uint64_t watchdog_usec;
        bool probing;                   /* a round of probes is under way */
};

/* http-server.c */
uint64_t http_server_now(HttpServer *s);
/* Whether the entry is to be logged now; otherwise it is counted for the next one. */
void http_format_address(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);
/* Makes the loop run libmicrohttpd soon. */
void http_server_wake(HttpServer *s);

/* http-connections.c */
HttpConn *http_conn_of(struct MHD_Connection *connection);
/* Enters phase (c may be NULL: nothing happens): a phase with a timeout starts its deadline now. */
void http_conn_set_phase(HttpConn *c, ConnPhase phase);
/* Forgets a connection libmicrohttpd closed (or never took). */
void http_conn_free(HttpConn *c);
int http_on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata);
int http_on_accept_resume(sd_event_source *source, uint64_t usec, void *userdata);
int http_on_deadline(sd_event_source *source, uint64_t usec, void *userdata);

/* http-watchdog.c */
/* Whether the connection accepted on l from sa is the watchdog's probe. */
bool http_watchdog_is_probe(HttpListener *l, const struct sockaddr_storage *sa, socklen_t len);
void http_watchdog_probe_accepted(HttpServer *s, HttpListener *l);
void http_probe_close(HttpListener *l);
