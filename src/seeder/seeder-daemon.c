/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The daemon's life: the store loaded (leftovers dropped), every content registered and announced,
 * adds on threads, removes, and what the peer port gets. See seeder.h. */

#include <json-c/json.h>
#include <sys/stat.h>

#include "daemon-util.h"
#include "json-util.h"
#include "log.h"
#include "seeder.h"

static void seeder_add_free(SeederAdd *a) {
        if (!a)
                return;
        if (a->seeder) {
                LIST_REMOVE(a->seeder->adds, a);
                a->seeder->n_adds--;
        }
        import_job_free(a->job);
        sd_bus_message_unref(a->call);
        free(a);
}

Seeder *seeder_free(Seeder *s) {
        if (!s)
                return NULL;
        /* Adds in progress stop (their callers get no answer: the bus goes with us). */
        while (s->adds)
                seeder_add_free(s->adds);
        /* Nothing accepted any more, then the connections closed. */
        s->peers = peer_listener_free(s->peers);
        s->server = seed_server_free(s->server);
        s->lookup_timer = sd_event_source_disable_unref(s->lookup_timer);
        s->dht = dht_free(s->dht);
        strv_free(s->dht_control_urls);
        s->registrar = registrar_free(s->registrar);
        s->curl = curl_event_free(s->curl);
        s->bus_slot = sd_bus_slot_unref(s->bus_slot);
        s->bus = sd_bus_flush_close_unref(s->bus);
        s->store = store_free(s->store);
        s->event = sd_event_unref(s->event);
        free(s);
        return NULL;
}

uint64_t seeder_store_bytes(Seeder *s) {
        uint64_t total = 0;

        for (size_t i = 0; i < store_n_contents(s->store); i++)
                total += store_content(s->store, i)->size;
        return total;
}

static void register_content(Seeder *s, const char *id) {
        _cleanup_free_ uint8_t *torrent = NULL;
        size_t size;
        int r;

        r = store_torrent(s->store, id, &torrent, &size);
        if (r >= 0)
                r = registrar_add(s->registrar, id, torrent, size);
        if (r < 0)
                log_warning_errno(r, "Cannot register content %s: %m", id);
}

/* A connection to the peer port: served, or closed over the caps. */
static void on_peer_accepted(PeerListener *l, int fd, void *userdata) {
        Seeder *s = userdata;

        seed_server_take(s->server, fd);
}

static void on_serving_changed(SeedServer *server, void *userdata) {
        seeder_bus_peers_changed(userdata);
}

/* Serves a stored content. A failure loses only this content's serving (logged): its file was
 * checked when the store loaded it, so this means a disk error or a file changed behind our back. */
static void serve_content(Seeder *s, const StoreContent *c) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (asprintf(&path, "%s/%s", store_path(s->store), c->id) < 0) {
                log_oom();
                return;
        }
        r = seed_server_add(s->server, path, c->manifest);
        if (r < 0 && r != -EEXIST)
                log_warning_errno(r, "Cannot serve content %s from %s: %m", c->id, path);
}

/* Descriptors kept for the rest of the daemon (store, bus, DHT, journal) and for a burst of
 * connections accepted and closed at once. */
#define SEEDER_RESERVED_FDS 128U

static int start_serving(Seeder *s) {
        BlockSendPath path = block_send_path_from_string(s->config->send_path);
        uint64_t nofile, needed;
        int r;

        assert(path >= 0);      /* checked with the configuration */

        /* Each peer connection holds two descriptors (ours and the block sender's duplicate), each
         * served content one: MAX_PEERS must fit, or a flood of connections would exhaust them. */
        nofile = daemon_raise_nofile();
        needed = 2 * (uint64_t) s->config->max_peers + store_n_contents(s->store) + SEEDER_RESERVED_FDS;
        if (nofile > 0 && needed > nofile)
                return log_error_errno(EINVAL, "MAX_PEERS=%" PRIi64 " does not fit in this process's descriptor limit "
                                       "(RLIMIT_NOFILE=%" PRIu64 "): each connection takes two, each content one, and %u "
                                       "are kept for the rest. Lower MAX_PEERS, or raise LimitNOFILE=.",
                                       s->config->max_peers, nofile, SEEDER_RESERVED_FDS);
        r = seed_server_new(s->event, &(SeedServerConfig) {
                                    .send_path = path,
                                    .max_peers = (unsigned) s->config->max_peers,
                                    .max_peers_per_address = (unsigned) s->config->max_peers_per_address,
                                    .changed = on_serving_changed,
                                    .userdata = s,
                            }, &s->server);
        if (r == -EOPNOTSUPP)
                return log_error_errno(r, "SEND_PATH=%s: this kernel (or a seccomp filter) does not allow it; "
                                       "SEND_PATH=auto takes the first path that works.", s->config->send_path);
        if (r < 0)
                return log_error_errno(r, "Cannot set up serving to peers: %m");
        for (size_t i = 0; i < store_n_contents(s->store); i++)
                serve_content(s, store_content(s->store, i));
        log_info("Serving peers: blocks sent by %s%s, at most %" PRIi64 " connections (%" PRIi64 " per address).",
                 block_send_path_to_string(seed_server_send_path(s->server)),
                 path == BLOCK_SEND_AUTO ? " (SEND_PATH=auto)" : "", s->config->max_peers,
                 s->config->max_peers_per_address);
        return 0;
}

