/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* ContentStore and resuming: pieces verified before they are written, the state file, reopening
 * after a crash (unflushed pieces are forgotten, flushed ones trusted), the final name appearing
 * only when complete; and a real download killed with abort() in the middle (a child process
 * fetching from a seeding child over loopback), resumed by a second fetch that asks only for the
 * pieces that were not durable. */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "content-store.h"
#include "daemon-util.h"
#include "peer-sink.h"
#include "swarm.h"
#include "content-fixture.h"

#define fixture_init(f, size, seed) fixture_init_named(f, "test-content-store", size, seed)

static bool exists_in(const char *dir, const char *fmt, const char *id) {
        char path[256], name[128];
        struct stat st;
        snprintf(name, sizeof(name), fmt, id);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return stat(path, &st) == 0;
}

static int put(ContentStore *s, const Fixture *f, uint32_t i) {
        const TorrentGeometry *g = &f->m->geometry;
        return content_store_put_piece(s, i, f->data + (size_t) i * g->piece_length, torrent_piece_size(g, i));
}

static void on_piece(ContentStoreWatch *w, uint32_t index) {
        (*(unsigned *) ((uint8_t *) w + sizeof(*w)))++;
}

static void test_complete_file(void) {
        Fixture f;
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        uint8_t buf[100];

        fixture_init(&f, 100000, 1);
        ASSERT_INT_EQ(content_store_open_file(f.file, f.m, &s), 0);
        ASSERT_TRUE(content_store_complete(s));
        ASSERT_UINT_EQ(content_store_n_have(s), f.m->geometry.n_pieces);
        ASSERT_INT_EQ(content_store_read(s, 99900, buf, 100), 0);
        ASSERT_TRUE(memcmp(buf, f.data + 99900, 100) == 0);
        ASSERT_INT_EQ(content_store_read(s, 99950, buf, 100), -ERANGE);
        ASSERT_INT_EQ(put(s, &f, 0), -EALREADY);
        s = content_store_unref(s);
        /* A file of another size is not this content. */
        ASSERT_INT_EQ(truncate(f.file, 99999), 0);
        ASSERT_INT_EQ(content_store_open_file(f.file, f.m, &s), -EBADFD);
        fixture_done(&f);
}

static void test_partial_and_resume(void) {
        Fixture f;
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        char id[TORRENT_ID_HEX_SIZE];
        struct {
                ContentStoreWatch w;
                unsigned count;
        } watch = { .w.piece = on_piece };
        uint8_t *bad;
        uint32_t n;
        int fd;

        fixture_init(&f, 40 * 16 * KIB + 5, 2);        /* 41 pieces of 16 KiB */
        n = f.m->geometry.n_pieces;
        torrent_id_to_hex(f.m->id, id);
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_TRUE(!content_store_complete(s));
        ASSERT_TRUE(exists_in(f.dir, ".%s.part", id));
        ASSERT_TRUE(!exists_in(f.dir, "%s", id));
        content_store_watch(s, &watch.w);

        /* A corrupt piece is refused and not written. */
        bad = malloc(16 * KIB);
        memcpy(bad, f.data, 16 * KIB);
        bad[77] ^= 1;
        ASSERT_INT_EQ(content_store_put_piece(s, 0, bad, 16 * KIB), -EBADMSG);
        ASSERT_INT_EQ(content_store_put_piece(s, 0, f.data, 16 * KIB - 1), -EBADMSG);
        free(bad);
        ASSERT_INT_EQ(content_store_put_piece(s, n, f.data, 5), -ERANGE);
        ASSERT_UINT_EQ(content_store_n_have(s), 0);

        for (uint32_t i = 0; i < 10; i++)
                ASSERT_INT_EQ(put(s, &f, i), 0);
        ASSERT_UINT_EQ(watch.count, 10);
        ASSERT_TRUE(content_store_has_piece(s, 9));
        ASSERT_UINT_EQ(content_store_n_durable(s), 0);
        ASSERT_INT_EQ(content_store_flush(s), 0);
        ASSERT_UINT_EQ(content_store_n_durable(s), 10);
        ASSERT_TRUE(exists_in(f.dir, ".%s.state", id));
        /* Written but never flushed: a crash forgets them. */
        for (uint32_t i = 10; i < 15; i++)
                ASSERT_INT_EQ(put(s, &f, i), 0);
        content_store_unwatch(s, &watch.w);
        s = content_store_unref(s);

        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_UINT_EQ(content_store_n_have(s), 10);
        ASSERT_TRUE(content_store_has_piece(s, 9) && !content_store_has_piece(s, 10));
        for (uint32_t i = 10; i < n; i++)
                ASSERT_INT_EQ(put(s, &f, i), 0);
        ASSERT_TRUE(!exists_in(f.dir, "%s", id));      /* nothing visible before the flush */
        ASSERT_INT_EQ(content_store_flush(s), 0);
        ASSERT_TRUE(content_store_complete(s));
        ASSERT_TRUE(exists_in(f.dir, "%s", id));
        ASSERT_TRUE(!exists_in(f.dir, ".%s.part", id));
        ASSERT_TRUE(!exists_in(f.dir, ".%s.state", id));
        s = content_store_unref(s);

        /* Complete on disk: opened as such. */
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_TRUE(content_store_complete(s));
        {
                char path[256];
                uint8_t *back = malloc(f.size);
                snprintf(path, sizeof(path), "%s/%s", f.dir, id);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                ASSERT_TRUE(fd >= 0 && read(fd, back, f.size) == (ssize_t) f.size);
                close(fd);
                ASSERT_TRUE(memcmp(back, f.data, f.size) == 0);
                free(back);
        }
        fixture_done(&f);
}

