/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The sockets systemd passes the agent (units/mc-agent.socket, units/mc-agent-dht.socket, or a socket
 * unit of the operator's with Service=mc-agent.service), by FileDescriptorName=:
 *
 *     metrics  a listening TCP or unix stream socket: GET /metrics (instead of METRICS_PORT)
 *     dht      a UDP socket, or an IPv4 and an IPv6 one (BindIPv6Only=ipv6-only): the DHT node's port
 *              (instead of DHT_PORT; it also makes the agent join the DHT)
 *     peer     a listening TCP socket: other agents fetch task inputs from it (instead of PEER_PORT)
 *
 * A passed socket wins over the configuration; a configured port that disagrees with it is logged
 * (MC_EVENT=passed_socket_overrides_config). A socket of the wrong kind, or under a name not listed
 * here, is closed (MC_EVENT=passed_socket_rejected) and the agent goes on without it, opening what its
 * configuration says: the sockets are for observing the node and for its peers, and an error in a
 * socket unit must not stop the tasks (and fence them) that the agent keeps alive. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "agent-internal.h"
#include "daemon-util.h"
#include "log.h"
#include "socket-util.h"

static const DaemonSocket agent_socket_table[_AGENT_SOCKET_MAX] = {
        [AGENT_SOCKET_METRICS] = { .name = "metrics", .type = SOCK_STREAM, .unix_ok = true, .max = 1 },
        [AGENT_SOCKET_DHT] = { .name = "dht", .type = SOCK_DGRAM, .max = 2 },
        [AGENT_SOCKET_PEER] = { .name = "peer", .type = SOCK_STREAM, .max = 1 },
};

static int socket_family(int fd) {
        struct sockaddr_storage ss = {};
        socklen_t len = sizeof(ss);

        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return -errno;
        return ss.ss_family;
}

/* The DHT keeps a routing table per address family (BEP 32): one socket of each at most, and an IPv6
 * one that does not take IPv4 too. */
static void check_dht_sockets(DaemonSocket *d) {
        unsigned kept = 0;
        int families[DAEMON_SOCKETS_PER_NAME] = {};

        for (unsigned i = 0; i < d->n_fds; i++) {
                int fd = d->fds[i], family = socket_family(fd), v6only = 0;
                socklen_t ol = sizeof(v6only);

                if (family == AF_INET6 &&
                    (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol) < 0 || !v6only)) {
                        daemon_socket_reject(fd, d->name, "wrong_type",
                                             "an IPv6 DHT socket must not take IPv4 too (set BindIPv6Only=ipv6-only "
                                             "in the socket unit, or listen on 0.0.0.0:PORT for IPv4 alone)");
                        continue;
                }
                if (kept > 0 && families[0] == family) {
                        daemon_socket_reject(fd, d->name, "too_many",
                                             "one DHT socket per address family (IPv4, IPv6) is used");
                        continue;
                }
                families[kept] = family;
                d->fds[kept++] = fd;
        }
        d->n_fds = kept;
}

int agent_sockets_take(Agent *a) {
        int r;

        assert(a);
        memcpy(a->sockets, agent_socket_table, sizeof(a->sockets));
        r = daemon_take_sockets("mc-agent", a->sockets, _AGENT_SOCKET_MAX);
        if (r < 0)
                return r;
        check_dht_sockets(&a->sockets[AGENT_SOCKET_DHT]);
        for (AgentSocket s = 0; s < _AGENT_SOCKET_MAX; s++)
                for (unsigned i = 0; i < a->sockets[s].n_fds; i++) {
                        char what[256];
                        daemon_socket_describe(a->sockets[s].fds[i], what, sizeof(what));
                        log_debug("Socket passed as \"%s\": %s.", a->sockets[s].name, what);
                }
        return 0;
}

void agent_sockets_close(Agent *a) {
        daemon_sockets_close(a->sockets, _AGENT_SOCKET_MAX);
}

unsigned agent_socket_take(Agent *a, AgentSocket s, int *ret_fds) {
        DaemonSocket *d = &a->sockets[s];
        unsigned n = d->n_fds;

        for (unsigned i = 0; i < n; i++)
                ret_fds[i] = d->fds[i];
        d->n_fds = 0;
        return n;
}

static bool address_is(const char *address, int fd) {
        union sockaddr_union sa = {};
        socklen_t len = sizeof(sa);
        uint8_t want[16];

        if (getsockname(fd, &sa.sa, &len) < 0)
                return false;
        if (sa.sa.sa_family == AF_INET) {
                if (isempty(address))
                        return sa.in.sin_addr.s_addr == htonl(INADDR_ANY);
                return inet_pton(AF_INET, address, want) == 1 && memcmp(want, &sa.in.sin_addr, 4) == 0;
        }
        if (sa.sa.sa_family == AF_INET6) {
                if (isempty(address))
                        return IN6_IS_ADDR_UNSPECIFIED(&sa.in6.sin6_addr);
                return inet_pton(AF_INET6, address, want) == 1 && memcmp(want, &sa.in6.sin6_addr, 16) == 0;
        }
        return false;
}

void agent_socket_check_config(Agent *a, AgentSocket s, const int *fds, unsigned n_fds, const char *key,
                               int64_t port, const char *address_key, const char *address) {
        char value[32], setting[512], what[256];
        bool agrees = false;

        assert(a);
        assert(key);
        /* 0: none, or any free port; nothing to disagree with. */
        if (n_fds == 0 || port == 0)
                return;
        /* One socket on the configured port agrees (the DHT's other family may be on another). */
        for (unsigned i = 0; i < n_fds && !agrees; i++)
                agrees = port > 0 && daemon_socket_port(fds[i]) == port &&
                         (!address_key || address_is(address, fds[i]));
        if (agrees)
                return;
        daemon_socket_describe(fds[0], what, sizeof(what));
        snprintf(value, sizeof(value), "%" PRIi64, port);
        if (address_key)
                snprintf(setting, sizeof(setting), "%s=%s with %s=%s", key, value, address_key, strempty(address));
        else
                snprintf(setting, sizeof(setting), "%s=%s", key, value);
        log_event(LOG_WARNING, MC_EVENT_PASSED_SOCKET_OVERRIDES_CONFIG,
                  LOG_FIELDS("FD_NAME", a->sockets[s].name, "CONFIG_KEY", key, "CONFIG_VALUE", value, "SOCKET", what),
                  "%s is not used: the socket systemd passed as \"%s\" (%s) is used instead. Make the two "
                  "agree, or remove the setting.", setting, a->sockets[s].name, what);
}
