/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>

#include "dht-daemon.h"
#include "log.h"

int dht_from_settings(sd_event *e, const DhtSettings *s, const char *state_dir, Dht **ret) {
        Dht *d = NULL;
        int r;

        if (s->port <= 0) {
                *ret = NULL;
                return 0;
        }
        if (s->port > 65535)
                return log_error_errno(ERANGE, "DHT_PORT=%" PRIi64 " is out of range.", s->port);
        r = dht_new(e, &(DhtConfig) {
                        .port = (uint16_t) s->port,
                        .bootstrap = s->bootstrap,
                        .state_dir = state_dir,
                }, &d);
        if (r < 0)
                return log_error_errno(r, "Cannot start the DHT node on UDP port %" PRIi64 ": %m", s->port);
        if (strv_length(s->bootstrap) == 0)
                log_info("DHT node on UDP port %" PRIi64 " has no bootstrap nodes; it waits to be contacted.", s->port);
        *ret = d;
        return 0;
}

int dht_control_announce(Dht *d, const char *cluster_name, uint16_t http_port) {
        uint8_t ih[DHT_ID_SIZE];

        if (!d)
                return 0;
        if (http_port == 0)
                return -EINVAL;
        cluster_info_hash(cluster_name, ih);
        return dht_announce(d, ih, http_port, DHT_REPUBLISH, NULL, NULL);
}

char *dht_addr_to_http_url(const DhtAddr *a) {
        char ip[INET6_ADDRSTRLEN], *s;

        if (!inet_ntop(a->family, a->ip, ip, sizeof(ip)))
                return NULL;
        if (asprintf(&s, a->family == AF_INET6 ? "http://[%s]:%u" : "http://%s:%u", ip, a->port) < 0)
                return NULL;
        return s;
}

typedef struct FindCtx {
        DhtControlsCallback cb;
        void *userdata;
} FindCtx;

static void on_peers(Dht *d, const DhtResult *r, void *userdata) {
        _cleanup_strv_free_ char **urls = calloc(1, sizeof(char *));
        FindCtx *c = userdata;
        int error = r->error;

        for (size_t i = 0; urls && error >= 0 && i < r->n_peers; i++) {
                _cleanup_free_ char *u = dht_addr_to_http_url(&r->peers[i]);
                if (!u || strv_extend(&urls, u) < 0)
                        error = -ENOMEM;
        }
        if (!urls)
                error = -ENOMEM;
        c->cb(error, error >= 0 ? TAKE_PTR(urls) : NULL, c->userdata);
        free(c);
}

int dht_find_controls(Dht *d, const char *cluster_name, DhtControlsCallback cb, void *userdata) {
        uint8_t ih[DHT_ID_SIZE];
        FindCtx *c;
        int r;

        c = malloc(sizeof(FindCtx));
        if (!c)
                return -ENOMEM;
        c->cb = cb;
        c->userdata = userdata;
        cluster_info_hash(cluster_name, ih);
        r = dht_get_peers(d, ih, on_peers, c);
        if (r < 0)
                free(c);
        return r;
}
