/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP server's connections (http-server.h): accepting them ourselves, the caps per address and
 * in all (refused at once, or the connection waiting longest closed to make room), and the deadlines
 * of each phase of a connection. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>

#include "daemon-util.h"
#include "http-server-internal.h"
#include "log.h"

static const char *const conn_phase_table[_CONN_PHASE_MAX] = {
        [CONN_HEADERS] = "headers",
        [CONN_BODY] = "body",
        [CONN_IDLE] = "idle",
        [CONN_BUSY] = "busy",
};

unsigned http_default_max_connections(void) {
        struct rlimit rl;
        rlim_t n, reserve;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
                return DEFAULT_MAX_CONNECTIONS_CEILING;
        n = rl.rlim_cur;
        /* What server_check_config() demands, and a quarter of the limit when that is more. */
        reserve = MAX((rlim_t) (HTTP_RESERVED_FDS + ACCEPT_BURST), n / 4);
        if (n <= reserve + 16)
                return 16;
        return (unsigned) MIN(n - reserve, (rlim_t) DEFAULT_MAX_CONNECTIONS_CEILING);
}
/* ---- connections: phases, deadlines, closing */

HttpConn *http_conn_of(struct MHD_Connection *connection) {
        const union MHD_ConnectionInfo *info;

        info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return info ? info->socket_context : NULL;
}

static void deadline_arm(HttpServer *s, uint64_t usec) {
        int enabled = SD_EVENT_OFF;
        uint64_t current;

        (void) sd_event_source_get_enabled(s->deadline_source, &enabled);
        if (enabled != SD_EVENT_OFF && sd_event_source_get_time(s->deadline_source, &current) >= 0 && current <= usec)
                return;
        if (sd_event_source_set_time(s->deadline_source, usec) < 0 ||
            sd_event_source_set_enabled(s->deadline_source, SD_EVENT_ONESHOT) < 0)
                log_warning("Failed to arm the HTTP deadline timer.");
}

static void conn_unqueue(HttpConn *c) {
        HttpServer *s = c->server;

        if (!c->queued)
                return;
        LIST_REMOVE_QUEUED(s->queue[c->phase], s->queue_tail[c->phase], c);
        c->queued = false;
}

/* Enters phase (c may be NULL: nothing happens): a phase with a timeout starts its deadline now. */
void http_conn_set_phase(HttpConn *c, ConnPhase phase) {
        HttpServer *s;

        if (!c || c->closing || c->phase == phase)
                return;
        s = c->server;
        conn_unqueue(c);
        c->phase = phase;
        if (s->timeouts[phase] == 0)
                return;
        c->deadline_usec = http_server_now(s) + s->timeouts[phase];
        LIST_APPEND(s->queue[phase], s->queue_tail[phase], c);
        c->queued = true;
        deadline_arm(s, c->deadline_usec);
}

/* Shuts the socket down: libmicrohttpd sees the hang-up on its next run and closes the connection
 * (and tells on_connection()). It cannot be closed from here: libmicrohttpd owns the descriptor. */
static void conn_close(HttpConn *c) {
        HttpServer *s = c->server;

        if (c->closing)
                return;
        conn_unqueue(c);
        c->closing = true;
        s->n_closing++;
        (void) shutdown(c->fd, SHUT_RDWR);
        http_server_wake(s);
}

void http_conn_free(HttpConn *c) {
        HttpServer *s;

        if (!c)
                return;
        s = c->server;
        conn_unqueue(c);
        if (c->closing)
                s->n_closing--;
        address_table_remove(s->addresses, &c->key);
        s->n_conns--;
        free(c);
}

static void log_timeout(HttpServer *s, HttpConn *c) {
        char address[INET6_ADDRSTRLEN + 16], total[32], since[32];
        uint64_t suppressed;

        if (!rate_log_allow(&s->timeout_log, http_server_now(s), LOG_INTERVAL_USEC, &suppressed))
                return;
        http_format_address((struct sockaddr *) &c->sa, c->sa_len, address, sizeof(address));
        snprintf(total, sizeof(total), "%" PRIu64,
                 s->stats.header_timeouts + s->stats.body_timeouts + s->stats.idle_timeouts);
        snprintf(since, sizeof(since), "%" PRIu64, suppressed);
        log_event(LOG_INFO, MC_EVENT_HTTP_TIMEOUT,
                  LOG_FIELDS("CLIENT_ADDRESS", address, "HTTP_PHASE", conn_phase_table[c->phase],
                             "HTTP_TIMED_OUT", total, "HTTP_NOT_LOGGED", since),
                  "HTTP connection from %s closed: no complete %s in time (%s closed so since start; %s not "
                  "logged since the last entry).",
                  address, c->phase == CONN_IDLE ? "request after the last answer" : conn_phase_table[c->phase],
                  total, since);
}

