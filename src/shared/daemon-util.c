/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon-util.h"
#include "log.h"
#include "socket-util.h"

/* accept() failing for want of a descriptor or of kernel memory. */
#define IN_SET_ERRNO_NOFD(e) ((e) == EMFILE || (e) == ENFILE || (e) == ENOBUFS || (e) == ENOMEM)

int daemon_event_new(sd_event **ret) {
        return daemon_event_new_with_terminate(NULL, NULL, ret);
}

int daemon_event_new_with_terminate(sd_event_signal_handler_t on_terminate, void *userdata, sd_event **ret) {
        _cleanup_event_unref_ sd_event *e = NULL;
        sigset_t mask;
        int r;

        /* Not sd_event_default(): each daemon passes its loop around explicitly, and the default loop
         * checks at every iteration that it runs in the thread that made it, with a gettid() system
         * call, two per request served. */
        r = sd_event_new(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");

        /* sd_event_add_signal() needs the signals blocked first. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        /* A peer closing a socket under us must be an error return, never a dead daemon. */
        signal(SIGPIPE, SIG_IGN);

        /* A NULL handler makes sd-event end the loop. */
        r = sd_event_add_signal(e, NULL, SIGTERM, on_terminate, userdata);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGTERM: %m");
        r = sd_event_add_signal(e, NULL, SIGINT, on_terminate, userdata);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGINT: %m");

        r = sd_event_set_watchdog(e, true);
        if (r < 0)
                return log_error_errno(r, "Failed to enable watchdog: %m");

        *ret = TAKE_PTR(e);
        return 0;
}

void daemon_notify_ready(const char *status) {
        sd_notifyf(false, "READY=1\nSTATUS=%s", status ?: "Running.");
}

void daemon_notify_status(const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return;
        sd_notifyf(false, "STATUS=%s", s);
}

void daemon_notify_stopping(void) {
        sd_notify(false, "STOPPING=1\nSTATUS=Shutting down.");
}

uint64_t daemon_raise_nofile(void) {
        struct rlimit rl;
        rlim_t want;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 0;
        want = rl.rlim_max == RLIM_INFINITY ? 65536 : MIN(rl.rlim_max, (rlim_t) 65536);
        if (want > rl.rlim_cur) {
                rl.rlim_cur = want;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_debug_errno(errno, "Failed to raise RLIMIT_NOFILE to %llu: %m", (unsigned long long) want);
                else
                        log_debug("RLIMIT_NOFILE raised to %llu.", (unsigned long long) want);
                (void) getrlimit(RLIMIT_NOFILE, &rl);
        }
        return rl.rlim_cur;
}

int daemon_spare_fd(void) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int daemon_accept(int fd, int *spare_fd, const char *refusal, struct sockaddr_storage *ret_sa, socklen_t *ret_len) {
        socklen_t len = sizeof(struct sockaddr_storage);
        int cfd;

        assert(fd >= 0);
        assert(spare_fd);
        assert(ret_sa);
        assert(ret_len);

        *ret_len = 0;
        cfd = accept4(fd, (struct sockaddr *) ret_sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
                *ret_len = len;
                return cfd;
        }
        if (errno == EINTR)
                return -EAGAIN;
        if (!IN_SET_ERRNO_NOFD(errno))
                return -errno;
        if (*spare_fd < 0)
                return -EMFILE;
        *spare_fd = safe_close(*spare_fd);
        len = sizeof(struct sockaddr_storage);
        cfd = accept4(fd, (struct sockaddr *) ret_sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd >= 0) {
                if (refusal)
                        (void) send(cfd, refusal, strlen(refusal), MSG_DONTWAIT | MSG_NOSIGNAL);
                close(cfd);
        }
        *spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        *ret_len = cfd >= 0 ? len : 0;
        return -EMFILE;
}

int daemon_listen_fds(void) {
        int n = sd_listen_fds(true);
        if (n < 0)
                return log_error_errno(n, "Failed to read passed sockets: %m");
        return n;
}

void daemon_socket_describe(int fd, char *buf, size_t size) {
        union sockaddr_union sa = {};
        socklen_t len = sizeof(sa), olen;
        int type = 0, listening = 0;
        char ip[INET6_ADDRSTRLEN] = "?";
        const char *kind;

        assert(buf);
        assert(size > 0);
        olen = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) < 0 || getsockname(fd, &sa.sa, &len) < 0) {
                snprintf(buf, size, "not a socket");
                return;
        }
        olen = sizeof(listening);
        (void) getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen);
        if (sa.sa.sa_family == AF_UNIX) {
                kind = type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "datagram" :
                       type == SOCK_SEQPACKET ? "seqpacket" : "other";
                if (len > offsetof(struct sockaddr_un, sun_path) && sa.un.sun_path[0] != 0)
                        snprintf(buf, size, "unix %s%s socket %.*s", listening ? "listening " : "", kind,
                                 (int) (len - offsetof(struct sockaddr_un, sun_path)), sa.un.sun_path);
                else
                        snprintf(buf, size, "unix %s%s socket (unnamed or abstract)", listening ? "listening " : "", kind);
                return;
        }
        if (sa.sa.sa_family != AF_INET && sa.sa.sa_family != AF_INET6) {
                snprintf(buf, size, "socket of address family %d, type %d", sa.sa.sa_family, type);
                return;
        }
        kind = type == SOCK_STREAM ? "TCP" : type == SOCK_DGRAM ? "UDP" : type == SOCK_SEQPACKET ? "SCTP" : "raw";
        if (sa.sa.sa_family == AF_INET) {
                (void) inet_ntop(AF_INET, &sa.in.sin_addr, ip, sizeof(ip));
                snprintf(buf, size, "%s %ssocket on %s:%u", kind, listening ? "listening " : "", ip,
                         ntohs(sa.in.sin_port));
        } else {
                (void) inet_ntop(AF_INET6, &sa.in6.sin6_addr, ip, sizeof(ip));
                snprintf(buf, size, "%s %ssocket on [%s]:%u", kind, listening ? "listening " : "", ip,
                         ntohs(sa.in6.sin6_port));
        }
}

