/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The pieces the daemons wire in (dht-daemon.h): configuration keys, creating the node from them,
 * controls announcing themselves and agents finding them as URLs; a restart with the state directory
 * keeping the node id and rejoining without bootstrap nodes; an IPv6 network (BEP 32); and a node on
 * UDP sockets it is given (a socket unit's ListenDatagram=) rather than ones it binds. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include "daemon-util.h"
#include "dht-daemon.h"
#include "dht-test.h"
#include "log.h"

static sd_event *event;
static unsigned waiting;

static void run_until_done(void) {
        uint64_t deadline = now_usec() + 60 * USEC_PER_SEC;
        while (waiting > 0) {
                ASSERT(now_usec() < deadline);
                ASSERT(sd_event_run(event, USEC_PER_SEC) >= 0);
        }
}

static void on_done(Dht *d, const DhtResult *r, void *userdata) {
        if (userdata)
                *(DhtResult *) userdata = *r;
        waiting--;
}

static char **urls;
static int err;
static bool found;

static void on_controls(int e, char **u, void *userdata) {
        err = e;
        urls = u;
        waiting--;
}

static void on_v6_peers(Dht *d, const DhtResult *res, void *userdata) {
        for (size_t i = 0; i < res->n_peers; i++)
                found = found || (res->peers[i].family == AF_INET6 && res->peers[i].port == 4242);
        waiting--;
}

typedef struct Config {
        char *other;
        DhtSettings dht;
} Config;

static void test_config(void) {
        static const ConfigOption options[] = {
                { "OTHER", NULL, CONFIG_STRING, offsetof(Config, other), 0, 0, NULL, "something else" },
                DHT_CONFIG_OPTIONS(Config, dht),
        };
        static const ConfigSpec spec = { .program = "test", .options = options, .n_options = ELEMENTSOF(options) };
        char *argv[] = { (char *) "test", (char *) "--dht-port=6881", (char *) "--dht-bootstrap=10.0.0.1:6881,[::1]:7000",
                         (char *) "--dht-bootstrap=host.example:6881", (char *) "--cluster-key=abc", NULL };
        Config c = {};
        Dht *d = (Dht *) 1;

        ASSERT_EQ(config_load(&spec, &c, 5, argv, NULL), 0);
        ASSERT_EQ(c.dht.port, 6881);
        ASSERT_EQ(strv_length(c.dht.bootstrap), 3U);
        ASSERT(streq(c.dht.bootstrap[1], "[::1]:7000"));
        ASSERT(streq(c.dht.cluster_name, "mc"));
        ASSERT(streq(c.dht.cluster_key, "abc"));
        config_free(&spec, &c);

        /* DHT_PORT=0: no node, no error */
        ASSERT_EQ(dht_from_settings(event, &(DhtSettings) { .port = 0 }, NULL, &d), 0);
        ASSERT(d == NULL);
}

static void node_ip(unsigned i, char *buf) {
        sprintf(buf, "127.3.0.%u", i + 1);
}

static void test_controls_and_restart(void) {
        char dir[] = "/tmp/test-dht-daemon-XXXXXX", boot[64], ip[32], *bootv[] = { boot, NULL };
        Dht *net[6], *p;
        DhtResult r;
        uint8_t id[DHT_ID_SIZE];

        ASSERT(mkdtemp(dir));
        for (unsigned i = 0; i < 6; i++) {
                node_ip(i, ip);
                snprintf(boot, sizeof(boot), "127.3.0.1:%u", i ? dht_port(net[0]) : 0);
                ASSERT(dht_new(event, &(DhtConfig) { .bind_address = ip, .bootstrap = i ? bootv : NULL }, &net[i]) >= 0);
                ASSERT(dht_when_ready(net[i], on_done, NULL) >= 0);
                waiting++;
                run_until_done();
        }

        /* Two controls announce their HTTP ports; an agent finds both. */
        ASSERT(dht_control_announce(net[1], "prod", 8080) >= 0);
        ASSERT(dht_control_announce(net[2], "prod", 8081) >= 0);
        ASSERT(dht_control_announce(net[3], "test", 9999) >= 0);
        /* the announces run in the background (no callback): give them their round trips */
        {
                uint64_t until = now_usec() + 2 * USEC_PER_SEC;
                while (now_usec() < until)
                        ASSERT(sd_event_run(event, 100 * USEC_PER_MSEC) >= 0);
        }
        waiting++;
        ASSERT(dht_find_controls(net[5], "prod", on_controls, NULL) >= 0);
        run_until_done();
        ASSERT_EQ(err, 0);
        ASSERT_EQ(strv_length(urls), 2U);
        ASSERT((streq(urls[0], "http://127.3.0.2:8080") && streq(urls[1], "http://127.3.0.3:8081")) ||
               (streq(urls[1], "http://127.3.0.2:8080") && streq(urls[0], "http://127.3.0.3:8081")));
        strv_free(urls);

        /* A node with a state directory leaves and comes back without bootstrap nodes. */
        snprintf(boot, sizeof(boot), "127.3.0.1:%u", dht_port(net[0]));
        ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "127.3.0.9", .bootstrap = bootv, .state_dir = dir }, &p) >= 0);
        waiting++;
        ASSERT(dht_when_ready(p, on_done, &r) >= 0);
        run_until_done();
        memcpy(id, dht_id(p), DHT_ID_SIZE);
        dht_free(p); /* saves the state */
        {
                char path[256];
                struct stat st;
                snprintf(path, sizeof(path), "%s/dht-state", dir);
                ASSERT_EQ(stat(path, &st), 0);
                ASSERT_EQ(st.st_mode & 0777, 0600U);
        }
        ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "127.3.0.10", .state_dir = dir }, &p) >= 0);
        ASSERT(memcmp(dht_id(p), id, DHT_ID_SIZE) == 0);
        waiting++;
        ASSERT(dht_when_ready(p, on_done, NULL) >= 0);
        run_until_done();
        {
                DhtStats st;
                dht_get_stats(p, &st);
                ASSERT(st.good_nodes >= 5);
        }
        waiting++;
        ASSERT(dht_find_controls(p, "test", on_controls, NULL) >= 0);
        run_until_done();
        ASSERT_EQ(err, 0);
        ASSERT(strv_length(urls) == 1 && streq(urls[0], "http://127.3.0.4:9999"));
        strv_free(urls);
        dht_free(p);

        /* An id in the configuration wins over the state file's (dht-sim rebuilds a network from a seed). */
        {
                uint8_t want[DHT_ID_SIZE];

                memset(want, 0xa5, sizeof(want));
                ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "127.3.0.11", .state_dir = dir, .id = want }, &p) >= 0);
                ASSERT(memcmp(dht_id(p), want, DHT_ID_SIZE) == 0);
                ASSERT(memcmp(dht_id(p), id, DHT_ID_SIZE) != 0);
                dht_free(p);
        }

        for (unsigned i = 0; i < 6; i++)
                dht_free(net[i]);
        {
                char path[256];
                snprintf(path, sizeof(path), "%s/dht-state", dir);
                unlink(path);
                rmdir(dir);
        }
}

