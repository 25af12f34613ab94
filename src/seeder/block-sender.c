/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* See block-sender.h for what each path does and when it is used. The shape of the code:
 *
 * A connection has one queue of Items (a block: header + file range; or a message: bytes), oldest
 * first. Each item counts `placed` (bytes given to a pipe fill or a send-zc request) and `sent`
 * (bytes the socket took); an item is freed when all of it is sent, and the bytes of items in
 * flight are never touched by anything else (cancel only removes items with nothing placed).
 * `next_place` is the first item not entirely placed.
 *
 * At most one round is in flight per connection: a splice chain (one CQE), a send-zc request, or a
 * wait for EPOLLOUT (sendfile). Connections with work to start sit in the ready queue, which the
 * deferred "kick" source and the end of every completion batch run; all SQEs prepared meanwhile go
 * to the kernel in one io_uring_submit().
 *
 * Lifetime: a connection is reference counted: its owner (until detach), each round in flight, and
 * its place in the ready and pipe-wait queues hold one. io_uring user_data points at a Step inside
 * the connection (splice) or at a ZcBatch, whose memory therefore lives until the CQE came. */

#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "block-sender.h"
#include "daemon-util.h"
#include "list.h"
#include "log.h"

/* Linux 6.2; liburing 2.3's headers predate them. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define DEFAULT_RING_ENTRIES 1024U
#define DEFAULT_MAX_PIPES 32U
#define DEFAULT_PIPE_SIZE (1024U * 1024U)
#define DEFAULT_MAX_BATCH 256U
#define DEFAULT_SENDFILE_BUDGET (4U * 1024U * 1024U)
#define ZC_COPY_MAX (16U * 1024U)        /* message bytes copied into one send-zc batch */
#define ZC_MAX_BLOCKS 64U                 /* blocks in one send-zc request (1 MiB) */
#define FREE_WAIT_USEC (5 * USEC_PER_SEC) /* block_sender_free(): longest wait for completions */

struct BlockFile {
        unsigned n_ref;
        int fd;
        uint64_t size;
        void *map; /* send-zc: the whole file, read-only, mapped when first queued */
};

typedef enum ItemKind {
        ITEM_BLOCK,
        ITEM_MESSAGE,
} ItemKind;

typedef struct Item Item;
struct Item {
        LIST_FIELDS(Item);
        ItemKind kind;
        uint32_t size;   /* wire bytes */
        uint32_t placed; /* given to a pipe or request */
        uint32_t sent;   /* taken by the socket */
        BlockFile *file;
        uint64_t offset;
        uint32_t length, piece, begin;
        uint8_t header[BLOCK_SENDER_PIECE_HEADER];
        uint8_t data[]; /* message */
};

/* What io_uring user_data points at. */
typedef enum OpType {
        OP_STEP = 1,
        OP_ZC,
} OpType;

typedef enum StepKind {
        STEP_WRITE,      /* bytes (a header, a message) -> pipe */
        STEP_SPLICE_IN,  /* file -> pipe */
        STEP_SPLICE_OUT, /* pipe -> socket, always the last step */
        STEP_POLL,       /* POLLOUT before a splice-out that found the socket full */
} StepKind;

typedef struct Step {
        OpType type; /* first: user_data points here */
        StepKind kind;
        BlockSenderConn *conn;
        int fd;          /* SPLICE_IN */
        uint64_t offset; /* SPLICE_IN */
        const uint8_t *buf; /* WRITE */
        uint32_t len;    /* still to do */
} Step;

typedef struct Pipe Pipe;
struct Pipe {
        LIST_FIELDS(Pipe);
        int fds[2];
        unsigned slots; /* pipe buffers (pages) it holds */
};

typedef struct ZcBatch ZcBatch;
struct ZcBatch {
        OpType type; /* first */
        LIST_FIELDS(ZcBatch);
        BlockSender *sender;
        BlockSenderConn *conn; /* until the result CQE */
        uint32_t expected, result; /* bytes offered, bytes the result CQE said were sent */
        bool result_pending, notif_pending, notif_seen, copied;
        bool cold; /* some of the data is not in page cache */
        struct msghdr msg;
        unsigned n_iov, n_files;
        size_t copy_used;
        struct iovec *iov;  /* [iov_cap] */
        BlockFile **files;  /* [max_batch + 1], referenced */
        uint8_t *copy;      /* headers and message bytes */
};

struct BlockSenderConn {
        BlockSender *sender;
        unsigned n_ref;
        LIST_FIELDS(BlockSenderConn); /* sender->conns, attached or waiting for completions */
        BlockSenderConn *ready_next, *wait_next;
        bool in_ready, waiting_pipe;

        int fd; /* our duplicate of the socket */
        BlockSenderCallbacks cb;
        void *userdata;

        Item *items, *items_tail;
        Item *next_place;
        uint64_t queued_bytes, bytes_sent;
        int error;
        bool detached, drain_pending, busy;

        /* splice */
        Pipe *pipe;
        Step *steps;
        unsigned n_steps, first_step, steps_cap;
        Step poll;
        bool poll_first, chain_has_poll;
        bool socket_full, was_full; /* this round / the last one found the socket full */

        /* send-zc */
        ZcBatch *batch;
        bool zc_poll_first;

        /* sendfile */
        sd_event_source *io;
};

struct BlockSender {
        sd_event *event;
        BlockSenderConfig config;
        BlockSendPath path;
        size_t page_size;

        bool have_ring;
        struct io_uring ring;
        int efd;
        sd_event_source *ring_source, *kick_source;
        bool zc_report_usage;
        size_t zc_iov_cap, zc_copy_cap;

        BlockSenderConn *conns;
        BlockSenderConn *ready_head, *ready_tail;
        BlockSenderConn *wait_head, *wait_tail;
        Pipe *free_pipes;
        ZcBatch *batches;     /* in flight */
        ZcBatch *batch_cache; /* reusable */
        unsigned n_batch_cache;
        unsigned inflight; /* rounds and batches whose CQEs are still to come */

        BlockSenderStats stats;
};

static const char *const path_names[_BLOCK_SEND_PATH_MAX] = {
        [BLOCK_SEND_AUTO] = "auto",
        [BLOCK_SEND_SPLICE] = "splice",
        [BLOCK_SEND_ZC] = "send-zc",
        [BLOCK_SEND_SENDFILE] = "sendfile",
};

const char *block_send_path_to_string(BlockSendPath p) {
        if (p < 0 || p >= _BLOCK_SEND_PATH_MAX)
                return NULL;
        return path_names[p];
}

BlockSendPath block_send_path_from_string(const char *s) {
        if (!s)
                return _BLOCK_SEND_PATH_INVALID;
        for (BlockSendPath p = 0; p < _BLOCK_SEND_PATH_MAX; p++)
                if (streq(s, path_names[p]))
                        return p;
        return _BLOCK_SEND_PATH_INVALID;
}

/* ---- files ---- */

int block_file_new(int fd, BlockFile **ret) {
        struct stat st;
        BlockFile *f;

        assert(fd >= 0);
        assert(ret);

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;

        f = malloc(sizeof(*f));
        if (!f)
                return -ENOMEM;
        *f = (BlockFile) { .n_ref = 1, .fd = fd, .size = (uint64_t) st.st_size };
        *ret = f;
        return 0;
}

int block_file_open(int dir_fd, const char *path, BlockFile **ret) {
        _cleanup_close_ int fd = -1;
        int r;

        assert(path);
        assert(ret);

        fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = block_file_new(fd, ret);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        return 0;
}