static void on_registration_changed(Registrar *r, const char *id, RegistrationState state, void *userdata) {
        log_debug("Content %s: registration %s.", id, registration_state_to_string(state));
}

int seeder_new(SeederConfig *config, Seeder **ret) {
        _cleanup_(seeder_freep) Seeder *s = NULL;
        const char *state_dir = seeder_state_directory();
        int r;

        s = calloc(1, sizeof(Seeder));
        if (!s)
                return log_oom();
        s->config = config;

        r = daemon_event_new(&s->event);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the event loop: %m");

        r = store_open(state_dir, STORE_WRITE | STORE_CLEAN | STORE_WAIT, &s->store);
        if (r < 0)
                return log_error_errno(r, "Cannot open the store %s/contents: %m", state_dir);
        log_info("Store %s: %zu content(s), %" PRIu64 " bytes.", store_path(s->store), store_n_contents(s->store),
                 seeder_store_bytes(s));

        r = curl_event_new(s->event, &s->curl);
        if (r >= 0)
                r = curl_event_set_tls(s->curl, &config->tls);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the HTTP client: %m");
        r = registrar_new(s->event, s->curl, config->token,
                          strv_length(config->control_urls) > 0 || seeder_config_wants_dht(config),
                          on_registration_changed, s, &s->registrar);
        if (r < 0)
                return log_oom();
        if (strv_length(config->control_urls) == 0 && !seeder_config_wants_dht(config))
                log_notice("No control configured (CONTROL_URLS, DHT_BOOTSTRAP): contents are served but not registered.");
        else if (isempty(config->token))
                log_warning("No token configured (TOKEN, TOKEN_FILE): the control will refuse the manifests unless its auth is off.");

        *ret = TAKE_PTR(s);
        return 0;
}

static int open_peer_port(Seeder *s) {
        _cleanup_free_ int *fds = NULL;
        int n, r;

        n = daemon_listen_fds();
        if (n < 0)
                return log_error_errno(n, "Cannot read the sockets passed by systemd: %m");
        if (n > 0) {
                fds = calloc((size_t) n, sizeof(int));
                if (!fds)
                        return log_oom();
                for (int i = 0; i < n; i++)
                        fds[i] = SD_LISTEN_FDS_START + i;
        }
        r = peer_listener_new(s->event, fds, (size_t) n, s->config->listen_address, (uint16_t) s->config->port,
                              on_peer_accepted, s, &s->peers);
        if (r < 0)
                return log_error_errno(r, "Cannot open the peer port %" PRIi64 ": %m", s->config->port);
        s->peer_port = peer_listener_port(s->peers);
        if (n > 0)
                log_info("Peer port: %d socket(s) passed by systemd (port %u).", n, s->peer_port);
        else
                log_info("Peer port: %s port %u.", isempty(s->config->listen_address) ? "*" : s->config->listen_address,
                         s->peer_port);
        return 0;
}

int seeder_start(Seeder *s) {
        int r;

        /* The server first: the listener hands it connections from the first wake-up on. */
        r = start_serving(s);
        if (r < 0)
                return r;
        r = open_peer_port(s);
        if (r < 0)
                return r;
        r = seeder_dht_start(s);
        if (r < 0)
                return r;
        seeder_apply_control_urls(s);
        /* What the store holds is registered again (the control answers 200 for what it has: cheap)
         * and announced: the DHT forgets announcements within hours, and the control may be new. */
        for (size_t i = 0; i < store_n_contents(s->store); i++) {
                const StoreContent *c = store_content(s->store, i);
                register_content(s, c->id);
                seeder_dht_announce(s, c->id);
        }
        if (s->config->bus) {
                r = seeder_bus_init(s);
                if (r < 0)
                        log_warning("Continuing without D-Bus: `mc-seeder add` will not find this daemon.");
        }
        return 0;
}

static void add_reply_error(SeederAdd *a, int error, const char *reason) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        if (!a->call)
                return;
        /* The errno travels as the error's name (System.Error.EISDIR, ...), the sentence as its message. */
        (void) sd_bus_error_set_errnof(&e, -error, "%s", reason ?: strerror(-error));
        (void) sd_bus_reply_method_error(a->call, &e);
}

