/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Swarm and SwarmServer together on one loop, over loopback:
 *  - a content relayed through a partial download: B fetches only from A while A is still fetching
 *    from the seeder, so everything B gets was announced with `have` as A verified it (A's server
 *    gets its connections from A's own listener, swarm_server_take());
 *  - a peer that handshakes, has everything, unchokes and then never answers is dropped after the
 *    stall timeout and its requests go to another peer;
 *  - a disk too small for the content fails the fetch with -ENOSPC before anything is fetched (a
 *    1 MiB tmpfs in a private mount namespace, in a child);
 *  - a seed declines a piece another connected peer is being sent while some piece is held by
 *    nobody, and serves everything with no_seed_sharing. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "daemon-util.h"
#include "peer-sink.h"
#include "swarm.h"
#include "content-fixture.h"

#define fixture_init(f, size, seed) fixture_init_named(f, "test-swarm-engine", size, seed)

static int listen_loopback(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                abort();
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

static bool same_file(const char *path, const Fixture *f) {
        uint8_t *back = malloc(f->size + 1);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        bool same = fd >= 0 && read(fd, back, f->size + 1) == (ssize_t) f->size && memcmp(back, f->data, f->size) == 0;
        if (fd >= 0)
                close(fd);
        free(back);
        return same;
}

typedef struct Done {
        bool done;
        int error;
        char path[256];
        uint64_t bytes;
        SwarmPeerStats peers[4];
        size_t n_peers;
} Done;

static void on_done(Swarm *s, const SwarmResult *r, void *userdata) {
        Done *d = userdata;
        d->done = true;
        d->error = r->error;
        d->bytes = r->bytes;
        if (r->path)
                snprintf(d->path, sizeof(d->path), "%s", r->path);
        d->n_peers = MIN(r->n_peers, ELEMENTSOF(d->peers));
        memcpy(d->peers, r->peers, d->n_peers * sizeof(SwarmPeerStats));
}

static void run_until(sd_event *e, bool *flag, uint64_t timeout_usec) {
        uint64_t end = now_usec() + timeout_usec;
        while (!*flag && now_usec() < end)
                if (sd_event_run(e, 100 * USEC_PER_MSEC) < 0)
                        abort();
}

/* The relay's own listener: accepted connections are handed to its server, as mc-seeder's listener does. */
static int relay_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0 && swarm_server_take(userdata, c) < 0)
                abort();
        return 0;
}