BlockFile *block_file_ref(BlockFile *f) {
        assert(f);
        assert(f->n_ref > 0);
        f->n_ref++;
        return f;
}

BlockFile *block_file_unref(BlockFile *f) {
        if (!f)
                return NULL;
        assert(f->n_ref > 0);
        if (--f->n_ref > 0)
                return NULL;
        if (f->map)
                (void) munmap(f->map, f->size);
        closep(&f->fd);
        free(f);
        return NULL;
}

uint64_t block_file_size(const BlockFile *f) {
        assert(f);
        return f->size;
}

/* send-zc sends from a mapping of the whole file (cheap: nothing is read until the socket pins the
 * pages). */
static int block_file_map(BlockFile *f) {
        void *p;

        if (f->map)
                return 0;
        assert(f->size > 0); /* queue() refuses empty ranges */
        p = mmap(NULL, f->size, PROT_READ, MAP_SHARED, f->fd, 0);
        if (p == MAP_FAILED)
                return -errno;
        f->map = p;
        return 0;
}

/* ---- items ---- */

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static Item *item_free(Item *i) {
        if (!i)
                return NULL;
        block_file_unref(i->file);
        free(i);
        return NULL;
}

static bool item_is_block(const Item *i) {
        return i->kind == ITEM_BLOCK;
}

/* ---- connections: references, queues ---- */

static void conn_free(BlockSenderConn *c);
static void conn_start(BlockSenderConn *c);
static void ring_flush(BlockSender *s);

static BlockSenderConn *conn_ref(BlockSenderConn *c) {
        assert(c->n_ref > 0);
        c->n_ref++;
        return c;
}

static void conn_unref(BlockSenderConn *c) {
        assert(c->n_ref > 0);
        if (--c->n_ref == 0)
                conn_free(c);
}

static void kick(BlockSender *s) {
        if (s->kick_source)
                (void) sd_event_source_set_enabled(s->kick_source, SD_EVENT_ONESHOT);
}

/* Asks for conn_start() from the loop (never from inside a call into the sender). */
static void ready_push(BlockSenderConn *c) {
        BlockSender *s = c->sender;

        if (c->in_ready || c->detached)
                return;
        c->in_ready = true;
        c->ready_next = NULL;
        conn_ref(c);
        if (s->ready_tail)
                s->ready_tail->ready_next = c;
        else
                s->ready_head = c;
        s->ready_tail = c;
        kick(s);
}

/* Runs the connections that were ready when called; those that become ready meanwhile run from the
 * next kick, so that one busy connection cannot keep the loop to itself. */
static void run_ready(BlockSender *s) {
        BlockSenderConn *c = s->ready_head;

        s->ready_head = s->ready_tail = NULL;
        while (c) {
                BlockSenderConn *next = c->ready_next;

                c->ready_next = NULL;
                c->in_ready = false;
                conn_start(c);
                conn_unref(c);
                c = next;
        }
        ring_flush(s);
}

static void conn_drop_items(BlockSenderConn *c) {
        while (c->items) {
                Item *i = c->items;

                LIST_REMOVE_QUEUED(c->items, c->items_tail, i);
                item_free(i);
        }
        c->next_place = NULL;
        c->queued_bytes = 0;
}

/* The socket took n more bytes of the queue. */
static void conn_sent(BlockSenderConn *c, uint64_t n) {
        BlockSender *s = c->sender;

        s->stats.bytes_sent += n;
        c->bytes_sent += n;
        assert(c->queued_bytes >= n);
        c->queued_bytes -= n;

        while (n > 0) {
                Item *i = c->items;
                uint32_t take;

                assert(i);
                take = (uint32_t) MIN((uint64_t) (i->size - i->sent), n);
                if (item_is_block(i)) {
                        uint32_t from = MAX(i->sent, BLOCK_SENDER_PIECE_HEADER), to = i->sent + take;
                        if (to > from)
                                s->stats.payload_bytes += to - from;
                }
                i->sent += take;
                i->placed = MAX(i->placed, i->sent);
                n -= take;
                if (i->sent < i->size)
                        continue;
                if (item_is_block(i))
                        s->stats.blocks_sent++;
                else
                        s->stats.messages_sent++;
                if (c->next_place == i)
                        c->next_place = i->next;
                LIST_REMOVE_QUEUED(c->items, c->items_tail, i);
                item_free(i);
        }
}

/* Forget what was placed but not sent (a send-zc request that will be sent again). */
static void conn_unplace(BlockSenderConn *c) {
        for (Item *i = c->items; i; i = i->next)
                i->placed = i->sent;
        c->next_place = c->items;
}

static void conn_maybe_drained(BlockSenderConn *c) {
        if (c->busy || c->items || !c->drain_pending || c->detached || c->error)
                return;
        c->drain_pending = false;
        if (c->cb.drained) {
                conn_ref(c);
                c->cb.drained(c, c->userdata);
                conn_unref(c);
        }
}

static void pipe_release(BlockSender *s, Pipe *p);
static void pipe_discard(BlockSender *s, Pipe *p);

/* The connection cannot go on: nothing of it is in flight any more (callers make sure). */
static void conn_fail(BlockSenderConn *c, int error) {
        BlockSender *s = c->sender;

        assert(error < 0);
        assert(!c->busy);

        if (c->error)
                return;
        c->error = error;
        s->stats.conn_errors++;
        log_debug_errno(error, "block-sender: connection on fd %d failed: %m", c->fd);

        conn_drop_items(c);
        if (c->pipe) {
                if (c->first_step < c->n_steps) /* the pipe may hold bytes */
                        pipe_discard(s, TAKE_PTR(c->pipe));
                else
                        pipe_release(s, TAKE_PTR(c->pipe));
        }
        c->n_steps = c->first_step = 0;
        if (c->io)
                (void) sd_event_source_set_enabled(c->io, SD_EVENT_OFF);

        if (c->cb.failed && !c->detached) {
                conn_ref(c);
                c->cb.failed(c, error, c->userdata);
                conn_unref(c);
        }
}

/* ---- the ring ---- */

static void ring_flush(BlockSender *s) {
        int r;

        if (!s->have_ring || io_uring_sq_ready(&s->ring) == 0)
                return;
        r = io_uring_submit(&s->ring);
        s->stats.submits++;
        if (r < 0) {
                /* -EAGAIN/-EBUSY: the kernel is short of memory or of CQ room; the SQEs stay queued and
                 * go with the next attempt, after the completions were reaped. */
                log_debug_errno(r, "block-sender: io_uring_submit: %m");
                kick(s);
        }
}

/* Makes room for n SQEs (a chain must go in one submission). */
static int ring_reserve(BlockSender *s, unsigned n) {
        if (io_uring_sq_space_left(&s->ring) >= n)
                return 0;
        ring_flush(s);
        return io_uring_sq_space_left(&s->ring) >= n ? 0 : -EAGAIN;
}

