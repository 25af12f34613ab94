/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-swarm-tool: the peer-to-peer engine of src/torrent on the command line, for the Python tests
 * (not installed).
 *
 *   seed FILE [--port P] [--torrent OUT] [--corrupt N] [--max-conns N] [--max-per-addr N] [--sink S]
 *        Hashes FILE, serves it on 127.0.0.1:P (0: any port; --bind ADDR: on that IPv4 address) and prints "content id=<hex>" and
 *        "ready port=<port>". Each connection that ends prints "closed addr=... error=<errno>
 *        reason=..." then a "stats ..." line. --corrupt N serves wrong bytes for the pieces whose
 *        index is a multiple of N (a hostile peer). --torrent writes the .torrent of FILE. --sink
 *        picks how blocks are sent: "default" (pread + send), or the io_uring block sender with a
 *        SEND_PATH ("auto", "send-zc", "splice", "sendfile"); fetch takes it too, for serving.
 *        --timeouts H,I,K sets the connections' handshake and idle timeouts and keep-alive period (ms).
 *        --no-seed-sharing serves every request of a complete content (no seed-ledger.h declines;
 *        fetch takes it too, for serving once done), for comparisons.
 *   fetch ID --manifest FILE.torrent --peer HOST:PORT... --out DIR [--timeout S] [--deadline S]
 *        [--max-peers N] [--abort-after N] [--flush-every N] [--serve-port P] [--remove-partial]
 *        Downloads content ID into DIR, printing a "peer ..." line per peer and "done ..." (exit 0)
 *        or "error ..." (exit 1). --abort-after N calls abort() once N pieces are verified (a crash
 *        in the middle); --flush-every N makes the store durable every N pieces (so that such a
 *        crash has something to resume from); --serve-port serves the content while downloading (on
 *        127.0.0.1, or --bind ADDR). With --wait-start, the swarm starts on SIGUSR2 only (after
 *        "serving port=..."), so that a harness can start many fetchers at the same moment; with
 *        --stay, a fetcher that is done keeps serving until SIGTERM. A serving fetcher prints its
 *        server's "stats ..." line on SIGUSR1 and when it ends. */

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "content-store.h"
#include "daemon-util.h"
#include "log.h"
#include "peer-sink-uring.h"
#include "peer-sink.h"
#include "swarm.h"

static sd_event *event;
static int exit_status;

static const char *bind_address;       /* --bind: NULL for 127.0.0.1 */
static bool no_seed_sharing;            /* --no-seed-sharing: serve every request, also as a seed */

static int listen_on(uint16_t port, uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd;

        if (bind_address && inet_pton(AF_INET, bind_address, &sa.sin_addr) != 1)
                return -EINVAL;
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int) { 1 }, sizeof(int));
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 512) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &len) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

/* The hostile sink: the default one, except that blocks of some pieces are sent with wrong bytes. */
typedef struct HostileFile {
        int fd;
        void *inner;
} HostileFile;

static PeerSink *inner_sink;
static uint32_t corrupt_every;

