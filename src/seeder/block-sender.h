/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The seeder's I/O engine: it writes BitTorrent peer-wire streams to TCP sockets, where a `piece`
 * message is a 13-byte header (u32 BE length = 9 + block length, u8 id 7, u32 BE piece index, u32 BE
 * begin) followed by up to 16 KiB of a file, without the file data passing through user memory. It
 * runs on the daemon's one sd-event loop and starts no thread of its own.
 *
 *   block_sender_new(event, &(BlockSenderConfig) { .path = BLOCK_SEND_AUTO }, &s);
 *   block_sender_attach(s, sock, &(BlockSenderCallbacks) { .drained = f, .failed = g }, ud, &c);
 *   block_file_open(AT_FDCWD, path, &file);
 *   block_sender_queue_message(c, unchoke, 5);                 other peer-wire messages, in order
 *   block_sender_queue(c, file, offset, 16384, piece, begin);  a piece message, in order
 *   block_sender_cancel_pending(c, piece, begin, 16384);       BitTorrent cancel: 1 removed, 0 too late
 *   block_sender_detach(c);                                    at any time, ops in flight or not
 *
 * Everything queued on a connection goes out in queue order, block and message bytes alike; the
 * sender never reorders. `drained` is called when everything queued so far has been handed to the
 * socket; `failed` is called once when writing to the socket failed (EPIPE, ECONNRESET, ...) or a
 * file could not deliver the promised bytes (truncated: -EIO): the connection then accepts nothing
 * more (its queue calls return that error) and its owner detaches it. No callback runs after
 * detach, and none runs from inside a call into the sender (they run from the event loop).
 *
 * Three ways to move the bytes, one per sender, chosen by block_sender_new() from the config
 * (SEND_PATH=) and by probing the ring (io_uring_get_probe):
 *
 *  send-zc   (AUTO's choice when the ring has SENDMSG_ZC, Linux >= 6.1.) IORING_OP_SENDMSG_ZC, the
 *            vectored SEND_ZC, from a read-only mmap of the file: the 13-byte headers (copied into the
 *            request) and the data of up to 64 blocks go in ONE request, which the loop thread issues
 *            itself (no io-wq). The mapping and the header copies stay alive until the request's
 *            notification CQE (IORING_CQE_F_MORE on the result says one follows); the notification
 *            says whether the kernel had to copy (IORING_SEND_ZC_REPORT_USAGE, 6.2). Loopback and
 *            virtual devices always copy; a NIC with scatter-gather does not. Even copying, it was
 *            the cheapest path here (bench/seeder: 1 GiB, loopback, 2 vCPUs: 0.26-0.41 CPU s/GiB,
 *            against 0.66-0.69 for splice and 0.36-0.42 for nginx's sendfile; README.md). A request
 *            whose file pages are not all in page cache (mincore) goes to io-wq (IOSQE_ASYNC), so
 *            that reading them from disk does not stall the loop.
 *  splice    (AUTO's choice when the ring has SPLICE, WRITE, POLL_ADD and ASYNC_CANCEL but not
 *            SENDMSG_ZC: Linux 5.17-6.0; or when configured.) A connection borrows a pipe from a small
 *            shared pool and submits one linked chain a round: WRITE(header) SPLICE(file -> pipe)
 *            WRITE(header) SPLICE ... SPLICE(pipe -> socket), then the next pipe load, up to 256
 *            blocks (one pipe load while the peer's socket is full). Page-cache pages are referenced,
 *            not copied; the headers are written into the same pipe between the splice-ins, so the
 *            order holds without MSG_MORE tricks; all but the last request skip their success CQE,
 *            so a round costs one CQE. The price is two requests a block, run by the kernel's io-wq
 *            workers, each freed through task work that wakes the loop thread: with 16 KiB blocks
 *            that is what makes it costlier than send-zc. A pool rather than a pipe per connection:
 *            each pipe counts its size against the user's pipe-user-pages-soft (64 MiB by default),
 *            which a thousand connections with big pipes would exceed (the kernel then hands out
 *            8 KiB pipes).
 *  sendfile  (AUTO's choice when io_uring is unavailable: io_uring_setup fails with EPERM or ENOSYS
 *            -- kernel.io_uring_disabled, seccomp, old kernel -- or lacks the operations above.)
 *            send(2) of headers and messages and sendfile(2) of the data on the non-blocking socket,
 *            EPOLLOUT through sd-event. Data still bypasses user memory; the loop blocks if a file is
 *            not in page cache.
 *
 * All three produce byte-identical streams. Requirements: the process ignores SIGPIPE (the daemons
 * do, daemon_event_new()); attach makes the socket non-blocking (a flag of the open file, so the
 * caller's descriptor too) and keeps its own duplicate, so the caller may close its descriptor once
 * it has detached; files should not be modified while blocks of them are queued (the socket sends
 * page-cache pages as they are when it sends them, as with sendfile). */

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "macro.h"

#define BLOCK_SENDER_MAX_BLOCK (16U * 1024U)           /* longest block queue() takes */
#define BLOCK_SENDER_MAX_MESSAGE (16U * 1024U * 1024U) /* longest message queue_message() takes */
#define BLOCK_SENDER_PIECE_HEADER 13U

typedef struct BlockSender BlockSender;
typedef struct BlockSenderConn BlockSenderConn;
typedef struct BlockFile BlockFile;

typedef enum BlockSendPath {
        BLOCK_SEND_AUTO,
        BLOCK_SEND_SPLICE,
        BLOCK_SEND_ZC,
        BLOCK_SEND_SENDFILE,
        _BLOCK_SEND_PATH_MAX,
        _BLOCK_SEND_PATH_INVALID = -EINVAL,
} BlockSendPath;

/* "auto", "splice", "send-zc", "sendfile" (the values of SEND_PATH=). */
const char *block_send_path_to_string(BlockSendPath p);
BlockSendPath block_send_path_from_string(const char *s);

/* Zero fields take the defaults. */
typedef struct BlockSenderConfig {
        BlockSendPath path;          /* AUTO: send-zc, else splice, else sendfile (what the ring has) */
        unsigned ring_entries;       /* submission queue size (1024; completion queue 4x) */
        unsigned max_pipes;          /* splice: pipes in the pool (32); connections beyond wait */
        size_t pipe_size;            /* splice: bytes per pipe (1 MiB, at most fs.pipe-max-size) */
        unsigned max_batch_blocks;   /* blocks per splice round (256); send-zc requests take 64 at most */
        unsigned max_workers;        /* splice: io-wq unbound workers at once (4 per CPU) */
        size_t sendfile_budget;      /* sendfile: bytes per connection before yielding the loop (4 MiB) */
} BlockSenderConfig;

typedef struct BlockSenderStats {
        uint64_t bytes_sent;         /* everything handed to sockets */
        uint64_t payload_bytes;      /* block data among them */
        uint64_t blocks_sent, messages_sent, blocks_canceled;
        /* by path */
        uint64_t splice_bytes;       /* pipe -> socket */
        uint64_t zc_bytes;           /* SENDMSG_ZC */
        uint64_t zc_notifs, zc_notifs_copied, zc_bytes_copied; /* the kernel copied (loopback ...) */
        uint64_t zc_async;           /* send-zc requests given to io-wq: data not in page cache */
        uint64_t sendfile_bytes;     /* sendfile(2) */
        uint64_t send_bytes;         /* send(2) of headers and messages (sendfile path) */
        /* how it went */
        uint64_t rounds;             /* pipe fills, send-zc requests */
        uint64_t short_writes;       /* the socket took less than offered */
        uint64_t waits_writable;     /* waited for POLLOUT/EPOLLOUT (socket full) */
        uint64_t submits, cqes;      /* io_uring_enter() submissions, completions processed */
        unsigned pipes, pipes_busy, pipes_peak;
        uint64_t pipe_waits;         /* a connection had to wait for a pipe */
        uint64_t pipes_discarded;    /* closed with data in them after an error */
        unsigned connections;
        uint64_t conn_errors;
} BlockSenderStats;

/* Files, shared by the blocks queued from them. block_file_new() owns fd on success (closed with the
 * last reference); queued blocks hold a reference until they are sent or dropped. */
int block_file_new(int fd, BlockFile **ret);
int block_file_open(int dir_fd, const char *path, BlockFile **ret);
BlockFile *block_file_ref(BlockFile *f);
BlockFile *block_file_unref(BlockFile *f);
uint64_t block_file_size(const BlockFile *f);
DEFINE_TRIVIAL_CLEANUP_FUNC(BlockFile *, block_file_unref);

int block_sender_new(sd_event *e, const BlockSenderConfig *config, BlockSender **ret);
/* Detaches what is still attached, cancels what is in flight and waits for the kernel to be done
 * with every buffer (bounded: send-zc notifications that do not come within seconds leave their
 * batch allocated rather than freed). Not from a callback. */
BlockSender *block_sender_free(BlockSender *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(BlockSender *, block_sender_free);

BlockSendPath block_sender_path(const BlockSender *s);
void block_sender_get_stats(const BlockSender *s, BlockSenderStats *ret);

typedef struct BlockSenderCallbacks {
        void (*drained)(BlockSenderConn *c, void *userdata);            /* may be NULL */
        void (*failed)(BlockSenderConn *c, int error, void *userdata);  /* may be NULL */
} BlockSenderCallbacks;

int block_sender_attach(BlockSender *s, int socket_fd, const BlockSenderCallbacks *callbacks,
                        void *userdata, BlockSenderConn **ret);
/* Drops what was not sent yet; returns NULL. Requests in flight are cancelled and the connection's
 * memory is freed when their completions arrive. */
BlockSenderConn *block_sender_detach(BlockSenderConn *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(BlockSenderConn *, block_sender_detach);

/* A piece message for [offset, offset + length) of f. -EINVAL: length 0 or above
 * BLOCK_SENDER_MAX_BLOCK; -ERANGE: beyond the end of the file; the connection's error once it
 * failed. */
int block_sender_queue(BlockSenderConn *c, BlockFile *f, uint64_t offset, uint32_t length,
                       uint32_t piece, uint32_t begin);
/* Raw bytes (a complete peer-wire message, or several), copied. */
int block_sender_queue_message(BlockSenderConn *c, const void *data, size_t size);
/* BitTorrent cancel: removes the queued block (piece, begin, length) if none of its bytes was
 * handed to the kernel yet. Returns 1 if removed, 0 if not queued (sent, being sent, never asked). */
int block_sender_cancel_pending(BlockSenderConn *c, uint32_t piece, uint32_t begin, uint32_t length);
/* Choke: removes every such block (messages stay); returns how many. */
unsigned block_sender_cancel_all_pending(BlockSenderConn *c);

/* Bytes queued and not yet handed to the socket (for back-pressure on a peer's requests). */
uint64_t block_sender_conn_queued_bytes(const BlockSenderConn *c);
uint64_t block_sender_conn_bytes_sent(const BlockSenderConn *c);
void *block_sender_conn_userdata(const BlockSenderConn *c);