static void ring_cancel(BlockSender *s, const void *user_data) {
        struct io_uring_sqe *sqe;

        if (ring_reserve(s, 1) < 0)
                return; /* the request ends on its own: the socket gets writable or fails */
        sqe = io_uring_get_sqe(&s->ring);
        io_uring_prep_cancel64(sqe, (uint64_t) (uintptr_t) user_data, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        io_uring_sqe_set_data64(sqe, 0); /* -ENOENT/-EALREADY if it completed meanwhile: ignored */
        kick(s);
}

/* ---- splice: the pipe pool ---- */

static int pipe_new(BlockSender *s, Pipe **ret) {
        _cleanup_free_ Pipe *p = NULL;
        int fds[2], sz;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
                return -errno;
        /* Fails with EPERM beyond pipe-user-pages-soft (unprivileged): the pipe keeps its size. */
        if (fcntl(fds[1], F_SETPIPE_SZ, (int) s->config.pipe_size) < 0)
                log_debug_errno(errno, "block-sender: F_SETPIPE_SZ %zu: %m", s->config.pipe_size);
        sz = fcntl(fds[1], F_GETPIPE_SZ);
        if (sz < 0) {
                int r = -errno;
                close(fds[0]);
                close(fds[1]);
                return r;
        }
        p->fds[0] = fds[0];
        p->fds[1] = fds[1];
        p->slots = (unsigned) ((size_t) sz / s->page_size);
        assert(p->slots >= 1);
        s->stats.pipes++;
        *ret = TAKE_PTR(p);
        return 0;
}

static void pipe_close(BlockSender *s, Pipe *p) {
        closep(&p->fds[0]);
        closep(&p->fds[1]);
        free(p);
        s->stats.pipes--;
}

/* 1 and a pipe, or 0 when the pool is at its size and every pipe is lent. */
static int pipe_acquire(BlockSender *s, Pipe **ret) {
        Pipe *p = s->free_pipes;
        int r;

        if (p)
                LIST_REMOVE(s->free_pipes, p);
        else if (s->stats.pipes < s->config.max_pipes) {
                r = pipe_new(s, &p);
                if (r < 0)
                        return r;
        } else
                return 0;
        s->stats.pipes_busy++;
        s->stats.pipes_peak = MAX(s->stats.pipes_peak, s->stats.pipes_busy);
        *ret = p;
        return 1;
}

static BlockSenderConn *wait_pop(BlockSender *s) {
        BlockSenderConn *c = s->wait_head;

        if (!c)
                return NULL;
        s->wait_head = c->wait_next;
        if (!s->wait_head)
                s->wait_tail = NULL;
        c->wait_next = NULL;
        c->waiting_pipe = false;
        return c; /* with the queue's reference */
}

static void wait_push(BlockSenderConn *c) {
        BlockSender *s = c->sender;

        assert(!c->waiting_pipe);
        c->waiting_pipe = true;
        c->wait_next = NULL;
        conn_ref(c);
        if (s->wait_tail)
                s->wait_tail->wait_next = c;
        else
                s->wait_head = c;
        s->wait_tail = c;
        s->stats.pipe_waits++;
}

/* An empty pipe goes back: to the connection that waited longest, else to the pool. */
static void pipe_release(BlockSender *s, Pipe *p) {
        BlockSenderConn *w;

        assert(s->stats.pipes_busy > 0);
        s->stats.pipes_busy--;
        while ((w = wait_pop(s))) {
                if (!w->detached && !w->error && w->next_place && !w->pipe) {
                        w->pipe = p;
                        s->stats.pipes_busy++;
                        ready_push(w);
                        conn_unref(w);
                        return;
                }
                conn_unref(w);
        }
        LIST_PREPEND(s->free_pipes, p);
}

/* A pipe with unknown content (a round failed): closed; a waiting connection may make a new one. */
static void pipe_discard(BlockSender *s, Pipe *p) {
        BlockSenderConn *w;

        assert(s->stats.pipes_busy > 0);
        s->stats.pipes_busy--;
        s->stats.pipes_discarded++;
        pipe_close(s, p);
        while ((w = wait_pop(s))) {
                bool wants = !w->detached && !w->error && w->next_place && !w->pipe;
                if (wants)
                        ready_push(w);
                conn_unref(w);
                if (wants)
                        return;
        }
}

/* ---- splice: rounds ---- */

static Step *step_add(BlockSenderConn *c, StepKind kind) {
        Step *st;

        assert(c->n_steps < c->steps_cap);
        st = &c->steps[c->n_steps++];
        *st = (Step) { .type = OP_STEP, .kind = kind, .conn = c };
        return st;
}

static unsigned pages_spanned(size_t page, uint64_t offset, uint32_t len) {
        assert(len > 0);
        return (unsigned) ((offset + len - 1) / page - offset / page + 1);
}

/* Plans a round: pipe loads of headers, messages and block data in queue order, each followed by
 * the splice that empties the pipe into the socket, all linked in one chain, up to max_batch_blocks
 * blocks. A pipe holds `slots` buffers: a splice-in takes one per page of the file range it touches,
 * a write one per page of bytes at most (small writes share a page, but never a page-cache one).
 * Filling it past that would leave a request waiting for room that only the next splice-out makes:
 * the chain would never end. */
static void splice_plan(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        const size_t page = s->page_size;
        unsigned slots = c->pipe->slots, blocks = 0;
        uint32_t load = 0; /* bytes in the pipe load being planned */
        Step *st;

        assert(c->n_steps == 0);
        c->first_step = 0;

        for (Item *i = c->next_place; i; i = c->next_place) {
                bool full = false;

                if (c->n_steps + 3 > c->steps_cap) /* up to two steps, and the splice-out */
                        break;
                if (item_is_block(i) && blocks >= s->config.max_batch_blocks)
                        break;

                if (!item_is_block(i)) {
                        uint32_t chunk = (uint32_t) MIN((size_t) (i->size - i->placed), slots * page);
                        if (chunk > 0) {
                                st = step_add(c, STEP_WRITE);
                                st->buf = i->data + i->placed;
                                st->len = chunk;
                                slots -= (unsigned) ((chunk + page - 1) / page);
                                i->placed += chunk;
                                load += chunk;
                        }
                } else {
                        if (i->placed < BLOCK_SENDER_PIECE_HEADER && slots > 0) {
                                st = step_add(c, STEP_WRITE);
                                st->buf = i->header + i->placed;
                                st->len = BLOCK_SENDER_PIECE_HEADER - i->placed;
                                slots--;
                                i->placed += st->len;
                                load += st->len;
                        }
                        if (i->placed >= BLOCK_SENDER_PIECE_HEADER && i->placed < i->size && slots > 0) {
                                uint64_t off = i->offset + (i->placed - BLOCK_SENDER_PIECE_HEADER);
                                uint64_t room = (off / page + slots) * page - off;
                                uint32_t chunk = (uint32_t) MIN((uint64_t) (i->size - i->placed), room);

                                st = step_add(c, STEP_SPLICE_IN);
                                st->fd = i->file->fd;
                                st->offset = off;
                                st->len = chunk;
                                slots -= pages_spanned(page, off, chunk);
                                i->placed += chunk;
                                load += chunk;
                        }
                }
                if (i->placed == i->size) {
                        if (item_is_block(i))
                                blocks++;
                        c->next_place = i->next;
                } else
                        full = true;
                if (full || slots == 0) {
                        /* The pipe is full: empty it into the socket, then go on with the next load --
                         * unless the socket could not keep up last time: then one load a round, so that
                         * what a slow peer has not received yet stays cancelable. */
                        assert(load > 0);
                        st = step_add(c, STEP_SPLICE_OUT);
                        st->len = load;
                        load = 0;
                        slots = c->pipe->slots;
                        if (c->was_full)
                                break;
                }
        }
        if (load > 0) {
                st = step_add(c, STEP_SPLICE_OUT);
                st->len = load;
        }
        assert(c->n_steps > 0 && c->steps[c->n_steps - 1].kind == STEP_SPLICE_OUT);
        c->poll_first = false;
        s->stats.rounds++;
}

/* Submits the steps not done yet as one linked chain. Every request but the last skips its CQE on
 * success; one that fails or comes up short posts its CQE and the kernel drops the rest of the chain
 * without CQEs (REQ_F_SKIP_LINK_CQES), so a chain ends with exactly one CQE, whose step says how far
 * it got. */
static int splice_submit(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        unsigned n = c->n_steps - c->first_step + c->poll_first;
        struct io_uring_sqe *sqe;
        int r;

        assert(n > 0);
        r = ring_reserve(s, n);
        if (r < 0)
                return r;

        if (c->poll_first) {
                sqe = io_uring_get_sqe(&s->ring);
                io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
                sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
                c->poll = (Step) { .type = OP_STEP, .kind = STEP_POLL, .conn = c };
                io_uring_sqe_set_data(sqe, &c->poll);
        }
        for (unsigned k = c->first_step; k < c->n_steps; k++) {
                Step *st = &c->steps[k];

                sqe = io_uring_get_sqe(&s->ring);
                switch (st->kind) {
                case STEP_WRITE:
                        io_uring_prep_write(sqe, c->pipe->fds[1], st->buf, st->len, (uint64_t) -1);
                        break;
                case STEP_SPLICE_IN:
                        io_uring_prep_splice(sqe, st->fd, (int64_t) st->offset, c->pipe->fds[1], -1, st->len, 0);
                        break;
                case STEP_SPLICE_OUT:
                        io_uring_prep_splice(sqe, c->pipe->fds[0], -1, c->fd, -1, st->len, 0);
                        break;
                default:
                        assert(false);
                }
                if (k + 1 < c->n_steps)
                        sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
                io_uring_sqe_set_data(sqe, st);
        }
        c->chain_has_poll = c->poll_first;
        c->busy = true;
        conn_ref(c);
        s->inflight++;
        return 0;
}

static void splice_start(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        int r;

        if (!c->pipe) {
                if (c->waiting_pipe)
                        return;
                r = pipe_acquire(s, &c->pipe);
                if (r < 0 && s->stats.pipes_busy == 0) { /* no pipe at all (EMFILE ...) */
                        conn_fail(c, r);
                        return;
                }
                if (r <= 0) {
                        if (r < 0)
                                log_debug_errno(r, "block-sender: cannot make a pipe, waiting for one: %m");
                        wait_push(c);
                        return;
                }
        }
        if (c->first_step == c->n_steps) {
                c->n_steps = c->first_step = 0;
                splice_plan(c);
        }
        if (splice_submit(c) < 0)
                ready_push(c); /* no SQ room: after the next submission */
}

/* The chain's pipe was emptied into the socket. */
static void splice_round_done(BlockSenderConn *c) {
        BlockSender *s = c->sender;

        c->n_steps = c->first_step = 0;
        c->was_full = c->socket_full;
        c->socket_full = false;
        /* Keep the pipe for the next round unless someone waits for one (then queue up behind). */
        if (!c->next_place || s->wait_head)
                pipe_release(s, TAKE_PTR(c->pipe));
        if (c->next_place)
                ready_push(c);
        else
                conn_maybe_drained(c);
}

static void splice_complete(BlockSender *s, Step *st, int res) {
        BlockSenderConn *c = st->conn;

        assert(c->busy);
        c->busy = false;
        s->inflight--;

        if (c->detached)
                goto out;

        if (st->kind == STEP_POLL) {
                /* Only failures post (CQE_SKIP_SUCCESS); the splice-out behind it did not run. */
                conn_fail(c, res < 0 ? res : -EIO);
                goto out;
        }

        /* The steps before this one all succeeded (their completions were skipped): the pipe loads
         * they spliced out are sent. */
        for (unsigned k = c->first_step; &c->steps[k] < st; k++)
                if (c->steps[k].kind == STEP_SPLICE_OUT) {
                        conn_sent(c, c->steps[k].len);
                        s->stats.splice_bytes += c->steps[k].len;
                        c->steps[k].len = 0;
                }
        c->first_step = (unsigned) (st - c->steps);
        assert(c->first_step < c->n_steps);

        if (st->kind == STEP_SPLICE_OUT) {
                if (res > 0) {
                        assert((uint32_t) res <= st->len);
                        conn_sent(c, (uint64_t) res);
                        s->stats.splice_bytes += (uint64_t) res;
                        st->len -= (uint32_t) res;
                }
                if (st->len == 0) {
                        /* Only the last step completes successfully with a CQE. */
                        c->first_step++;
                        c->poll_first = false;
                        if (c->first_step == c->n_steps)
                                splice_round_done(c);
                        else if (splice_submit(c) < 0)
                                ready_push(c);
                } else if (res > 0 || res == -EAGAIN) {
                        /* The non-blocking socket is full: wait for POLLOUT, then splice what is left in
                         * the pipe (it stays there, in order, in the meantime). */
                        if (res > 0)
                                s->stats.short_writes++;
                        s->stats.waits_writable++;
                        c->socket_full = true;
                        c->poll_first = true;
                        if (splice_submit(c) < 0)
                                ready_push(c);
                } else
                        conn_fail(c, res < 0 ? res : -EIO); /* EPIPE, ECONNRESET, ... */
                goto out;
        }

        /* A write or splice-in into the pipe failed or came up short; the steps before it are done. */
        if (res > 0 && (uint32_t) res <= st->len) {
                st->len -= (uint32_t) res;
                if (st->kind == STEP_WRITE)
                        st->buf += res;
                else
                        st->offset += (uint64_t) res;
                if (st->len == 0)
                        c->first_step++;
                s->stats.short_writes++;
                c->poll_first = false;
                if (splice_submit(c) < 0)
                        ready_push(c);
        } else if (res == 0) {
                log_debug("block-sender: file ended before offset %" PRIu64 " (truncated?)", st->offset);
                conn_fail(c, -EIO); /* the header promised bytes the file no longer has */
        } else
                conn_fail(c, res == -EAGAIN ? -EIO : res);
out:
        conn_unref(c);
}

/* ---- send-zc ---- */

static ZcBatch *zc_batch_new(BlockSender *s) {
        ZcBatch *b = s->batch_cache;
        size_t files_cap = MIN(s->config.max_batch_blocks, ZC_MAX_BLOCKS) + 1;

        if (b) {
                LIST_REMOVE(s->batch_cache, b);
                s->n_batch_cache--;
        } else {
                uint8_t *p = malloc(sizeof(ZcBatch) + s->zc_iov_cap * sizeof(struct iovec) +
                                    files_cap * sizeof(BlockFile *) + s->zc_copy_cap);
                if (!p)
                        return NULL;
                b = (ZcBatch *) p;
                *b = (ZcBatch) {};
                b->iov = (struct iovec *) (p + sizeof(ZcBatch));
                b->files = (BlockFile **) (b->iov + s->zc_iov_cap);
                b->copy = (uint8_t *) (b->files + files_cap);
        }
        b->type = OP_ZC;
        b->sender = s;
        b->conn = NULL;
        b->expected = b->result = 0;
        b->result_pending = b->notif_pending = b->notif_seen = b->copied = b->cold = false;
        b->n_iov = b->n_files = 0;
        b->copy_used = 0;
        return b;
}

static void zc_batch_free(BlockSender *s, ZcBatch *b) {
        for (unsigned k = 0; k < b->n_files; k++)
                block_file_unref(b->files[k]);
        b->n_files = 0;
        if (s->n_batch_cache < 16) {
                LIST_PREPEND(s->batch_cache, b);
                s->n_batch_cache++;
        } else
                free(b);
}

static void zc_add_iov(ZcBatch *b, const void *p, size_t len) {
        struct iovec *last = b->n_iov > 0 ? &b->iov[b->n_iov - 1] : NULL;

        if (last && (const uint8_t *) last->iov_base + last->iov_len == p)
                last->iov_len += len; /* adjacent copies */
        else
                b->iov[b->n_iov++] = (struct iovec) { .iov_base = (void *) p, .iov_len = len };
        b->expected += (uint32_t) len;
}

static void zc_add_copy(ZcBatch *b, const void *p, size_t len) {
        memcpy(b->copy + b->copy_used, p, len);
        zc_add_iov(b, b->copy + b->copy_used, len);
        b->copy_used += len;
}

/* Whether every page of [p, p + len) of a file mapping is in page cache (mincore() asks the page
 * cache for file mappings, whether or not we ever touched the pages). */
static bool mapping_resident(size_t page, const uint8_t *p, size_t len) {
        uintptr_t start = (uintptr_t) p & ~(uintptr_t) (page - 1), end = (uintptr_t) p + len;
        size_t n = (end - start + page - 1) / page;
        unsigned char vec[256];

        for (size_t done = 0; done < n;) {
                size_t k = MIN(n - done, sizeof(vec));

                if (mincore((void *) (start + done * page), k * page, vec) < 0)
                        return false;
                for (size_t j = 0; j < k; j++)
                        if (!(vec[j] & 1))
                                return false;
                done += k;
        }
        return true;
}

/* Up to 64 blocks and the messages between them, in one SENDMSG_ZC request: headers and messages
 * are copied into the batch, block data is the file mapping. Pinning a page that is not in page cache
 * reads it from disk right there, and the loop thread issues the request: so the file ranges are
 * checked (one mincore() per contiguous run) and a batch with cold pages goes to io-wq instead. */
static void zc_plan(BlockSenderConn *c, ZcBatch *b) {
        BlockSender *s = c->sender;
        unsigned blocks = 0;
        size_t msg_room = ZC_COPY_MAX;
        const uint8_t *run = NULL;
        size_t run_len = 0;

        for (Item *i = c->next_place; i; i = c->next_place) {
                if (b->n_iov + 2 > s->zc_iov_cap)
                        break;
                if (!item_is_block(i)) {
                        size_t chunk = MIN((size_t) (i->size - i->placed), msg_room);
                        if (chunk == 0)
                                break;
                        zc_add_copy(b, i->data + i->placed, chunk);
                        msg_room -= chunk;
                        i->placed += (uint32_t) chunk;
                } else {
                        uint32_t done;

                        if (blocks >= MIN(s->config.max_batch_blocks, ZC_MAX_BLOCKS))
                                break;
                        if (i->placed < BLOCK_SENDER_PIECE_HEADER) {
                                zc_add_copy(b, i->header + i->placed, BLOCK_SENDER_PIECE_HEADER - i->placed);
                                i->placed = BLOCK_SENDER_PIECE_HEADER;
                        }
                        done = i->placed - BLOCK_SENDER_PIECE_HEADER;
                        {
                                const uint8_t *p = (const uint8_t *) i->file->map + i->offset + done;
                                size_t len = i->length - done;

                                zc_add_iov(b, p, len);
                                if (run && run + run_len == p)
                                        run_len += len;
                                else {
                                        if (run && !b->cold && !mapping_resident(s->page_size, run, run_len))
                                                b->cold = true;
                                        run = p;
                                        run_len = len;
                                }
                        }
                        i->placed = i->size;
                        if (b->n_files == 0 || b->files[b->n_files - 1] != i->file)
                                b->files[b->n_files++] = block_file_ref(i->file);
                        blocks++;
                }
                if (i->placed < i->size)
                        break;
                c->next_place = i->next;
        }
        if (run && !b->cold && !mapping_resident(s->page_size, run, run_len))
                b->cold = true;
        assert(b->expected > 0);
        b->msg = (struct msghdr) { .msg_iov = b->iov, .msg_iovlen = b->n_iov };
}

static void zc_start(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        struct io_uring_sqe *sqe;
        ZcBatch *b;

        if (ring_reserve(s, 1) < 0) {
                ready_push(c);
                return;
        }
        b = zc_batch_new(s);
        if (!b) {
                conn_fail(c, -ENOMEM);
                return;
        }
        zc_plan(c, b);

        sqe = io_uring_get_sqe(&s->ring);
        io_uring_prep_sendmsg_zc(sqe, c->fd, &b->msg, MSG_NOSIGNAL | MSG_WAITALL);
        if (s->zc_report_usage)
                sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
        if (c->zc_poll_first)
                sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
        if (b->cold) {
                sqe->flags |= IOSQE_ASYNC;
                s->stats.zc_async++;
        }
        c->zc_poll_first = false;
        io_uring_sqe_set_data(sqe, b);

        b->conn = conn_ref(c);
        b->result_pending = true;
        LIST_PREPEND(s->batches, b);
        c->batch = b;
        c->busy = true;
        s->inflight++;
        s->stats.rounds++;
}

/* The kernel is done with the batch's file pages: their page-table entries go (MADV_DONTNEED on a
 * shared file mapping drops the mapping only; the page cache keeps the data). Otherwise a mapping
 * would keep every page ever sent mapped: a 1 GiB content served once would stay in the daemon's RSS
 * (and its page tables) for as long as the content is served. One call per contiguous run: blocks
 * are mostly requested in order, so a batch is usually one or two runs. Neighbouring pages that
 * another batch still sends from lose their entry too, harmlessly: the socket holds references to
 * the pages themselves, and a later request faults them back in. */
static void zc_batch_unmap_pages(ZcBatch *b) {
        uintptr_t page = (uintptr_t) b->sender->page_size, start = 0, end = 0;
        const uint8_t *copy_end = b->copy + b->copy_used;

        for (unsigned k = 0; k <= b->n_iov; k++) {
                uintptr_t p = 0, q = 0;

                if (k < b->n_iov) {
                        const uint8_t *base = b->iov[k].iov_base;
                        if (base >= b->copy && base < copy_end)
                                continue;       /* a header or message: our copy, not the file */
                        p = (uintptr_t) base & ~(page - 1);
                        q = ((uintptr_t) base + b->iov[k].iov_len + page - 1) & ~(page - 1);
                        if (end > start && p <= end && p >= start) {
                                end = MAX(end, q);
                                continue;
                        }
                }
                if (end > start)
                        (void) madvise((void *) start, end - start, MADV_DONTNEED);
                start = p, end = q;
        }
}

static void zc_batch_maybe_done(BlockSender *s, ZcBatch *b) {
        if (b->result_pending || b->notif_pending)
                return;
        if (b->copied)
                s->stats.zc_bytes_copied += b->result;
        zc_batch_unmap_pages(b);
        LIST_REMOVE(s->batches, b);
        s->inflight--;
        zc_batch_free(s, b);
}

static void zc_complete(BlockSender *s, ZcBatch *b, int res, uint32_t flags) {
        BlockSenderConn *c;

        if (flags & IORING_CQE_F_NOTIF) {
                /* The kernel no longer references the batch's pages. */
                s->stats.zc_notifs++;
                if ((uint32_t) res & IORING_NOTIF_USAGE_ZC_COPIED) {
                        s->stats.zc_notifs_copied++;
                        b->copied = true;
                }
                b->notif_seen = true;
                b->notif_pending = false;
                zc_batch_maybe_done(s, b);
                return;
        }

        /* The result. IORING_CQE_F_MORE, not the result, says whether a notification follows. */
        assert(b->result_pending);
        b->result_pending = false;
        b->notif_pending = (flags & IORING_CQE_F_MORE) && !b->notif_seen;
        b->result = res > 0 ? (uint32_t) res : 0;
        c = TAKE_PTR(b->conn);
        assert(c && c->batch == b);
        c->batch = NULL;
        c->busy = false;

        if (!c->detached) {
                if (res == -EINVAL && s->zc_report_usage) {
                        /* Linux 6.0/6.1: no IORING_SEND_ZC_REPORT_USAGE. Nothing was sent. */
                        log_debug("block-sender: send-zc without usage reports (kernel before 6.2)");
                        s->zc_report_usage = false;
                        conn_unplace(c);
                        ready_push(c);
                } else if (res >= 0) {
                        conn_sent(c, (uint64_t) res);
                        s->stats.zc_bytes += (uint64_t) res;
                        if ((uint32_t) res == b->expected) {
                                if (c->next_place)
                                        ready_push(c);
                                else
                                        conn_maybe_drained(c);
                        } else if (res > 0) {
                                /* MSG_WAITALL makes the kernel retry partial sends itself; a short
                                 * result means it stopped on an error it does not report. Sending
                                 * the rest shows it (or goes on, if it passed). */
                                s->stats.short_writes++;
                                conn_unplace(c);
                                ready_push(c);
                        } else
                                conn_fail(c, -EPIPE);
                } else if (res == -EAGAIN) {
                        s->stats.waits_writable++;
                        conn_unplace(c);
                        c->zc_poll_first = true;
                        ready_push(c);
                } else
                        conn_fail(c, res);
        }
        conn_unref(c);
        zc_batch_maybe_done(s, b);
}

/* ---- sendfile ---- */

static void sendfile_run(BlockSenderConn *c);

static int on_writable(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        BlockSenderConn *c = userdata;

        assert(c->busy);
        c->busy = false;
        conn_ref(c);
        sendfile_run(c);
        conn_unref(c);
        return 0;
}

static void sendfile_wait(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        int r;

        s->stats.waits_writable++;
        if (!c->io) {
                r = sd_event_add_io(s->event, &c->io, c->fd, EPOLLOUT, on_writable, c);
                if (r < 0) {
                        conn_fail(c, r);
                        return;
                }
                (void) sd_event_source_set_description(c->io, "block-sender-writable");
        }
        r = sd_event_source_set_enabled(c->io, SD_EVENT_ONESHOT);
        if (r < 0) {
                conn_fail(c, r);
                return;
        }
        c->busy = true;
}

/* Writes until the socket is full or the budget is spent: send(2) for headers and messages (a block's
 * header with MSG_MORE, its data follows at once), sendfile(2) for block data. */
static void sendfile_run(BlockSenderConn *c) {
        BlockSender *s = c->sender;
        size_t budget = s->config.sendfile_budget;

        while (c->items && budget > 0) {
                Item *i = c->items;
                size_t want;
                ssize_t n;

                if (!item_is_block(i) || i->sent < BLOCK_SENDER_PIECE_HEADER) {
                        bool header = item_is_block(i);
                        const uint8_t *p = header ? i->header + i->sent : i->data + i->sent;

                        want = (header ? BLOCK_SENDER_PIECE_HEADER : i->size) - i->sent;
                        n = send(c->fd, p, want, MSG_NOSIGNAL | MSG_DONTWAIT | (header ? MSG_MORE : 0));
                        if (n > 0)
                                s->stats.send_bytes += (uint64_t) n;
                } else {
                        off_t off = (off_t) (i->offset + (i->sent - BLOCK_SENDER_PIECE_HEADER));

                        want = i->size - i->sent;
                        n = sendfile(c->fd, i->file->fd, &off, want);
                        if (n == 0) {
                                log_debug("block-sender: file ended before offset %jd (truncated?)", (intmax_t) off);
                                conn_fail(c, -EIO);
                                return;
                        }
                        if (n > 0)
                                s->stats.sendfile_bytes += (uint64_t) n;
                }
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                sendfile_wait(c);
                                return;
                        }
                        conn_fail(c, -errno);
                        return;
                }
                if ((size_t) n < want)
                        s->stats.short_writes++;
                conn_sent(c, (uint64_t) n);
                budget -= MIN(budget, (size_t) n);
        }
        if (c->items)
                ready_push(c); /* budget spent: others' turn */
        else
                conn_maybe_drained(c);
}