uint16_t daemon_socket_port(int fd) {
        struct sockaddr_storage ss = {};
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return 0;
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *) &ss)->sin_port);
        if (ss.ss_family == AF_INET6)
                return ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        return 0;
}

static bool socket_fits(const DaemonSocket *d, int fd) {
        /* A stream socket must be listening; for datagrams "listening" means nothing. */
        int listening = d->type == SOCK_STREAM ? 1 : -1;

        if (sd_is_socket_inet(fd, AF_UNSPEC, d->type, listening, 0) > 0)
                return true;
        return d->unix_ok && sd_is_socket_unix(fd, d->type, listening, NULL, 0) > 0;
}

static const char *socket_wanted(const DaemonSocket *d) {
        if (d->type == SOCK_STREAM)
                return d->unix_ok ? "a listening TCP or unix stream socket (ListenStream=)"
                                  : "a listening TCP socket (ListenStream=)";
        return "a UDP socket (ListenDatagram=)";
}

void daemon_socket_reject(int fd, const char *name, const char *reason, const char *why) {
        char what[256];

        daemon_socket_describe(fd, what, sizeof(what));
        log_event(LOG_ERR, MC_EVENT_PASSED_SOCKET_REJECTED,
                  LOG_FIELDS("FD_NAME", name, "REASON", reason, "SOCKET", what),
                  "Socket passed as \"%s\" (%s) is not used and closed: %s.", name, what, why);
        close(fd);
}