static void test_bad_state_starts_over(void) {
        Fixture f;
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        char id[TORRENT_ID_HEX_SIZE], path[256];
        int fd;

        fixture_init(&f, 5 * 16 * KIB, 3);
        torrent_id_to_hex(f.m->id, id);
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_INT_EQ(put(s, &f, 1), 0);
        ASSERT_INT_EQ(content_store_flush(s), 0);
        s = content_store_unref(s);
        /* A state file that is not ours (another piece count): nothing is trusted. */
        snprintf(path, sizeof(path), "%s/.%s.state", f.dir, id);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        ASSERT_TRUE(fd >= 0);
        ASSERT_TRUE(dprintf(fd, "mc-content-state 1\nid %s\npieces 6\nhave fc\n", id) > 0);
        close(fd);
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_UINT_EQ(content_store_n_have(s), 0);
        s = content_store_unref(s);
        /* The final name taken by something else: refused, never overwritten. */
        snprintf(path, sizeof(path), "%s/%s", f.dir, id);
        ASSERT_INT_EQ(mkdir(path, 0755), 0);
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), -EEXIST);
        fixture_done(&f);
}

static void test_empty_content(void) {
        Fixture f;
        _cleanup_(content_store_unrefp) ContentStore *s = NULL;
        char id[TORRENT_ID_HEX_SIZE];

        fixture_init(&f, 0, 4);
        torrent_id_to_hex(f.m->id, id);
        ASSERT_INT_EQ(content_store_open_dir(f.dir, f.m, &s), 0);
        ASSERT_TRUE(content_store_complete(s));
        ASSERT_TRUE(exists_in(f.dir, "%s", id));
        fixture_done(&f);
}

/* A download killed in the middle. */

#define RESUME_PIECES 256U             /* 4 MiB in 16 KiB pieces */
#define RESUME_FLUSH_AT 100U
#define RESUME_ABORT_AT 105U

static void run_seeder(int lfd, const Fixture *f) {
        sd_event *e = NULL;
        PeerSink *sink = NULL;
        SwarmServer *srv = NULL;
        ContentStore *s = NULL;

        if (sd_event_new(&e) < 0 || peer_sink_default_new(e, &sink) < 0 ||
            swarm_server_new(e, &(SwarmServerConfig) { .listen_fd = lfd, .sink = sink }, &srv) < 0 ||
            content_store_open_file(f->file, f->m, &s) < 0 || swarm_server_add(srv, s) < 0)
                _exit(2);
        (void) sd_event_loop(e);
        _exit(0);
}

static void abort_progress(Swarm *sw, uint32_t have, uint32_t total, void *userdata) {
        ContentStore *s = swarm_store(sw);
        if (have == RESUME_FLUSH_AT && content_store_flush(s) < 0)
                _exit(3);
        if (have >= RESUME_ABORT_AT)
                abort();
}

typedef struct FetchOut {
        sd_event *event;
        int error;
        uint64_t bytes;
        uint32_t resumed, fetched;
} FetchOut;

static void on_fetch_done(Swarm *sw, const SwarmResult *r, void *userdata) {
        FetchOut *o = userdata;
        o->error = r->error;
        o->bytes = r->bytes;
        o->resumed = r->pieces_resumed;
        o->fetched = r->pieces_fetched;
        sd_event_exit(o->event, 0);
}

