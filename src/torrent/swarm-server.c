/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <netinet/in.h>
#include <sys/socket.h>

#include "daemon-util.h"
#include "list.h"
#include "seed-ledger.h"
#include "swarm-server.h"

typedef struct ServedContent ServedContent;
struct ServedContent {
        LIST_FIELDS(ServedContent);
        ContentStore *store;
        SeedLedger *ledger;             /* what the connected peers hold, for serving as a seed */
        uint8_t short_id[TORRENT_ID_SHORT_SIZE];
};

typedef struct ServerConn ServerConn;
struct ServerConn {
        LIST_FIELDS(ServerConn);
        SwarmServer *srv;
        PeerConn *conn;
        struct sockaddr_storage sa;
        SeedLedgerPeer *ledger_peer;    /* once the handshake named the content */
};

struct SwarmServer {
        sd_event *event;
        sd_event_source *accept_source;
        SwarmServerConfig config;
        PeerConnConfig conn_config;
        ServedContent *contents;
        ServerConn *conns;              /* newest first */
        SwarmServerStats stats;
        int spare_fd;                   /* for daemon_accept() */
};

static bool same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
        if (a->ss_family != b->ss_family)
                return false;
        if (a->ss_family == AF_INET)
                return ((const struct sockaddr_in *) a)->sin_addr.s_addr == ((const struct sockaddr_in *) b)->sin_addr.s_addr;
        if (a->ss_family == AF_INET6)
                return memcmp(&((const struct sockaddr_in6 *) a)->sin6_addr, &((const struct sockaddr_in6 *) b)->sin6_addr,
                              sizeof(struct in6_addr)) == 0;
        return false;
}

static void account(SwarmServer *srv, PeerConn *c) {
        PeerConnStats st;
        peer_conn_get_stats(c, &st);
        srv->stats.requests_rejected += st.requests_rejected;
        srv->stats.bytes_sent += st.bytes_sent;
        srv->stats.hash_requests += st.hash_requests;
        srv->stats.hash_rejects += st.hash_rejects;
        srv->stats.metadata_pieces += st.metadata_pieces;
        srv->stats.requests_declined += st.requests_declined;
}

static void server_conn_free(ServerConn *sc) {
        SwarmServer *srv = sc->srv;
        account(srv, sc->conn);
        LIST_REMOVE(srv->conns, sc);
        srv->stats.connections--;
        peer_conn_free(sc->conn);
        seed_ledger_peer_free(sc->ledger_peer);
        free(sc);
}

static ContentStore *on_lookup(PeerConn *c, const uint8_t info_hash[PEER_INFO_HASH_SIZE], void *userdata) {
        ServerConn *sc = userdata;

        for (ServedContent *sv = sc->srv->contents; sv; sv = sv->next)
                if (memcmp(sv->short_id, info_hash, TORRENT_ID_SHORT_SIZE) == 0) {
                        /* Without memory for the ledger the peer is served all it asks. */
                        if (!sc->ledger_peer)
                                (void) seed_ledger_peer_new(sv->ledger, &sc->ledger_peer);
                        return sv->store;
                }
        return NULL;
}

static void on_bitfield(PeerConn *c, void *userdata) {
        ServerConn *sc = userdata;

        if (sc->ledger_peer)
                seed_ledger_peer_bitfield(sc->ledger_peer, peer_conn_peer_is_seed(c) ? NULL : peer_conn_peer_bitfield(c));
}

static void on_have(PeerConn *c, uint32_t index, void *userdata) {
        ServerConn *sc = userdata;

        if (sc->ledger_peer)
                seed_ledger_peer_have(sc->ledger_peer, index);
}

