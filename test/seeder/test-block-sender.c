/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* block-sender against real TCP connections on loopback, for one path (argv[1]: splice, send-zc,
 * sendfile; forced by the config, so a path the kernel lacks fails rather than falls back). A reader
 * thread parses the peer-wire stream of every connection and checks each piece message's data
 * against the file, byte by byte, and the order of everything (blocks and the messages between
 * them) against what was queued. Everything waits on conditions (stream states, the sender's
 * counters, the reader's socket), never on time.
 *
 * The file's blocks sit at unaligned offsets: block (piece, begin) is at BASE + piece * PIECE + begin,
 * BASE = 12345, and the file's size is not a multiple of anything, so the last block is short. */

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/sockios.h>

#include "block-sender.h"
#include "log.h"
#include "tests.h"

/* Helpers and the reader thread abort on failure (tests.h's ASSERT_* return from the test). */
#define CHECK(expr)                                                                             \
        do {                                                                                    \
                if (!(expr)) {                                                                  \
                        fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__,      \
                                __func__, #expr);                                               \
                        abort();                                                                \
                }                                                                               \
        } while (0)

#define BASE 12345U
#define PIECE (256U * 1024U)
#define BLOCK (16U * 1024U)
#define FILE_SIZE (BASE + 23U * PIECE + 5000U) /* 23 whole pieces and a short one */

static BlockSendPath test_path;
static uint8_t *content;
static BlockFile *file;

/* ---- what was queued, what arrived ---- */

typedef struct Entry {
        uint8_t id;       /* 7 piece, 4 have, 5 bitfield, 0 choke */
        uint32_t a, b, c; /* piece: piece, begin, length; have: index; bitfield: -, -, length */
} Entry;

typedef struct Log {
        Entry *v;
        size_t n, cap;
} Log;

static void log_add(Log *l, Entry e) {
        if (l->n == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 64;
                l->v = realloc(l->v, l->cap * sizeof(Entry));
                CHECK(l->v);
        }
        l->v[l->n++] = e;
}

static bool entry_eq(const Entry *x, const Entry *y) {
        return x->id == y->id && x->a == y->a && x->b == y->b && x->c == y->c;
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static uint8_t bitfield_byte(size_t k, uint32_t len) {
        return (uint8_t) (k * 31 + len);
}

/* ---- the reading side: one thread, every connection's stream ---- */

typedef struct Stream {
        int fd;
        size_t chunk;          /* bytes per read() */
        uint64_t close_after;  /* close the socket once this many bytes came (0: never) */
        uint64_t pause_at;     /* stop reading once this many bytes came (0: never), until resumed */
        atomic_int paused;     /* not read while set */
        atomic_int done;       /* EOF, error or closed */
        uint64_t bytes;
        /* parser */
        int state;
        uint8_t pre[13];
        size_t have, need;
        uint32_t len, body_left, piece, begin;
        uint8_t id;
        uint64_t pos;
        uint8_t *msg;
        size_t msg_have;
        Log log;
        char bad[256]; /* the first thing wrong */
} Stream;

static void stream_init(Stream *s, int fd) {
        *s = (Stream) { .fd = fd, .chunk = 256 * 1024, .need = 4 };
}

static void stream_bad(Stream *s, const char *why) {
        if (!s->bad[0])
                snprintf(s->bad, sizeof(s->bad), "%s (after %" PRIu64 " bytes, %zu messages)", why, s->bytes, s->log.n);
}

static void stream_reset(Stream *s) {
        s->state = 0;
        s->have = 0;
        s->need = 4;
}

static void stream_message_done(Stream *s) {
        Entry e = { .id = s->id, .c = s->len - 1 };

        if (s->id == 4) {
                if (s->len != 5)
                        stream_bad(s, "have of the wrong length");
                else
                        e.a = get_be32(s->msg);
        } else if (s->id == 5) {
                for (size_t k = 0; k < s->len - 1; k++)
                        if (s->msg[k] != bitfield_byte(k, s->len - 1)) {
                                stream_bad(s, "bitfield content differs");
                                break;
                        }
        }
        log_add(&s->log, e);
        free(s->msg);
        s->msg = NULL;
        stream_reset(s);
}

static void stream_feed(Stream *s, const uint8_t *p, size_t n) {
        s->bytes += n;
        while (n > 0) {
                if (s->state == 0 || s->state == 1 || s->state == 2) {
                        /* length, id, piece+begin: into pre[] */
                        size_t m = MIN(n, s->need - s->have);
                        size_t at = s->state == 0 ? 0 : s->state == 1 ? 4 : 5;

                        memcpy(s->pre + at + s->have, p, m);
                        s->have += m;
                        p += m;
                        n -= m;
                        if (s->have < s->need)
                                continue;
                        s->have = 0;
                        if (s->state == 0) {
                                s->len = get_be32(s->pre);
                                if (s->len == 0) {
                                        log_add(&s->log, (Entry) { .id = 255 });
                                        stream_reset(s);
                                        continue;
                                }
                                s->state = 1;
                                s->need = 1;
                        } else if (s->state == 1) {
                                s->id = s->pre[4];
                                if (s->id == 7) {
                                        if (s->len < 9)
                                                stream_bad(s, "piece message too short");
                                        s->state = 2;
                                        s->need = 8;
                                } else {
                                        s->body_left = s->len - 1;
                                        s->msg = malloc(MAX(s->body_left, 1U));
                                        CHECK(s->msg);
                                        s->msg_have = 0;
                                        s->state = 3;
                                        if (s->body_left == 0)
                                                stream_message_done(s);
                                }
                        } else {
                                s->piece = get_be32(s->pre + 5);
                                s->begin = get_be32(s->pre + 9);
                                s->body_left = s->len - 9;
                                s->pos = BASE + (uint64_t) s->piece * PIECE + s->begin;
                                if (s->pos + s->body_left > FILE_SIZE)
                                        stream_bad(s, "piece beyond the file");
                                s->state = 4;
                                if (s->body_left == 0) {
                                        stream_bad(s, "empty piece message");
                                        stream_reset(s);
                                }
                        }
                } else if (s->state == 3) {
                        size_t m = MIN(n, (size_t) s->body_left);

                        memcpy(s->msg + s->msg_have, p, m);
                        s->msg_have += m;
                        s->body_left -= (uint32_t) m;
                        p += m;
                        n -= m;
                        if (s->body_left == 0)
                                stream_message_done(s);
                } else {
                        size_t m = MIN(n, (size_t) s->body_left);

                        if (s->pos + m <= FILE_SIZE && memcmp(p, content + s->pos, m) != 0)
                                stream_bad(s, "piece data differs from the file");
                        s->pos += m;
                        s->body_left -= (uint32_t) m;
                        p += m;
                        n -= m;
                        if (s->body_left == 0) {
                                log_add(&s->log, (Entry) { .id = 7, .a = s->piece, .b = s->begin, .c = s->len - 9 });
                                stream_reset(s);
                        }
                }
        }
}

typedef struct Reader {
        Stream **streams;
        size_t n;
        int wake_fd; /* written to when a stream is resumed */
        pthread_t thread;
} Reader;

static void *reader_main(void *userdata) {
        Reader *r = userdata;
        struct pollfd *pfd = calloc(r->n + 1, sizeof(struct pollfd));
        Stream **which = calloc(r->n + 1, sizeof(Stream *));
        uint8_t *buf = malloc(256 * 1024);

        CHECK(pfd && which && buf);
        for (;;) {
                size_t k = 0, live = 0;

                pfd[k++] = (struct pollfd) { .fd = r->wake_fd, .events = POLLIN };
                for (size_t i = 0; i < r->n; i++) {
                        Stream *s = r->streams[i];
                        if (atomic_load(&s->done))
                                continue;
                        live++;
                        if (atomic_load(&s->paused))
                                continue;
                        which[k] = s;
                        pfd[k++] = (struct pollfd) { .fd = s->fd, .events = POLLIN };
                }
                if (live == 0)
                        break;
                CHECK(poll(pfd, k, -1) >= 0 || errno == EINTR);
                if (pfd[0].revents) {
                        uint64_t v;
                        CHECK(read(r->wake_fd, &v, sizeof(v)) == sizeof(v));
                }
                for (size_t i = 1; i < k; i++) {
                        Stream *s = which[i];
                        ssize_t got;

                        if (!pfd[i].revents)
                                continue;
                        got = read(s->fd, buf, MIN(s->chunk, (size_t) 256 * 1024));
                        if (got < 0 && errno == EAGAIN)
                                continue;
                        if (got <= 0) {
                                if (s->state != 0 || s->have != 0)
                                        stream_bad(s, "stream ends inside a message");
                                atomic_store(&s->done, 1);
                                continue;
                        }
                        stream_feed(s, buf, (size_t) got);
                        if (s->pause_at > 0 && s->bytes >= s->pause_at) {
                                s->pause_at = 0;
                                atomic_store(&s->paused, 1);
                        }
                        if (s->close_after > 0 && s->bytes >= s->close_after) {
                                /* Unread data is waiting: the close resets the connection. */
                                close(s->fd);
                                s->fd = -1;
                                atomic_store(&s->done, 1);
                        }
                }
        }
        free(pfd);
        free(which);
        free(buf);
        return NULL;
}

static void reader_start(Reader *r, Stream **streams, size_t n) {
        *r = (Reader) { .streams = streams, .n = n };
        r->wake_fd = eventfd(0, EFD_CLOEXEC);
        CHECK(r->wake_fd >= 0);
        CHECK(pthread_create(&r->thread, NULL, reader_main, r) == 0);
}

static void reader_resume(Reader *r, Stream *s) {
        uint64_t one = 1;
        atomic_store(&s->paused, 0);
        CHECK(write(r->wake_fd, &one, sizeof(one)) == sizeof(one));
}

static void reader_join(Reader *r) {
        CHECK(pthread_join(r->thread, NULL) == 0);
        close(r->wake_fd);
}

/* ---- connections ---- */

static int listen_fd = -1;

/* A TCP connection on loopback: *snd is the accepted end (the seeder's), *rcv the peer's. Buffer
 * sizes 0 leave the kernel's autotuning. */
static void tcp_pair(int *snd, int *rcv, int sndbuf, int rcvbuf) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sa);
        int c;

        if (listen_fd < 0) {
                listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                CHECK(listen_fd >= 0);
                CHECK(bind(listen_fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
                CHECK(listen(listen_fd, 512) == 0);
        }
        CHECK(getsockname(listen_fd, (struct sockaddr *) &sa, &sl) == 0);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(c >= 0);
        if (rcvbuf > 0)
                CHECK(setsockopt(c, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) == 0);
        CHECK(connect(c, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        *snd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        CHECK(*snd >= 0);
        if (sndbuf > 0)
                CHECK(setsockopt(*snd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0);
        *rcv = c;
}

typedef struct TConn {
        int fd;              /* the sending end, ours */
        BlockSenderConn *c;
        Stream st;
        Log expect;
        unsigned drained, failed;
        int error;
} TConn;

static void on_drained(BlockSenderConn *c, void *userdata) {
        TConn *t = userdata;
        t->drained++;
}

static void on_failed(BlockSenderConn *c, int error, void *userdata) {
        TConn *t = userdata;
        t->failed++;
        t->error = error;
}

static void tconn_open(TConn *t, BlockSender *s, int sndbuf, int rcvbuf) {
        int rcv;

        *t = (TConn) {};
        tcp_pair(&t->fd, &rcv, sndbuf, rcvbuf);
        stream_init(&t->st, rcv);
        CHECK(block_sender_attach(s, t->fd, &(BlockSenderCallbacks) { on_drained, on_failed }, t, &t->c) == 0);
}

static void tconn_done(TConn *t) {
        free(t->expect.v);
        free(t->st.log.v);
        free(t->st.msg);
        if (t->st.fd >= 0)
                close(t->st.fd);
}

static uint32_t block_len(uint32_t piece, uint32_t begin) {
        uint64_t off = BASE + (uint64_t) piece * PIECE + begin;
        uint64_t end = MIN(off + BLOCK, (uint64_t) BASE + (uint64_t) (piece + 1) * PIECE);
        end = MIN(end, (uint64_t) FILE_SIZE);
        return (uint32_t) (end - off);
}

static unsigned n_blocks_total(void) {
        unsigned n = 0;
        for (uint64_t off = BASE; off < FILE_SIZE;) {
                uint32_t piece = (uint32_t) ((off - BASE) / PIECE), begin = (uint32_t) ((off - BASE) % PIECE);
                off += block_len(piece, begin);
                n++;
        }
        return n;
}

/* Block number k of the file (in file order). */
static void block_k(unsigned k, uint32_t *piece, uint32_t *begin) {
        uint64_t off = BASE;
        for (unsigned i = 0; i < k; i++) {
                uint32_t p = (uint32_t) ((off - BASE) / PIECE), b = (uint32_t) ((off - BASE) % PIECE);
                off += block_len(p, b);
        }
        *piece = (uint32_t) ((off - BASE) / PIECE);
        *begin = (uint32_t) ((off - BASE) % PIECE);
}

static void q_block(TConn *t, uint32_t piece, uint32_t begin) {
        uint32_t len = block_len(piece, begin);
        CHECK(block_sender_queue(t->c, file, BASE + (uint64_t) piece * PIECE + begin, len, piece, begin) == 0);
        log_add(&t->expect, (Entry) { .id = 7, .a = piece, .b = begin, .c = len });
}

static void q_have(TConn *t, uint32_t index) {
        uint8_t m[9] = { 0, 0, 0, 5, 4 };
        put_be32(m + 5, index);
        CHECK(block_sender_queue_message(t->c, m, 9) == 0);
        log_add(&t->expect, (Entry) { .id = 4, .a = index, .c = 4 });
}

static void q_bitfield(TConn *t, uint32_t len) {
        uint8_t *m = malloc(5 + len);
        CHECK(m);
        put_be32(m, len + 1);
        m[4] = 5;
        for (size_t k = 0; k < len; k++)
                m[5 + k] = bitfield_byte(k, len);
        CHECK(block_sender_queue_message(t->c, m, 5 + len) == 0);
        free(m);
        log_add(&t->expect, (Entry) { .id = 5, .c = len });
}

static void q_choke(TConn *t) {
        static const uint8_t m[5] = { 0, 0, 0, 1, 0 };
        CHECK(block_sender_queue_message(t->c, m, 5) == 0);
        log_add(&t->expect, (Entry) { .id = 0 });
}

/* Blocks [from, to) of the file in order, a have after every `every` blocks (0: none). */
static void q_blocks(TConn *t, unsigned from, unsigned to, unsigned every) {
        uint32_t piece, begin;

        block_k(from, &piece, &begin);
        for (unsigned k = from; k < to; k++) {
                q_block(t, piece, begin);
                if (every && (k + 1) % every == 0)
                        q_have(t, k);
                begin += block_len(piece, begin);
                if (begin >= PIECE) {
                        piece++;
                        begin = 0;
                }
        }
}

static bool tconn_settled(const TConn *t) {
        return t->drained > 0 || t->failed > 0;
}

static void run_until_settled(sd_event *e, TConn *t, size_t n) {
        for (;;) {
                bool all = true;
                for (size_t i = 0; i < n; i++)
                        all = all && tconn_settled(&t[i]);
                if (all)
                        return;
                CHECK(sd_event_run(e, UINT64_MAX) >= 0);
        }
}

/* Runs the loop until cond() holds; with a timeout per iteration so that a condition the loop does
 * not see (the peer's socket filling) is noticed too. */
static void run_until(sd_event *e, bool (*cond)(void *), void *userdata) {
        while (!cond(userdata))
                CHECK(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
}

static BlockSender *sender_new(sd_event *e, BlockSenderConfig config) {
        BlockSender *s;

        config.path = test_path;
        CHECK(block_sender_new(e, &config, &s) == 0);
        CHECK(block_sender_path(s) == test_path);
        return s;
}

static bool log_equal(const Log *got, const Log *want, char *why, size_t why_size) {
        for (size_t k = 0; k < MIN(got->n, want->n); k++)
                if (!entry_eq(&got->v[k], &want->v[k])) {
                        snprintf(why, why_size, "message %zu: got id %u (%u %u %u), want id %u (%u %u %u)", k,
                                 got->v[k].id, got->v[k].a, got->v[k].b, got->v[k].c, want->v[k].id,
                                 want->v[k].a, want->v[k].b, want->v[k].c);
                        return false;
                }
        if (got->n != want->n) {
                snprintf(why, why_size, "got %zu messages, want %zu", got->n, want->n);
                return false;
        }
        return true;
}

/* Detaches, frees the sender (which waits for the kernel), lets the reader see every EOF, and checks
 * each stream against what was queued. */
static void finish(sd_event *e, BlockSender **s, Reader *r, TConn *t, size_t n, bool check_logs) {
        for (size_t i = 0; i < n; i++) {
                t[i].c = block_sender_detach(t[i].c);
                close(t[i].fd);
        }
        *s = block_sender_free(*s);
        reader_join(r);
        for (size_t i = 0; i < n; i++) {
                char why[256];
                if (t[i].st.bad[0]) {
                        fprintf(stderr, "stream %zu: %s\n", i, t[i].st.bad);
                        CHECK(!t[i].st.bad[0]);
                }
                if (check_logs && !log_equal(&t[i].st.log, &t[i].expect, why, sizeof(why))) {
                        fprintf(stderr, "stream %zu: %s\n", i, why);
                        CHECK(false);
                }
        }
}

static uint64_t payload_of(const Log *l) {
        uint64_t n = 0;
        for (size_t k = 0; k < l->n; k++)
                if (l->v[k].id == 7)
                        n += l->v[k].c;
        return n;
}

/* The counters, in the test's log (stdout, after "# "). */
static void print_stats(const char *what, BlockSender *s) {
        BlockSenderStats st;

        block_sender_get_stats(s, &st);
        printf("# %s: sent %" PRIu64 " (payload %" PRIu64 ", splice %" PRIu64 ", zc %" PRIu64 " copied %" PRIu64
               ", sendfile %" PRIu64 ", send %" PRIu64 "), blocks %" PRIu64 " canceled %" PRIu64 ", rounds %" PRIu64
               ", short %" PRIu64 ", waits %" PRIu64 ", submits %" PRIu64 ", cqes %" PRIu64
               ", pipes %u peak %u waits %" PRIu64 " discarded %" PRIu64 ", zc notifs %" PRIu64 " copied %" PRIu64
               " async %" PRIu64 ", errors %" PRIu64 "\n",
               what, st.bytes_sent, st.payload_bytes, st.splice_bytes, st.zc_bytes, st.zc_bytes_copied,
               st.sendfile_bytes, st.send_bytes, st.blocks_sent, st.blocks_canceled, st.rounds, st.short_writes,
               st.waits_writable, st.submits, st.cqes, st.pipes, st.pipes_peak, st.pipe_waits, st.pipes_discarded,
               st.zc_notifs, st.zc_notifs_copied, st.zc_async, st.conn_errors);
}

static int make_file_copy(void);

/* ---- tests ---- */

static void test_paths(void) {
        ASSERT_INT_EQ(block_send_path_from_string("auto"), BLOCK_SEND_AUTO);
        ASSERT_INT_EQ(block_send_path_from_string("splice"), BLOCK_SEND_SPLICE);
        ASSERT_INT_EQ(block_send_path_from_string("send-zc"), BLOCK_SEND_ZC);
        ASSERT_INT_EQ(block_send_path_from_string("sendfile"), BLOCK_SEND_SENDFILE);
        ASSERT_INT_EQ(block_send_path_from_string("zc"), -EINVAL);
        ASSERT_INT_EQ(block_send_path_from_string(NULL), -EINVAL);
        ASSERT_STREQ(block_send_path_to_string(BLOCK_SEND_ZC), "send-zc");
        ASSERT_NULL(block_send_path_to_string(_BLOCK_SEND_PATH_MAX));
}

/* The whole file, with messages between the blocks (a big one too), on one connection. */
static void stream_file(BlockSenderConfig config) {
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;
        unsigned n = n_blocks_total();

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, config);
        tconn_open(&t, s, 0, 0);
        q_bitfield(&t, 3);
        q_blocks(&t, 0, n / 2, 7);
        q_bitfield(&t, 100 * 1024); /* bigger than a small pipe */
        q_blocks(&t, n / 2, n, 5);
        CHECK(block_sender_conn_queued_bytes(t.c) > FILE_SIZE - BASE);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until_settled(e, &t, 1);
        CHECK(t.failed == 0 && t.drained == 1);
        CHECK(block_sender_conn_queued_bytes(t.c) == 0);
        block_sender_get_stats(s, &st);
        CHECK(st.payload_bytes == FILE_SIZE - BASE);
        CHECK(st.blocks_sent == n);
        CHECK(st.bytes_sent == block_sender_conn_bytes_sent(t.c));
        switch (test_path) {
        case BLOCK_SEND_SPLICE:
                CHECK(st.splice_bytes == st.bytes_sent);
                CHECK(st.pipes_peak == 1);
                break;
        case BLOCK_SEND_ZC:
                CHECK(st.zc_bytes == st.bytes_sent);
                break;
        case BLOCK_SEND_SENDFILE:
                CHECK(st.sendfile_bytes == st.payload_bytes);
                CHECK(st.sendfile_bytes + st.send_bytes == st.bytes_sent);
                break;
        default:
                CHECK(false);
        }
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        CHECK(payload_of(&t.st.log) == FILE_SIZE - BASE);
        tconn_done(&t);
        sd_event_unref(e);
}

static void test_stream(void) {
        stream_file((BlockSenderConfig) {});
}

/* Pipes of two pages and rounds of three blocks: blocks and messages are split across pipe fills. */
static void test_small_pipes(void) {
        stream_file((BlockSenderConfig) { .pipe_size = 8192, .max_batch_blocks = 3, .sendfile_budget = 10000 });
}

/* A copy of the file whose pages are dropped from page cache before anything maps them: send-zc
 * hands such requests to io-wq (the page faults would otherwise read the disk on the loop thread);
 * every path reads the pages back in. */
static void test_cold_file(void) {
        BlockFile *warm = file;
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;
        int fd;

        fd = make_file_copy();
        CHECK(fdatasync(fd) == 0);
        CHECK(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
        CHECK(block_file_new(fd, &file) == 0);
        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 0, 0);
        q_blocks(&t, 0, 100, 10);
        file = block_file_unref(file); /* the queued blocks hold it */
        file = warm;
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        block_sender_get_stats(s, &st);
        if (test_path == BLOCK_SEND_ZC)
                ASSERT_TRUE(st.zc_async > 0);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

static void test_refusals(void) {
        sd_event *e = NULL;
        BlockSender *s;
        Stream *sp;
        Reader r;
        TConn t;

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 0, 0);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, BASE, 0, 0, 0), -EINVAL);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, BASE, BLOCK + 1, 0, 0), -EINVAL);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, FILE_SIZE, 1, 0, 0), -ERANGE);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, FILE_SIZE - 10, 11, 0, 0), -ERANGE);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, UINT64_MAX - 5, 16, 0, 0), -ERANGE);
        ASSERT_INT_EQ(block_sender_queue_message(t.c, "", 0), 0); /* nothing */
        ASSERT_INT_EQ(block_sender_conn_queued_bytes(t.c), 0);
        /* The file's last byte, as a one-byte block; the last (short) block of the last piece. */
        {
                uint32_t last_piece = (FILE_SIZE - BASE - 1) / PIECE;
                uint32_t begin = FILE_SIZE - 1 - BASE - last_piece * PIECE;
                ASSERT_INT_EQ(block_sender_queue(t.c, file, FILE_SIZE - 1, 1, last_piece, begin), 0);
                log_add(&t.expect, (Entry) { .id = 7, .a = last_piece, .b = begin, .c = 1 });
                q_block(&t, last_piece, (begin / BLOCK) * BLOCK);
                ASSERT_TRUE(t.expect.v[1].c < BLOCK);
        }
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