static void test_relay_through_partial_download(void) {
        Fixture f;
        sd_event *e = NULL;
        PeerSink *sink = NULL;
        SwarmServer *seeder = NULL, *relay = NULL;
        sd_event_source *relay_source = NULL;
        ContentStore *source = NULL;
        Swarm *a = NULL, *b = NULL;
        Done da = {}, db = {};
        char dir_a[128], dir_b[128], addr[64];
        uint16_t port_s, port_a;
        int lfd_s, lfd_a;
        SwarmServerStats st;

        fixture_init(&f, 20 * MIB + 123, 1);          /* 1281 pieces of 16 KiB */
        snprintf(dir_a, sizeof(dir_a), "%s/a", f.dir);
        snprintf(dir_b, sizeof(dir_b), "%s/b", f.dir);
        ASSERT_INT_EQ(mkdir(dir_a, 0755), 0);
        ASSERT_INT_EQ(mkdir(dir_b, 0755), 0);
        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(peer_sink_default_new(e, &sink), 0);
        lfd_s = listen_loopback(&port_s);
        lfd_a = listen_loopback(&port_a);
        ASSERT_INT_EQ(swarm_server_new(e, &(SwarmServerConfig) { .listen_fd = lfd_s, .sink = sink }, &seeder), 0);
        ASSERT_INT_EQ(content_store_open_file(f.file, f.m, &source), 0);
        ASSERT_INT_EQ(swarm_server_add(seeder, source), 0);
        ASSERT_INT_EQ(swarm_server_new(e, &(SwarmServerConfig) { .listen_fd = -1, .sink = sink }, &relay), 0);
        ASSERT_INT_EQ(sd_event_add_io(e, &relay_source, lfd_a, EPOLLIN, relay_accept, relay), 0);

        /* A is registered with its server but not started: B connects and finds nothing yet. */
        ASSERT_INT_EQ(swarm_new(e, &(SwarmConfig) { .dir = dir_a, .manifest = f.m, .sink = sink, .server = relay },
                                on_done, &da, &a), 0);
        ASSERT_INT_EQ(swarm_server_add(relay, swarm_store(a)), 0);
        ASSERT_INT_EQ(swarm_new(e, &(SwarmConfig) { .dir = dir_b, .manifest = f.m, .sink = sink, .no_progress_usec = 30 * USEC_PER_SEC },
                                on_done, &db, &b), 0);
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", port_a);
        ASSERT_INT_EQ(swarm_add_peer_string(b, addr), 1);
        ASSERT_INT_EQ(swarm_start(b), 0);
        for (unsigned i = 0; i < 200; i++) {
                swarm_server_get_stats(relay, &st);
                if (st.connections == 1)
                        break;
                ASSERT_TRUE(sd_event_run(e, 50 * USEC_PER_MSEC) >= 0);
        }
        ASSERT_UINT_EQ(st.connections, 1);
        for (unsigned i = 0; i < 20; i++)       /* the handshakes */
                ASSERT_TRUE(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        ASSERT_TRUE(!db.done);

        snprintf(addr, sizeof(addr), "127.0.0.1:%u", port_s);
        ASSERT_INT_EQ(swarm_add_peer_string(a, addr), 1);
        ASSERT_INT_EQ(swarm_start(a), 0);      /* already registered with the relay: fine */
        run_until(e, &db.done, 60 * USEC_PER_SEC);
        run_until(e, &da.done, 10 * USEC_PER_SEC);

        ASSERT_TRUE(da.done && db.done);
        ASSERT_INT_EQ(da.error, 0);
        ASSERT_INT_EQ(db.error, 0);
        ASSERT_TRUE(same_file(da.path, &f));
        ASSERT_TRUE(same_file(db.path, &f));
        /* Everything B has came from A, announced piece by piece. */
        ASSERT_UINT_EQ(db.n_peers, 1);
        ASSERT_UINT_EQ(db.peers[0].bytes, f.size);
        ASSERT_UINT_EQ(db.peers[0].pieces, f.m->geometry.n_pieces);

        swarm_free(a);
        swarm_free(b);
        sd_event_source_disable_unref(relay_source);
        swarm_server_free(relay);
        swarm_server_free(seeder);
        content_store_unref(source);
        peer_sink_free(sink);
        sd_event_unref(e);
        close(lfd_a);
        close(lfd_s);
        fixture_done(&f);
}

/* A peer that says it has everything and unchokes, then never sends a block. */
typedef struct Silent {
        int lfd, fd;
        sd_event_source *accept, *io;
        uint8_t hs[PEER_HANDSHAKE_SIZE];
        bool requested, closed;
} Silent;

static int silent_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Silent *p = userdata;
        uint8_t buf[65536];
        ssize_t n;

        while ((n = read(fd, buf, sizeof(buf))) > 0)
                p->requested = true;    /* (roughly: it got more than a handshake) */
        if (n == 0) {
                p->closed = true;
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

static int silent_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Silent *p = userdata;
        uint8_t out[PEER_HANDSHAKE_SIZE + 10];

        p->fd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (p->fd < 0)
                return 0;
        memcpy(out, p->hs, PEER_HANDSHAKE_SIZE);
        memcpy(out + PEER_HANDSHAKE_SIZE, "\0\0\0\1\x0e\0\0\0\1\1", 10);        /* have all, unchoke */
        if (write(p->fd, out, sizeof(out)) != (ssize_t) sizeof(out))
                abort();
        sd_event_source_set_enabled(p->accept, SD_EVENT_OFF);
        return sd_event_add_io(sd_event_source_get_event(s), &p->io, p->fd, EPOLLIN, silent_io, p);
}

static void test_stalled_peer_dropped(void) {
        Fixture f;
        sd_event *e = NULL;
        PeerSink *sink = NULL;
        SwarmServer *seeder = NULL;
        ContentStore *source = NULL;
        Swarm *s = NULL;
        Done d = {};
        Silent silent = { .fd = -1 };
        PeerHandshake h = {};
        char dir[128], addr[64];
        uint16_t port_s, port_silent;
        int lfd_s;

        fixture_init(&f, 4 * MIB, 2);
        snprintf(dir, sizeof(dir), "%s/out", f.dir);
        ASSERT_INT_EQ(mkdir(dir, 0755), 0);
        ASSERT_INT_EQ(sd_event_new(&e), 0);
        ASSERT_INT_EQ(peer_sink_default_new(e, &sink), 0);

        peer_reserved_set(h.reserved, PEER_RESERVED_FAST);
        memcpy(h.info_hash, f.m->id, PEER_INFO_HASH_SIZE);
        memset(h.peer_id, 'S', PEER_ID_SIZE);
        ASSERT_INT_EQ(peer_handshake_encode(&h, silent.hs, sizeof(silent.hs)), PEER_HANDSHAKE_SIZE);
        silent.lfd = listen_loopback(&port_silent);
        ASSERT_INT_EQ(sd_event_add_io(e, &silent.accept, silent.lfd, EPOLLIN, silent_accept, &silent), 0);

        lfd_s = listen_loopback(&port_s);
        ASSERT_INT_EQ(swarm_server_new(e, &(SwarmServerConfig) { .listen_fd = lfd_s, .sink = sink }, &seeder), 0);
        ASSERT_INT_EQ(content_store_open_file(f.file, f.m, &source), 0);
        ASSERT_INT_EQ(swarm_server_add(seeder, source), 0);

        ASSERT_INT_EQ(swarm_new(e, &(SwarmConfig) { .dir = dir, .manifest = f.m, .sink = sink, .stall_usec = USEC_PER_SEC,
                                                    .retry_usec = 60 * USEC_PER_SEC },
                                on_done, &d, &s), 0);
        /* Only the silent one at first: it gets requests, stalls, and is dropped. */
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", port_silent);
        ASSERT_INT_EQ(swarm_add_peer_string(s, addr), 1);
        ASSERT_INT_EQ(swarm_start(s), 0);
        run_until(e, &silent.closed, 10 * USEC_PER_SEC);
        ASSERT_TRUE(silent.closed && silent.requested);
        ASSERT_TRUE(!d.done);
        /* A peer found later (the DHT answering): its requests go there. */
        snprintf(addr, sizeof(addr), "127.0.0.1:%u", port_s);
        ASSERT_INT_EQ(swarm_add_peer_string(s, addr), 1);
        run_until(e, &d.done, 30 * USEC_PER_SEC);

        ASSERT_TRUE(d.done);
        ASSERT_INT_EQ(d.error, 0);
        ASSERT_TRUE(same_file(d.path, &f));
        ASSERT_UINT_EQ(d.n_peers, 2);
        ASSERT_UINT_EQ(d.peers[0].bytes, 0);
        ASSERT_INT_EQ(d.peers[0].error, -ETIMEDOUT);
        ASSERT_STREQ(d.peers[0].reason, "stalled: no block within the stall timeout");
        ASSERT_UINT_EQ(d.peers[0].failures, 1);
        ASSERT_UINT_EQ(d.peers[1].bytes, f.size);

        swarm_free(s);
        swarm_server_free(seeder);
        content_store_unref(source);
        sd_event_source_disable_unref(silent.accept);
        sd_event_source_disable_unref(silent.io);
        if (silent.fd >= 0)
                close(silent.fd);
        close(silent.lfd);
        peer_sink_free(sink);
        sd_event_unref(e);
        close(lfd_s);
        fixture_done(&f);
}

static void test_disk_full(void) {
        Fixture f;
        char dir[128];
        pid_t pid;
        int status;

        fixture_init(&f, 4 * MIB, 3);
        snprintf(dir, sizeof(dir), "%s/small", f.dir);
        ASSERT_INT_EQ(mkdir(dir, 0755), 0);
        pid = fork();
        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                sd_event *e = NULL;
                PeerSink *sink = NULL;
                Swarm *s = NULL;
                int r;

                if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount("tmpfs", dir, "tmpfs", 0, "size=1m") < 0) {
                        fprintf(stderr, "cannot mount a small tmpfs: %m\n");
                        _exit(10);
                }
                if (sd_event_new(&e) < 0 || peer_sink_default_new(e, &sink) < 0)
                        _exit(11);
                r = swarm_new(e, &(SwarmConfig) { .dir = dir, .manifest = f.m, .sink = sink }, on_done, NULL, &s);
                if (r != -ENOSPC) {
                        fprintf(stderr, "swarm_new() on a full disk: %d\n", r);
                        _exit(12);
                }
                _exit(0);
        }
        ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_INT_EQ(WEXITSTATUS(status), 0);
        fixture_done(&f);
}

