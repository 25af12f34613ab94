/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Simulation of a network of our DHT nodes on loopback: NODES nodes in this one process and event
 * loop, each with its own UDP socket on its own address (127.2.x.y). The network forms (waves of
 * joins through node 0 and a random earlier node), ANNOUNCES random nodes announce an info-hash each,
 * then CHURN percent of the nodes are killed without warning (sockets closed, nothing said), and
 * LOOKUPS get_peers lookups run one after the other from random surviving nodes for random announced
 * info-hashes. Prints success rate, rounds and latency percentiles, messages per lookup and memory
 * per node, how many nodes took each announce (and how many of the K nodes closest to its info-hash
 * are among them: its placement) and how many of those the churn left alive, and a line
 * for every lookup that did not find its peer (which announce, stored on how many nodes, how many of
 * them alive). Nothing here re-announces, so an announce whose every holder was killed is lost to the
 * network, whatever the lookups do: the success among the lookups for an announce some live node
 * still held is printed apart, as what the lookups themselves achieved. Figures, not assertions: see
 * bench/dht/README.md.
 *
 *     dht-sim [--nodes N] [--churn PERCENT] [--lookups N] [--announces N] [--min-timeout-ms MS] [--seed S]
 */

#include <sys/resource.h>

#include "config.h"
#include "daemon-util.h"
#include "dht.h"
#include "dht-internal.h"   /* the nodes' peer stores: which holders of an announce the churn left */
#include "hashmap.h"
#include "log.h"
#include "random-util.h"

static sd_event *event;
static Dht **nodes;
static bool *dead;
static unsigned n_nodes, churn, n_lookups, n_announces;  /* sim_options */
static uint64_t min_timeout_usec;
static unsigned waiting;
static uint64_t rng;

/* Everything random in the network's making comes from --seed: the nodes' ids, the info-hashes, the
 * joins, the churn's victims and the lookups, so that a seed rebuilds the same network (what the
 * nodes then do with their timers and the kernel's scheduling still varies from run to run). */
static unsigned rnd(unsigned n) {
        return (unsigned) (xorshift64(&rng) % n);
}

static void rnd_bytes(uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i += sizeof(uint64_t)) {
                uint64_t v = xorshift64(&rng);
                memcpy(p + i, &v, MIN(n - i, sizeof(v)));
        }
}

static const char *node_ip(unsigned i, char buf[static 32]) {
        snprintf(buf, 32, "127.2.%u.%u", i / 250, i % 250 + 1);
        return buf;
}

