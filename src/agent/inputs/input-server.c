/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "daemon-util.h"
#include "input-server.h"
#include "log.h"
#include "manifest.h"

/* Stores served: few (an agent's inputs), so a plain array. */
#define SERVED_MAX 4096

struct InputServer {
        sd_event *event;
        Dht *dht;
        int listen_fd;
        uint16_t port;
        SwarmServer *server;
        ContentStore **stores;
        size_t n_stores;
};

static void on_closed(SwarmServer *srv, const char *address, int error, const char *reason, void *userdata) {
        if (error < 0)
                log_debug("Peer %s: connection closed: %s", address, strna(reason));
}

int input_server_new(sd_event *e, const InputServerConfig *config, InputServer **ret) {
        _cleanup_(input_server_freep) InputServer *s = NULL;
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int r;

        assert(e);
        assert(config);
        assert(config->sink);
        assert(ret);
        s = calloc(1, sizeof(*s));
        if (!s) {
                if (config->listen_fd)
                        close(*config->listen_fd);
                return -ENOMEM;
        }
        s->event = sd_event_ref(e);
        s->dht = config->dht;
        s->listen_fd = -1;
        if (config->listen_fd)
                s->listen_fd = *config->listen_fd;
        else {
                s->listen_fd = daemon_listen_tcp(NULL, (uint16_t) config->port);
                if (s->listen_fd < 0)
                        return log_error_errno(s->listen_fd, "Cannot listen on the peer port %" PRIi64 ": %m",
                                               config->port);
        }
        if (getsockname(s->listen_fd, (struct sockaddr *) &sa, &salen) < 0)
                return log_error_errno(errno, "Cannot read the peer port: %m");
        s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &sa)->sin6_port
                                                 : ((struct sockaddr_in *) &sa)->sin_port);
        r = swarm_server_new(e, &(SwarmServerConfig) {
                        .listen_fd = s->listen_fd,
                        .sink = config->sink,
                        .closed = on_closed,
                        .userdata = s,
                }, &s->server);
        if (r < 0)
                return log_error_errno(r, "Cannot serve the peer port: %m");
        *ret = TAKE_PTR(s);
        return 0;
}

InputServer *input_server_free(InputServer *s) {
        if (!s)
                return NULL;
        /* Connections first: they hold references to the stores. */
        s->server = swarm_server_free(s->server);
        for (size_t i = 0; i < s->n_stores; i++)
                content_store_unref(s->stores[i]);
        free(s->stores);
        safe_close(s->listen_fd);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

uint16_t input_server_port(const InputServer *s) {
        return s->port;
}

SwarmServer *input_server_swarm(InputServer *s) {
        return s->server;
}

static ssize_t find_content(InputServer *s, const ContentStore *store) {
        const uint8_t *id = content_store_manifest(store)->id;

        for (size_t i = 0; i < s->n_stores; i++)
                if (memcmp(content_store_manifest(s->stores[i])->id, id, TORRENT_ID_SIZE) == 0)
                        return (ssize_t) i;
        return -1;
}

static void drop_at(InputServer *s, size_t i) {
        (void) swarm_server_remove(s->server, s->stores[i]);
        content_store_unref(s->stores[i]);
        s->stores[i] = s->stores[--s->n_stores];
}

int input_server_add(InputServer *s, ContentStore *store) {
        uint8_t short_id[TORRENT_ID_SHORT_SIZE];
        ssize_t i;
        int r;

        assert(s);
        assert(store);
        i = find_content(s, store);
        if (i >= 0) {
                if (s->stores[i] == store)
                        return 0;
                drop_at(s, (size_t) i);
        }
        if (s->n_stores >= SERVED_MAX)
                return -E2BIG;
        {
                ContentStore **l = reallocarray(s->stores, s->n_stores + 1, sizeof(ContentStore *));
                if (!l)
                        return -ENOMEM;
                s->stores = l;
        }
        r = swarm_server_add(s->server, store);
        if (r < 0)
                return r;
        s->stores[s->n_stores++] = content_store_ref(store);
        if (s->dht) {
                torrent_id_short(content_store_manifest(store)->id, short_id);
                r = dht_announce(s->dht, short_id, s->port, DHT_REPUBLISH, NULL, NULL);
                if (r < 0)
                        log_warning_errno(r, "Cannot announce %s in the DHT: %m", content_store_path(store));
        }
        return 0;
}

int input_server_remove(InputServer *s, ContentStore *store) {
        uint8_t short_id[TORRENT_ID_SHORT_SIZE];
        ssize_t i;

        assert(s);
        assert(store);
        i = find_content(s, store);
        if (i < 0 || s->stores[i] != store)
                return -ENOENT;
        drop_at(s, (size_t) i);
        if (s->dht) {
                torrent_id_short(content_store_manifest(store)->id, short_id);
                (void) dht_unpublish(s->dht, short_id);
        }
        return 0;
}

uint64_t input_server_bytes_served(const InputServer *s) {
        SwarmServerStats st;

        swarm_server_get_stats(s->server, &st);
        return st.bytes_sent;
}
