/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The HTTP server's watchdog (http_server_take_watchdog()): a quarter of the watchdog interval apart,
 * a connection of our own to each listening socket; the service watchdog is pinged when every one was
 * accepted, and not when one could not be made or was not accepted in time. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <systemd/sd-daemon.h>

#include "daemon-util.h"
#include "http-server-internal.h"
#include "log.h"
#include "socket-util.h"

/* ---- the watchdog */

static void log_not_serving(HttpServer *s, HttpListener *l, const char *reason) {
        char address[INET6_ADDRSTRLEN + 16] = "?", withheld[32], since[32];
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        uint64_t suppressed;

        if (!rate_log_allow(&s->watchdog_log, http_server_now(s), LOG_INTERVAL_USEC, &suppressed))
                return;
        if (getsockname(l->fd, (struct sockaddr *) &sa, &len) >= 0)
                http_format_address((struct sockaddr *) &sa, len, address, sizeof(address));
        snprintf(withheld, sizeof(withheld), "%" PRIu64, s->stats.watchdog_withheld);
        snprintf(since, sizeof(since), "%" PRIu64, suppressed);
        log_event(LOG_WARNING, MC_EVENT_HTTP_NOT_SERVING,
                  LOG_FIELDS("LISTEN_ADDRESS", address, "HTTP_PROBE_ERROR", reason,
                             "WATCHDOG_WITHHELD", withheld, "HTTP_NOT_LOGGED", since),
                  "HTTP socket %s does not accept connections (%s): the watchdog is not pinged (%s pings withheld "
                  "since start; %s not logged since the last entry).",
                  address, reason, withheld, since);
}

void http_probe_close(HttpListener *l) {
        l->probe_fd = safe_close(l->probe_fd);
        l->probe_accepted = false;
}

/* Connects to the listening socket, as a client would, without waiting. Returns 0, 1 when the
 * socket's family is not probed (it counts as accepting), or negative errno. */
static int probe_start(HttpListener *l) {
        union sockaddr_union sa;
        socklen_t len = sizeof(sa);
        _cleanup_close_ int fd = -1;

        http_probe_close(l);
        if (getsockname(l->fd, &sa.sa, &len) < 0)
                return -errno;
        if (sa.sa.sa_family == AF_INET) {
                if (sa.in.sin_addr.s_addr == htonl(INADDR_ANY))
                        sa.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (sa.sa.sa_family == AF_INET6) {
                if (IN6_IS_ADDR_UNSPECIFIED(&sa.in6.sin6_addr))
                        sa.in6.sin6_addr = in6addr_loopback;
        } else
                return 1;       /* a unix socket: its peers cannot be told apart from ours */

        fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, &sa.sa, len) < 0 && errno != EINPROGRESS)
                return -errno;
        l->probe_local_len = sizeof(l->probe_local);
        if (getsockname(fd, (struct sockaddr *) &l->probe_local, &l->probe_local_len) < 0)
                return -errno;
        l->probe_fd = TAKE_FD(fd);
        return 0;
}

static void watchdog_ping_if_all_accepted(HttpServer *s) {
        if (!s->probing)
                return;
        for (size_t i = 0; i < s->n_listeners; i++)
                if (s->listeners[i].probe_fd >= 0 && !s->listeners[i].probe_accepted)
                        return;
        s->probing = false;
        s->stats.watchdog_pings++;
        (void) sd_notify(false, "WATCHDOG=1");
}

void http_watchdog_probe_accepted(HttpServer *s, HttpListener *l) {
        l->probe_accepted = true;
        watchdog_ping_if_all_accepted(s);
}

static int on_watchdog(sd_event_source *source, uint64_t usec, void *userdata) {
        HttpServer *s = userdata;
        HttpListener *stuck = NULL, *failed = NULL;
        int error = 0;

        /* The last round's probes should all have been accepted by now. */
        if (s->probing)
                for (size_t i = 0; i < s->n_listeners && !stuck; i++)
                        if (s->listeners[i].probe_fd >= 0 && !s->listeners[i].probe_accepted)
                                stuck = s->listeners + i;

        /* A new round. */
        s->probing = true;
        for (size_t i = 0; i < s->n_listeners; i++) {
                int r = probe_start(s->listeners + i);
                if (r < 0) {
                        failed = s->listeners + i;
                        error = r;
                        break;
                }
        }
        if (failed) {
                /* This round cannot succeed. */
                s->probing = false;
                for (size_t i = 0; i < s->n_listeners; i++)
                        http_probe_close(s->listeners + i);
        }

        if (stuck || failed) {
                s->stats.watchdog_withheld++;
                log_not_serving(s, stuck ?: failed, stuck ? "not accepted in time" : strerror(-error));
        }
        watchdog_ping_if_all_accepted(s);       /* no socket to probe at all */

        (void) sd_event_source_set_time(source, usec + s->watchdog_usec / 4);
        return 0;
}

int http_server_take_watchdog(HttpServer *s) {
        uint64_t usec = 0;
        int r;

        assert(s);
        r = sd_watchdog_enabled(false, &usec);
        if (r <= 0)
                return r;
        r = sd_event_set_watchdog(s->event, false);
        if (r < 0)
                return log_error_errno(r, "Failed to stop the event loop's watchdog pings: %m");
        s->watchdog_usec = usec;
        r = sd_event_add_time_relative(s->event, &s->watchdog_source, CLOCK_MONOTONIC, 0, usec / 16,
                                       on_watchdog, s);
        if (r < 0)
                return log_error_errno(r, "Failed to add the watchdog timer: %m");
        (void) sd_event_source_set_description(s->watchdog_source, "http-watchdog");
        r = sd_event_source_set_enabled(s->watchdog_source, SD_EVENT_ON);
        if (r < 0)
                return log_error_errno(r, "Failed to enable the watchdog timer: %m");
        log_debug("Watchdog pings now follow the HTTP sockets accepting (every %" PRIu64 " ms).",
                  usec / 4 / USEC_PER_MSEC);
        return 1;
}