typedef struct Pressure {
        BlockSender *s;
        TConn *t;
} Pressure;

/* The sender found the socket full (or, send-zc, whose requests wait inside the kernel: the peer's
 * receive queue has data and the sender has more). */
static bool socket_full(void *userdata) {
        Pressure *p = userdata;
        BlockSenderStats st;
        int inq = 0;

        block_sender_get_stats(p->s, &st);
        if (test_path != BLOCK_SEND_ZC)
                return st.short_writes + st.waits_writable > 0;
        CHECK(ioctl(p->t->st.fd, SIOCINQ, &inq) == 0);
        return inq > 0 && st.rounds > 0;
}

/* A tiny send buffer and a reader that first does not read, then reads 3000 bytes at a time: short
 * splices, EAGAIN, waits for POLLOUT. (The reader's receive buffer is small but not tiny: below a
 * page or two, loopback drops segments that carry page references, whose truesize exceeds it, and
 * retransmits them forever.) */
static void test_slow_reader(void) {
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 4096, 32768);
        t.st.chunk = 3000;
        atomic_store(&t.st.paused, 1);
        q_blocks(&t, 0, 150, 4);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until(e, socket_full, &(Pressure) { s, &t });
        CHECK(t.drained == 0);
        reader_resume(&r, &t.st);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        block_sender_get_stats(s, &st);
        if (test_path == BLOCK_SEND_SPLICE) {
                /* The pipe held far more than the socket took: the splice-out was short, waited for
                 * POLLOUT and went on from what was left in the pipe. */
                ASSERT_TRUE(st.short_writes > 0);
                ASSERT_TRUE(st.waits_writable > 0);
        } else if (test_path == BLOCK_SEND_SENDFILE)
                ASSERT_TRUE(st.waits_writable > 0);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

