/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The default PeerSink: a queue of messages and block descriptors per connection, copied into a
 * staging buffer when the socket is writable (blocks with pread()) and sent from there. Copying costs
 * one memcpy per byte more than sendfile(), but keeps short writes and cancellation trivial: an item
 * is cancellable until it is staged, and a staged byte is as good as sent. */

#include <fcntl.h>
#include <sys/socket.h>

#include "list.h"
#include "peer-sink.h"
#include "peer-wire.h"

#define STAGE_SIZE (256U * 1024U)

typedef struct SinkFile {
        int fd;
        unsigned n_ref;
} SinkFile;

typedef struct SinkItem SinkItem;
struct SinkItem {
        LIST_FIELDS(SinkItem);
        SinkFile *file;                 /* NULL: a message in data[] */
        uint64_t offset;
        uint32_t piece, begin, length;
        size_t size;                    /* bytes this item puts on the wire */
        uint8_t data[];
};

typedef struct DefaultSink {
        sd_event *event;
} DefaultSink;

typedef struct SinkConn {
        DefaultSink *sink;
        int fd;                         /* our duplicate */
        sd_event_source *io;
        PeerSinkCallbacks cb;
        void *userdata;
        SinkItem *head, *tail;
        uint64_t queued;                /* bytes in items and unsent staged bytes */
        uint8_t *stage;
        size_t stage_off, stage_len;
        int error;
        bool out_enabled;
} SinkConn;

static void file_unref(void *p) {
        SinkFile *f = p;
        if (f && --f->n_ref == 0)
                free(f);
}

static int file_new(void *impl, int fd, void **ret) {
        SinkFile *f;

        assert(fd >= 0);
        f = calloc(1, sizeof(*f));
        if (!f)
                return -ENOMEM;
        f->fd = fd;
        f->n_ref = 1;
        *ret = f;
        return 0;
}

static void item_free(SinkItem *i) {
        if (i->file)
                file_unref(i->file);
        free(i);
}

static void conn_fail(SinkConn *c, int error) {
        if (c->error)
                return;
        c->error = error;
        sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
        if (c->cb.failed)
                c->cb.failed(error, c->userdata);
}

/* Fills the staging buffer from the queue. */
static int stage_fill(SinkConn *c) {
        if (c->stage_off == c->stage_len)
                c->stage_off = c->stage_len = 0;
        while (c->head && STAGE_SIZE - c->stage_len >= c->head->size) {
                SinkItem *i = c->head;
                uint8_t *p = c->stage + c->stage_len;

                if (i->file) {
                        ssize_t n;
                        int r = peer_piece_header_encode(i->piece, i->begin, i->length, p, PEER_PIECE_HEADER_SIZE);
                        if (r < 0)
                                return r;
                        n = pread(i->file->fd, p + PEER_PIECE_HEADER_SIZE, i->length, (off_t) i->offset);
                        if (n < 0)
                                return -errno;
                        if ((size_t) n != i->length)
                                return -EIO;    /* the file is shorter than promised */
                } else
                        memcpy(p, i->data, i->size);
                c->stage_len += i->size;
                LIST_REMOVE_QUEUED(c->head, c->tail, i);
                item_free(i);
        }
        return 0;
}

static void set_out(SinkConn *c, bool on) {
        if (c->out_enabled == on)
                return;
        c->out_enabled = on;
        sd_event_source_set_enabled(c->io, on ? SD_EVENT_ON : SD_EVENT_OFF);
}

static int on_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        SinkConn *c = userdata;
        size_t budget = PEER_SINK_DEFAULT_BUDGET;
        int r;

        while (budget > 0) {
                ssize_t n;

                r = stage_fill(c);
                if (r < 0) {
                        conn_fail(c, r);
                        return 0;
                }
                if (c->stage_off == c->stage_len)
                        break;
                n = send(c->fd, c->stage + c->stage_off, c->stage_len - c->stage_off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;       /* still enabled: wait for the socket */
                        conn_fail(c, -errno);
                        return 0;
                }
                c->stage_off += (size_t) n;
                c->queued -= (uint64_t) n;
                budget -= MIN(budget, (size_t) n);
                if (c->stage_off < c->stage_len)
                        return 0;       /* short write: the socket is full */
        }
        if (c->stage_off == c->stage_len && !c->head) {
                set_out(c, false);
                if (c->cb.drained)
                        c->cb.drained(c->userdata);
        }
        /* Otherwise the budget ran out: stay enabled, the loop comes back after the others. */
        return 0;
}