int http_on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        HttpServer *s = userdata;
        uint64_t now = http_server_now(s), next = UINT64_MAX;

        for (ConnPhase p = 0; p < _CONN_PHASE_MAX; p++) {
                HttpConn *c;

                while ((c = s->queue[p]) && c->deadline_usec <= now) {
                        uint64_t *counter = p == CONN_HEADERS ? &s->stats.header_timeouts :
                                            p == CONN_BODY ? &s->stats.body_timeouts : &s->stats.idle_timeouts;
                        (*counter)++;
                        log_timeout(s, c);
                        conn_close(c);
                }
                if (c)
                        next = MIN(next, c->deadline_usec);
        }
        if (next != UINT64_MAX)
                deadline_arm(s, next);
        return 0;
}

/* ---- accepting: caps, refusals, evictions */

static void log_limit(HttpServer *s, const char *limit, const struct sockaddr *sa, socklen_t len) {
        char address[INET6_ADDRSTRLEN + 16], open_now[16], refused[32], evicted[32], since[32];
        uint64_t suppressed;

        if (!rate_log_allow(&s->limit_log, http_server_now(s), LOG_INTERVAL_USEC, &suppressed))
                return;
        http_format_address(sa, len, address, sizeof(address));
        snprintf(open_now, sizeof(open_now), "%u", s->n_conns);
        snprintf(refused, sizeof(refused), "%" PRIu64,
                 s->stats.refused_address + s->stats.refused_global + s->stats.refused_descriptors);
        snprintf(evicted, sizeof(evicted), "%" PRIu64, s->stats.evicted);
        snprintf(since, sizeof(since), "%" PRIu64, suppressed);
        log_event(LOG_WARNING, MC_EVENT_HTTP_LIMIT,
                  LOG_FIELDS("CLIENT_ADDRESS", address, "HTTP_LIMIT", limit, "HTTP_CONNECTIONS", open_now,
                             "HTTP_REFUSED", refused, "HTTP_EVICTED", evicted, "HTTP_NOT_LOGGED", since),
                  "HTTP connection from %s hit the %s limit (%s connections open; %s refused and %s waiting ones "
                  "closed to make room since start; %s not logged since the last entry).",
                  address, limit, open_now, refused, evicted, since);
}

/* The answer to a connection over a cap, sent before anything is read and followed by close(): the
 * client learns at once, and its connection never waits in the backlog. */
static void refuse(int fd, unsigned code) {
        const char *reason = code == 429 ? "Too Many Requests" : "Service Unavailable";
        const char *body = code == 429 ? "{\"error\":\"Too many connections from this address.\"}"
                                       : "{\"error\":\"Too many connections.\"}";
        char buf[256];
        int n;

        n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Retry-After: 1\r\nConnection: close\r\n\r\n%s",
                     code, reason, strlen(body), body);
        if (n > 0)
                (void) send(fd, buf, MIN((size_t) n, sizeof(buf) - 1), MSG_DONTWAIT | MSG_NOSIGNAL);
        close(fd);
}

/* The connection that has waited longest for a request: headers not complete, or idle. */
static HttpConn *oldest_waiting(HttpServer *s) {
        HttpConn *h = s->queue[CONN_HEADERS], *i = s->queue[CONN_IDLE];

        if (!h || !i)
                return h ?: i;
        /* Deadlines are entry times plus each phase's timeout. */
        return h->deadline_usec - s->timeouts[CONN_HEADERS] <= i->deadline_usec - s->timeouts[CONN_IDLE] ? h : i;
}

bool http_watchdog_is_probe(HttpListener *l, const struct sockaddr_storage *sa, socklen_t len) {
        if (l->probe_fd < 0 || l->probe_accepted || len != l->probe_local_len)
                return false;
        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *a = (const struct sockaddr_in *) sa, *b = (const struct sockaddr_in *) &l->probe_local;
                return b->sin_family == AF_INET && a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
        }
        if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *) sa, *b = (const struct sockaddr_in6 *) &l->probe_local;
                return b->sin6_family == AF_INET6 && a->sin6_port == b->sin6_port &&
                       memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
        }
        return false;
}