/* The reader keeps up at first, so that rounds grow to many pipe loads in one chain, then stops
 * reading in the middle of one: a splice-out in the middle of a chain comes up short, the rest of the
 * chain is dropped by the kernel, and the sender goes on from that step (after POLLOUT) once the
 * reader reads again. Small pipes and a fixed socket buffer bigger than a pipe load. */
static void test_reader_stalls_mid_round(void) {
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;
        unsigned n = n_blocks_total();

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) { .pipe_size = 64 * 1024 });
        tconn_open(&t, s, 512 * 1024, 256 * 1024);
        t.st.pause_at = 2 * 1024 * 1024;
        q_blocks(&t, 0, n, 9);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        CHECK(block_sender_conn_queued_bytes(t.c) > 0);
        while (!atomic_load(&t.st.paused))
                CHECK(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        run_until(e, socket_full, &(Pressure) { s, &t });
        reader_resume(&r, &t.st);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        block_sender_get_stats(s, &st);
        if (test_path == BLOCK_SEND_SPLICE) {
                ASSERT_TRUE(st.short_writes + st.waits_writable > 0);
                ASSERT_TRUE(st.rounds < n / 4); /* rounds of several loads (a load holds ~3 blocks) */
        }
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

/* The peer resets the connection mid-stream: one `failed`, no `drained`, nothing leaks (ASan). */
static void test_peer_close(void) {
        sd_event *e = NULL;
        BlockSender *s;
        Stream *sp;
        Reader r;
        TConn t;
        unsigned n = n_blocks_total();

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 8192, 32768);
        t.st.close_after = 200 * 1024;
        q_blocks(&t, 0, n, 3);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.drained, 0);
        ASSERT_INT_EQ(t.failed, 1);
        ASSERT_TRUE(t.error == -EPIPE || t.error == -ECONNRESET);
        ASSERT_INT_EQ(block_sender_conn_queued_bytes(t.c), 0);
        ASSERT_INT_EQ(block_sender_queue_message(t.c, "x", 1), t.error);
        ASSERT_INT_EQ(block_sender_queue(t.c, file, BASE, 10, 0, 0), t.error);
        /* The loop goes on without further callbacks. */
        while (sd_event_run(e, 0) > 0)
                ;
        ASSERT_INT_EQ(t.failed, 1);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, false);
        tconn_done(&t);
        sd_event_unref(e);
}