static void test_ipv6(void) {
        char boot[64], *bootv[] = { boot, NULL };
        Dht *net[4];
        DhtResult r = {};
        uint8_t target[DHT_ID_SIZE], ih[DHT_ID_SIZE];

        for (unsigned i = 0; i < 4; i++) {
                snprintf(boot, sizeof(boot), "[::1]:%u", i ? dht_port(net[0]) : 0);
                ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "::1", .bootstrap = i ? bootv : NULL }, &net[i]) >= 0);
                waiting++;
                ASSERT(dht_when_ready(net[i], on_done, NULL) >= 0);
                run_until_done();
        }
        waiting++;
        ASSERT(dht_put(net[1], "4:ipv6", 6, 0, target, on_done, &r) >= 0);
        run_until_done();
        ASSERT(r.error == 0 && r.n_stored >= 1);
        waiting++;
        ASSERT(dht_get(net[3], target, on_done, &r) >= 0);
        run_until_done();
        ASSERT(r.error == 0);

        memset(ih, 6, sizeof(ih));
        waiting++;
        ASSERT(dht_announce(net[2], ih, 4242, 0, on_done, &r) >= 0);
        run_until_done();
        ASSERT(r.error == 0);
        waiting++;
        ASSERT(dht_get_peers(net[0], ih, on_v6_peers, NULL) >= 0);
        run_until_done();
        ASSERT(found);
        for (unsigned i = 0; i < 4; i++)
                dht_free(net[i]);
}

static int udp_bound(int family, bool v6only, uint16_t *ret_port) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t len;
        int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = v6only;

        ASSERT(fd >= 0);
        if (family == AF_INET) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                len = sizeof(sa.in);
        } else {
                ASSERT(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == 0);
                sa.in6.sin6_family = AF_INET6;
                /* Linux makes a socket bound to one IPv6 address IPv6-only anyway. */
                sa.in6.sin6_addr = v6only ? in6addr_loopback : in6addr_any;
                len = sizeof(sa.in6);
        }
        ASSERT(bind(fd, &sa.sa, len) == 0);
        ASSERT(getsockname(fd, &sa.sa, &len) == 0);
        if (ret_port)
                *ret_port = ntohs(family == AF_INET ? sa.in.sin_port : sa.in6.sin6_port);
        return fd;
}