/* ---- dispatch ---- */

static void conn_start(BlockSenderConn *c) {
        if (c->detached || c->error || c->busy)
                return;
        if (!c->next_place && c->first_step == c->n_steps) {
                conn_maybe_drained(c);
                return;
        }
        switch (c->sender->path) {
        case BLOCK_SEND_SPLICE:
                splice_start(c);
                return;
        case BLOCK_SEND_ZC:
                zc_start(c);
                return;
        case BLOCK_SEND_SENDFILE:
                sendfile_run(c);
                return;
        default:
                assert(false);
        }
}

static void ring_reap(BlockSender *s) {
        struct io_uring_cqe *cqes[64];
        struct {
                uint64_t user_data;
                int32_t res;
                uint32_t flags;
        } done[64];
        unsigned n;

        while ((n = io_uring_peek_batch_cqe(&s->ring, cqes, ELEMENTSOF(cqes))) > 0) {
                /* Copied out first: the handlers may prepare SQEs and run callbacks. */
                for (unsigned k = 0; k < n; k++) {
                        done[k].user_data = cqes[k]->user_data;
                        done[k].res = cqes[k]->res;
                        done[k].flags = cqes[k]->flags;
                }
                io_uring_cq_advance(&s->ring, n);
                s->stats.cqes += n;

                for (unsigned k = 0; k < n; k++) {
                        void *p = (void *) (uintptr_t) done[k].user_data;

                        if (!p)
                                continue; /* a cancellation that found nothing */
                        switch (*(OpType *) p) {
                        case OP_STEP:
                                splice_complete(s, p, done[k].res);
                                break;
                        case OP_ZC:
                                zc_complete(s, p, done[k].res, done[k].flags);
                                break;
                        default:
                                assert(false);
                        }
                }
        }
}