static int hostile_file_new(void *impl, int fd, void **ret) {
        HostileFile *f = calloc(1, sizeof(*f));
        int r;

        if (!f)
                return -ENOMEM;
        f->fd = fd;
        r = inner_sink->ops->file_new(inner_sink->impl, fd, &f->inner);
        if (r < 0) {
                free(f);
                return r;
        }
        *ret = f;
        return 0;
}
static void hostile_file_unref(void *p) {
        HostileFile *f = p;
        inner_sink->ops->file_unref(f->inner);
        free(f);
}
static int hostile_attach(void *impl, int fd, const PeerSinkCallbacks *cb, void *ud, void **ret) {
        return inner_sink->ops->attach(inner_sink->impl, fd, cb, ud, ret);
}
static void hostile_detach(void *c) {
        inner_sink->ops->detach(c);
}
static int hostile_queue_message(void *c, const void *data, size_t size) {
        return inner_sink->ops->queue_message(c, data, size);
}
static int hostile_queue_block(void *c, void *file, uint64_t offset, uint32_t length, uint32_t piece, uint32_t begin) {
        HostileFile *f = file;
        uint8_t buf[PEER_PIECE_HEADER_SIZE + PEER_BLOCK_MAX];
        ssize_t n;

        if (piece % corrupt_every != 0)
                return inner_sink->ops->queue_block(c, f->inner, offset, length, piece, begin);
        if (peer_piece_header_encode(piece, begin, length, buf, sizeof(buf)) < 0)
                return -EINVAL;
        n = pread(f->fd, buf + PEER_PIECE_HEADER_SIZE, length, (off_t) offset);
        if (n != (ssize_t) length)
                return -EIO;
        for (uint32_t i = 0; i < length; i++)
                buf[PEER_PIECE_HEADER_SIZE + i] ^= 0x5a;
        return inner_sink->ops->queue_message(c, buf, PEER_PIECE_HEADER_SIZE + length);
}
static int hostile_cancel(void *c, uint32_t piece, uint32_t begin, uint32_t length) {
        return inner_sink->ops->cancel(c, piece, begin, length);
}
static uint64_t hostile_queued_bytes(const void *c) {
        return inner_sink->ops->queued_bytes(c);
}
static const PeerSinkOps hostile_ops = {
        .file_new = hostile_file_new,
        .file_unref = hostile_file_unref,
        .attach = hostile_attach,
        .detach = hostile_detach,
        .queue_message = hostile_queue_message,
        .queue_block = hostile_queue_block,
        .cancel = hostile_cancel,
        .queued_bytes = hostile_queued_bytes,
};

static void print_stats(SwarmServer *srv) {
        SwarmServerStats st;
        swarm_server_get_stats(srv, &st);
        printf("stats accepted=%" PRIu64 " refused_global=%" PRIu64 " refused_address=%" PRIu64
               " unknown_info_hash=%" PRIu64 " violations=%" PRIu64 " timeouts=%" PRIu64 " closed_clean=%" PRIu64
               " requests_rejected=%" PRIu64 " bytes_sent=%" PRIu64 " hash_requests=%" PRIu64 " hash_rejects=%" PRIu64
               " metadata_pieces=%" PRIu64 " requests_declined=%" PRIu64 " evicted=%" PRIu64
               " refused_descriptors=%" PRIu64 " connections=%u\n",
               st.accepted, st.refused_global, st.refused_address, st.unknown_info_hash, st.violations, st.timeouts,
               st.closed_clean, st.requests_rejected, st.bytes_sent, st.hash_requests, st.hash_rejects,
               st.metadata_pieces, st.requests_declined, st.evicted, st.refused_descriptors, st.connections);
        fflush(stdout);
}

static void on_server_closed(SwarmServer *srv, const char *address, int error, const char *reason, void *userdata) {
        printf("closed addr=%s error=%d reason=%s\n", address, error, reason ?: "-");
        print_stats(srv);
}

static int on_usr1(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        print_stats(userdata);
        return 0;
}

static int manifest_of_file(const char *path, Manifest **ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ContentHash ch = {};
        int r;

        if (fd < 0)
                return -errno;
        r = content_hash_fd(fd, 0, &ch);
        if (r < 0)
                return r;
        r = manifest_from_content(&ch, ret);
        content_hash_done(&ch);
        return r;
}

static const char *sink_kind;          /* NULL, "default", or a SEND_PATH of the block sender ("auto" ...) */
static BlockSender *block_sender;

static int make_sink(PeerSink **ret) {
        PeerSink **plain = corrupt_every ? &inner_sink : ret;
        int r;

        if (!sink_kind || streq(sink_kind, "default"))
                r = peer_sink_default_new(event, plain);
        else {
                BlockSendPath path = block_send_path_from_string(sink_kind);
                if (path < 0)
                        return path;
                r = block_sender_new(event, &(BlockSenderConfig) { .path = path }, &block_sender);
                if (r < 0)
                        return r;
                fprintf(stderr, "sink: block sender, path %s\n", block_send_path_to_string(block_sender_path(block_sender)));
                r = peer_sink_block_sender_new(block_sender, plain);
        }
        if (r < 0 || !corrupt_every)
                return r;
        return peer_sink_new(&hostile_ops, NULL, NULL, ret);
}