/* A client connection to a seed, with what it got. */
typedef struct Client {
        PeerConn *conn;
        ContentStore *store;
        bool ready, closed;
        unsigned blocks, rejects;
        uint32_t last_index;
} Client;

static void client_bitfield(PeerConn *c, void *userdata) {
        ((Client *) userdata)->ready = true;
}

static void client_block(PeerConn *c, uint32_t index, uint32_t begin, const void *data, size_t size, void *userdata) {
        Client *cl = userdata;
        cl->blocks++;
        cl->last_index = index;
}

static void client_rejected(PeerConn *c, uint32_t index, uint32_t begin, uint32_t length, void *userdata) {
        Client *cl = userdata;
        cl->rejects++;
        cl->last_index = index;
}

static void client_closed(PeerConn *c, int error, const char *reason, void *userdata) {
        ((Client *) userdata)->closed = true;
}

static const PeerConnCallbacks client_callbacks = {
        .bitfield = client_bitfield,
        .block = client_block,
        .rejected = client_rejected,
        .closed = client_closed,
};

static void client_wait(sd_event *e, Client *cl, unsigned answers) {
        uint64_t end = now_usec() + 60 * USEC_PER_SEC;
        while (cl->blocks + cl->rejects < answers && !cl->closed && now_usec() < end)
                ASSERT_TRUE(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        ASSERT_TRUE(!cl->closed);
        ASSERT_UINT_EQ(cl->blocks + cl->rejects, answers);
}

/* A seed declines a piece that another connected peer is being sent while some piece is held by
 * nobody, and serves the others; with no_seed_sharing it serves everything. Two clients speak to
 * the server directly (PeerConn), so that which request comes first is the test's choice. */
static void test_seed_sharing(void) {
        Fixture f;

        fixture_init(&f, 4 * 16 * KIB, 3);     /* 4 pieces of 16 KiB */
        for (int sharing = 1; sharing >= 0; sharing--) {
                sd_event *e = NULL;
                PeerSink *sink = NULL;
                SwarmServer *srv = NULL;
                ContentStore *source = NULL;
                Client x = {}, y = {};
                char dir[128];
                uint16_t port;
                int lfd;
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                PeerConnConfig cc = {};
                SwarmServerStats st;
                uint64_t end;

                ASSERT_INT_EQ(sd_event_new(&e), 0);
                ASSERT_INT_EQ(peer_sink_default_new(e, &sink), 0);
                cc.sink = sink;
                lfd = listen_loopback(&port);
                sa.sin_port = htons(port);
                ASSERT_INT_EQ(swarm_server_new(e, &(SwarmServerConfig) { .listen_fd = lfd, .sink = sink,
                                                                         .no_seed_sharing = !sharing }, &srv), 0);
                ASSERT_INT_EQ(content_store_open_file(f.file, f.m, &source), 0);
                ASSERT_INT_EQ(swarm_server_add(srv, source), 0);
                snprintf(dir, sizeof(dir), "%s/x%d", f.dir, sharing);
                ASSERT_INT_EQ(mkdir(dir, 0755), 0);
                ASSERT_INT_EQ(content_store_open_dir(dir, f.m, &x.store), 0);
                snprintf(dir, sizeof(dir), "%s/y%d", f.dir, sharing);
                ASSERT_INT_EQ(mkdir(dir, 0755), 0);
                ASSERT_INT_EQ(content_store_open_dir(dir, f.m, &y.store), 0);
                ASSERT_INT_EQ(peer_conn_connect(e, (struct sockaddr *) &sa, sizeof(sa), x.store, &cc, &client_callbacks,
                                                &x, &x.conn), 0);
                ASSERT_INT_EQ(peer_conn_connect(e, (struct sockaddr *) &sa, sizeof(sa), y.store, &cc, &client_callbacks,
                                                &y, &y.conn), 0);
                end = now_usec() + 60 * USEC_PER_SEC;
                while (!(x.ready && y.ready && !peer_conn_peer_choking(x.conn) && !peer_conn_peer_choking(y.conn)) &&
                       now_usec() < end)
                        ASSERT_TRUE(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
                ASSERT_TRUE(peer_conn_fast(x.conn) && peer_conn_fast(y.conn));
                ASSERT_TRUE(!peer_conn_peer_choking(x.conn) && !peer_conn_peer_choking(y.conn));

                /* X is sent piece 0; Y asks for it: declined (shared), served (not). */
                ASSERT_INT_EQ(peer_conn_request(x.conn, 0, 0, 16 * KIB), 0);
                client_wait(e, &x, 1);
                ASSERT_UINT_EQ(x.blocks, 1);
                ASSERT_INT_EQ(peer_conn_request(y.conn, 0, 0, 16 * KIB), 0);
                client_wait(e, &y, 1);
                ASSERT_UINT_EQ(y.rejects, sharing ? 1 : 0);
                ASSERT_UINT_EQ(y.last_index, 0);
                /* A piece nobody holds is served either way. */
                ASSERT_INT_EQ(peer_conn_request(y.conn, 2, 0, 16 * KIB), 0);
                client_wait(e, &y, 2);
                ASSERT_UINT_EQ(y.blocks, sharing ? 1 : 2);
                ASSERT_UINT_EQ(y.last_index, 2);

                swarm_server_get_stats(srv, &st);
                ASSERT_UINT_EQ(st.requests_declined, sharing ? 1 : 0);
                ASSERT_UINT_EQ(st.requests_rejected, sharing ? 1 : 0);
                ASSERT_UINT_EQ(st.bytes_sent, (sharing ? 2 : 3) * 16 * KIB);

                peer_conn_free(x.conn);
                peer_conn_free(y.conn);
                content_store_unref(x.store);
                content_store_unref(y.store);
                swarm_server_free(srv);
                content_store_unref(source);
                peer_sink_free(sink);
                sd_event_unref(e);
                close(lfd);
        }
        fixture_done(&f);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        RUN_TEST(test_relay_through_partial_download);
        RUN_TEST(test_stalled_peer_dropped);
        RUN_TEST(test_disk_full);
        RUN_TEST(test_seed_sharing);
        return TESTS_DONE();
}
