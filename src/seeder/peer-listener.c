/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "daemon-util.h"
#include "log.h"
#include "peer-listener.h"

#define PEER_LISTENER_MAX_SOCKETS 16

struct PeerListener {
        sd_event_source *sources[PEER_LISTENER_MAX_SOCKETS];
        int fds[PEER_LISTENER_MAX_SOCKETS];
        size_t n;
        PeerAccepted accepted;
        void *userdata;
        int spare_fd;                   /* for daemon_accept() */
};

PeerListener *peer_listener_free(PeerListener *l) {
        if (!l)
                return NULL;
        for (size_t i = 0; i < l->n; i++) {
                sd_event_source_disable_unref(l->sources[i]);
                if (l->fds[i] >= 0)
                        close(l->fds[i]);
        }
        safe_close(l->spare_fd);
        free(l);
        return NULL;
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PeerListener *l = userdata;

        /* A burst at a time, then back to the loop so that nothing else waits behind a flood. */
        for (int i = 0; i < 64; i++) {
                struct sockaddr_storage sa;
                socklen_t len;
                int c = daemon_accept(fd, &l->spare_fd, NULL, &sa, &len);

                if (c == -EAGAIN)
                        return 0;
                if (c == -EMFILE) {
                        /* Shed through the spare descriptor rather than left in the backlog (where
                         * it would keep the socket readable and the loop spinning). */
                        log_debug("No descriptor for a peer connection: closed it at once.");
                        if (l->spare_fd < 0) {
                                l->spare_fd = daemon_spare_fd();
                                return 0;
                        }
                        continue;
                }
                if (c < 0)
                        continue;       /* an error of that connection (ECONNABORTED ...) */
                l->accepted(l, c, l->userdata);
        }
        return 0;
}

int peer_listener_new(sd_event *e, const int *fds, size_t n, const char *address, uint16_t port,
                      PeerAccepted accepted, void *userdata, PeerListener **ret) {
        _cleanup_(peer_listener_freep) PeerListener *l = NULL;
        int r;

        assert(e);
        assert(accepted);
        assert(ret);

        l = calloc(1, sizeof(PeerListener));
        if (!l) {
                for (size_t i = 0; i < n; i++)
                        close(fds[i]);
                return -ENOMEM;
        }
        l->accepted = accepted;
        l->userdata = userdata;
        l->spare_fd = daemon_spare_fd();
        if (n > PEER_LISTENER_MAX_SOCKETS) {
                for (size_t i = 0; i < n; i++)
                        close(fds[i]);
                return log_error_errno(E2BIG, "%zu sockets passed; at most %d are served.", n, PEER_LISTENER_MAX_SOCKETS);
        }
        for (size_t i = 0; i < n; i++)
                l->fds[l->n++] = fds[i];
        if (n == 0) {
                int fd = daemon_listen_tcp(address, port);
                if (fd < 0)
                        return fd;
                l->fds[l->n++] = fd;
        }
        for (size_t i = 0; i < l->n; i++) {
                int flags = fcntl(l->fds[i], F_GETFL);

                /* Sockets passed by systemd (or systemd-socket-activate) come blocking: accept()
                 * would then wait for the next peer inside the event loop. */
                if (flags < 0 || fcntl(l->fds[i], F_SETFL, flags | O_NONBLOCK) < 0)
                        return log_error_errno(errno, "Cannot make the peer socket non-blocking: %m");
                r = sd_event_add_io(e, &l->sources[i], l->fds[i], EPOLLIN, on_listen, l);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch the peer socket: %m");
        }
        *ret = TAKE_PTR(l);
        return 0;
}

uint16_t peer_listener_port(PeerListener *l) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);

        if (!l || l->n == 0 || getsockname(l->fds[0], (struct sockaddr *) &sa, &len) < 0)
                return 0;
        if (sa.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &sa)->sin_port);
        if (sa.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
        return 0;
}