static int fetch(const Fixture *f, const char *dir, uint16_t port, bool crash, FetchOut *out) {
        sd_event *e = NULL;
        PeerSink *sink = NULL;
        Swarm *sw = NULL;
        char peer[64];
        int r;

        snprintf(peer, sizeof(peer), "127.0.0.1:%u", port);
        r = sd_event_new(&e);
        if (r < 0)
                return r;
        out->event = e;
        r = peer_sink_default_new(e, &sink);
        if (r >= 0)
                r = swarm_new(e, &(SwarmConfig) { .dir = dir, .manifest = f->m, .sink = sink, .no_progress_usec = 20 * USEC_PER_SEC,
                                                  .progress = crash ? abort_progress : NULL },
                              on_fetch_done, out, &sw);
        if (r >= 0)
                r = swarm_add_peer_string(sw, peer);
        if (r >= 0)
                r = swarm_start(sw);
        if (r >= 0)
                r = sd_event_loop(e);
        swarm_free(sw);
        peer_sink_free(sink);
        sd_event_unref(e);
        return r;
}

static void test_resume_after_abort(void) {
        Fixture f;
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        char dir[128], id[TORRENT_ID_HEX_SIZE], state[256], final[256];
        pid_t seeder, fetcher;
        FetchOut out = {};
        int lfd, status;
        unsigned durable = 0;
        FILE *sf;

        fixture_init(&f, RESUME_PIECES * 16 * KIB, 5);
        ASSERT_UINT_EQ(f.m->geometry.n_pieces, RESUME_PIECES);
        torrent_id_to_hex(f.m->id, id);
        snprintf(dir, sizeof(dir), "%s/out", f.dir);
        ASSERT_INT_EQ(mkdir(dir, 0755), 0);

        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ASSERT_TRUE(lfd >= 0);
        ASSERT_INT_EQ(bind(lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ASSERT_INT_EQ(listen(lfd, 16), 0);
        ASSERT_INT_EQ(getsockname(lfd, (struct sockaddr *) &sa, &len), 0);

        seeder = fork();
        ASSERT_TRUE(seeder >= 0);
        if (seeder == 0)
                run_seeder(lfd, &f);
        close(lfd);

        fetcher = fork();
        ASSERT_TRUE(fetcher >= 0);
        if (fetcher == 0) {
                (void) fetch(&f, dir, ntohs(sa.sin_port), true, &out);
                _exit(4);       /* the download was to be killed before it ends */
        }
        ASSERT_INT_EQ(waitpid(fetcher, &status, 0), fetcher);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);

        /* The state file names what was flushed, no more. */
        snprintf(state, sizeof(state), "%s/.%s.state", dir, id);
        snprintf(final, sizeof(final), "%s/%s", dir, id);
        sf = fopen(state, "re");
        ASSERT_TRUE(sf != NULL);
        {
                char line[1024];
                while (fgets(line, sizeof(line), sf))
                        if (strncmp(line, "have ", 5) == 0)
                                for (char *p = line + 5; *p && *p != '\n'; p++) {
                                        unsigned v = (unsigned) (*p <= '9' ? *p - '0' : *p - 'a' + 10);
                                        durable += (unsigned) __builtin_popcount(v);
                                }
        }
        fclose(sf);
        ASSERT_UINT_EQ(durable, RESUME_FLUSH_AT);
        ASSERT_TRUE(access(final, F_OK) < 0);

        /* Again, to the end: only what was not durable comes over the wire, plus at most one
         * piece per peer in flight (one peer here). */
        ASSERT_INT_EQ(fetch(&f, dir, ntohs(sa.sin_port), false, &out), 0);
        kill(seeder, SIGKILL);
        waitpid(seeder, NULL, 0);
        ASSERT_INT_EQ(out.error, 0);
        ASSERT_UINT_EQ(out.resumed, RESUME_FLUSH_AT);
        ASSERT_UINT_EQ(out.fetched, RESUME_PIECES - RESUME_FLUSH_AT);
        ASSERT_TRUE(out.bytes >= (uint64_t) (RESUME_PIECES - RESUME_FLUSH_AT) * 16 * KIB);
        ASSERT_TRUE(out.bytes <= (uint64_t) (RESUME_PIECES - RESUME_FLUSH_AT + 1) * 16 * KIB);
        {
                uint8_t *back = malloc(f.size);
                int fd = open(final, O_RDONLY | O_CLOEXEC);
                ASSERT_TRUE(fd >= 0 && read(fd, back, f.size) == (ssize_t) f.size);
                close(fd);
                ASSERT_TRUE(memcmp(back, f.data, f.size) == 0);
                free(back);
        }
        ASSERT_TRUE(access(state, F_OK) < 0);
        fixture_done(&f);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        RUN_TEST(test_complete_file);
        RUN_TEST(test_partial_and_resume);
        RUN_TEST(test_bad_state_starts_over);
        RUN_TEST(test_empty_content);
        RUN_TEST(test_resume_after_abort);
        return TESTS_DONE();
}