static bool on_serve(PeerConn *c, uint32_t index, void *userdata) {
        ServerConn *sc = userdata;

        if (!sc->ledger_peer)
                return true;
        /* As a seed only: a content being downloaded serves what it has (its holder's uplink is not
         * the one every piece must cross). The ledger counts all along, so that it is right when the
         * content completes. */
        if (sc->srv->config.no_seed_sharing || !content_store_complete(peer_conn_store(c))) {
                seed_ledger_peer_have(sc->ledger_peer, index);
                return true;
        }
        return seed_ledger_request(sc->ledger_peer, index, now_usec());
}

static void on_closed(PeerConn *c, int error, const char *reason, void *userdata) {
        ServerConn *sc = userdata;
        SwarmServer *srv = sc->srv;
        char address[PEER_CONN_ADDR_MAX];

        if (error == -ENOENT)
                srv->stats.unknown_info_hash++;
        else if (error == -ETIMEDOUT)
                srv->stats.timeouts++;
        else if (error == 0 || error == -ECONNRESET || error == -EPIPE)
                srv->stats.closed_clean++;
        else
                srv->stats.violations++;
        snprintf(address, sizeof(address), "%s", peer_conn_address(c));
        server_conn_free(sc);
        if (srv->config.closed)
                srv->config.closed(srv, address, error, reason, srv->config.userdata);
}

static const PeerConnCallbacks server_callbacks = {
        .lookup = on_lookup,
        .bitfield = on_bitfield,
        .have = on_have,
        .serve = on_serve,
        .closed = on_closed,
};

/* The connection that has waited longest for its peer's handshake, or NULL. */
static ServerConn *oldest_handshaking(SwarmServer *srv) {
        ServerConn *found = NULL;

        for (ServerConn *o = srv->conns; o; o = o->next)
                if (!peer_conn_is_ready(o->conn))
                        found = o;      /* the list is newest first: the last one is the oldest */
        return found;
}

/* Takes an accepted connection: refused (closed) over the caps, else served. At the global cap, a
 * connection still without a handshake makes room: otherwise connections that never send one, from
 * enough addresses, would keep every peer out until their handshake timeout, again and again. */
static int server_take(SwarmServer *srv, int cfd, const struct sockaddr_storage *sa) {
        unsigned same = 0;
        ServerConn *sc;
        int r;

        srv->stats.accepted++;
        for (ServerConn *o = srv->conns; o; o = o->next)
                same += same_ip(&o->sa, sa);
        if (same >= srv->config.max_per_address) {
                srv->stats.refused_address++;
                close(cfd);
                return -EBUSY;
        }
        if (srv->stats.connections >= srv->config.max_connections) {
                ServerConn *victim = oldest_handshaking(srv);

                if (!victim) {
                        srv->stats.refused_global++;
                        close(cfd);
                        return -EBUSY;
                }
                srv->stats.evicted++;
                server_conn_free(victim);
        }
        sc = calloc(1, sizeof(*sc));
        if (!sc) {
                close(cfd);
                return -ENOMEM;
        }
        sc->srv = srv;
        sc->sa = *sa;
        r = peer_conn_accept(srv->event, cfd, &srv->conn_config, &server_callbacks, sc, &sc->conn);
        if (r < 0) {
                free(sc);
                return r;
        }
        LIST_PREPEND(srv->conns, sc);
        srv->stats.connections++;
        return 0;
}