static void on_add_done(ImportJob *j, int error, const char *reason, ContentImport *result, void *userdata) {
        SeederAdd *a = userdata;
        Seeder *s = a->seeder;
        char size[32];
        int r;

        a->job = NULL;          /* the job frees itself when this returns */
        if (error < 0) {
                log_warning_errno(error, "Adding a file failed: %s", reason ?: strerror(-error));
                add_reply_error(a, error, reason);
                goto finish;
        }
        if (s->config->store_max_bytes > 0 && !store_find(s->store, result->id) &&
            seeder_store_bytes(s) + result->size > (uint64_t) s->config->store_max_bytes) {
                /* Two adds that each fitted alone; the second is taken back. */
                (void) unlinkat(store_dir_fd(s->store), result->id, 0);
                {
                        char tn[TORRENT_ID_HEX_SIZE + sizeof(".torrent")];
                        snprintf(tn, sizeof(tn), "%s.torrent", result->id);
                        (void) unlinkat(store_dir_fd(s->store), tn, 0);
                }
                add_reply_error(a, -ENOSPC, "the store would exceed STORE_MAX_BYTES");
                goto finish;
        }
        {
                char id[TORRENT_ID_HEX_SIZE];

                memcpy(id, result->id, sizeof(id));
                snprintf(size, sizeof(size), "%" PRIu64, result->size);
                r = store_insert(s->store, result);
                if (r < 0) {
                        add_reply_error(a, r, NULL);
                        goto finish;
                }
                if (r == 0) {
                        log_event(LOG_INFO, MC_EVENT_CONTENT_ADDED, LOG_FIELDS("CONTENT_ID", id, "CONTENT_SIZE", size),
                                  "Content %s added (%s bytes%s).", id, size,
                                  result->reflinked ? ", a reflink" : "");
                        serve_content(s, store_find(s->store, id));
                        seeder_bus_content_added(s, id);
                        register_content(s, id);
                        seeder_dht_announce(s, id);
                } else
                        log_info("Content %s was in the store already.", id);
                if (a->call)
                        (void) sd_bus_reply_method_return(a->call, "s", id);
        }
finish:
        seeder_add_free(a);
}

int seeder_add_fd(Seeder *s, int fd, sd_bus_message *call) {
        SeederAdd *a;
        struct stat st;
        int r;

        if (s->n_adds >= SEEDER_ADDS_MAX) {
                close(fd);
                return -EBUSY;
        }
        if (s->config->store_max_bytes > 0 && fstat(fd, &st) >= 0 &&
            seeder_store_bytes(s) + (uint64_t) st.st_size > (uint64_t) s->config->store_max_bytes) {
                close(fd);
                return -ENOSPC;
        }
        a = calloc(1, sizeof(SeederAdd));
        if (!a) {
                close(fd);
                return -ENOMEM;
        }
        r = import_job_start(s->event, store_dir_fd(s->store), store_path(s->store), fd, on_add_done, a, &a->job);
        if (r < 0) {
                free(a);
                return r;
        }
        a->seeder = s;
        a->call = sd_bus_message_ref(call);
        LIST_PREPEND(s->adds, a);
        s->n_adds++;
        return 0;
}

int seeder_remove(Seeder *s, const char *id) {
        uint8_t raw[TORRENT_ID_SIZE];
        int r;

        r = store_remove(s->store, id);
        if (r < 0)
                return r;
        /* Peers downloading it are disconnected now; their requests would get nothing else. */
        if (torrent_id_from_hex(id, raw) >= 0)
                (void) seed_server_remove(s->server, raw);
        registrar_remove(s->registrar, id);
        seeder_dht_unannounce(s, id);
        log_event(LOG_INFO, MC_EVENT_CONTENT_REMOVED, LOG_FIELDS("CONTENT_ID", id), "Content %s removed.", id);
        seeder_bus_content_removed(s, id);
        return 0;
}

char *seeder_list_json(Seeder *s) {
        _cleanup_(json_object_putp) json_object *list = json_object_new_array();
        const char *text;

        if (!list)
                return NULL;
        for (size_t i = 0; i < store_n_contents(s->store); i++) {
                const StoreContent *c = store_content(s->store, i);
                json_object *o = json_object_new_object();
                const char *error = NULL;
                RegistrationState st = registrar_state(s->registrar, c->id, &error);

                if (!o || json_object_array_add(list, o) < 0) {
                        json_object_put(o);
                        return NULL;
                }
                if (json_add_string(o, "id", c->id) < 0 ||
                    json_add_int64(o, "size", (int64_t) c->size) < 0 ||
                    json_add_int64(o, "added_usec", (int64_t) c->added_usec) < 0 ||
                    json_add_string(o, "registration", registration_state_to_string(st)) < 0 ||
                    (error && json_add_string(o, "registration_error", error) < 0))
                        return NULL;
        }
        text = json_to_string(list);
        return text ? strdup(text) : NULL;
}