static long rss_kib(void) {
        char line[256];
        long kib = -1;
        FILE *f = fopen("/proc/self/status", "re");

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

static void run_until(unsigned *counter, uint64_t limit_usec) {
        uint64_t deadline = now_usec() + limit_usec;
        while (*counter > 0 && now_usec() < deadline)
                if (sd_event_run(event, 100 * USEC_PER_MSEC) < 0)
                        abort();
}

static void run_for(uint64_t usec) {
        uint64_t deadline = now_usec() + usec;
        while (now_usec() < deadline)
                if (sd_event_run(event, deadline - now_usec()) < 0)
                        abort();
}

static void on_done(Dht *d, const DhtResult *r, void *userdata) {
        waiting--;
}

/* Each announce's outcome: the nodes that accepted it, 0 when it failed. */
static unsigned *stored;

/* ... and how many of those are alive after the churn. */
static unsigned *held;

static bool holds(unsigned i, const uint8_t info_hash[DHT_ID_SIZE], const DhtAddr *peer) {
        DhtAddr got[64];
        size_t k = peer_store_get(&nodes[i]->peers, info_hash, AF_INET, dht_now(nodes[i]), got, ELEMENTSOF(got));

        for (size_t j = 0; j < k; j++)
                if (dht_addr_eq(&got[j], peer))
                        return true;
        return false;
}

static unsigned live_holders(const uint8_t info_hash[DHT_ID_SIZE], const DhtAddr *peer) {
        unsigned n = 0;

        for (unsigned i = 0; i < n_nodes; i++)
                n += !dead[i] && holds(i, info_hash, peer);
        return n;
}

/* How many of the K nodes closest to info_hash (of all, dead or alive) hold the peer: the announce's
 * placement, which a lookup from anywhere relies on. */
static unsigned closest_holding(const uint8_t info_hash[DHT_ID_SIZE], const DhtAddr *peer) {
        unsigned best[DHT_K], n_best = 0, n = 0;

        for (unsigned i = 0; i < n_nodes; i++) {
                unsigned pos = n_best;
                while (pos > 0 && dht_id_cmp_distance(info_hash, dht_id(nodes[i]), dht_id(nodes[best[pos - 1]])) < 0)
                        pos--;
                if (pos == DHT_K)
                        continue;
                if (n_best < DHT_K)
                        n_best++;
                memmove(&best[pos + 1], &best[pos], (n_best - 1 - pos) * sizeof(unsigned));
                best[pos] = i;
        }
        for (unsigned j = 0; j < n_best; j++)
                n += holds(best[j], info_hash, peer);
        return n;
}

static void on_announced(Dht *d, const DhtResult *r, void *userdata) {
        stored[(uintptr_t) userdata] = r->error >= 0 ? r->n_stored : 0;
        waiting--;
}

static uint64_t total_queries(void) {
        uint64_t q = 0;
        for (unsigned i = 0; i < n_nodes; i++) {
                DhtStats st;
                dht_get_stats(nodes[i], &st);
                q += st.queries_sent;
        }
        return q;
}

typedef struct Sample {
        bool ok;
        unsigned rounds, queries;
        uint64_t usec;
} Sample;

static Sample cur;
static bool cur_done;
static DhtAddr want;

static void on_lookup(Dht *d, const DhtResult *r, void *userdata) {
        cur.ok = false;
        for (size_t i = 0; r->error >= 0 && i < r->n_peers; i++)
                cur.ok = cur.ok || dht_addr_eq(&r->peers[i], &want);
        cur.rounds = r->rounds;
        cur.queries = r->queries;
        cur_done = true;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p) {
        size_t i = (size_t) (p * (double) (n - 1) + 0.5);
        return n ? v[MIN(i, n - 1)] : 0;
}

typedef struct SimConfig {
        int64_t nodes, churn, lookups, announces, min_timeout_ms, seed;
} SimConfig;

static const ConfigOption sim_options[] = {
        { "NODES", NULL, CONFIG_INT, offsetof(SimConfig, nodes), 2, 60000, "1000", "Nodes in the network", 'n' },
        { "CHURN", NULL, CONFIG_INT, offsetof(SimConfig, churn), 0, 90, "0",
          "Percent of the nodes killed after the announces", 'c' },
        { "LOOKUPS", NULL, CONFIG_INT, offsetof(SimConfig, lookups), 1, 1000000, "1000",
          "get_peers lookups, one after the other, from random surviving nodes", 'l' },
        { "ANNOUNCES", NULL, CONFIG_INT, offsetof(SimConfig, announces), 1, 100000, "100",
          "Info-hashes announced, each by a random node", 'a' },
        { "MIN_TIMEOUT_MS", NULL, CONFIG_INT, offsetof(SimConfig, min_timeout_ms), 0, 60000, "0",
          "Least time a query waits for its answer (0: the DHT's own)", 't' },
        { "SEED", NULL, CONFIG_INT, offsetof(SimConfig, seed), 0, INT64_MAX, "1",
          "Seed of the node ids, info-hashes, joins, churn and lookups", 's' },
};

static const ConfigSpec sim_config_spec = {
        .program = "dht-sim",
        .summary = "Simulate a network of mc's DHT nodes on loopback: formation, announces, churn, lookups.",
        .options = sim_options,
        .n_options = ELEMENTSOF(sim_options),
};

int main(int argc, char *argv[]) {
        uint8_t (*ih)[DHT_ID_SIZE];
        DhtAddr *announced;
        struct rlimit rl;
        uint64_t t0, q0, *lat, *rounds, *queries;
        long rss0, rss1;
        unsigned ok = 0, n_dead = 0, n_held_lookups = 0, ok_held = 0;
        char addr[32];
        SimConfig arg = {};
        int r;

        log_setup("dht-sim");
        r = config_load(&sim_config_spec, &arg, argc, argv, NULL);
        if (r != 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        n_nodes = (unsigned) arg.nodes;
        churn = (unsigned) arg.churn;
        n_lookups = (unsigned) arg.lookups;
        n_announces = (unsigned) arg.announces;
        min_timeout_usec = (uint64_t) arg.min_timeout_ms * USEC_PER_MSEC;
        /* xorshift64 wants a state that is not 0; spread small seeds over its bits. */
        rng = ((uint64_t) arg.seed * UINT64_C(0x9e3779b97f4a7c15)) ^ UINT64_C(0x2545f4914f6cdd1d);
        if (rng == 0)
                rng = 1;

        log_set_max_level(LOG_WARNING);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < n_nodes + 100) {
                fprintf(stderr, "need %u file descriptors, have %lu\n", n_nodes + 100, (unsigned long) rl.rlim_cur);
                return 1;
        }
        if (sd_event_new(&event) < 0)
                return 1;
        nodes = calloc(n_nodes, sizeof(Dht *));
        dead = calloc(n_nodes, sizeof(bool));
        DhtTuning tuning = { .min_timeout_usec = min_timeout_usec };

        /* Formation. */
        rss0 = rss_kib();
        t0 = now_usec();
        for (unsigned i = 0; i < n_nodes; i++) {
                char b0[64], b1[64], ip[32], *boot[3] = {};
                uint8_t id[DHT_ID_SIZE];

                if (i > 0) {
                        unsigned j = rnd(i - i % 100 ?: 1);
                        snprintf(b0, sizeof(b0), "%s:%u", node_ip(0, ip), dht_port(nodes[0]));
                        boot[0] = b0;
                        if (j != 0) {
                                snprintf(b1, sizeof(b1), "%s:%u", node_ip(j, ip), dht_port(nodes[j]));
                                boot[1] = b1;
                        }
                }
                rnd_bytes(id, sizeof(id));
                if (dht_new(event, &(DhtConfig) { .bind_address = node_ip(i, addr), .bootstrap = boot, .tuning = &tuning,
                                                  .id = id },
                            &nodes[i]) < 0) {
                        fprintf(stderr, "node %u failed to start\n", i);
                        return 1;
                }
                dht_when_ready(nodes[i], on_done, NULL);
                waiting++;
                if (i % 100 == 99 || i == n_nodes - 1) {
                        uint64_t w = now_usec();
                        run_until(&waiting, 600 * USEC_PER_SEC);
                        if (getenv("SIM_DEBUG"))
                                fprintf(stderr, "wave %u: %.3f s\n", i / 100, (double) (now_usec() - w) / 1e6);
                }
        }
        run_for(3 * USEC_PER_SEC); /* let the background bucket refreshes finish */
        rss1 = rss_kib();
        q0 = total_queries();
        printf("nodes %u: formed in %.1f s, %.0f queries per node, RSS %.1f KiB per node\n", n_nodes,
               (double) (now_usec() - t0) / 1e6, (double) q0 / n_nodes, (double) (rss1 - rss0) / n_nodes);
        {
                size_t tot = 0, mn = SIZE_MAX, mx = 0;
                for (unsigned i = 0; i < n_nodes; i++) {
                        DhtStats st;
                        dht_get_stats(nodes[i], &st);
                        tot += st.nodes;
                        mn = MIN(mn, st.nodes);
                        mx = MAX(mx, st.nodes);
                }
                printf("routing tables: %.1f nodes on average (min %zu, max %zu)\n", (double) tot / n_nodes, mn, mx);
                uint64_t to = 0, late = 0, rlim = 0, se = 0, mal = 0, unexp = 0;
                for (unsigned i = 0; i < n_nodes; i++) {
                        DhtStats st;
                        dht_get_stats(nodes[i], &st);
                        to += st.timeouts;
                        late += st.late_replies;
                        rlim += st.dropped_ratelimited;
                        se += st.send_errors;
                        mal += st.dropped_malformed;
                        unexp += st.dropped_unexpected;
                }
                printf("formation: %" PRIu64 " timeouts, %" PRIu64 " late answers, %" PRIu64 " rate-limited, %" PRIu64
                       " send errors, %" PRIu64 " malformed, %" PRIu64 " unexpected\n", to, late, rlim, se, mal, unexp);
        }

        /* Announce. */
        ih = calloc(n_announces, DHT_ID_SIZE);
        announced = calloc(n_announces, sizeof(DhtAddr));
        stored = calloc(n_announces, sizeof(unsigned));
        for (unsigned i = 0; i < n_announces; i++) {
                unsigned n = rnd(n_nodes);
                char a[64], ip[32];
                rnd_bytes(ih[i], DHT_ID_SIZE);
                snprintf(a, sizeof(a), "%s:%u", node_ip(n, ip), 30000 + i);
                dht_addr_from_string(a, &announced[i]);
                dht_announce(nodes[n], ih[i], (uint16_t) (30000 + i), 0, on_announced, (void *) (uintptr_t) i);
                waiting++;
        }
        run_until(&waiting, 600 * USEC_PER_SEC);
        {
                unsigned lo = UINT_MAX, hi = 0, none = 0;
                for (unsigned i = 0; i < n_announces; i++) {
                        lo = MIN(lo, stored[i]);
                        hi = MAX(hi, stored[i]);
                        none += stored[i] == 0;
                }
                printf("announces: %u, stored on %u to %u nodes, %u on none\n", n_announces, lo, hi, none);
                lo = UINT_MAX;
                hi = 0;
                for (unsigned i = 0; i < n_announces; i++) {
                        unsigned on_closest = closest_holding(ih[i], &announced[i]);
                        lo = MIN(lo, on_closest);
                        hi = MAX(hi, on_closest);
                }
                printf("placement: of the %u nodes closest to an announce's info-hash, %u to %u hold it\n", DHT_K, lo, hi);
        }

        /* Churn: killed without warning. */
        while (n_dead < n_nodes * churn / 100) {
                unsigned n = rnd(n_nodes);
                if (dead[n])
                        continue;
                dht_kill(nodes[n]);
                dead[n] = true;
                n_dead++;
        }

        held = calloc(n_announces, sizeof(unsigned));
        {
                unsigned lo = UINT_MAX, hi = 0, none = 0;
                for (unsigned i = 0; i < n_announces; i++) {
                        held[i] = live_holders(ih[i], &announced[i]);
                        lo = MIN(lo, held[i]);
                        hi = MAX(hi, held[i]);
                        none += held[i] == 0;
                }
                printf("after churn: announces held by %u to %u live nodes, %u by none\n", lo, hi, none);
        }

        /* Lookups, one at a time. */
        lat = calloc(n_lookups, sizeof(uint64_t));
        rounds = calloc(n_lookups, sizeof(uint64_t));
        queries = calloc(n_lookups, sizeof(uint64_t));
        for (unsigned k = 0; k < n_lookups; k++) {
                unsigned n, a = rnd(n_announces);
                uint64_t t;
                do
                        n = rnd(n_nodes);
                while (dead[n]);
                want = announced[a];
                cur_done = false;
                t = now_usec();
                if (dht_get_peers(nodes[n], ih[a], on_lookup, NULL) < 0)
                        return 1;
                while (!cur_done)
                        if (sd_event_run(event, UINT64_MAX) < 0)
                                return 1;
                cur.usec = now_usec() - t;
                if (!cur.ok)
                        printf("lookup %u failed: announce %u (stored on %u nodes, %u of them alive) from node %u, "
                               "%u rounds, %u queries\n", k, a, stored[a], held[a], n, cur.rounds, cur.queries);
                if (held[a] > 0) {
                        n_held_lookups++;
                        ok_held += cur.ok;
                }
                lat[k] = cur.usec;
                rounds[k] = cur.rounds;
                queries[k] = cur.queries;
                ok += cur.ok;
        }
        qsort(lat, n_lookups, sizeof(uint64_t), cmp_u64);
        qsort(rounds, n_lookups, sizeof(uint64_t), cmp_u64);
        qsort(queries, n_lookups, sizeof(uint64_t), cmp_u64);
        double mean_q = 0, mean_r = 0;
        for (unsigned k = 0; k < n_lookups; k++) {
                mean_q += (double) queries[k];
                mean_r += (double) rounds[k];
        }
        printf("churn %u%% (%u killed): %u lookups, success %.2f%%, rounds p50 %" PRIu64 " p99 %" PRIu64 " (mean %.2f), "
               "latency p50 %.2f ms p99 %.2f ms max %.2f ms, queries per lookup p50 %" PRIu64 " p99 %" PRIu64 " (mean %.1f)\n",
               churn, n_dead, n_lookups, 100.0 * ok / n_lookups, pct(rounds, n_lookups, 0.5), pct(rounds, n_lookups, 0.99),
               mean_r / n_lookups, (double) pct(lat, n_lookups, 0.5) / 1e3, (double) pct(lat, n_lookups, 0.99) / 1e3,
               (double) pct(lat, n_lookups, 1.0) / 1e3, pct(queries, n_lookups, 0.5), pct(queries, n_lookups, 0.99),
               mean_q / n_lookups);
        printf("held: %u lookups for an announce a live node held, success %.2f%%\n", n_held_lookups,
               n_held_lookups ? 100.0 * ok_held / n_held_lookups : 100.0);
        fflush(stdout);
        /* Exit without tearing down thousands of nodes one by one. */
        _exit(0);
}
