/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* 200 of our nodes on loopback, in one process and one event loop, each with its own UDP socket on its
 * own address (127.1.0.1, 127.1.0.2, ...), so that per-address rate limits apply as between hosts.
 * They join in waves through the first node and a random earlier one. Then some nodes announce
 * info-hashes and put immutable and mutable items, and every node looks up every one of them. The test
 * asserts outcomes only: every lookup finds what was stored (no timing is asserted). */

#include <sys/resource.h>

#include "bep44.h"
#include "daemon-util.h"
#include "dht.h"
#include "hashmap.h"
#include "log.h"
#include "random-util.h"

#define N_NODES 200
#define N_INFOHASHES 8
#define N_IMMUTABLE 4
#define N_MUTABLE 4
#define MAX_IN_FLIGHT 40

static sd_event *event;
static Dht *nodes[N_NODES];
static unsigned waiting, failures;

static uint8_t infohash[N_INFOHASHES][DHT_ID_SIZE];
static DhtAddr announced[N_INFOHASHES];
static uint8_t imm_target[N_IMMUTABLE][DHT_ID_SIZE];
static char imm_value[N_IMMUTABLE][64];
static size_t imm_len[N_IMMUTABLE];
static EVP_PKEY *keys[N_MUTABLE];
static uint8_t mut_pub[N_MUTABLE][BEP44_KEY_SIZE];
static char mut_value[N_MUTABLE][64];
static size_t mut_len[N_MUTABLE];

static uint64_t rng = 0x9e3779b97f4a7c15;
static unsigned rnd(unsigned n) {
        /* Deterministic choices, so a failure can be replayed. */
        return (unsigned) (xorshift64(&rng) % n);
}

static const char *node_ip(unsigned i, char buf[static 32]) {
        snprintf(buf, 32, "127.1.%u.%u", (i + 1) / 250, (i + 1) % 250 + 1);
        return buf;
}

static void done_one(void) {
        waiting--;
}

static void on_ready(Dht *d, const DhtResult *r, void *userdata) {
        done_one();
}

static void on_stored(Dht *d, const DhtResult *r, void *userdata) {
        if (r->error < 0 || r->n_stored == 0) {
                log_error("store %s failed: %s (stored on %u)", (const char *) userdata, strerror(-r->error), r->n_stored);
                failures++;
        }
        done_one();
}

static void run_until_done(uint64_t limit_usec) {
        uint64_t deadline = now_usec() + limit_usec;

        /* The deadline is a generous safety net only: the loop normally ends when every callback has
         * come. sd_event_run() rather than sd_event_loop(), so that the loop can be entered again. */
        while (waiting > 0 && now_usec() < deadline)
                if (sd_event_run(event, USEC_PER_SEC) < 0)
                        abort();
        if (waiting != 0) {
                log_error("%u operations did not complete in time.", waiting);
                exit(EXIT_FAILURE);
        }
}

typedef struct Check {
        unsigned node, kind, idx;
} Check;

static Check *checks;
static unsigned n_checks, next_check, in_flight, found, lookups_rounds_sum, lookups_queries_sum;

static void start_checks(void);

static void on_checked(Dht *d, const DhtResult *r, void *userdata) {
        Check *c = userdata;
        bool ok = r->error >= 0;

        if (ok && c->kind == 0) {
                ok = false;
                for (size_t i = 0; i < r->n_peers; i++)
                        ok = ok || dht_addr_eq(&r->peers[i], &announced[c->idx]);
        } else if (ok && c->kind == 1)
                ok = r->item && r->item->v_len == imm_len[c->idx] && memcmp(r->item->v, imm_value[c->idx], imm_len[c->idx]) == 0;
        else if (ok && c->kind == 2)
                ok = r->item && r->item->is_mutable && r->item->seq == 7 + c->idx &&
                     r->item->v_len == mut_len[c->idx] && memcmp(r->item->v, mut_value[c->idx], mut_len[c->idx]) == 0;
        if (ok)
                found++;
        else
                log_error("node %u: lookup kind %u #%u failed (%s).", c->node, c->kind, c->idx, strerror(-r->error));
        lookups_rounds_sum += r->rounds;
        lookups_queries_sum += r->queries;
        in_flight--;
        start_checks();
        done_one();
}

static void start_checks(void) {
        while (in_flight < MAX_IN_FLIGHT && next_check < n_checks) {
                Check *c = &checks[next_check++];
                Dht *d = nodes[c->node];
                int r;

                if (c->kind == 0)
                        r = dht_get_peers(d, infohash[c->idx], on_checked, c);
                else if (c->kind == 1)
                        r = dht_get(d, imm_target[c->idx], on_checked, c);
                else
                        r = dht_get_mutable(d, mut_pub[c->idx], "net", 3, on_checked, c);
                if (r < 0)
                        abort();
                in_flight++;
        }
}

