/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bootstrap host names are resolved off the event loop: getaddrinfo() blocks, so each name gets a
 * detached thread that writes the addresses it found, then an end marker, into a socketpair watched by
 * the loop. If the Dht goes away first, the thread's writes fail (EPIPE, no signal) and it exits. */

#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>

#include "dht-internal.h"
#include "log.h"

typedef struct ResolveJob {
        int fd;
        uint16_t port;
        char host[];
} ResolveJob;

typedef struct ResolveMsg {
        bool end;
        DhtAddr addr;
} ResolveMsg;

static void *resolve_thread(void *arg) {
        ResolveJob *j = arg;
        struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res = NULL;
        ResolveMsg end = { .end = true };

        if (getaddrinfo(j->host, NULL, &hints, &res) == 0) {
                for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                        ResolveMsg m = {};
                        if (dht_addr_from_sockaddr(ai->ai_addr, ai->ai_addrlen, &m.addr) < 0)
                                continue;
                        m.addr.port = j->port;
                        if (send(j->fd, &m, sizeof(m), MSG_NOSIGNAL) < 0)
                                break;
                }
                freeaddrinfo(res);
        }
        (void) send(j->fd, &end, sizeof(end), MSG_NOSIGNAL);
        close(j->fd);
        free(j);
        return NULL;
}

static int on_resolved(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Dht *d = userdata;
        ResolveMsg m;

        for (;;) {
                ssize_t n = recv(fd, &m, sizeof(m), MSG_DONTWAIT);
                if (n != (ssize_t) sizeof(m))
                        break;
                dht_bootstrap_resolved(d, m.end ? NULL : &m.addr);
        }
        return 0;
}

int dht_resolve_start(Dht *d, const char *host, uint16_t port) {
        int sv[2], r;
        pthread_attr_t attr;
        pthread_t t;
        ResolveJob *j;

        if (d->resolve_fd < 0) {
                /* SOCK_SEQPACKET keeps each message whole. */
                if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                        return -errno;
                r = sd_event_add_io(d->event, &d->resolve_io, sv[0], EPOLLIN, on_resolved, d);
                if (r < 0) {
                        close(sv[0]);
                        close(sv[1]);
                        return r;
                }
                d->resolve_fd = sv[0];
                /* The write end is only ever held by threads: keep a template to dup from. */
                d->resolve_template_fd = sv[1];
        }
        j = malloc(sizeof(ResolveJob) + strlen(host) + 1);
        if (!j)
                return -ENOMEM;
        strcpy(j->host, host);
        j->port = port;
        j->fd = fcntl(d->resolve_template_fd, F_DUPFD_CLOEXEC, 3);
        if (j->fd < 0) {
                free(j);
                return -errno;
        }
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&t, &attr, resolve_thread, j);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                close(j->fd);
                free(j);
                return -r;
        }
        d->resolving++;
        return 0;
}

void dht_resolve_stop(Dht *d) {
        d->resolve_io = sd_event_source_disable_unref(d->resolve_io);
        if (d->resolve_fd >= 0)
                close(d->resolve_fd);
        if (d->resolve_template_fd >= 0)
                close(d->resolve_template_fd);
        d->resolve_fd = d->resolve_template_fd = -1;
}