static void free_sinks(PeerSink **sink) {
        *sink = peer_sink_free(*sink);
        if (corrupt_every)
                inner_sink = peer_sink_free(inner_sink);
        block_sender = block_sender_free(block_sender);
}

static int cmd_seed(int argc, char **argv) {
        static const struct option options[] = {
                { "port", required_argument, NULL, 'p' },
                { "torrent", required_argument, NULL, 't' },
                { "corrupt", required_argument, NULL, 'c' },
                { "max-conns", required_argument, NULL, 'm' },
                { "max-per-addr", required_argument, NULL, 'a' },
                { "sink", required_argument, NULL, 'k' },
                { "timeouts", required_argument, NULL, 'T' },
                { "have", required_argument, NULL, 'H' },
                { "bind", required_argument, NULL, 'b' },
                { "no-seed-sharing", no_argument, NULL, 'N' },
                {}
        };
        _cleanup_(peer_sink_freep) PeerSink *sink = NULL;
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_(content_store_unrefp) ContentStore *store = NULL;
        PeerConnConfig conn = {};
        _cleanup_(swarm_server_freep) SwarmServer *srv = NULL;
        _cleanup_close_ int lfd = -1;
        const char *torrent = NULL;
        unsigned max_conns = 0, max_per_addr = 0;
        uint16_t port = 0;
        char id[TORRENT_ID_HEX_SIZE];
        const char *have_dir = NULL;
        int64_t have = -1;
        sigset_t mask;
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'p': port = (uint16_t) atoi(optarg); break;
                case 't': torrent = optarg; break;
                case 'c': corrupt_every = (uint32_t) atoi(optarg); break;
                case 'm': max_conns = (unsigned) atoi(optarg); break;
                case 'a': max_per_addr = (unsigned) atoi(optarg); break;
                case 'k': sink_kind = optarg; break;
                case 'H': {
                        /* --have N:DIR: serve only the first N pieces, from a partial store made in
                         * DIR (a peer that holds part of the content, like an agent still fetching). */
                        char *colon = strchr(optarg, ':');
                        if (!colon)
                                return log_error_errno(EINVAL, "--have N:DIR");
                        *colon = 0;
                        have = atoll(optarg);
                        have_dir = colon + 1;
                        break;
                }
                case 'b': bind_address = optarg; break;
                case 'N': no_seed_sharing = true; break;
                case 'T': {
                        unsigned hs, idle, ka;
                        if (sscanf(optarg, "%u,%u,%u", &hs, &idle, &ka) != 3)
                                return log_error_errno(EINVAL, "--timeouts HANDSHAKE,IDLE,KEEPALIVE (ms)");
                        conn.handshake_timeout_usec = hs * USEC_PER_MSEC;
                        conn.idle_timeout_usec = idle * USEC_PER_MSEC;
                        conn.keepalive_usec = ka * USEC_PER_MSEC;
                        break;
                }
                default: return -EINVAL;
                }
        if (optind + 1 != argc)
                return log_error_errno(EINVAL, "usage: seed FILE [--port P] [--torrent OUT] [--corrupt N]");

        r = manifest_of_file(argv[optind], &m);
        if (r < 0)
                return log_error_errno(r, "Cannot hash %s: %m", argv[optind]);
        if (torrent) {
                _cleanup_free_ uint8_t *t = NULL;
                size_t size;
                _cleanup_fclose_ FILE *f = NULL;

                r = manifest_to_torrent(m, NULL, &t, &size);
                if (r < 0)
                        return log_error_errno(r, "Cannot encode the torrent: %m");
                f = fopen(torrent, "we");
                if (!f || fwrite(t, 1, size, f) != size || fflush(f) != 0)
                        return log_error_errno(EIO, "Cannot write %s", torrent);
        }
        if (have >= 0) {
                _cleanup_close_ int fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
                _cleanup_free_ uint8_t *buf = malloc(m->geometry.piece_length);
                r = content_store_open_dir(have_dir, m, &store);
                if (r < 0)
                        return log_error_errno(r, "Cannot make a partial store in %s: %m", have_dir);
                if (fd < 0 || !buf)
                        return log_error_errno(EIO, "Cannot read %s", argv[optind]);
                for (uint32_t i = 0; i < m->geometry.n_pieces && (int64_t) i < have; i++) {
                        uint64_t off = (uint64_t) i * m->geometry.piece_length;
                        size_t len = (size_t) MIN((uint64_t) m->geometry.piece_length, m->geometry.length - off);
                        if (pread(fd, buf, len, (off_t) off) != (ssize_t) len)
                                return log_error_errno(EIO, "Cannot read %s", argv[optind]);
                        r = content_store_put_piece(store, i, buf, len);
                        if (r < 0 && r != -EALREADY)
                                return log_error_errno(r, "Cannot store piece %u: %m", i);
                }
        } else {
                r = content_store_open_file(argv[optind], m, &store);
                if (r < 0)
                        return log_error_errno(r, "Cannot open %s: %m", argv[optind]);
        }
        lfd = listen_on(port, &port);
        if (lfd < 0)
                return log_error_errno(lfd, "Cannot listen: %m");
        r = make_sink(&sink);
        if (r < 0)
                return log_error_errno(r, "Cannot make the sink: %m");
        r = swarm_server_new(event, &(SwarmServerConfig) { .listen_fd = lfd, .sink = sink, .max_connections = max_conns,
                                                           .max_per_address = max_per_addr, .closed = on_server_closed,
                                                           .conn = &conn, .no_seed_sharing = no_seed_sharing },
                             &srv);
        if (r < 0)
                return log_error_errno(r, "Cannot start the server: %m");
        r = swarm_server_add(srv, store);
        if (r < 0)
                return log_error_errno(r, "Cannot serve: %m");
        sigemptyset(&mask);
        sigaddset(&mask, SIGUSR1);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_add_signal(event, NULL, SIGUSR1, on_usr1, srv);
        if (r < 0)
                return log_error_errno(r, "Cannot watch SIGUSR1: %m");

        torrent_id_to_hex(m->id, id);
        printf("content id=%s root=%s pieces=%" PRIu32 " piece_length=%" PRIu32 "\nready port=%u\n", id,
               m->has_root ? m->name : "-", m->geometry.n_pieces, m->geometry.piece_length, port);
        fflush(stdout);
        r = sd_event_loop(event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        print_stats(srv);
        /* Connections go before the sink they use. */
        srv = swarm_server_free(srv);
        free_sinks(&sink);
        return 0;
}