int daemon_take_sockets(const char *program, DaemonSocket *table, size_t n_table) {
        char **names = NULL;
        int n, taken = 0;

        assert(program);
        assert(table || n_table == 0);
        for (size_t j = 0; j < n_table; j++) {
                assert(table[j].name);
                assert(table[j].type == SOCK_STREAM || table[j].type == SOCK_DGRAM);
                assert(table[j].max >= 1 && table[j].max <= DAEMON_SOCKETS_PER_NAME);
                table[j].n_fds = 0;
        }

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Failed to read the sockets systemd passed: %m");
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";
                DaemonSocket *d = NULL;
                char why[512];

                /* First of all: none of them may leak into a child, whatever becomes of them. */
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                for (size_t j = 0; j < n_table && !d; j++)
                        if (streq(table[j].name, name))
                                d = &table[j];

                if (!d) {
                        _cleanup_free_ char *known = NULL;
                        size_t sz = 0;
                        FILE *f = open_memstream(&known, &sz);

                        for (size_t j = 0; f && j < n_table; j++)
                                fprintf(f, "%s\"%s\"", j == 0 ? "" : ", ", table[j].name);
                        if (f)
                                fclose(f);
                        snprintf(why, sizeof(why), "%s knows no socket of that name (FileDescriptorName= of "
                                 "its socket units: %s)", program, strna(known));
                        daemon_socket_reject(fd, name, "unknown_name", why);
                } else if (!socket_fits(d, fd)) {
                        snprintf(why, sizeof(why), "\"%s\" must be %s", name, socket_wanted(d));
                        daemon_socket_reject(fd, name, "wrong_type", why);
                } else if (d->n_fds >= d->max) {
                        snprintf(why, sizeof(why), "at most %u socket(s) named \"%s\" are used", d->max, name);
                        daemon_socket_reject(fd, name, "too_many", why);
                } else {
                        int flags = fcntl(fd, F_GETFL);
                        /* Passed blocking unless the unit says NonBlocking=yes; every user of ours
                         * reads and accepts until EAGAIN. */
                        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                                log_warning_errno(errno, "Cannot make the socket passed as \"%s\" non-blocking: %m", name);
                                close(fd);
                        } else {
                                d->fds[d->n_fds++] = fd;
                                taken++;
                        }
                }
                free(names ? names[i] : NULL);
        }
        free(names);
        return taken;
}

void daemon_sockets_close(DaemonSocket *table, size_t n_table) {
        for (size_t j = 0; j < n_table; j++) {
                for (unsigned i = 0; i < table[j].n_fds; i++)
                        safe_close(table[j].fds[i]);
                table[j].n_fds = 0;
        }
}

int daemon_listen_tcp(const char *address, uint16_t port) {
        _cleanup_close_ int fd = -1;
        union sockaddr_union sa = {};
        socklen_t salen;
        int one = 1;

        if (isempty(address) || streq(address, "::")) {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                sa.in6.sin6_addr = in6addr_any;
                salen = sizeof(sa.in6);
                fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0 && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT)) {
                        /* No IPv6 on this host: all IPv4 addresses then. */
                        sa.in.sin_family = AF_INET;
                        sa.in.sin_port = htons(port);
                        sa.in.sin_addr.s_addr = htonl(INADDR_ANY);
                        salen = sizeof(sa.in);
                }
        } else if (inet_pton(AF_INET, address, &sa.in.sin_addr) == 1) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(port);
                salen = sizeof(sa.in);
        } else if (inet_pton(AF_INET6, address, &sa.in6.sin6_addr) == 1) {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                salen = sizeof(sa.in6);
        } else
                return log_error_errno(EINVAL, "Invalid listen address \"%s\".", address);

        if (fd < 0)
                fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create socket: %m");
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (sa.sa.sa_family == AF_INET6) {
                int zero = 0;
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        }
        if (bind(fd, &sa.sa, salen) < 0)
                return log_error_errno(errno, "Failed to bind to %s port %u: %m", isempty(address) ? "*" : address, port);
        if (listen(fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "Failed to listen: %m");
        return TAKE_FD(fd);
}

static const char *first_directory(const char *env, const char *fallback) {
        static char buf[2][4096];
        const char *v = getenv(env);
        size_t n;
        int slot = streq(env, "STATE_DIRECTORY") ? 0 : 1;

        if (isempty(v))
                return fallback;
        /* systemd gives a colon-separated list when several directories are configured. */
        n = strcspn(v, ":");
        if (n >= sizeof(buf[slot]))
                return fallback;
        memcpy(buf[slot], v, n);
        buf[slot][n] = 0;
        return buf[slot];
}

const char *daemon_state_directory(const char *fallback) {
        return first_directory("STATE_DIRECTORY", fallback);
}

const char *daemon_runtime_directory(const char *fallback) {
        return first_directory("RUNTIME_DIRECTORY", fallback);
}

uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t boottime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_BOOTTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

int daemon_helper_path(const char *name, const char *installed_path, char **ret) {
        char self[4096], *slash;
        char *p;
        ssize_t l;

        l = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (l > 0) {
                self[l] = 0;
                slash = strrchr(self, '/');
                if (slash) {
                        *slash = 0;
                        if (asprintf(&p, "%s/%s", self, name) < 0)
                                return -ENOMEM;
                        if (access(p, X_OK) == 0) {
                                *ret = p;
                                return 0;
                        }
                        free(p);
                }
        }
        p = strdup(installed_path);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}
