/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-seeder serving contents to peers: the block sender as the swarm server's sink, the store's
 * contents registered with it, and what the journal and the bus learn of it. See seed-server.h. */

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>

#include "list.h"
#include "log.h"
#include "peer-sink-uring.h"
#include "rate-log.h"
#include "seed-server.h"

typedef struct Served Served;
struct Served {
        LIST_FIELDS(Served);
        ContentStore *store;
};


struct SeedServer {
        sd_event *event;
        SeedServerConfig config;
        BlockSender *sender;
        PeerSink *sink;
        SwarmServer *srv;
        Served *served;

        /* The bus: what `changed` last reported, and when. */
        sd_event_source *notify_timer;
        uint64_t notified_usec;
        SwarmServerStats notified;

        /* The journal. */
        RateLog violation_log, limit_log;
        sd_event_source *summary_timer;
        SwarmServerStats summarized;
};

uint64_t seed_server_violations(const SwarmServerStats *st) {
        return st->violations + st->unknown_info_hash;
}

uint64_t seed_server_refused(const SwarmServerStats *st) {
        /* Those closed without a handshake to make room at MAX_PEERS, and those shed for want of a
         * descriptor, went over a cap too. */
        return st->refused_global + st->refused_address + st->evicted + st->refused_descriptors;
}

static uint64_t now_usec(SeedServer *s) {
        uint64_t t = 0;
        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &t);
        return t;
}

/* ---- the bus: PropertiesChanged at most once a second */

static bool bus_counters_differ(const SwarmServerStats *a, const SwarmServerStats *b) {
        return a->connections != b->connections || a->bytes_sent != b->bytes_sent ||
               seed_server_violations(a) != seed_server_violations(b) || seed_server_refused(a) != seed_server_refused(b);
}