int swarm_server_take(SwarmServer *srv, int fd) {
        struct sockaddr_storage sa = {};
        socklen_t len = sizeof(sa);

        assert(srv);
        assert(fd >= 0);
        if (getpeername(fd, (struct sockaddr *) &sa, &len) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return server_take(srv, fd, &sa);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SwarmServer *srv = userdata;

        /* A bounded batch per wake-up, so that a connection storm does not starve the loop. */
        for (unsigned k = 0; k < 64; k++) {
                struct sockaddr_storage sa;
                socklen_t len;
                int cfd;

                cfd = daemon_accept(fd, &srv->spare_fd, NULL, &sa, &len);
                if (cfd == -EAGAIN)
                        return 0;
                if (cfd == -EMFILE) {
                        srv->stats.refused_descriptors++;
                        if (srv->spare_fd < 0) {
                                srv->spare_fd = daemon_spare_fd();
                                return 0;
                        }
                        continue;
                }
                if (cfd < 0)
                        continue;       /* an error of that connection (ECONNABORTED ...) */
                (void) server_take(srv, cfd, &sa);
        }
        return 0;
}

int swarm_server_new(sd_event *e, const SwarmServerConfig *config, SwarmServer **ret) {
        SwarmServer *srv;
        int r;

        assert(e);
        assert(config);
        assert(config->sink);
        assert(ret);
        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->event = sd_event_ref(e);
        srv->config = *config;
        srv->spare_fd = -1;
        if (srv->config.max_connections == 0)
                srv->config.max_connections = 256;
        if (srv->config.max_per_address == 0)
                srv->config.max_per_address = 16;
        if (config->conn)
                srv->conn_config = *config->conn;
        srv->conn_config.sink = config->sink;
        if (config->listen_fd >= 0) {
                srv->spare_fd = daemon_spare_fd();
                r = sd_event_add_io(e, &srv->accept_source, config->listen_fd, EPOLLIN, on_accept, srv);
                if (r < 0) {
                        swarm_server_free(srv);
                        return r;
                }
        }
        *ret = srv;
        return 0;
}

SwarmServer *swarm_server_free(SwarmServer *srv) {
        if (!srv)
                return NULL;
        while (srv->conns)
                server_conn_free(srv->conns);
        while (srv->contents) {
                ServedContent *sv = srv->contents;
                LIST_REMOVE(srv->contents, sv);
                content_store_unref(sv->store);
                seed_ledger_free(sv->ledger);
                free(sv);
        }
        sd_event_source_disable_unref(srv->accept_source);
        safe_close(srv->spare_fd);
        sd_event_unref(srv->event);
        free(srv);
        return NULL;
}

int swarm_server_add(SwarmServer *srv, ContentStore *store) {
        const uint8_t *id = content_store_manifest(store)->id;
        ServedContent *sv;

        for (sv = srv->contents; sv; sv = sv->next)
                if (memcmp(sv->short_id, id, TORRENT_ID_SHORT_SIZE) == 0)
                        return -EEXIST;
        sv = calloc(1, sizeof(*sv));
        if (!sv)
                return -ENOMEM;
        if (seed_ledger_new(content_store_geometry(store)->n_pieces, &sv->ledger) < 0) {
                free(sv);
                return -ENOMEM;
        }
        sv->store = content_store_ref(store);
        torrent_id_short(id, sv->short_id);
        LIST_PREPEND(srv->contents, sv);
        return 0;
}

int swarm_server_remove(SwarmServer *srv, ContentStore *store) {
        for (ServedContent *sv = srv->contents; sv; sv = sv->next) {
                if (sv->store != store)
                        continue;
                for (ServerConn *sc = srv->conns, *next; sc; sc = next) {
                        next = sc->next;
                        if (peer_conn_store(sc->conn) == store)
                                server_conn_free(sc);
                }
                LIST_REMOVE(srv->contents, sv);
                content_store_unref(sv->store);
                seed_ledger_free(sv->ledger);
                free(sv);
                return 0;
        }
        return -ENOENT;
}

void swarm_server_get_stats(const SwarmServer *srv, SwarmServerStats *ret) {
        *ret = srv->stats;
        for (ServerConn *sc = srv->conns; sc; sc = sc->next) {
                PeerConnStats st;
                peer_conn_get_stats(sc->conn, &st);
                ret->requests_rejected += st.requests_rejected;
                ret->bytes_sent += st.bytes_sent;
                ret->hash_requests += st.hash_requests;
                ret->hash_rejects += st.hash_rejects;
                ret->metadata_pieces += st.metadata_pieces;
                ret->requests_declined += st.requests_declined;
        }
}