/* BitTorrent cancel of blocks not yet submitted. */
static void test_cancel_queued(void) {
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;
        uint32_t p5, b5, p7, b7;

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 0, 0);
        q_blocks(&t, 0, 20, 3);
        block_k(5, &p5, &b5);
        block_k(7, &p7, &b7);
        ASSERT_INT_EQ(block_sender_cancel_pending(t.c, p5, b5, BLOCK - 1), 0); /* length differs */
        ASSERT_INT_EQ(block_sender_cancel_pending(t.c, p5, b5, BLOCK), 1);
        ASSERT_INT_EQ(block_sender_cancel_pending(t.c, p5, b5, BLOCK), 0);
        ASSERT_INT_EQ(block_sender_cancel_pending(t.c, p7, b7, BLOCK), 1);
        ASSERT_INT_EQ(block_sender_cancel_pending(t.c, 999, 0, BLOCK), 0);
        {
                size_t j = 0;
                for (size_t k = 0; k < t.expect.n; k++) {
                        Entry *x = &t.expect.v[k];
                        if (x->id == 7 && ((x->a == p5 && x->b == b5) || (x->a == p7 && x->b == b7)))
                                continue;
                        t.expect.v[j++] = *x;
                }
                t.expect.n = j;
        }
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        block_sender_get_stats(s, &st);
        ASSERT_INT_EQ(st.blocks_canceled, 2);
        ASSERT_INT_EQ(st.blocks_sent, 18);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