static unsigned abort_after, flush_every;
static bool stay;

static void on_progress(Swarm *s, uint32_t have, uint32_t total, void *userdata) {
        if (flush_every > 0 && have % flush_every == 0 && content_store_flush(swarm_store(s)) < 0)
                abort();
        if (abort_after > 0 && have >= abort_after) {
                printf("aborting have=%" PRIu32 " durable=%" PRIu32 "\n", have, content_store_n_durable(swarm_store(s)));
                fflush(stdout);
                abort();
        }
}

static void on_done(Swarm *s, const SwarmResult *r, void *userdata) {
        for (size_t i = 0; i < r->n_peers; i++) {
                const SwarmPeerStats *p = &r->peers[i];
                printf("peer addr=%s bytes=%" PRIu64 " pieces=%" PRIu32 " banned=%d connects=%u failures=%u error=%d reason=%s\n",
                       p->address, p->bytes, p->pieces, p->banned, p->connects, p->failures, p->error, p->reason ?: "-");
        }
        if (r->error < 0) {
                printf("error code=%d reason=%s\n", r->error, r->reason);
                exit_status = 1;
        } else {
                double secs = (double) r->duration_usec / 1e6;
                printf("done path=%s bytes=%" PRIu64 " wasted=%" PRIu64 " fetched=%" PRIu32 " failed=%" PRIu32
                       " resumed=%" PRIu32 " peers_used=%u duration_ms=%" PRIu64 " mib_s=%.1f\n",
                       r->path, r->bytes, r->bytes_wasted, r->pieces_fetched, r->pieces_failed, r->pieces_resumed,
                       r->peers_used, r->duration_usec / 1000, secs > 0 ? (double) r->bytes / 1048576.0 / secs : 0.0);
        }
        fflush(stdout);
        if (!stay || r->error < 0)
                sd_event_exit(event, 0);
}