static int on_ring_event(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        BlockSender *s = userdata;
        uint64_t v;

        /* Reset before reaping: a CQE posted after the reap signals again. */
        ssize_t n = read(fd, &v, sizeof(v));
        (void) n;
        ring_reap(s);
        run_ready(s);
        return 0;
}

static int on_kick(sd_event_source *source, void *userdata) {
        BlockSender *s = userdata;

        run_ready(s);
        return 0;
}

/* ---- setup ---- */

static size_t pipe_max_size(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
        unsigned long v;

        if (!f || fscanf(f, "%lu", &v) != 1 || v == 0)
                return DEFAULT_PIPE_SIZE;
        return (size_t) v;
}

/* Sets up the ring and decides the path: `want` if the ring has what it needs (AUTO: send-zc, else
 * splice). Returns the path, or BLOCK_SEND_SENDFILE when io_uring or the operations are missing (the
 * reason logged; AUTO then falls back, a forced path fails), or a negative errno. */
static int ring_setup(BlockSender *s, BlockSendPath want) {
        /* COOP_TASKRUN (5.19): the kernel's task work for us (completing polls, freeing requests io-wq
         * ran) does not interrupt the loop with an IPI while it runs; it is done at its next system
         * call, and a sleeping loop is woken all the same. SUBMIT_ALL (5.18): an SQE that fails to
         * prepare does not stop the submission of the ones after it. Older kernels get what they
         * know. */
        static const unsigned flag_sets[] = {
                IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
                IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
                IORING_SETUP_CQSIZE,
        };
        struct io_uring_params p;
        struct io_uring_probe *probe;
        bool zc, splice;
        int r = -EINVAL;

        for (size_t k = 0; k < ELEMENTSOF(flag_sets) && r == -EINVAL; k++) {
                p = (struct io_uring_params) { .flags = flag_sets[k], .cq_entries = s->config.ring_entries * 4 };
                r = io_uring_queue_init_params(s->config.ring_entries, &s->ring, &p);
        }
        if (r == -EPERM || r == -ENOSYS || r == -EACCES || r == -ENOMEM) {
                log_info_errno(r, "block-sender: io_uring unavailable (%m; kernel.io_uring_disabled?)");
                return BLOCK_SEND_SENDFILE;
        }
        if (r < 0)
                return log_error_errno(r, "block-sender: io_uring_queue_init: %m");
        s->have_ring = true;

        if (!(p.features & IORING_FEAT_CQE_SKIP) || !(p.features & IORING_FEAT_NODROP)) {
                log_info("block-sender: io_uring without CQE skipping (Linux < 5.17)");
                return BLOCK_SEND_SENDFILE;
        }
        probe = io_uring_get_probe_ring(&s->ring);
        if (!probe)
                return log_error_errno(ENOMEM, "block-sender: io_uring probe failed");
        zc = io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL) &&
             io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);
        splice = io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL) &&
                 io_uring_opcode_supported(probe, IORING_OP_SPLICE) &&
                 io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                 io_uring_opcode_supported(probe, IORING_OP_POLL_ADD);
        io_uring_free_probe(probe);

        if (want == BLOCK_SEND_AUTO)
                want = zc ? BLOCK_SEND_ZC : splice ? BLOCK_SEND_SPLICE : BLOCK_SEND_SENDFILE;
        if ((want == BLOCK_SEND_ZC && !zc) || (want == BLOCK_SEND_SPLICE && !splice)) {
                log_info("block-sender: io_uring lacks the operations of the %s path", block_send_path_to_string(want));
                return BLOCK_SEND_SENDFILE;
        }

        if (want == BLOCK_SEND_SPLICE && s->config.max_workers > 0) {
                unsigned workers[2] = { 0, s->config.max_workers }; /* bound unchanged, unbound */
                r = io_uring_register_iowq_max_workers(&s->ring, workers);
                if (r < 0)
                        log_debug_errno(r, "block-sender: io-wq worker limit not set: %m");
        }
        return want;
}