/* Choke while the socket is full: what was handed to the kernel goes out whole, the rest of the
 * blocks is dropped, messages stay, and the choke comes after all of them. */
static void test_cancel_under_pressure(void) {
        sd_event *e = NULL;
        BlockSender *s;
        Stream *sp;
        Reader r;
        TConn t;
        unsigned total = 300, canceled, dropped = 0;

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 4096, 32768);
        atomic_store(&t.st.paused, 1);
        q_blocks(&t, 0, total, 10);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until(e, socket_full, &(Pressure) { s, &t });
        canceled = block_sender_cancel_all_pending(t.c);
        ASSERT_TRUE(canceled > 0 && canceled < total);
        ASSERT_INT_EQ(block_sender_cancel_all_pending(t.c), 0);
        /* The canceled blocks are the last ones. */
        for (size_t k = t.expect.n; k-- > 0 && dropped < canceled;)
                if (t.expect.v[k].id == 7) {
                        memmove(&t.expect.v[k], &t.expect.v[k + 1], (t.expect.n - k - 1) * sizeof(Entry));
                        t.expect.n--;
                        dropped++;
                }
        q_choke(&t);
        reader_resume(&r, &t.st);
        run_until_settled(e, &t, 1);
        ASSERT_INT_EQ(t.failed, 0);
        print_stats(__func__, s);
        finish(e, &s, &r, &t, 1, true);
        tconn_done(&t);
        sd_event_unref(e);
}

