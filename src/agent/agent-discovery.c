/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Control replicas found in the DHT (docs/architecture.md). The controls announce their HTTP port under
 * SHA-1("mc-control:" + CLUSTER_NAME); the agent looks them up at start, every minute, and whenever
 * no replica it knows answered a call, and gives the control client the configured CONTROL_URLS
 * followed by what the DHT returned. A replica found in the DHT stays on the list while lookups keep
 * returning it, even when it does not answer (failover skips it): announcements outlive a stopped
 * control by up to 30 minutes, and a replica that is only restarting comes back under the same URL.
 * It is dropped when a newer lookup no longer returns it. */

#include "agent-internal.h"
#include "config.h"
#include "daemon-util.h"
#include "dht-daemon.h"
#include "hex.h"
#include "log.h"

/* Between lookups while the list is fine. */
#define LOOKUP_INTERVAL_USEC (60 * USEC_PER_SEC)
/* After a lookup that found nothing: again after 1 s, doubling up to the interval. */
#define LOOKUP_RETRY_MIN_USEC (1 * USEC_PER_SEC)
/* Failing calls ask for a lookup at most this often (each call that fails through every replica
 * would, and there are several kinds of calls). */
#define LOOKUP_MIN_GAP_USEC (5 * USEC_PER_SEC)

static bool dht_wanted(const AgentConfig *c) {
        return strv_length(c->dht.bootstrap) > 0 || c->dht.port > 0;
}

static void info_hash_hex(const char *cluster_name, char ret[DHT_ID_SIZE * 2 + 1]) {
        uint8_t ih[DHT_ID_SIZE];

        cluster_info_hash(cluster_name, ih);
        hex_encode(ih, sizeof(ih), ret);
}

/* Arms the lookup timer for `at` (CLOCK_MONOTONIC) unless it is already armed for earlier. */
static void schedule_lookup_at(Agent *a, uint64_t at) {
        int enabled = SD_EVENT_OFF;
        uint64_t armed;

        if (!a->lookup_timer)
                return;
        if (sd_event_source_get_enabled(a->lookup_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF &&
            sd_event_source_get_time(a->lookup_timer, &armed) >= 0 && armed <= at)
                return;
        (void) sd_event_source_set_time(a->lookup_timer, at);
        (void) sd_event_source_set_enabled(a->lookup_timer, SD_EVENT_ONESHOT);
}

/* The configured URLs, then the DHT's, to the control client; the D-Bus property follows. */
static void apply_urls(Agent *a) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *joined = NULL, *field = NULL;
        int r;

        for (char **u = a->config.control_urls; u && *u; u++)
                if (strv_extend(&l, *u) < 0)
                        return (void) log_oom();
        for (char **u = a->dht_urls; u && *u; u++)
                if (strv_extend(&l, *u) < 0)
                        return (void) log_oom();
        r = control_client_set_urls(a->control, l);
        if (r < 0)
                return (void) log_oom();
        if (r == 0)
                return;
        field = strv_join(control_client_urls(a->control), ",");
        joined = strv_join(control_client_urls(a->control), ", ");
        log_event(LOG_INFO, MC_EVENT_CONTROL_URLS_CHANGED, LOG_FIELDS("NODE_ID", a->config.node_id,
                                                              "CONTROL_URLS", field ?: ""),
                  "Control replicas, in the order tried: %s.",
                  control_client_n_urls(a->control) > 0 ? strna(joined) : "none");
        agent_bus_control_urls_changed(a);

        /* Not registered yet, and maybe waiting in a long backoff (or not even trying, when the
         * agent started knowing no replica): now there is one to ask. */
        if (control_client_n_urls(a->control) > 0 && !a->registered && !a->register_call && !a->stopping) {
                a->register_backoff_usec = 0;
                (void) sd_event_source_set_time_relative(a->register_timer, 0);
                (void) sd_event_source_set_enabled(a->register_timer, SD_EVENT_ONESHOT);
        }
}

/* found: NULL-terminated, in the DHT's order. Keeps the order of the replicas already known, so that
 * the list does not reshuffle with every lookup, and appends the new ones. Returns whether it changed. */
