/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What every mc daemon does around its event loop: SIGTERM/SIGINT end the loop cleanly, the watchdog
 * is pinged from the loop (so a stuck loop is noticed by systemd), and readiness and status are told
 * with sd_notify. */

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "macro.h"

/* Every program's main(): impl(argc, argv) returns a negative errno when it failed (logged already),
 * otherwise the exit status (0, or a program's own code such as "not found"). */
#define DEFINE_MAIN_FUNCTION(impl)                                      \
        int main(int argc, char *argv[]) {                              \
                int r_ = impl(argc, argv);                              \
                return r_ < 0 ? EXIT_FAILURE : r_;                      \
        }

#define _cleanup_event_unref_ _cleanup_(sd_event_unrefp)
#define _cleanup_event_source_unref_ _cleanup_(sd_event_source_disable_unrefp)

/* Creates the default event loop with SIGTERM/SIGINT handling and the watchdog enabled. */
int daemon_event_new(sd_event **ret);
/* The same, with SIGTERM/SIGINT going to on_terminate (which then decides when the loop ends) instead of
 * ending the loop at once. sd-event allows one source per signal, so a daemon that wants its own handler
 * cannot add it after daemon_event_new(). */
int daemon_event_new_with_terminate(sd_event_signal_handler_t on_terminate, void *userdata, sd_event **ret);

/* READY=1 plus a status line. */
void daemon_notify_ready(const char *status);
void daemon_notify_status(const char *fmt, ...) _printf_(1, 2);
void daemon_notify_stopping(void);

/* Raises the soft RLIMIT_NOFILE to the hard one (at most 65536): a server's connections are
 * descriptors, and the default soft limit of 1024 is there for select(), which no daemon of ours uses.
 * Returns the soft limit in effect. */
uint64_t daemon_raise_nofile(void);

/* accept4() (non-blocking, close-on-exec) that never leaves a connection in the backlog for lack of a
 * descriptor: on EMFILE/ENFILE it gives up *spare_fd (an fd of /dev/null the caller opened for this,
 * see daemon_spare_fd()) for a moment to accept the connection and close it at once, then opens it
 * again. Returns the accepted fd; -EAGAIN when none waits; -EMFILE when one was shed so, after
 * writing refusal (if not NULL) to it; -EMFILE with *spare_fd < 0 when even that failed (the caller
 * should stop accepting for a moment rather than spin on the readable socket); another negative
 * errno for an error of that one connection (try the next). */
int daemon_accept(int fd, int *spare_fd, const char *refusal, struct sockaddr_storage *ret_sa, socklen_t *ret_len);
/* An fd of /dev/null for daemon_accept(), or negative errno. */
int daemon_spare_fd(void);

/* Returns the number of sockets systemd passed (starting at SD_LISTEN_FDS_START), 0 if none. */
int daemon_listen_fds(void);

/* Sockets a daemon takes from systemd by their names (FileDescriptorName= of the socket unit that passed
 * them, sd_listen_fds_with_names()), never by their order: a table of what the daemon accepts, filled
 * in by daemon_take_sockets().
 *
 *     DaemonSocket s[] = {
 *             { .name = "metrics", .type = SOCK_STREAM, .unix_ok = true, .max = 1 },
 *             { .name = "dht", .type = SOCK_DGRAM, .max = 2 },
 *     };
 *     r = daemon_take_sockets("mc-agent", s, ELEMENTSOF(s));
 *     ... s[0].n_fds, s[0].fds[0] ...
 *     daemon_sockets_close(s, ELEMENTSOF(s));
 *
 * A stream socket must be listening (ListenStream=, not Accept=yes connections); every socket must be
 * AF_INET or AF_INET6 (or AF_UNIX with unix_ok). */
#define DAEMON_SOCKETS_PER_NAME 2

typedef struct DaemonSocket {
        /* What the daemon accepts under this name. */
        const char *name;               /* FileDescriptorName= */
        int type;                       /* SOCK_STREAM (listening) or SOCK_DGRAM */
        bool unix_ok;                   /* AF_UNIX too, besides AF_INET and AF_INET6 */
        unsigned max;                   /* most sockets of this name, 1..DAEMON_SOCKETS_PER_NAME */
        /* What was passed: close-on-exec, non-blocking, the table's until a user takes them (and sets
         * n_fds to 0). */
        int fds[DAEMON_SOCKETS_PER_NAME];
        unsigned n_fds;
} DaemonSocket;

/* Takes every socket systemd passed us ($LISTEN_FDS, which it unsets so that children do not see it)
 * into table by name. A socket that is not of its name's kind, one more than its name's max, or one
 * under a name the table does not have is closed and logged as MC_EVENT=passed_socket_rejected
 * (FD_NAME=, REASON=wrong_type|too_many|unknown_name, SOCKET= what it is): the daemon
 * goes on without it. Returns the number of sockets taken, or a negative errno when the passed ones
 * cannot be read at all (logged). */
int daemon_take_sockets(const char *program, DaemonSocket *table, size_t n_table);
void daemon_sockets_close(DaemonSocket *table, size_t n_table);
/* Closes fd, passed as name, logging MC_EVENT=passed_socket_rejected with reason (wrong_type, ...) and
 * why (the sentence that tells the operator what to change); for checks of a daemon's own. */
void daemon_socket_reject(int fd, const char *name, const char *reason, const char *why);

/* What fd is, for messages: "TCP listening socket on 127.0.0.1:6884", "UDP socket on [::]:6883",
 * "unix stream socket /run/x.sock", "not a socket". */
void daemon_socket_describe(int fd, char *buf, size_t size);
/* The port an AF_INET/AF_INET6 socket is bound to; 0 for another socket. */
uint16_t daemon_socket_port(int fd);

/* Opens a TCP listening socket on address:port (address NULL or "" means all addresses, IPv6 with
 * IPv4 mapped when the host has IPv6). Returns the fd or negative errno. */
int daemon_listen_tcp(const char *address, uint16_t port);

/* The directory systemd gave us (STATE_DIRECTORY / RUNTIME_DIRECTORY, first entry), or the default. */
const char *daemon_state_directory(const char *fallback);
const char *daemon_runtime_directory(const char *fallback);

/* The path of a helper program of ours: next to our own binary when it is there (the build tree, where
 * tests run it), else installed_path (which the caller checks: its error names the path). */
int daemon_helper_path(const char *name, const char *installed_path, char **ret);

/* Monotonic clock in microseconds. */
uint64_t now_usec(void);
/* CLOCK_BOOTTIME: like now_usec(), but it also counts the time the machine was suspended. */
uint64_t boottime_usec(void);
/* Wall clock in microseconds since the epoch. */
uint64_t realtime_usec(void);
