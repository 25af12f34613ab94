/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PeerSink: where a PeerConn's outgoing bytes go. Every byte a connection sends (its handshake,
 * messages, and the blocks of piece messages) is queued on its sink connection, and the sink writes
 * them to the socket in queue order. A piece message is queued as (file, offset, length, piece,
 * begin) so that a sink may move the data without it passing through user memory.
 *
 * The interface is a table of eight functions, so that mc-seeder can plug in its io_uring block
 * sender (src/seeder/block-sender.h) with a thin adapter: file_new = block_file_new(dup(fd)),
 * attach = block_sender_attach(), queue_block = block_sender_queue(), cancel =
 * block_sender_cancel_pending(), queued_bytes = block_sender_conn_queued_bytes(), and so on; the
 * semantics below are that sender's. peer_sink_default_new() is the implementation for everyone else:
 * pread() into a per-connection staging buffer and send(), on the loop, when the socket is writable.
 *
 * Rules every implementation keeps:
 *  - bytes leave in queue order, blocks and messages alike;
 *  - attach() does not take the socket: the sink uses its own duplicate (so the PeerConn's own epoll
 *    registration of the descriptor is unaffected) and stops touching the socket at detach();
 *  - callbacks run from the event loop, never from inside a call into the sink, and never after
 *    detach(); `failed` runs at most once, after which queue calls fail with that error;
 *  - `drained` runs when everything queued so far was handed to the kernel;
 *  - a file handle from file_new() stays valid until file_unref(), even with blocks of it queued
 *    (they hold their own reference if the sink needs one); fd itself is the caller's and stays open
 *    at least as long as the handle. */

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct PeerSinkCallbacks {
        void (*drained)(void *userdata);
        void (*failed)(int error, void *userdata);
} PeerSinkCallbacks;

typedef struct PeerSinkOps {
        /* A handle for the regular file fd, for queue_block(). */
        int (*file_new)(void *sink, int fd, void **ret_file);
        void (*file_unref)(void *file);
        int (*attach)(void *sink, int socket_fd, const PeerSinkCallbacks *callbacks, void *userdata, void **ret_conn);
        void (*detach)(void *conn);
        /* Raw bytes (whole messages), copied. */
        int (*queue_message)(void *conn, const void *data, size_t size);
        /* A piece message: the 13-byte header, then [offset, offset + length) of file (length <= 16 KiB).
         * -ERANGE when the file turns out shorter is reported through `failed` (-EIO) instead when
         * the sink only notices while sending. */
        int (*queue_block)(void *conn, void *file, uint64_t offset, uint32_t length, uint32_t piece, uint32_t begin);
        /* Removes the queued block if none of its bytes went out yet: 1 removed, 0 not (sent, being
         * sent, never queued). */
        int (*cancel)(void *conn, uint32_t piece, uint32_t begin, uint32_t length);
        /* Bytes queued and not yet handed to the kernel: the back-pressure measure. */
        uint64_t (*queued_bytes)(const void *conn);
} PeerSinkOps;

typedef struct PeerSink {
        const PeerSinkOps *ops;
        void *impl;
        void (*free_impl)(void *impl);  /* may be NULL: the impl is owned elsewhere */
} PeerSink;

/* The default sink: pread() + send() on e's loop, at most PEER_SINK_DEFAULT_BUDGET bytes per
 * connection per wake-up so that one fast reader does not starve the others. */
#define PEER_SINK_DEFAULT_BUDGET (4U << 20)
int peer_sink_default_new(sd_event *e, PeerSink **ret);
/* A sink around someone else's ops (an adapter); free_impl may be NULL. */
int peer_sink_new(const PeerSinkOps *ops, void *impl, void (*free_impl)(void *impl), PeerSink **ret);
/* Every connection must be detached and every file unreferenced first. */
PeerSink *peer_sink_free(PeerSink *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerSink *, peer_sink_free);