static void ring_teardown(BlockSender *s) {
        if (!s->have_ring)
                return;
        io_uring_queue_exit(&s->ring);
        s->have_ring = false;
}

int block_sender_new(sd_event *e, const BlockSenderConfig *config, BlockSender **ret) {
        _cleanup_(block_sender_freep) BlockSender *s = NULL;
        BlockSenderConfig c = config ? *config : (BlockSenderConfig) {};
        long page;
        int r;

        assert(e);
        assert(ret);
        if (c.path < 0 || c.path >= _BLOCK_SEND_PATH_MAX)
                return -EINVAL;

        page = sysconf(_SC_PAGESIZE);
        if (c.ring_entries == 0)
                c.ring_entries = DEFAULT_RING_ENTRIES;
        if (c.max_pipes == 0)
                c.max_pipes = DEFAULT_MAX_PIPES;
        if (c.pipe_size == 0)
                c.pipe_size = DEFAULT_PIPE_SIZE;
        c.pipe_size = MIN(c.pipe_size, pipe_max_size());
        c.pipe_size = MAX(c.pipe_size, (size_t) page);
        if (c.max_batch_blocks == 0)
                c.max_batch_blocks = DEFAULT_MAX_BATCH;
        if (c.max_workers == 0) {
                long cpus = sysconf(_SC_NPROCESSORS_ONLN);
                c.max_workers = (unsigned) (4 * MAX(cpus, 1L));
        }
        if (c.sendfile_budget == 0)
                c.sendfile_budget = DEFAULT_SENDFILE_BUDGET;
        /* A chain (two steps a block, one a message, the splice-out, a poll) must fit the SQ. */
        c.max_batch_blocks = MIN(c.max_batch_blocks, (c.ring_entries - 8) / 3);
        if (c.max_batch_blocks == 0)
                return -EINVAL;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->config = c;
        s->page_size = (size_t) page;
        s->efd = -1;
        s->zc_iov_cap = 2 * (size_t) MIN(c.max_batch_blocks, ZC_MAX_BLOCKS) + 16;
        s->zc_copy_cap = BLOCK_SENDER_PIECE_HEADER * (size_t) MIN(c.max_batch_blocks, ZC_MAX_BLOCKS) + ZC_COPY_MAX;

        s->path = c.path;
        if (s->path != BLOCK_SEND_SENDFILE) {
                r = ring_setup(s, s->path);
                if (r < 0)
                        return r;
                if (r == BLOCK_SEND_SENDFILE) {
                        if (s->path != BLOCK_SEND_AUTO)
                                return -EOPNOTSUPP;
                        ring_teardown(s);
                }
                s->path = r;
        }

        if (s->have_ring) {
                s->zc_report_usage = s->path == BLOCK_SEND_ZC;
                s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (s->efd < 0)
                        return -errno;
                r = io_uring_register_eventfd(&s->ring, s->efd);
                if (r < 0)
                        return r;
                r = sd_event_add_io(e, &s->ring_source, s->efd, EPOLLIN, on_ring_event, s);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(s->ring_source, "block-sender-ring");
        }
        r = sd_event_add_defer(e, &s->kick_source, on_kick, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->kick_source, SD_EVENT_OFF);
        (void) sd_event_source_set_description(s->kick_source, "block-sender-kick");

        log_debug("block-sender: %s path%s", block_send_path_to_string(s->path),
                  c.path == BLOCK_SEND_AUTO ? " (auto)" : "");
        *ret = TAKE_PTR(s);
        return 0;
}

