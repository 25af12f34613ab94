/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>

#include "peer-sink-uring.h"

typedef struct UringConn {
        BlockSenderConn *conn;
        PeerSinkCallbacks cb;
        void *userdata;
} UringConn;

static int file_new(void *impl, int fd, void **ret) {
        BlockFile *f;
        int dfd, r;

        /* The BlockFile owns its descriptor; the store keeps its own. */
        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return -errno;
        r = block_file_new(dfd, &f);
        if (r < 0) {
                close(dfd);
                return r;
        }
        *ret = f;
        return 0;
}

static void file_unref(void *f) {
        block_file_unref(f);
}

static void on_drained(BlockSenderConn *c, void *userdata) {
        UringConn *u = userdata;
        if (u->cb.drained)
                u->cb.drained(u->userdata);
}

static void on_failed(BlockSenderConn *c, int error, void *userdata) {
        UringConn *u = userdata;
        if (u->cb.failed)
                u->cb.failed(error, u->userdata);
}

static int attach(void *impl, int socket_fd, const PeerSinkCallbacks *cb, void *userdata, void **ret) {
        UringConn *u;
        int r;

        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->cb = *cb;
        u->userdata = userdata;
        r = block_sender_attach(impl, socket_fd, &(BlockSenderCallbacks) { .drained = on_drained, .failed = on_failed },
                                u, &u->conn);
        if (r < 0) {
                free(u);
                return r;
        }
        *ret = u;
        return 0;
}

static void detach(void *p) {
        UringConn *u = p;
        if (!u)
                return;
        /* No callback runs after this (the sender's promise), so u can go now. */
        block_sender_detach(u->conn);
        free(u);
}

static int queue_message(void *p, const void *data, size_t size) {
        UringConn *u = p;
        return block_sender_queue_message(u->conn, data, size);
}

static int queue_block(void *p, void *file, uint64_t offset, uint32_t length, uint32_t piece, uint32_t begin) {
        UringConn *u = p;
        return block_sender_queue(u->conn, file, offset, length, piece, begin);
}

static int cancel(void *p, uint32_t piece, uint32_t begin, uint32_t length) {
        UringConn *u = p;
        return block_sender_cancel_pending(u->conn, piece, begin, length);
}

static uint64_t queued_bytes(const void *p) {
        const UringConn *u = p;
        return block_sender_conn_queued_bytes(u->conn);
}

static const PeerSinkOps uring_ops = {
        .file_new = file_new,
        .file_unref = file_unref,
        .attach = attach,
        .detach = detach,
        .queue_message = queue_message,
        .queue_block = queue_block,
        .cancel = cancel,
        .queued_bytes = queued_bytes,
};

int peer_sink_block_sender_new(BlockSender *sender, PeerSink **ret) {
        assert(sender);
        return peer_sink_new(&uring_ops, sender, NULL, ret);
}
