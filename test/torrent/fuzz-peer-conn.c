/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for a PeerConn: arbitrary bytes arrive from the peer of a PeerConn on its own
 * sd-event loop, with the default sink writing its answers back (read and dropped on our side). The
 * first input byte picks the setup: bit 0 prepends a valid handshake for the content (reserved bits:
 * bit 1 clears the fast extension, bit 2 the extension protocol) so that the fuzzer reaches the
 * messages at once; bit 3 picks the one-piece content instead of the 7-piece one; bit 4 makes ours
 * the connecting side that downloads (it asks for blocks of every piece the peer announces, as
 * long as the peer lets it), else the accepting side that serves (a socketpair). Properties: no crash, no sanitizer report,
 * no leak; the connection either closes with a negative errno (or 0 at the end of the stream) or
 * stays open, and the loop always comes back. Built as a libFuzzer binary with -Dfuzz=true, and
 * always as fuzz-peer-conn-replay, which runs the committed corpus. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include "content-store.h"
#include "peer-conn.h"
#include "peer-sink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Content {
        Manifest *m;
        char path[64];
} Content;

static Content contents[2];

static void content_init(Content *c, size_t size, unsigned seed) {
        uint8_t *buf = malloc(size);
        ContentHash ch;
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
        int fd;

        for (size_t i = 0; i < size; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t) x;
        }
        if (content_hash_buffer(buf, size, 0, &ch) < 0 || manifest_from_content(&ch, &c->m) < 0)
                abort();
        content_hash_done(&ch);
        snprintf(c->path, sizeof(c->path), "/tmp/fuzz-peer-conn-%d-%u", (int) getpid(), seed);
        fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, buf, size) != (ssize_t) size)
                abort();
        close(fd);
        free(buf);
}

static void cleanup(void) {
        for (size_t i = 0; i < 2; i++)
                if (contents[i].m) {
                        unlink(contents[i].path);
                        contents[i].m = manifest_free(contents[i].m);
                }
}

typedef struct Run {
        ContentStore *store;
        bool closed;
        int error;
} Run;

static ContentStore *on_lookup(PeerConn *c, const uint8_t info_hash[PEER_INFO_HASH_SIZE], void *userdata) {
        Run *r = userdata;
        return memcmp(info_hash, content_store_manifest(r->store)->id, PEER_INFO_HASH_SIZE) == 0 ? r->store : NULL;
}

static void on_closed(PeerConn *c, int error, const char *reason, void *userdata) {
        Run *r = userdata;
        if (error > 0 || !reason)
                abort();
        r->closed = true;
        if (getenv("FUZZ_DEBUG"))
                fprintf(stderr, "closed: %d %s\n", error, reason);
        r->error = error;
}

/* The downloading side: ask for what the peer has. */
static void request_more(PeerConn *c) {
        const uint8_t *bf = peer_conn_peer_bitfield(c);
        const TorrentGeometry *g = content_store_geometry(peer_conn_store(c));

        if (!bf)
                return;
        (void) peer_conn_set_interested(c, true);
        for (uint32_t i = 0; i < g->n_pieces && peer_conn_request_room(c) > 0; i++)
                if (bitfield_get(bf, i))
                        for (uint32_t b = 0; b < torrent_piece_size(g, i) && peer_conn_request_room(c) > 0; b += PEER_BLOCK_MAX)
                                (void) peer_conn_request(c, i, b, MIN(PEER_BLOCK_MAX, torrent_piece_size(g, i) - b));
}

static void on_bitfield(PeerConn *c, void *userdata) {
        request_more(c);
}
static void on_have(PeerConn *c, uint32_t index, void *userdata) {
        request_more(c);
}
static void on_choke(PeerConn *c, bool choked, void *userdata) {
        if (!choked)
                request_more(c);
}
static void on_block(PeerConn *c, uint32_t index, uint32_t begin, const void *data, size_t size, void *userdata) {
        const TorrentGeometry *g = content_store_geometry(peer_conn_store(c));
        if (index >= g->n_pieces || (uint64_t) begin + size > torrent_piece_size(g, index))
                abort();        /* the connection promised to check */
        if (index % 2 == 0)
                (void) peer_conn_cancel(c, index, begin + PEER_BLOCK_MAX, PEER_BLOCK_MAX);
}

