/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The seeder in the DHT: its contents announced (the first 20 bytes of each id, BEP 52, with the peer
 * port; the DHT node re-announces them every 15 minutes until they are removed), and the control
 * replicas found under SHA-1("mc-control:" + CLUSTER_NAME), as the agent finds them
 * (agent-discovery.c): looked up at start and every minute, and handed to the registrar after the
 * configured CONTROL_URLS. */

#include "daemon-util.h"
#include "dht-daemon.h"
#include "log.h"
#include "seeder.h"

#define LOOKUP_INTERVAL_USEC (60 * USEC_PER_SEC)
/* After a lookup that found nothing, sooner: a control may just be starting. */
#define LOOKUP_RETRY_USEC (5 * USEC_PER_SEC)

void seeder_apply_control_urls(Seeder *s) {
        _cleanup_strv_free_ char **l = NULL;

        for (char **u = s->config->control_urls; u && *u; u++)
                if (strv_extend(&l, *u) < 0)
                        return (void) log_oom();
        for (char **u = s->dht_control_urls; u && *u; u++)
                if (strv_extend(&l, *u) < 0)
                        return (void) log_oom();
        if (registrar_set_urls(s->registrar, l) < 0)
                log_oom();
}

static void schedule_lookup(Seeder *s, uint64_t delay) {
        (void) sd_event_source_set_time_relative(s->lookup_timer, delay);
        (void) sd_event_source_set_enabled(s->lookup_timer, SD_EVENT_ONESHOT);
}

static void on_controls(int error, char **urls, void *userdata) {
        _cleanup_strv_free_ char **found = urls;
        Seeder *s = userdata;

        if (error == -ECANCELED)        /* dht_free(): nothing may be touched */
                return;
        s->lookup_running = false;
        if (error < 0 || strv_length(found) == 0) {
                log_debug("DHT: no control replica of cluster \"%s\" found (%s).", s->config->dht.cluster_name,
                          error < 0 ? strerror(-error) : "none announced");
                schedule_lookup(s, LOOKUP_RETRY_USEC);
                return;
        }
        if (tls_client_found_urls(&s->config->tls, found) < 0)
                return (void) log_oom();
        strv_free(s->dht_control_urls);
        s->dht_control_urls = TAKE_PTR(found);
        seeder_apply_control_urls(s);
        schedule_lookup(s, LOOKUP_INTERVAL_USEC);
}

static int on_lookup_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        Seeder *s = userdata;
        int r;

        if (s->lookup_running)
                return 0;
        r = dht_find_controls(s->dht, s->config->dht.cluster_name, on_controls, s);
        if (r < 0) {
                log_warning_errno(r, "DHT: cannot look for the controls: %m");
                schedule_lookup(s, LOOKUP_RETRY_USEC);
                return 0;
        }
        s->lookup_running = true;
        return 0;
}

int seeder_dht_start(Seeder *s) {
        const SeederConfig *c = s->config;
        int r;

        if (!seeder_config_wants_dht(c))
                return 0;
        /* As for the agent: bootstrap nodes without a port mean any free port. */
        r = dht_new(s->event, &(DhtConfig) {
                        .port = (uint16_t) c->dht.port,
                        .bootstrap = c->dht.bootstrap,
                        .state_dir = seeder_state_directory(),
                }, &s->dht);
        if (r < 0)
                return log_error_errno(r, "Cannot start the DHT node on UDP port %" PRIi64 ": %m", c->dht.port);
        log_info("DHT node on UDP port %u.", dht_port(s->dht));
        if (strv_length(c->dht.bootstrap) == 0)
                return 0;
        r = sd_event_add_time_relative(s->event, &s->lookup_timer, CLOCK_MONOTONIC, 0, 0, on_lookup_timer, s);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the control lookup: %m");
        return 0;
}

static int short_id(const char *id, uint8_t ret[DHT_ID_SIZE]) {
        uint8_t full[TORRENT_ID_SIZE];
        int r;

        r = torrent_id_from_hex(id, full);
        if (r < 0)
                return r;
        torrent_id_short(full, ret);
        return 0;
}

void seeder_dht_announce(Seeder *s, const char *id) {
        uint8_t ih[DHT_ID_SIZE];
        int r;

        if (!s->dht || s->peer_port == 0 || short_id(id, ih) < 0)
                return;
        r = dht_announce(s->dht, ih, s->peer_port, DHT_REPUBLISH, NULL, NULL);
        if (r < 0)
                log_warning_errno(r, "DHT: cannot announce content %s: %m", id);
}

void seeder_dht_unannounce(Seeder *s, const char *id) {
        uint8_t ih[DHT_ID_SIZE];

        if (s->dht && short_id(id, ih) >= 0)
                (void) dht_unpublish(s->dht, ih);
}