BlockSendPath block_sender_path(const BlockSender *s) {
        assert(s);
        return s->path;
}

void block_sender_get_stats(const BlockSender *s, BlockSenderStats *ret) {
        assert(s);
        assert(ret);
        *ret = s->stats;
}

/* Waits (bounded) for the completions still to come, so that no memory the kernel references is
 * freed. */
static void ring_drain(BlockSender *s) {
        uint64_t deadline = now_usec() + FREE_WAIT_USEC;

        ring_flush(s);
        while (s->inflight > 0) {
                struct __kernel_timespec ts = { .tv_nsec = 100 * 1000 * 1000 };
                struct io_uring_cqe *cqe;
                int r;

                r = io_uring_wait_cqe_timeout(&s->ring, &cqe, &ts);
                if (r < 0 && r != -ETIME && r != -EINTR)
                        log_debug_errno(r, "block-sender: waiting for completions: %m");
                ring_reap(s);
                ring_flush(s);
                if (s->inflight > 0 && now_usec() > deadline) {
                        /* Send-zc notifications come when the peer acknowledged the data, which a
                         * stalled peer may never do. Their batches stay allocated (the kernel may
                         * still read them); the ring's teardown finishes the requests. */
                        log_warning("block-sender: %u requests still in flight after %us, leaving their memory",
                                    s->inflight, (unsigned) (FREE_WAIT_USEC / USEC_PER_SEC));
                        while (s->batches) {
                                ZcBatch *b = s->batches;
                                LIST_REMOVE(s->batches, b);
                        }
                        break;
                }
        }
}