static int on_notify_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        SeedServer *s = userdata;
        SwarmServerStats st;

        swarm_server_get_stats(s->srv, &st);
        if (bus_counters_differ(&st, &s->notified)) {
                s->notified = st;
                s->notified_usec = usec;
                if (s->config.changed)
                        s->config.changed(s, s->config.userdata);
        }
        /* Bytes move without any event of ours while peers download: look again in a second. */
        if (st.connections > 0) {
                (void) sd_event_source_set_time(source, usec + SEED_SERVER_NOTIFY_USEC);
                (void) sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* Something changed now: reported at once unless a report went out less than a second ago. */
static void schedule_notify(SeedServer *s) {
        int enabled = SD_EVENT_OFF;
        uint64_t at;

        if (!s->notify_timer)
                return;         /* being freed */
        (void) sd_event_source_get_enabled(s->notify_timer, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;
        at = MAX(now_usec(s), s->notified_usec + SEED_SERVER_NOTIFY_USEC);
        (void) sd_event_source_set_time(s->notify_timer, at);
        (void) sd_event_source_set_enabled(s->notify_timer, SD_EVENT_ONESHOT);
}

/* ---- the journal */

static void log_summary(SeedServer *s, const char *when) {
        SwarmServerStats st;
        char peers[16], accepted[32], bytes[32], violations[32], refused[32], timeouts[32];

        swarm_server_get_stats(s->srv, &st);
        if (st.accepted == s->summarized.accepted && st.bytes_sent == s->summarized.bytes_sent)
                return;         /* nothing new: no entry */
        s->summarized = st;
        snprintf(peers, sizeof(peers), "%u", st.connections);
        snprintf(accepted, sizeof(accepted), "%" PRIu64, st.accepted);
        snprintf(bytes, sizeof(bytes), "%" PRIu64, st.bytes_sent);
        snprintf(violations, sizeof(violations), "%" PRIu64, seed_server_violations(&st));
        snprintf(refused, sizeof(refused), "%" PRIu64, seed_server_refused(&st));
        snprintf(timeouts, sizeof(timeouts), "%" PRIu64, st.timeouts);
        log_event(LOG_INFO, MC_EVENT_SERVING_SUMMARY,
                  LOG_FIELDS("PEERS", peers, "PEERS_ACCEPTED", accepted, "BYTES_SERVED", bytes,
                             "PEER_VIOLATIONS", violations, "PEERS_REFUSED", refused, "PEER_TIMEOUTS", timeouts),
                  "Serving%s: %s peer(s) connected, %s accepted since start, %s bytes served, %s closed for "
                  "violations, %s refused over the caps, %s timed out.",
                  when, peers, accepted, bytes, violations, refused, timeouts);
}

static int on_summary_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        SeedServer *s = userdata;

        log_summary(s, "");
        (void) sd_event_source_set_time(source, usec + SEED_SERVER_SUMMARY_USEC);
        return 0;
}

static void on_closed(SwarmServer *srv, const char *address, int error, const char *reason, void *userdata) {
        SeedServer *s = userdata;
        uint64_t suppressed;

        schedule_notify(s);
        /* A peer closing, resetting or going silent is ordinary; a violation (or asking for a content
         * we do not have) says something about the peer or the cluster, and is counted. */
        if (error == 0 || error == -ECONNRESET || error == -EPIPE || error == -ETIMEDOUT) {
                log_debug("Peer %s: connection closed%s%s.", address, error ? ": " : "", error ? strerror(-error) : "");
                return;
        }
        if (!rate_log_allow(&s->violation_log, now_usec(s), SEED_SERVER_LOG_INTERVAL_USEC, &suppressed)) {
                log_debug("Peer %s disconnected: %s", address, reason ?: strerror(-error));
                return;
        }
        {
                SwarmServerStats st;
                char total[32], since[32];

                swarm_server_get_stats(s->srv, &st);
                snprintf(total, sizeof(total), "%" PRIu64, seed_server_violations(&st));
                snprintf(since, sizeof(since), "%" PRIu64, suppressed);
                log_event(LOG_INFO, MC_EVENT_PEER_VIOLATION,
                          LOG_FIELDS("PEER_ADDRESS", address, "PEER_REASON", reason ?: strerror(-error),
                                     "PEER_VIOLATIONS", total, "PEERS_NOT_LOGGED", since),
                          "Peer %s disconnected: %s (%s such disconnections since start; %s not logged since the last entry).",
                          address, reason ?: strerror(-error), total, since);
        }
}

static void log_refused(SeedServer *s, const char *address) {
        SwarmServerStats st;
        char total[32], since[32];
        uint64_t suppressed;

        if (!rate_log_allow(&s->limit_log, now_usec(s), SEED_SERVER_LOG_INTERVAL_USEC, &suppressed)) {
                log_debug("Peer %s refused: over the connection caps.", address);
                return;
        }
        swarm_server_get_stats(s->srv, &st);
        snprintf(total, sizeof(total), "%" PRIu64, seed_server_refused(&st));
        snprintf(since, sizeof(since), "%" PRIu64, suppressed);
        log_event(LOG_INFO, MC_EVENT_PEER_LIMIT,
                  LOG_FIELDS("PEER_ADDRESS", address, "PEERS_REFUSED", total, "PEERS_NOT_LOGGED", since),
                  "Peer %s refused: over MAX_PEERS or MAX_PEERS_PER_ADDRESS (%s refused since start; %s not logged "
                  "since the last entry).",
                  address, total, since);
}

/* ---- serving */

static void format_peer(int fd, char *buf, size_t size) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        char host[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;

        if (getpeername(fd, (struct sockaddr *) &sa, &len) >= 0) {
                if (sa.ss_family == AF_INET) {
                        inet_ntop(AF_INET, &((struct sockaddr_in *) &sa)->sin_addr, host, sizeof(host));
                        port = ntohs(((struct sockaddr_in *) &sa)->sin_port);
                } else if (sa.ss_family == AF_INET6) {
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &sa)->sin6_addr, host, sizeof(host));
                        port = ntohs(((struct sockaddr_in6 *) &sa)->sin6_port);
                }
        }
        snprintf(buf, size, sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

void seed_server_take(SeedServer *s, int fd) {
        char address[PEER_CONN_ADDR_MAX] = "";
        int r;

        assert(s);
        assert(fd >= 0);
        /* The name is needed only if the server refuses the connection, after which it is gone. */
        format_peer(fd, address, sizeof(address));
        r = swarm_server_take(s->srv, fd);
        schedule_notify(s);
        if (r == -EBUSY)
                log_refused(s, address);
        else if (r < 0)
                log_debug_errno(r, "Peer %s: cannot serve the connection: %m", address);
}

static Served *find_served(SeedServer *s, const uint8_t id[TORRENT_ID_SIZE]) {
        for (Served *sv = s->served; sv; sv = sv->next)
                if (memcmp(content_store_manifest(sv->store)->id, id, TORRENT_ID_SIZE) == 0)
                        return sv;
        return NULL;
}

int seed_server_add(SeedServer *s, const char *path, const Manifest *m) {
        _cleanup_(content_store_unrefp) ContentStore *store = NULL;
        Served *sv;
        int r;

        assert(s);
        assert(path);
        assert(m);
        if (find_served(s, m->id))
                return -EEXIST;
        r = content_store_open_file(path, m, &store);
        if (r < 0)
                return r;
        sv = calloc(1, sizeof(*sv));
        if (!sv)
                return -ENOMEM;
        r = swarm_server_add(s->srv, store);
        if (r < 0) {
                free(sv);
                return r;
        }
        sv->store = TAKE_PTR(store);
        LIST_PREPEND(s->served, sv);
        return 0;
}

int seed_server_remove(SeedServer *s, const uint8_t id[TORRENT_ID_SIZE]) {
        Served *sv;
        int r;

        assert(s);
        sv = find_served(s, id);
        if (!sv)
                return -ENOENT;
        /* Closes the connections serving it; blocks of it still in the kernel's hands keep their
         * own references to the file, which goes when the last is done. */
        r = swarm_server_remove(s->srv, sv->store);
        LIST_REMOVE(s->served, sv);
        content_store_unref(sv->store);
        free(sv);
        schedule_notify(s);
        return r;
}

BlockSendPath seed_server_send_path(const SeedServer *s) {
        return block_sender_path(s->sender);
}

void seed_server_get_stats(const SeedServer *s, SwarmServerStats *ret) {
        swarm_server_get_stats(s->srv, ret);
}

SeedServer *seed_server_free(SeedServer *s) {
        if (!s)
                return NULL;
        if (s->srv)
                log_summary(s, " (stopping)");
        s->notify_timer = sd_event_source_disable_unref(s->notify_timer);
        s->summary_timer = sd_event_source_disable_unref(s->summary_timer);
        /* Connections go before the sink they write to, the sink before its sender. */
        s->srv = swarm_server_free(s->srv);
        while (s->served) {
                Served *sv = s->served;
                LIST_REMOVE(s->served, sv);
                content_store_unref(sv->store);
                free(sv);
        }
        s->sink = peer_sink_free(s->sink);
        s->sender = block_sender_free(s->sender);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

int seed_server_new(sd_event *e, const SeedServerConfig *config, SeedServer **ret) {
        _cleanup_(seed_server_freep) SeedServer *s = NULL;
        int r;

        assert(e);
        assert(config);
        assert(ret);

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->config = *config;

        r = block_sender_new(e, &(BlockSenderConfig) { .path = config->send_path }, &s->sender);
        if (r < 0)
                return r;
        r = peer_sink_block_sender_new(s->sender, &s->sink);
        if (r < 0)
                return r;
        r = swarm_server_new(e, &(SwarmServerConfig) {
                                     .listen_fd = -1,
                                     .sink = s->sink,
                                     .max_connections = config->max_peers,
                                     .max_per_address = config->max_peers_per_address,
                                     .closed = on_closed,
                                     .userdata = s,
                             }, &s->srv);
        if (r < 0)
                return r;
        r = sd_event_add_time(e, &s->notify_timer, CLOCK_MONOTONIC, 0, 0, on_notify_timer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->notify_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(s->notify_timer, "seed-server-notify");
        r = sd_event_add_time_relative(e, &s->summary_timer, CLOCK_MONOTONIC, SEED_SERVER_SUMMARY_USEC,
                                       USEC_PER_SEC, on_summary_timer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->summary_timer, SD_EVENT_ON);
        (void) sd_event_source_set_description(s->summary_timer, "seed-server-summary");
        *ret = TAKE_PTR(s);
        return 0;
}