/* Detach while a round waits on a full socket (a POLLOUT, a send-zc request, an EPOLLOUT source),
 * then free: the sender cancels, waits for the completions, frees everything (ASan). What the peer
 * got is a clean prefix. */
static void test_detach_in_flight(void) {
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        Stream *sp;
        Reader r;
        TConn t;

        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) {});
        tconn_open(&t, s, 4096, 32768);
        atomic_store(&t.st.paused, 1);
        q_blocks(&t, 0, 200, 0);
        sp = &t.st;
        reader_start(&r, &sp, 1);
        run_until(e, socket_full, &(Pressure) { s, &t });
        t.c = block_sender_detach(t.c);
        block_sender_get_stats(s, &st);
        ASSERT_INT_EQ(st.connections, 0);
        reader_resume(&r, &t.st);
        while (sd_event_run(e, 0) > 0)
                ;
        ASSERT_INT_EQ(t.drained + t.failed, 0);
        close(t.fd);
        print_stats(__func__, s);
        s = block_sender_free(s);
        reader_join(&r);
        ASSERT_TRUE(!t.st.bad[0] || strstr(t.st.bad, "ends inside a message"));
        ASSERT_TRUE(t.st.log.n < t.expect.n);
        for (size_t k = 0; k < t.st.log.n; k++)
                ASSERT_TRUE(entry_eq(&t.st.log.v[k], &t.expect.v[k]));
        tconn_done(&t);
        sd_event_unref(e);
}