static int merge_found(Agent *a, char **found) {
        _cleanup_strv_free_ char **l = NULL, **norm = NULL;
        bool changed;

        for (char **u = found; u && *u; u++) {
                _cleanup_free_ char *s = control_url_normalize(*u);
                if (!s || strv_extend(&norm, s) < 0)
                        return -ENOMEM;
        }
        for (char **u = a->dht_urls; u && *u; u++)
                if (strv_contains(norm, *u) && strv_extend(&l, *u) < 0)
                        return -ENOMEM;
        for (char **u = norm; u && *u; u++)
                if (!strv_contains(l, *u) && strv_extend(&l, *u) < 0)
                        return -ENOMEM;

        changed = strv_length(l) != strv_length(a->dht_urls);
        for (size_t i = 0; !changed && l && l[i]; i++)
                changed = !streq(l[i], a->dht_urls[i]);
        strv_free(a->dht_urls);
        a->dht_urls = TAKE_PTR(l);
        return changed;
}

static void on_controls(int error, char **urls, void *userdata) {
        _cleanup_strv_free_ char **found = urls;
        _cleanup_free_ char *joined = NULL, *field = NULL, *boot = NULL;
        Agent *a = userdata;
        const char *name = a->config.dht.cluster_name;
        char ih[DHT_ID_SIZE * 2 + 1];
        uint64_t next;
        int r;

        /* dht_free() from agent_free(): nothing may be touched any more. */
        if (error == -ECANCELED)
                return;
        a->lookup_running = false;
        info_hash_hex(name, ih);

        if (error >= 0 && strv_length(found) > 0) {
                r = tls_client_found_urls(&a->config.tls, found);
                if (r >= 0)
                        r = merge_found(a, found);
                if (r < 0)
                        return (void) log_oom();
                joined = strv_join(a->dht_urls, ", ");
                field = strv_join(a->dht_urls, ",");
                log_event(r > 0 || a->lookup_outcome != 1 ? LOG_INFO : LOG_DEBUG, MC_EVENT_CONTROLS_FOUND,
                          LOG_FIELDS("NODE_ID", a->config.node_id, "CLUSTER_NAME", name, "INFO_HASH", ih,
                                     "CONTROL_URLS", field ?: ""),
                          "DHT: %zu control replica(s) of cluster \"%s\": %s.", strv_length(a->dht_urls), name,
                          strna(joined));
                a->lookup_outcome = 1;
                a->lookup_backoff_usec = 0;
                next = LOOKUP_INTERVAL_USEC;
        } else {
                int e = error >= 0 ? -ENOENT : error;

                a->lookup_backoff_usec = MIN(MAX(a->lookup_backoff_usec * 2, LOOKUP_RETRY_MIN_USEC), LOOKUP_INTERVAL_USEC);
                next = a->lookup_backoff_usec;
                if (e == -ENOENT) {
                        /* Nodes answered, and none knows a control of this cluster any more. */
                        r = merge_found(a, NULL);
                        if (r < 0)
                                return (void) log_oom();
                        log_event(a->lookup_outcome != e ? LOG_WARNING : LOG_DEBUG, MC_EVENT_CONTROLS_NOT_FOUND,
                                  LOG_FIELDS("NODE_ID", a->config.node_id, "CLUSTER_NAME", name, "INFO_HASH", ih),
                                  "DHT: no control replica is announced for cluster \"%s\" (info-hash %s); "
                                  "check that CLUSTER_NAME is the controls' one. Looking again in %" PRIu64 " s%s.",
                                  name, ih, next / USEC_PER_SEC,
                                  strv_length(a->config.control_urls) > 0 ? "; CONTROL_URLS meanwhile" : "");
                        if (!a->registered)
                                daemon_notify_status("No control of cluster \"%s\" found in the DHT; looking again.", name);
                } else {
                        /* Keep what the last lookup found: the DHT, not the controls, is unreachable. */
                        boot = strv_join(a->config.dht.bootstrap, ", ");
                        log_event(a->lookup_outcome != e ? LOG_WARNING : LOG_DEBUG, MC_EVENT_DHT_LOOKUP_FAILED,
                                  LOG_FIELDS("NODE_ID", a->config.node_id, "CLUSTER_NAME", name, "INFO_HASH", ih),
                                  "DHT: looking for the controls of cluster \"%s\" failed: %s (bootstrap nodes: %s). "
                                  "Looking again in %" PRIu64 " s.",
                                  name, e == -EHOSTUNREACH ? "no DHT node answered" : strerror(-e),
                                  isempty(boot) ? "none" : boot, next / USEC_PER_SEC);
                        if (!a->registered)
                                daemon_notify_status("Cannot reach the DHT to find the controls; trying again.");
                }
                a->lookup_outcome = e;
        }
        apply_urls(a);
        schedule_lookup_at(a, now_usec() + next);
}

