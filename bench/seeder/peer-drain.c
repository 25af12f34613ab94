/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* peer-drain: a BitTorrent peer that downloads a whole content as fast as a seeder sends it and throws
 * the bytes away, the peer-wire counterpart of `curl -o /dev/null` for bench/seeder/run (a benchmark
 * tool, not a client: no verification, no storage, one connection).
 *
 *   peer-drain PORT ID_HEX LENGTH PIECE_LENGTH    connects to 127.0.0.1:PORT, handshakes for the v2
 *                                                 content ID_HEX (64 hex digits), waits for unchoke,
 *                                                 then requests every 16 KiB block in order with
 *                                                 WINDOW requests in flight, and prints one JSON line:
 *                                                 {"bytes": payload, "seconds": connect to last block}
 *
 * Like curl, it reads into a 256 KiB buffer (a copy per byte: what any real client pays at least)
 * and parses the stream there. A reject, a choke or an early close is an error (exit 1). It does not
 * offer the fast extension, so that a seeder has no way to decline its requests (see below). */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 16384U
/* Below the seeder's reqq (500): a request over it would be rejected. */
#define WINDOW 256U
#define BUF (256U * 1024U)

static double now_sec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void die(const char *what) {
        fprintf(stderr, "peer-drain: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
        exit(1);
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24), p[1] = (uint8_t) (v >> 16), p[2] = (uint8_t) (v >> 8), p[3] = (uint8_t) v;
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void write_all(int fd, const uint8_t *p, size_t n) {
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        die("write");
                p += k, n -= (size_t) k;
        }
}

/* The receive side: a buffer the stream is parsed in. */
static uint8_t buf[BUF];
static size_t head, tail;

static void fill(int fd, size_t need) {
        if (tail - head >= need)
                return;
        if (head > 0) {
                memmove(buf, buf + head, tail - head);
                tail -= head, head = 0;
        }
        while (tail - head < need) {
                ssize_t k = read(fd, buf + tail, sizeof(buf) - tail);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        die("read");
                if (k == 0) {
                        errno = 0;
                        die("the seeder closed the connection");
                }
                tail += (size_t) k;
        }
}

int main(int argc, char **argv) {
        uint8_t hs[68] = "\x13" "BitTorrent protocol", req[WINDOW * 17];
        uint64_t length, piece_length, n_blocks, next = 0, got = 0, bytes = 0;
        struct sockaddr_in sa = { .sin_family = AF_INET };
        bool unchoked = false;
        double t0;
        int fd, one = 1;

        if (argc != 5 || strlen(argv[2]) != 64) {
                fprintf(stderr, "usage: peer-drain PORT ID_HEX LENGTH PIECE_LENGTH\n");
                return 2;
        }
        length = strtoull(argv[3], NULL, 10);
        piece_length = strtoull(argv[4], NULL, 10);
        if (length == 0 || piece_length < BLOCK || piece_length % BLOCK != 0) {
                fprintf(stderr, "peer-drain: bad length or piece length\n");
                return 2;
        }
        /* Blocks per piece, the last piece's blocks counted up to the file's end. */
        n_blocks = (length / piece_length) * (piece_length / BLOCK) + ((length % piece_length) + BLOCK - 1) / BLOCK;

        hs[25] = 0x10;                  /* extension protocol */
        /* v2, without the fast extension: a seed declines (rejects) a piece another connected peer
         * holds or is being sent (src/torrent/seed-ledger.h), which needs the fast extension; the
         * drains, which share nothing, would otherwise wait on each other when several run at once.
         * The seeder then sends a bitfield rather than have-all: ignored like every other message. */
        hs[27] = 0x10;
        for (int i = 0; i < 20; i++)
                sscanf(argv[2] + 2 * i, "%2hhx", &hs[28 + i]);
        memcpy(hs + 48, "-MCDRAIN-0000000000", 20);

        sa.sin_port = htons((uint16_t) atoi(argv[1]));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        t0 = now_sec();
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                die("connect");
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        write_all(fd, hs, sizeof(hs));
        fill(fd, 68);
        if (memcmp(buf + head + 28, hs + 28, 20) != 0) {
                errno = 0;
                die("the handshake names another content");
        }
        head += 68;

        while (got < n_blocks) {
                uint32_t len;
                uint8_t id;

                /* Keep WINDOW requests in flight, sent in one write. */
                if (unchoked && next < n_blocks && next - got < WINDOW / 2) {
                        size_t n = 0;
                        while (next < n_blocks && next - got < WINDOW) {
                                uint64_t per = piece_length / BLOCK, piece = next / per,
                                         begin = (next % per) * BLOCK, off = piece * piece_length + begin;
                                put32(req + n, 13);
                                req[n + 4] = 6;
                                put32(req + n + 5, (uint32_t) piece);
                                put32(req + n + 9, (uint32_t) begin);
                                put32(req + n + 13, (uint32_t) (length - off < BLOCK ? length - off : BLOCK));
                                n += 17, next++;
                        }
                        write_all(fd, req, n);
                }
                fill(fd, 4);
                len = get32(buf + head);
                if (len == 0) {                 /* keep-alive */
                        head += 4;
                        continue;
                }
                if (len > BLOCK + 9 + 64 * 1024) {
                        errno = 0;
                        die("a message too long");
                }
                fill(fd, 4 + (size_t) len);
                id = buf[head + 4];
                if (id == 1)
                        unchoked = true;
                else if (id == 0 || id == 16) {
                        errno = 0;
                        die(id == 0 ? "choked" : "a request was rejected");
                } else if (id == 7) {
                        bytes += len - 9;
                        got++;
                }
                head += 4 + (size_t) len;
        }
        printf("{\"bytes\": %" PRIu64 ", \"seconds\": %.6f}\n", bytes, now_sec() - t0);
        close(fd);
        return bytes == length ? 0 : 1;
}