/* 200 connections at once on a pool of 8 pipes. */
static void test_many_connections(void) {
        const size_t n = 200;
        sd_event *e = NULL;
        BlockSender *s;
        BlockSenderStats st;
        TConn *t = calloc(n, sizeof(TConn));
        Stream **sp = calloc(n, sizeof(Stream *));
        unsigned total = n_blocks_total();
        Reader r;

        CHECK(t && sp);
        CHECK(sd_event_new(&e) >= 0);
        s = sender_new(e, (BlockSenderConfig) { .max_pipes = 8, .pipe_size = 256 * 1024 });
        for (size_t i = 0; i < n; i++) {
                unsigned from = (unsigned) (i * 37) % (total - 24);
                tconn_open(&t[i], s, 0, 0);
                q_have(&t[i], (uint32_t) i);
                q_blocks(&t[i], from, from + 24, 6);
                sp[i] = &t[i].st;
        }
        reader_start(&r, sp, n);
        run_until_settled(e, t, n);
        for (size_t i = 0; i < n; i++)
                ASSERT_INT_EQ(t[i].failed, 0);
        block_sender_get_stats(s, &st);
        ASSERT_INT_EQ(st.connections, n);
        ASSERT_INT_EQ(st.blocks_sent, n * 24);
        if (test_path == BLOCK_SEND_SPLICE) {
                ASSERT_TRUE(st.pipes_peak <= 8);
                ASSERT_TRUE(st.pipes <= 8);
                ASSERT_TRUE(st.pipe_waits > 0);
                ASSERT_INT_EQ(st.pipes_busy, 0);
        }
        print_stats(__func__, s);
        finish(e, &s, &r, t, n, true);
        for (size_t i = 0; i < n; i++)
                tconn_done(&t[i]);
        free(t);
        free(sp);
        sd_event_unref(e);
}