static int on_usr2_start(sd_event_source *es, const struct signalfd_siginfo *si, void *userdata) {
        static bool started;
        Swarm *s = userdata;
        int r;

        if (started)            /* a second SIGUSR2 changes nothing */
                return 0;
        started = true;
        r = swarm_start(s);
        if (r < 0) {
                printf("error code=%d reason=cannot start: %s\n", r, strerror(-r));
                fflush(stdout);
                exit_status = 1;
                return sd_event_exit(event, 0);
        }
        printf("started\n");
        fflush(stdout);
        return 0;
}

static int read_file(const char *path, uint8_t **ret, size_t *ret_size) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ uint8_t *buf = NULL;
        long n;

        if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0)
                return -errno;
        buf = malloc((size_t) n + 1);
        if (!buf)
                return -ENOMEM;
        if (fread(buf, 1, (size_t) n, f) != (size_t) n)
                return -EIO;
        *ret = TAKE_PTR(buf);
        *ret_size = (size_t) n;
        return 0;
}

static int cmd_fetch(int argc, char **argv) {
        static const struct option options[] = {
                { "manifest", required_argument, NULL, 'm' },
                { "peer", required_argument, NULL, 'p' },
                { "out", required_argument, NULL, 'o' },
                { "timeout", required_argument, NULL, 't' },
                { "deadline", required_argument, NULL, 'd' },
                { "max-peers", required_argument, NULL, 'n' },
                { "abort-after", required_argument, NULL, 'A' },
                { "serve-port", required_argument, NULL, 's' },
                { "remove-partial", no_argument, NULL, 'r' },
                { "flush-every", required_argument, NULL, 'F' },
                { "sink", required_argument, NULL, 'k' },
                { "bind", required_argument, NULL, 'b' },
                { "no-seed-sharing", no_argument, NULL, 'N' },
                { "wait-start", no_argument, NULL, 'W' },
                { "stay", no_argument, NULL, 'S' },
                {}
        };
        _cleanup_(peer_sink_freep) PeerSink *sink = NULL;
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_(swarm_freep) Swarm *s = NULL;
        _cleanup_(swarm_server_freep) SwarmServer *srv = NULL;
        _cleanup_free_ uint8_t *torrent = NULL;
        _cleanup_close_ int lfd = -1;
        const char *manifest = NULL, *out = NULL, *peers[64], *reason = NULL;
        size_t n_peers = 0, size = 0;
        SwarmConfig config = { .progress = on_progress };
        uint8_t id[TORRENT_ID_SIZE];
        int serve_port = -1, c, r;
        bool wait_start = false;
        sigset_t mask;

        optind = 1;
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'm': manifest = optarg; break;
                case 'p':
                        if (n_peers < ELEMENTSOF(peers))
                                peers[n_peers++] = optarg;
                        break;
                case 'o': out = optarg; break;
                case 't': config.no_progress_usec = (uint64_t) atoi(optarg) * USEC_PER_SEC; break;
                case 'd': config.deadline_usec = (uint64_t) atoi(optarg) * USEC_PER_SEC; break;
                case 'n': config.max_peers = (unsigned) atoi(optarg); break;
                case 'A': abort_after = (unsigned) atoi(optarg); break;
                case 's': serve_port = atoi(optarg); break;
                case 'r': config.remove_partial_on_error = true; break;
                case 'F': flush_every = (unsigned) atoi(optarg); break;
                case 'k': sink_kind = optarg; break;
                case 'b': bind_address = optarg; break;
                case 'N': no_seed_sharing = true; break;
                case 'W': wait_start = true; break;
                case 'S': stay = true; break;
                default: return -EINVAL;
                }
        if (optind + 1 != argc || !manifest || !out)
                return log_error_errno(EINVAL, "usage: fetch ID --manifest FILE --peer HOST:PORT... --out DIR");
        r = torrent_id_from_hex(argv[optind], id);
        if (r < 0)
                return log_error_errno(r, "Not a content id: %s", argv[optind]);
        r = read_file(manifest, &torrent, &size);
        if (r < 0)
                return log_error_errno(r, "Cannot read %s: %m", manifest);
        r = manifest_parse_torrent(torrent, size, id, 0, &m, &reason);
        if (r < 0)
                return log_error_errno(r, "Bad manifest %s: %s", manifest, reason);
        r = make_sink(&sink);
        if (r < 0)
                return log_error_errno(r, "Cannot make the sink: %m");
        if (serve_port >= 0) {
                uint16_t port;
                lfd = listen_on((uint16_t) serve_port, &port);
                if (lfd < 0)
                        return log_error_errno(lfd, "Cannot listen: %m");
                r = swarm_server_new(event, &(SwarmServerConfig) { .listen_fd = lfd, .sink = sink,
                                                                   .no_seed_sharing = no_seed_sharing }, &srv);
                if (r < 0)
                        return log_error_errno(r, "Cannot start the server: %m");
                printf("serving port=%u\n", port);
                fflush(stdout);
        }
        config.dir = out;
        config.manifest = m;
        config.sink = sink;
        config.server = srv;
        r = swarm_new(event, &config, on_done, NULL, &s);
        if (r < 0) {
                printf("error code=%d reason=%s\n", r, r == -ENOSPC ? "disk full" : strerror(-r));
                return 1;
        }
        for (size_t i = 0; i < n_peers; i++) {
                r = swarm_add_peer_string(s, peers[i]);
                if (r < 0)
                        return log_error_errno(r, "Bad peer address %s", peers[i]);
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGUSR1);
        sigaddset(&mask, SIGUSR2);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        if (srv) {
                r = sd_event_add_signal(event, NULL, SIGUSR1, on_usr1, srv);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch SIGUSR1: %m");
        }
        if (wait_start) {
                r = sd_event_add_signal(event, NULL, SIGUSR2, on_usr2_start, s);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch SIGUSR2: %m");
                printf("waiting for SIGUSR2\n");
                fflush(stdout);
        } else {
                r = swarm_start(s);
                if (r < 0)
                        return log_error_errno(r, "Cannot start: %m");
        }
        r = sd_event_loop(event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        if (srv)
                print_stats(srv);
        s = swarm_free(s);
        srv = swarm_server_free(srv);
        free_sinks(&sink);
        return exit_status;
}

static int run(int argc, char **argv) {
        int r;

        log_setup("mc-swarm-tool");
        log_set_target(LOG_TARGET_CONSOLE);
        if (argc < 2)
                return log_error_errno(EINVAL, "usage: mc-swarm-tool seed|fetch ...");
        r = daemon_event_new(&event);
        if (r < 0)
                return r;
        if (streq(argv[1], "seed"))
                r = cmd_seed(argc - 1, argv + 1);
        else if (streq(argv[1], "fetch"))
                r = cmd_fetch(argc - 1, argv + 1);
        else
                r = log_error_errno(EINVAL, "unknown command %s", argv[1]);
        event = sd_event_unref(event);
        return r;
}

DEFINE_MAIN_FUNCTION(run);
