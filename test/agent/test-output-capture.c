/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The output capture (cap, tails, UTF-8 repair) and Docker's log stream demultiplexer, fed in every
 * possible split. */

#include "agent-test.h"
#include "docker-log-demux.h"
#include "output-capture.h"
#include "utf8.h"

static void test_cap_and_tails(void) {
        OutputCapture c;
        _cleanup_free_ char *out = NULL, *t1 = NULL, *t2 = NULL;

        ASSERT(output_capture_init(&c, 10, 4) >= 0);
        ASSERT(output_capture_add(&c, OUTPUT_STDOUT, "hello ", 6) >= 0);
        ASSERT(output_capture_add(&c, OUTPUT_STDERR, "oops", 4) >= 0);
        ASSERT(!c.truncated);
        ASSERT(output_capture_add(&c, OUTPUT_STDOUT, "world", 5) >= 0);
        ASSERT(c.truncated && c.total == 15);
        out = output_capture_output(&c);
        t1 = output_capture_tail(&c, OUTPUT_STDOUT);
        t2 = output_capture_tail(&c, OUTPUT_STDERR);
        ASSERT(streq(out, "hello oops"));
        ASSERT(streq(t1, "orld"));
        ASSERT(streq(t2, "oops"));
        output_capture_done(&c);

        /* Byte by byte into the ring. */
        ASSERT(output_capture_init(&c, 100, 3) >= 0);
        for (const char *p = "abcdefg"; *p; p++)
                ASSERT(output_capture_add(&c, OUTPUT_STDOUT, p, 1) >= 0);
        free(t1);
        t1 = output_capture_tail(&c, OUTPUT_STDOUT);
        ASSERT(streq(t1, "efg"));
        free(t2);
        t2 = output_capture_tail(&c, OUTPUT_STDERR);
        ASSERT(streq(t2, ""));
        output_capture_done(&c);
}