/* Where io_uring_setup is refused (seccomp here; kernel.io_uring_disabled, container profiles
 * elsewhere), AUTO falls back to sendfile and the io_uring paths report -EOPNOTSUPP. */
static void test_fallback_without_io_uring(void) {
        pid_t pid = fork();
        int status;

        ASSERT_TRUE(pid >= 0);
        if (pid == 0) {
                struct sock_filter filter[] = {
                        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
                        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
                        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                };
                struct sock_fprog prog = { .len = ELEMENTSOF(filter), .filter = filter };
                BlockSender *s = NULL;
                sd_event *e = NULL;

                CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
                CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
                CHECK(sd_event_new(&e) >= 0);
                CHECK(block_sender_new(e, &(BlockSenderConfig) { .path = BLOCK_SEND_SPLICE }, &s) == -EOPNOTSUPP);
                CHECK(block_sender_new(e, &(BlockSenderConfig) { .path = BLOCK_SEND_ZC }, &s) == -EOPNOTSUPP);
                CHECK(block_sender_new(e, &(BlockSenderConfig) { .path = BLOCK_SEND_AUTO }, &s) == 0);
                CHECK(block_sender_path(s) == BLOCK_SEND_SENDFILE);
                block_sender_free(s);
                sd_event_unref(e);
                /* And the fallback streams the file (test_path is sendfile in this run). */
                test_stream();
                _exit(test_current_failed_ ? 1 : 0);
        }
        ASSERT_INT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status));
        ASSERT_INT_EQ(WEXITSTATUS(status), 0);
}

/* AUTO takes send-zc where the ring has SENDMSG_ZC (Linux 6.1). */
static void test_auto(void) {
        sd_event *e = NULL;
        BlockSender *s = NULL;

        CHECK(sd_event_new(&e) >= 0);
        ASSERT_INT_EQ(block_sender_new(e, &(BlockSenderConfig) { .path = BLOCK_SEND_AUTO }, &s), 0);
        ASSERT_INT_EQ(block_sender_path(s), BLOCK_SEND_ZC);
        block_sender_free(s);
        sd_event_unref(e);
}

/* An unlinked temporary file with `content`. */
static int make_file_copy(void) {
        char path[] = "/tmp/mc-test-block-sender-XXXXXX";
        int fd;

        fd = mkostemp(path, O_CLOEXEC);
        CHECK(fd >= 0);
        CHECK(unlink(path) == 0);
        CHECK(write(fd, content, FILE_SIZE) == FILE_SIZE);
        return fd;
}

static void make_file(void) {
        uint64_t x = 0x9e3779b97f4a7c15ULL;

        content = malloc(FILE_SIZE);
        CHECK(content);
        for (size_t k = 0; k < FILE_SIZE; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                content[k] = (uint8_t) x;
        }
        CHECK(block_file_new(make_file_copy(), &file) == 0);
        CHECK(block_file_size(file) == FILE_SIZE);
}

int main(int argc, char *argv[]) {
        log_setup("test-block-sender");
        signal(SIGPIPE, SIG_IGN); /* as the daemons do */
        if (argc != 2 || block_send_path_from_string(argv[1]) <= BLOCK_SEND_AUTO) {
                fprintf(stderr, "usage: %s splice|send-zc|sendfile\n", argv[0]);
                return 2;
        }
        test_path = block_send_path_from_string(argv[1]);
        make_file();

        RUN_TEST(test_paths);
        RUN_TEST(test_stream);
        RUN_TEST(test_small_pipes);
        RUN_TEST(test_refusals);
        RUN_TEST(test_cold_file);
        RUN_TEST(test_slow_reader);
        RUN_TEST(test_reader_stalls_mid_round);
        RUN_TEST(test_peer_close);
        RUN_TEST(test_cancel_queued);
        RUN_TEST(test_cancel_under_pressure);
        RUN_TEST(test_detach_in_flight);
        RUN_TEST(test_many_connections);
        if (test_path == BLOCK_SEND_SENDFILE)
                RUN_TEST(test_fallback_without_io_uring);
        else
                RUN_TEST(test_auto);

        block_file_unref(file);
        free(content);
        if (listen_fd >= 0)
                close(listen_fd);
        return TESTS_DONE();
}