static int attach(void *impl, int socket_fd, const PeerSinkCallbacks *cb, void *userdata, void **ret) {
        DefaultSink *sink = impl;
        SinkConn *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->sink = sink;
        c->cb = *cb;
        c->userdata = userdata;
        c->stage = malloc(STAGE_SIZE);
        c->fd = fcntl(socket_fd, F_DUPFD_CLOEXEC, 3);
        if (!c->stage || c->fd < 0) {
                r = c->stage ? -errno : -ENOMEM;
                goto fail;
        }
        r = sd_event_add_io(sink->event, &c->io, c->fd, EPOLLOUT, on_writable, c);
        if (r < 0)
                goto fail;
        r = sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
        if (r < 0)
                goto fail;
        *ret = c;
        return 0;
fail:
        sd_event_source_disable_unref(c->io);
        if (c->fd >= 0)
                close(c->fd);
        free(c->stage);
        free(c);
        return r;
}

static void detach(void *p) {
        SinkConn *c = p;
        if (!c)
                return;
        while (c->head) {
                SinkItem *i = c->head;
                LIST_REMOVE_QUEUED(c->head, c->tail, i);
                item_free(i);
        }
        sd_event_source_disable_unref(c->io);
        close(c->fd);
        free(c->stage);
        free(c);
}

static void enqueue(SinkConn *c, SinkItem *i) {
        LIST_APPEND(c->head, c->tail, i);
        c->queued += i->size;
        set_out(c, true);
}

static int queue_message(void *p, const void *data, size_t size) {
        SinkConn *c = p;
        SinkItem *i;

        if (c->error)
                return c->error;
        if (size == 0)
                return 0;
        if (size > STAGE_SIZE)
                return -EMSGSIZE;
        i = malloc(sizeof(*i) + size);
        if (!i)
                return -ENOMEM;
        *i = (SinkItem) { .size = size };
        memcpy(i->data, data, size);
        enqueue(c, i);
        return 0;
}

static int queue_block(void *p, void *file, uint64_t offset, uint32_t length, uint32_t piece, uint32_t begin) {
        SinkConn *c = p;
        SinkFile *f = file;
        SinkItem *i;

        assert(f);
        if (c->error)
                return c->error;
        if (length == 0 || length > PEER_BLOCK_MAX)
                return -EINVAL;
        i = malloc(sizeof(*i));
        if (!i)
                return -ENOMEM;
        *i = (SinkItem) { .file = f, .offset = offset, .piece = piece, .begin = begin, .length = length,
                          .size = PEER_PIECE_HEADER_SIZE + length };
        f->n_ref++;
        enqueue(c, i);
        return 0;
}

static int cancel(void *p, uint32_t piece, uint32_t begin, uint32_t length) {
        SinkConn *c = p;

        for (SinkItem *i = c->head; i; i = i->next)
                if (i->file && i->piece == piece && i->begin == begin && i->length == length) {
                        c->queued -= i->size;
                        LIST_REMOVE_QUEUED(c->head, c->tail, i);
                        item_free(i);
                        return 1;
                }
        return 0;
}

static uint64_t queued_bytes(const void *p) {
        const SinkConn *c = p;
        return c->queued;
}

static const PeerSinkOps default_ops = {
        .file_new = file_new,
        .file_unref = file_unref,
        .attach = attach,
        .detach = detach,
        .queue_message = queue_message,
        .queue_block = queue_block,
        .cancel = cancel,
        .queued_bytes = queued_bytes,
};

static void default_free(void *p) {
        DefaultSink *s = p;
        sd_event_unref(s->event);
        free(s);
}

int peer_sink_new(const PeerSinkOps *ops, void *impl, void (*free_impl)(void *impl), PeerSink **ret) {
        PeerSink *s;

        assert(ops);
        assert(ret);
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        *s = (PeerSink) { .ops = ops, .impl = impl, .free_impl = free_impl };
        *ret = s;
        return 0;
}

int peer_sink_default_new(sd_event *e, PeerSink **ret) {
        DefaultSink *d;
        int r;

        assert(e);
        assert(ret);
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(e);
        r = peer_sink_new(&default_ops, d, default_free, ret);
        if (r < 0)
                default_free(d);
        return r;
}

PeerSink *peer_sink_free(PeerSink *s) {
        if (!s)
                return NULL;
        if (s->free_impl)
                s->free_impl(s->impl);
        free(s);
        return NULL;
}