BlockSender *block_sender_free(BlockSender *s) {
        BlockSenderConn *c;

        if (!s)
                return NULL;

        for (;;) {
                for (c = s->conns; c && c->detached; c = c->next)
                        ;
                if (!c)
                        break;
                block_sender_detach(c);
        }
        /* Queued connections hold references; all of them are detached now. */
        while ((c = wait_pop(s)))
                conn_unref(c);
        while ((c = s->ready_head)) {
                s->ready_head = c->ready_next;
                c->in_ready = false;
                conn_unref(c);
        }
        s->ready_tail = NULL;

        if (s->have_ring)
                ring_drain(s);
        ring_teardown(s);

        while (s->free_pipes) {
                Pipe *p = s->free_pipes;
                LIST_REMOVE(s->free_pipes, p);
                pipe_close(s, p);
        }
        while (s->batch_cache) {
                ZcBatch *b = s->batch_cache;
                LIST_REMOVE(s->batch_cache, b);
                free(b);
        }
        sd_event_source_disable_unref(s->ring_source);
        sd_event_source_disable_unref(s->kick_source);
        closep(&s->efd);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

/* ---- connections: the API ---- */

int block_sender_attach(BlockSender *s, int socket_fd, const BlockSenderCallbacks *callbacks,
                        void *userdata, BlockSenderConn **ret) {
        _cleanup_close_ int fd = -1;
        BlockSenderConn *c;
        int flags;

        assert(s);
        assert(socket_fd >= 0);
        assert(ret);

        fd = fcntl(socket_fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return -errno;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        if (s->path == BLOCK_SEND_SPLICE) {
                c->steps_cap = 3 * s->config.max_batch_blocks + 4;
                c->steps = calloc(c->steps_cap, sizeof(Step));
                if (!c->steps) {
                        free(c);
                        return -ENOMEM;
                }
        }
        c->sender = s;
        c->n_ref = 1;
        c->was_full = true; /* one pipe load for the first round; more once the socket keeps up */
        c->fd = TAKE_FD(fd);
        if (callbacks)
                c->cb = *callbacks;
        c->userdata = userdata;
        LIST_PREPEND(s->conns, c);
        s->stats.connections++;
        *ret = c;
        return 0;
}

static void conn_free(BlockSenderConn *c) {
        BlockSender *s = c->sender;

        assert(c->detached);
        assert(!c->busy && !c->in_ready && !c->waiting_pipe);

        conn_drop_items(c);
        if (c->pipe) {
                if (c->first_step < c->n_steps)
                        pipe_discard(s, c->pipe);
                else
                        pipe_release(s, c->pipe);
        }
        sd_event_source_disable_unref(c->io);
        closep(&c->fd);
        LIST_REMOVE(s->conns, c);
        free(c->steps);
        free(c);
}

BlockSenderConn *block_sender_detach(BlockSenderConn *c) {
        BlockSender *s;

        if (!c)
                return NULL;
        assert(!c->detached);
        s = c->sender;
        c->detached = true;
        s->stats.connections--;

        /* Items in flight stay until their round's CQE (the kernel may read headers and messages). */
        if (c->busy) {
                if (s->path == BLOCK_SEND_SPLICE && c->chain_has_poll)
                        ring_cancel(s, &c->poll); /* a socket that does not drain would hold it */
                else if (s->path == BLOCK_SEND_ZC)
                        ring_cancel(s, c->batch);
                else if (s->path == BLOCK_SEND_SENDFILE) {
                        (void) sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
                        c->busy = false;
                }
        }
        if (!c->busy)
                conn_drop_items(c);
        conn_unref(c);
        return NULL;
}

static void conn_enqueue(BlockSenderConn *c, Item *i) {
        LIST_APPEND(c->items, c->items_tail, i);
        if (!c->next_place)
                c->next_place = i;
        c->queued_bytes += i->size;
        c->drain_pending = true;
        if (!c->busy && !c->waiting_pipe)
                ready_push(c);
}

int block_sender_queue(BlockSenderConn *c, BlockFile *f, uint64_t offset, uint32_t length,
                       uint32_t piece, uint32_t begin) {
        Item *i;
        int r;

        assert(c);
        assert(f);
        assert(!c->detached);

        if (c->error)
                return c->error;
        if (length == 0 || length > BLOCK_SENDER_MAX_BLOCK)
                return -EINVAL;
        if (offset > f->size || length > f->size - offset)
                return -ERANGE;
        if (c->sender->path == BLOCK_SEND_ZC) {
                r = block_file_map(f);
                if (r < 0)
                        return r;
        }

        i = calloc(1, sizeof(Item));
        if (!i)
                return -ENOMEM;
        i->kind = ITEM_BLOCK;
        i->size = BLOCK_SENDER_PIECE_HEADER + length;
        i->file = block_file_ref(f);
        i->offset = offset;
        i->length = length;
        i->piece = piece;
        i->begin = begin;
        put_be32(i->header, 9 + length);
        i->header[4] = 7;
        put_be32(i->header + 5, piece);
        put_be32(i->header + 9, begin);
        conn_enqueue(c, i);
        return 0;
}

int block_sender_queue_message(BlockSenderConn *c, const void *data, size_t size) {
        Item *i;

        assert(c);
        assert(data || size == 0);
        assert(!c->detached);

        if (c->error)
                return c->error;
        if (size == 0)
                return 0;
        if (size > BLOCK_SENDER_MAX_MESSAGE)
                return -E2BIG;

        i = calloc(1, sizeof(Item) + size);
        if (!i)
                return -ENOMEM;
        i->kind = ITEM_MESSAGE;
        i->size = (uint32_t) size;
        memcpy(i->data, data, size);
        conn_enqueue(c, i);
        return 0;
}

static bool item_cancelable(const Item *i) {
        return item_is_block(i) && i->placed == 0 && i->sent == 0;
}

static void conn_cancel_item(BlockSenderConn *c, Item *i) {
        if (c->next_place == i)
                c->next_place = i->next;
        LIST_REMOVE_QUEUED(c->items, c->items_tail, i);
        c->queued_bytes -= i->size;
        c->sender->stats.blocks_canceled++;
        item_free(i);
        if (!c->items)
                ready_push(c); /* drained now: told from the loop */
}

int block_sender_cancel_pending(BlockSenderConn *c, uint32_t piece, uint32_t begin, uint32_t length) {
        assert(c);
        assert(!c->detached);

        for (Item *i = c->next_place; i; i = i->next)
                if (item_cancelable(i) && i->piece == piece && i->begin == begin && i->length == length) {
                        conn_cancel_item(c, i);
                        return 1;
                }
        return 0;
}

unsigned block_sender_cancel_all_pending(BlockSenderConn *c) {
        unsigned n = 0;

        assert(c);
        assert(!c->detached);

        for (Item *i = c->next_place, *next; i; i = next) {
                next = i->next;
                if (item_cancelable(i)) {
                        conn_cancel_item(c, i);
                        n++;
                }
        }
        return n;
}

uint64_t block_sender_conn_queued_bytes(const BlockSenderConn *c) {
        assert(c);
        return c->queued_bytes;
}

uint64_t block_sender_conn_bytes_sent(const BlockSenderConn *c) {
        assert(c);
        return c->bytes_sent;
}

void *block_sender_conn_userdata(const BlockSenderConn *c) {
        assert(c);
        return c->userdata;
}
