/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <sys/stat.h>

#include "list.h"

#include "peer-sink-uring.h"

typedef struct UringSink UringSink;

typedef struct UringConn {
        BlockSenderConn *conn;
        PeerSinkCallbacks cb;
        void *userdata;
} UringConn;

/* One BlockFile per file (device and inode) for all the connections serving it: the send-zc path
 * maps the file once per BlockFile, so that 8 peers of one content share one mapping (and its page
 * tables) rather than make 8. */
typedef struct SharedFile SharedFile;
struct SharedFile {
        LIST_FIELDS(SharedFile);
        UringSink *sink;
        BlockFile *file;
        dev_t dev;
        ino_t ino;
        unsigned n_ref;
};

struct UringSink {
        BlockSender *sender;    /* borrowed */
        SharedFile *files;
};

static int file_new(void *impl, int fd, void **ret) {
        UringSink *u = impl;
        SharedFile *sf;
        struct stat st;
        int dfd, r;

        if (fstat(fd, &st) < 0)
                return -errno;
        for (sf = u->files; sf; sf = sf->next)
                if (sf->dev == st.st_dev && sf->ino == st.st_ino) {
                        sf->n_ref++;
                        *ret = sf;
                        return 0;
                }
        sf = calloc(1, sizeof(*sf));
        if (!sf)
                return -ENOMEM;
        /* The BlockFile owns its descriptor; the store keeps its own. */
        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0) {
                free(sf);
                return -errno;
        }
        r = block_file_new(dfd, &sf->file);
        if (r < 0) {
                close(dfd);
                free(sf);
                return r;
        }
        sf->sink = u;
        sf->dev = st.st_dev;
        sf->ino = st.st_ino;
        sf->n_ref = 1;
        LIST_PREPEND(u->files, sf);
        *ret = sf;
        return 0;
}

static void file_unref(void *p) {
        SharedFile *sf = p;

        if (!sf || --sf->n_ref > 0)
                return;
        /* Blocks still queued or in flight hold references of their own to the BlockFile. */
        LIST_REMOVE(sf->sink->files, sf);
        block_file_unref(sf->file);
        free(sf);
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
        r = block_sender_attach(((UringSink *) impl)->sender, socket_fd, &(BlockSenderCallbacks) { .drained = on_drained, .failed = on_failed },
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
        return block_sender_queue(u->conn, ((SharedFile *) file)->file, offset, length, piece, begin);
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

static void uring_sink_free(void *impl) {
        UringSink *u = impl;

        /* peer_sink_free() comes after every file_unref(). */
        assert(!u->files);
        free(u);
}

int peer_sink_block_sender_new(BlockSender *sender, PeerSink **ret) {
        UringSink *u;
        int r;

        assert(sender);
        u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        u->sender = sender;
        r = peer_sink_new(&uring_ops, u, uring_sink_free, ret);
        if (r < 0)
                free(u);
        return r;
}