static void server_take(HttpServer *s, HttpListener *l, int cfd, const struct sockaddr_storage *sa, socklen_t len) {
        HttpConn *c;
        AddressKey key;
        int r;

        if (http_watchdog_is_probe(l, sa, len)) {
                close(cfd);
                http_watchdog_probe_accepted(s, l);
                return;
        }

        address_key_from_sockaddr((const struct sockaddr *) sa, len, &key);
        /* A per-address cap as large as the global one is no cap of its own: the global one, which
         * makes room by closing the connections that wait longest, decides (a refusal here would
         * leave a single client, or many behind one address, locked out by its own idle ones). */
        if (s->config.max_connections_per_address < s->config.max_connections &&
            address_table_get(s->addresses, &key) >= s->config.max_connections_per_address) {
                s->stats.refused_address++;
                refuse(cfd, 429);
                log_limit(s, "per_address", (const struct sockaddr *) sa, len);
                return;
        }
        if (s->n_conns - s->n_closing >= s->config.max_connections) {
                HttpConn *victim = oldest_waiting(s);

                /* Evicted connections still hold their descriptors until libmicrohttpd's next run:
                 * never more than a burst of them. */
                if (!victim || s->n_conns >= s->config.max_connections + ACCEPT_BURST) {
                        s->stats.refused_global++;
                        refuse(cfd, 503);
                        log_limit(s, "global", (const struct sockaddr *) sa, len);
                        return;
                }
                s->stats.evicted++;
                log_limit(s, "global_evicted", (const struct sockaddr *) &victim->sa, victim->sa_len);
                conn_close(victim);
        }

        c = calloc(1, sizeof(HttpConn));
        if (!c) {
                close(cfd);
                log_oom();
                return;
        }
        r = address_table_add(s->addresses, &key);
        if (r < 0) {
                free(c);
                close(cfd);
                log_oom();
                return;
        }
        *c = (HttpConn) {
                .server = s,
                .fd = cfd,
                .key = key,
                .sa_len = MIN(len, (socklen_t) sizeof(c->sa)),
                .phase = CONN_BUSY,
        };
        memcpy(&c->sa, sa, c->sa_len);
        s->n_conns++;
        http_conn_set_phase(c, CONN_HEADERS);

        /* libmicrohttpd tells on_connection() of it from inside MHD_add_connection(), and closes the
         * socket itself when it fails. */
        s->adding = c;
        if (MHD_add_connection(s->daemon, cfd, (const struct sockaddr *) sa, len) != MHD_YES) {
                if (s->adding)          /* never started: ours to forget */
                        http_conn_free(TAKE_PTR(s->adding));
                log_debug("libmicrohttpd did not take a connection.");
                return;
        }
        s->adding = NULL;
        s->stats.accepted++;
        http_server_wake(s);
}

int http_on_accept_resume(sd_event_source *source, uint64_t usec, void *userdata) {
        HttpServer *s = userdata;

        for (size_t i = 0; i < s->n_listeners; i++)
                (void) sd_event_source_set_enabled(s->listeners[i].source, SD_EVENT_ON);
        return 0;
}

static const char refusal_503[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 33\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n{\"error\":\"Too many connections.\"}";

int http_on_accept(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        HttpListener *l = userdata;
        HttpServer *s = l->server;

        /* A burst at a time, then back to the loop, so that the requests of those let in are read. */
        for (unsigned i = 0; i < ACCEPT_BURST; i++) {
                struct sockaddr_storage sa;
                socklen_t len;
                int cfd;

                cfd = daemon_accept(fd, &s->spare_fd, refusal_503, &sa, &len);
                if (cfd == -EAGAIN)
                        return 0;
                if (cfd == -EMFILE) {
                        /* No descriptor: shed through the spare one, so that it does not wait in the
                         * backlog. */
                        s->stats.refused_descriptors++;
                        log_limit(s, "descriptors", len > 0 ? (struct sockaddr *) &sa : NULL, len);
                        if (s->spare_fd >= 0)
                                continue;
                        /* Not even that: stop accepting for a moment rather than spin on the socket. */
                        for (size_t j = 0; j < s->n_listeners; j++)
                                (void) sd_event_source_set_enabled(s->listeners[j].source, SD_EVENT_OFF);
                        (void) sd_event_source_set_time_relative(s->accept_pause_source, ACCEPT_PAUSE_USEC);
                        (void) sd_event_source_set_enabled(s->accept_pause_source, SD_EVENT_ONESHOT);
                        s->spare_fd = daemon_spare_fd();
                        return 0;
                }
                if (cfd < 0)
                        continue;       /* an error of that connection (ECONNABORTED ...) */
                server_take(s, l, cfd, &sa, len);
        }
        return 0;
}