static void test_utf8(void) {
        _cleanup_free_ char *a = utf8_sanitize("h\xc3\xa9llo", 6), *b = utf8_sanitize("a\xff" "b", 3),
                            *z = utf8_sanitize("a\0b", 3), *s = utf8_sanitize("\xed\xa0\x80", 3),
                            *o = utf8_sanitize("\xc0\xaf", 2), *cut = utf8_sanitize("x\xe2\x82", 3);
        OutputCapture c;
        _cleanup_free_ char *t = NULL;

        ASSERT(streq(a, "h\xc3\xa9llo"));
        ASSERT(streq(b, "a\xef\xbf\xbd" "b"));
        ASSERT(streq(z, "a\xef\xbf\xbd" "b"));
        ASSERT(streq(s, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
        ASSERT(streq(o, "\xef\xbf\xbd\xef\xbf\xbd"));
        ASSERT(streq(cut, "x\xef\xbf\xbd\xef\xbf\xbd"));

        /* A tail that starts inside a character drops the piece rather than show garbage. */
        ASSERT(output_capture_init(&c, 100, 4) >= 0);
        ASSERT(output_capture_add(&c, OUTPUT_STDOUT, "\xe2\x82\xac" "abc", 6) >= 0);      /* "€abc" */
        t = output_capture_tail(&c, OUTPUT_STDOUT);
        ASSERT(streq(t, "abc"));
        output_capture_done(&c);
}

static size_t frame(uint8_t *buf, uint8_t stream, const char *payload) {
        size_t n = strlen(payload);
        buf[0] = stream;
        buf[1] = buf[2] = buf[3] = 0;
        buf[4] = (uint8_t) (n >> 24);
        buf[5] = (uint8_t) (n >> 16);
        buf[6] = (uint8_t) (n >> 8);
        buf[7] = (uint8_t) n;
        memcpy(buf + 8, payload, n);
        return n + 8;
}

static void test_demux(void) {
        uint8_t stream[256];
        size_t n = 0;

        n += frame(stream + n, 1, "out1\n");
        n += frame(stream + n, 2, "err1\n");
        n += frame(stream + n, 1, "");
        n += frame(stream + n, 1, "out2\n");

        /* Every split into three pieces gives the same result. */
        for (size_t i = 0; i <= n; i++)
                for (size_t j = i; j <= n; j++) {
                        DockerLogDemux d = {};
                        OutputCapture c;
                        _cleanup_free_ char *out = NULL, *o = NULL, *e = NULL;

                        ASSERT(output_capture_init(&c, 1000, 100) >= 0);
                        ASSERT(docker_log_demux_feed(&d, &c, stream, i) >= 0);
                        ASSERT(docker_log_demux_feed(&d, &c, stream + i, j - i) >= 0);
                        ASSERT(docker_log_demux_feed(&d, &c, stream + j, n - j) >= 0);
                        ASSERT(docker_log_demux_complete(&d));
                        out = output_capture_output(&c);
                        o = output_capture_tail(&c, OUTPUT_STDOUT);
                        e = output_capture_tail(&c, OUTPUT_STDERR);
                        ASSERT(streq(out, "out1\nerr1\nout2\n"));
                        ASSERT(streq(o, "out1\nout2\n"));
                        ASSERT(streq(e, "err1\n"));
                        output_capture_done(&c);
                }

        /* Cut inside a frame: incomplete. A bad stream type: an error. */
        {
                DockerLogDemux d = {};
                OutputCapture c;
                ASSERT(output_capture_init(&c, 1000, 100) >= 0);
                ASSERT(docker_log_demux_feed(&d, &c, stream, 10) >= 0);
                ASSERT(!docker_log_demux_complete(&d));
                stream[0] = 7;
                d = (DockerLogDemux) {};
                ASSERT(docker_log_demux_feed(&d, &c, stream, n) == -EBADMSG);
                output_capture_done(&c);
        }
}

/* What the exec driver's supervisor keeps (the head as a file, the tails and the count with a cap of
 * 0) restored into the agent's capture equals what the agent would have captured itself. */
static void test_restore(void) {
        OutputCapture direct, tails, restored;
        char head[200], buf[64];
        size_t head_size = 0;
        char *t[2];
        size_t n[2];

        for (size_t cap = 0; cap < 150; cap += 37) {
                ASSERT(output_capture_init(&direct, cap, 16) >= 0);
                ASSERT(output_capture_init(&tails, 0, 16) >= 0);
                ASSERT(output_capture_init(&restored, cap, 16) >= 0);
                head_size = 0;
                for (unsigned i = 0; i < 20; i++) {
                        OutputStream s = i % 3 == 0 ? OUTPUT_STDERR : OUTPUT_STDOUT;
                        size_t l = (size_t) snprintf(buf, sizeof(buf), "%s line %u\n", s == OUTPUT_STDERR ? "err" : "out", i);
                        ASSERT(output_capture_add(&direct, s, buf, l) >= 0);
                        ASSERT(output_capture_add(&tails, s, buf, l) >= 0);
                        for (size_t k = 0; k < l && head_size < cap && head_size < sizeof(head); k++)
                                head[head_size++] = buf[k];
                }
                for (size_t i = 0; i < 2; i++) {
                        OutputTail *tl = &tails.tails[i];
                        t[i] = malloc(tl->size + 1);
                        for (size_t k = 0; k < tl->size; k++)
                                t[i][k] = tl->buf[(tl->start + k) % 16];
                        n[i] = tl->size;
                }
                ASSERT(output_capture_restore(&restored, head, head_size, tails.total > cap, tails.total,
                                              t[0], n[0], t[1], n[1]) >= 0);
                ASSERT(restored.truncated == direct.truncated && restored.total == direct.total);
                for (OutputStream s = OUTPUT_STDOUT; s <= OUTPUT_STDERR; s++) {
                        _cleanup_free_ char *a = output_capture_tail(&direct, s), *b = output_capture_tail(&restored, s);
                        ASSERT(streq(a, b));
                }
                {
                        _cleanup_free_ char *a = output_capture_output(&direct), *b = output_capture_output(&restored);
                        ASSERT(streq(a, b));
                }
                free(t[0]);
                free(t[1]);
                output_capture_done(&direct);
                output_capture_done(&tails);
                output_capture_done(&restored);
        }
}

int main(void) {
        RUN_TEST(test_cap_and_tails);
        RUN_TEST(test_utf8);
        RUN_TEST(test_demux);
        RUN_TEST(test_restore);
        return 0;
}