static int listen_fd = -1;
static struct sockaddr_in listen_sa;

static void listen_init(void) {
        socklen_t len = sizeof(listen_sa);
        listen_sa = (struct sockaddr_in) { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *) &listen_sa, sizeof(listen_sa)) < 0 ||
            listen(listen_fd, 16) < 0 || getsockname(listen_fd, (struct sockaddr *) &listen_sa, &len) < 0)
                abort();
}

static void drain(int fd) {
        uint8_t buf[65536];
        while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool initialized;
        sd_event *e = NULL;
        PeerSink *sink = NULL;
        PeerConn *conn = NULL;
        Run run = {};
        Content *content;
        uint8_t setup, hs[PEER_HANDSHAKE_SIZE];
        size_t off = 0;
        int sv[2];

        if (!initialized) {
                signal(SIGPIPE, SIG_IGN);
                content_init(&contents[0], 100000, 1);  /* 7 pieces of 16 KiB */
                content_init(&contents[1], 5000, 2);    /* one piece */
                listen_init();
                atexit(cleanup);
                initialized = true;
        }
        if (size < 1)
                return 0;
        setup = data[0];
        data++;
        size--;
        content = &contents[(setup >> 3) & 1];

        if (sd_event_new(&e) < 0 || peer_sink_default_new(e, &sink) < 0 ||
            content_store_open_file(content->path, content->m, &run.store) < 0)
                abort();
        if (setup & 16) {
                if (peer_conn_connect(e, (struct sockaddr *) &listen_sa, sizeof(listen_sa), run.store,
                                      &(PeerConnConfig) { .sink = sink, .max_requests = 50 },
                                      &(PeerConnCallbacks) { .bitfield = on_bitfield, .have = on_have, .choke = on_choke,
                                                             .block = on_block, .closed = on_closed },
                                      &run, &conn) < 0)
                        abort();
                sv[1] = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (sv[1] < 0)
                        abort();
        } else {
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
                        abort();
                if (peer_conn_accept(e, sv[0], &(PeerConnConfig) { .sink = sink, .max_requests = 50 },
                                     &(PeerConnCallbacks) { .lookup = on_lookup, .closed = on_closed }, &run, &conn) < 0)
                        abort();
        }

        if (setup & 1) {
                PeerHandshake h = {};
                if (!(setup & 2))
                        peer_reserved_set(h.reserved, PEER_RESERVED_FAST);
                if (!(setup & 4))
                        peer_reserved_set(h.reserved, PEER_RESERVED_EXTENSION);
                memcpy(h.info_hash, content->m->id, PEER_INFO_HASH_SIZE);
                memset(h.peer_id, 'F', PEER_ID_SIZE);
                if (peer_handshake_encode(&h, hs, sizeof(hs)) < 0 || write(sv[1], hs, sizeof(hs)) != sizeof(hs))
                        abort();
        }
        /* Feed the stream as the connection takes it, answers read and dropped; a few idle rounds
         * for the answers to go out (the sink sends when the socket is writable), then the end. */
        for (unsigned rounds = 0, idle = 0; rounds < 100000 && !run.closed; rounds++) {
                if (off < size) {
                        ssize_t n = send(sv[1], data + off, size - off, MSG_DONTWAIT | MSG_NOSIGNAL);
                        if (n > 0)
                                off += (size_t) n;
                } else if (off == size && ++idle > 20) {
                        shutdown(sv[1], SHUT_WR);
                        off++;
                }
                drain(sv[1]);
                if (sd_event_run(e, off > size ? 10000 : 0) < 0)
                        abort();
                if (off > size && idle++ > 1000)
                        break;  /* the stream ended and the connection stays open: fine */
        }
        peer_conn_free(conn);
        close(sv[1]);
        content_store_unref(run.store);
        peer_sink_free(sink);
        sd_event_unref(e);
        return 0;
}