static void test_passed_sockets(void) {
        char boot[64], *bootv[] = { boot, NULL };
        uint16_t port4, port6;
        int fds[3];
        Dht *d, *other;
        DhtResult r = {};

        /* An IPv4 and an IPv6-only socket: the node is on them, at their ports, and answers there. */
        fds[0] = udp_bound(AF_INET, false, &port4);
        fds[1] = udp_bound(AF_INET6, true, &port6);
        ASSERT(dht_new(event, &(DhtConfig) { .port = 1, .fds = fds, .n_fds = 2 }, &d) >= 0);
        ASSERT(dht_port(d) == port4);
        snprintf(boot, sizeof(boot), "127.0.0.1:%u", port4);
        ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "127.0.0.1", .bootstrap = bootv }, &other) >= 0);
        waiting++;
        ASSERT(dht_ping(other, &(DhtAddr) { .family = AF_INET, .ip = { 127, 0, 0, 1 }, .port = port4 }, on_done, &r) >= 0);
        run_until_done();
        ASSERT(r.error == 0 && memcmp(r.id, dht_id(d), DHT_ID_SIZE) == 0);
        dht_free(other);
        dht_free(d);
        ASSERT(fcntl(fds[0], F_GETFD) < 0 && fcntl(fds[1], F_GETFD) < 0);      /* closed with the node */

        /* A dual-stack IPv6 socket would file IPv4 nodes in the IPv6 table: refused, and closed. */
        fds[0] = udp_bound(AF_INET6, false, NULL);
        ASSERT(dht_new(event, &(DhtConfig) { .fds = fds, .n_fds = 1 }, &d) == -EPROTONOSUPPORT);
        ASSERT(fcntl(fds[0], F_GETFD) < 0);

        /* Two of one family: refused, every one closed. */
        fds[0] = udp_bound(AF_INET, false, NULL);
        fds[1] = udp_bound(AF_INET, false, NULL);
        fds[2] = udp_bound(AF_INET6, true, NULL);
        ASSERT(dht_new(event, &(DhtConfig) { .fds = fds, .n_fds = 3 }, &d) == -EEXIST);
        for (unsigned i = 0; i < 3; i++)
                ASSERT(fcntl(fds[i], F_GETFD) < 0);
}

/* A node that put and announced with DHT_REPUBLISH before anyone could store it (it was alone)
 * publishes again by itself later, once nodes have joined. */
static void test_republish(void) {
        DhtTuning fast = { .maintenance_usec = 200 * USEC_PER_MSEC, .republish_usec = USEC_PER_SEC };
        char boot[64], ip[32], *bootv[] = { boot, NULL };
        Dht *a, *net[3];
        DhtResult r = {};
        uint8_t target[DHT_ID_SIZE], ih[DHT_ID_SIZE];

        ASSERT(dht_new(event, &(DhtConfig) { .bind_address = "127.3.1.1", .tuning = &fast }, &a) >= 0);
        waiting++;
        ASSERT(dht_put(a, "9:republish", 11, DHT_REPUBLISH, target, on_done, &r) >= 0);
        run_until_done();
        ASSERT_EQ(r.error, -EHOSTUNREACH); /* nobody to store it */
        memset(ih, 0x42, sizeof(ih));
        waiting++;
        ASSERT(dht_announce(a, ih, 5555, DHT_REPUBLISH, on_done, &r) >= 0);
        run_until_done();
        ASSERT_EQ(r.error, -EHOSTUNREACH);

        for (unsigned i = 0; i < 3; i++) {
                snprintf(ip, sizeof(ip), "127.3.1.%u", i + 2);
                snprintf(boot, sizeof(boot), "127.3.1.1:%u", dht_port(a));
                ASSERT(dht_new(event, &(DhtConfig) { .bind_address = ip, .bootstrap = bootv }, &net[i]) >= 0);
                waiting++;
                ASSERT(dht_when_ready(net[i], on_done, NULL) >= 0);
                run_until_done();
        }
        /* Within a few republish periods, the others hold both. */
        uint64_t deadline = now_usec() + 30 * USEC_PER_SEC;
        for (;;) {
                DhtResult g = {}, p = {};
                waiting += 2;
                ASSERT(dht_get(net[2], target, on_done, &g) >= 0);
                ASSERT(dht_get_peers(net[1], ih, on_done, &p) >= 0);
                run_until_done();
                if (g.error == 0 && p.error == 0 && p.n_peers == 1)
                        break;
                ASSERT(now_usec() < deadline);
                uint64_t until = now_usec() + 300 * USEC_PER_MSEC;
                while (now_usec() < until)
                        ASSERT(sd_event_run(event, 50 * USEC_PER_MSEC) >= 0);
        }
        /* dht_unpublish() stops it. */
        ASSERT_EQ(dht_unpublish(a, target), 0);
        ASSERT_EQ(dht_unpublish(a, target), -ENOENT);
        dht_free(a);
        for (unsigned i = 0; i < 3; i++)
                dht_free(net[i]);
}

int main(void) {
        log_setup("test-dht-daemon");
        ASSERT(sd_event_new(&event) >= 0);
        test_config();
        test_controls_and_restart();
        test_ipv6();
        test_republish();
        test_passed_sockets();
        sd_event_unref(event);
        return 0;
}