static void lookup(Agent *a) {
        int r;

        a->lookup_started_usec = now_usec();
        r = dht_find_controls(a->dht, a->config.dht.cluster_name, on_controls, a);
        if (r < 0) {
                log_warning_errno(r, "DHT: cannot look for the controls: %m");
                schedule_lookup_at(a, now_usec() + LOOKUP_MIN_GAP_USEC);
                return;
        }
        a->lookup_running = true;
        log_debug("DHT: looking for the controls of cluster \"%s\".", a->config.dht.cluster_name);
}

static int on_lookup_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;

        /* One lookup at a time; the running one schedules the next when it ends. */
        if (!a->lookup_running)
                lookup(a);
        return 0;
}

/* No replica answered a call: maybe the replicas moved. */
static void on_controls_unreachable(ControlClient *c, void *userdata) {
        Agent *a = userdata;

        if (a->lookup_running || a->stopping)
                return;
        schedule_lookup_at(a, MAX(now_usec(), a->lookup_started_usec + LOOKUP_MIN_GAP_USEC));
}

int discovery_init(Agent *a) {
        const AgentConfig *c = &a->config;
        int fds[DAEMON_SOCKETS_PER_NAME], r;
        unsigned n;

        /* A socket passed as "dht" (units/mc-agent-dht.socket) is the node's port, whatever DHT_PORT
         * says, and makes the agent join the DHT. */
        n = agent_socket_take(a, AGENT_SOCKET_DHT, fds);
        if (n == 0 && !dht_wanted(c))
                return 0;
        agent_socket_check_config(a, AGENT_SOCKET_DHT, fds, n, "DHT_PORT", c->dht.port, NULL, NULL);
        /* An agent needs no fixed port to find the controls: DHT_PORT=0 (the default) with bootstrap
         * nodes means any free port. */
        r = dht_new(a->event, &(DhtConfig) {
                        .port = (uint16_t) c->dht.port,
                        .fds = fds,
                        .n_fds = n,
                        .bootstrap = c->dht.bootstrap,
                        .state_dir = a->state_dir,
                }, &a->dht);
        if (r < 0 && n > 0)
                return log_error_errno(r, "Cannot join the DHT on the UDP socket passed as \"dht\": %m");
        if (r < 0)
                return log_error_errno(r, "Cannot join the DHT on UDP port %" PRIi64 "%s: %m", c->dht.port,
                                       c->dht.port == 0 ? " (any)" : "");
        r = sd_event_add_time(a->event, &a->lookup_timer, CLOCK_MONOTONIC, UINT64_MAX, 100 * USEC_PER_MSEC,
                              on_lookup_timer, a);
        if (r < 0)
                return log_error_errno(r, "Cannot create the DHT lookup timer: %m");
        (void) sd_event_source_set_enabled(a->lookup_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(a->lookup_timer, "dht-lookup");
        control_client_set_unreachable_callback(a->control, on_controls_unreachable, a);

        if (strv_length(c->dht.bootstrap) == 0)
                log_warning("%s but DHT_BOOTSTRAP is not: the DHT node only finds controls through the nodes "
                            "it saved last time or that contact it.",
                            n > 0 ? "A DHT socket was passed" : "DHT_PORT is set");
        log_info("DHT node on UDP port %u%s; looking for the controls of cluster \"%s\".", dht_port(a->dht),
                 n > 0 ? " (the socket systemd passed as \"dht\")" :
                 c->dht.port == 0 ? " (any free port: DHT_PORT=0)" : "", c->dht.cluster_name);
        return 0;
}

void discovery_start(Agent *a) {
        if (a->dht)
                schedule_lookup_at(a, now_usec());
}

void discovery_done(Agent *a) {
        /* First: it cancels the lookup in flight, whose callback must still find a. */
        a->dht = dht_free(a->dht);
        a->lookup_timer = sd_event_source_disable_unref(a->lookup_timer);
        strv_free(a->dht_urls);
        a->dht_urls = NULL;
}