int main(int argc, char *argv[]) {
        struct rlimit rl;
        uint64_t t0;
        char addr[64];
        int r;

        log_setup("test-dht-network");
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4 * N_NODES) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) 4 * N_NODES);
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (sd_event_new(&event) < 0)
                return EXIT_FAILURE;
        t0 = now_usec();

        /* Join in waves of 20, each node through node 0 and a random node of an earlier wave. */
        for (unsigned i = 0; i < N_NODES; i++) {
                char *boot[3] = {}, b0[64], b1[64], ip[32];

                node_ip(i, addr);
                if (i > 0) {
                        unsigned j = rnd(i - i % 20 ?: 1);
                        snprintf(b0, sizeof(b0), "%s:%u", node_ip(0, ip), dht_port(nodes[0]));
                        boot[0] = b0;
                        if (j != 0) {
                                snprintf(b1, sizeof(b1), "%s:%u", node_ip(j, ip), dht_port(nodes[j]));
                                boot[1] = b1;
                        }
                }
                r = dht_new(event, &(DhtConfig) { .bind_address = addr, .bootstrap = boot }, &nodes[i]);
                if (r < 0) {
                        log_error_errno(r, "node %u: %m", i);
                        return EXIT_FAILURE;
                }
                r = dht_when_ready(nodes[i], on_ready, NULL);
                if (r < 0)
                        return EXIT_FAILURE;
                waiting++;
                if (i % 20 == 19 || i == N_NODES - 1)
                        run_until_done(120 * USEC_PER_SEC);
        }
        log_info("%u nodes joined in %.2f s.", N_NODES, (double) (now_usec() - t0) / 1e6);

        /* Store. */
        for (unsigned i = 0; i < N_INFOHASHES; i++) {
                unsigned n = rnd(N_NODES);
                char ip[32];
                random_bytes(infohash[i], DHT_ID_SIZE);
                snprintf(addr, sizeof(addr), "%s:%u", node_ip(n, ip), 20000 + i);
                if (dht_addr_from_string(addr, &announced[i]) < 0 ||
                    dht_announce(nodes[n], infohash[i], (uint16_t) (20000 + i), 0, on_stored, (void *) "announce") < 0)
                        return EXIT_FAILURE;
                waiting++;
        }
        for (unsigned i = 0; i < N_IMMUTABLE; i++) {
                imm_len[i] = (size_t) snprintf(imm_value[i], sizeof(imm_value[i]), "%u:immutable #%u", 12 + (i >= 10), i);
                if (dht_put(nodes[rnd(N_NODES)], imm_value[i], imm_len[i], 0, imm_target[i], on_stored, (void *) "put") < 0)
                        return EXIT_FAILURE;
                waiting++;
        }
        for (unsigned i = 0; i < N_MUTABLE; i++) {
                mut_len[i] = (size_t) snprintf(mut_value[i], sizeof(mut_value[i]), "d1:ni%ue1:s7:mutablee", i);
                if (bep44_key_generate(&keys[i]) < 0 || bep44_key_public(keys[i], mut_pub[i]) < 0)
                        return EXIT_FAILURE;
                if (dht_put_mutable(nodes[rnd(N_NODES)], keys[i], "net", 3, mut_value[i], mut_len[i], 7 + i, NULL, 0,
                                    on_stored, (void *) "put_mutable") < 0)
                        return EXIT_FAILURE;
                waiting++;
        }
        run_until_done(120 * USEC_PER_SEC);
        if (failures > 0)
                return EXIT_FAILURE;

        /* Every node looks up everything. */
        n_checks = N_NODES * (N_INFOHASHES + N_IMMUTABLE + N_MUTABLE);
        checks = calloc(n_checks, sizeof(Check));
        for (unsigned n = 0, k = 0; n < N_NODES; n++) {
                for (unsigned i = 0; i < N_INFOHASHES; i++)
                        checks[k++] = (Check) { n, 0, i };
                for (unsigned i = 0; i < N_IMMUTABLE; i++)
                        checks[k++] = (Check) { n, 1, i };
                for (unsigned i = 0; i < N_MUTABLE; i++)
                        checks[k++] = (Check) { n, 2, i };
        }
        t0 = now_usec();
        waiting = n_checks;
        start_checks();
        run_until_done(300 * USEC_PER_SEC);
        log_info("%u of %u lookups found what was stored in %.2f s (mean %.2f rounds, %.1f queries).",
                 found, n_checks, (double) (now_usec() - t0) / 1e6,
                 (double) lookups_rounds_sum / n_checks, (double) lookups_queries_sum / n_checks);

        for (unsigned i = 0; i < N_NODES; i++)
                dht_free(nodes[i]);
        for (unsigned i = 0; i < N_MUTABLE; i++)
                EVP_PKEY_free(keys[i]);
        free(checks);
        sd_event_unref(event);
        return found == n_checks ? EXIT_SUCCESS : EXIT_FAILURE;
}
