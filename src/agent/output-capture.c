/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "output-capture.h"

int output_capture_init(OutputCapture *c, size_t cap, size_t tail_max) {
        *c = (OutputCapture) { .cap = cap, .tail_max = tail_max };
        for (size_t i = 0; i < 2; i++) {
                c->tails[i].buf = malloc(MAX(tail_max, (size_t) 1));
                if (!c->tails[i].buf) {
                        output_capture_done(c);
                        return -ENOMEM;
                }
        }
        return 0;
}

void output_capture_done(OutputCapture *c) {
        free(c->output);
        for (size_t i = 0; i < 2; i++)
                free(c->tails[i].buf);
        *c = (OutputCapture) {};
}

static void tail_add(OutputTail *t, size_t max, const uint8_t *p, size_t n) {
        if (max == 0)
                return;
        if (n >= max) {
                memcpy(t->buf, p + n - max, max);
                t->start = 0;
                t->size = max;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                size_t pos = (t->start + t->size) % max;
                t->buf[pos] = (char) p[i];
                if (t->size < max)
                        t->size++;
                else
                        t->start = (t->start + 1) % max;
        }
}

int output_capture_add(OutputCapture *c, OutputStream stream, const void *data, size_t size) {
        const uint8_t *p = data;
        size_t keep;

        if (stream != OUTPUT_STDOUT && stream != OUTPUT_STDERR)
                return -EINVAL;
        c->total += size;
        tail_add(&c->tails[stream - 1], c->tail_max, p, size);

        keep = c->output_size < c->cap ? MIN(size, c->cap - c->output_size) : 0;
        if (keep < size)
                c->truncated = true;
        if (keep > 0) {
                if (c->output_size + keep + 1 > c->output_allocated) {
                        size_t a = MIN(MAX(c->output_allocated * 2, c->output_size + keep + 1), c->cap + 1);
                        char *b = realloc(c->output, MAX(a, c->output_size + keep + 1));
                        if (!b)
                                return -ENOMEM;
                        c->output = b;
                        c->output_allocated = MAX(a, c->output_size + keep + 1);
                }
                memcpy(c->output + c->output_size, p, keep);
                c->output_size += keep;
                c->output[c->output_size] = 0;
        }
        return 0;
}

int output_capture_restore(OutputCapture *c, const void *output, size_t output_size, bool truncated, uint64_t total,
                           const void *tail_out, size_t tail_out_size, const void *tail_err, size_t tail_err_size) {
        const void *tails[2] = { tail_out, tail_err };
        size_t sizes[2] = { tail_out_size, tail_err_size };
        char *b = NULL;

        output_size = MIN(output_size, c->cap);
        if (output_size > 0) {
                b = malloc(output_size + 1);
                if (!b)
                        return -ENOMEM;
                memcpy(b, output, output_size);
                b[output_size] = 0;
        }
        free(c->output);
        c->output = b;
        c->output_size = c->output_allocated = output_size;
        if (b)
                c->output_allocated++;
        c->truncated = truncated;
        c->total = total;
        for (size_t i = 0; i < 2; i++) {
                OutputTail *t = &c->tails[i];
                size_t n = MIN(sizes[i], c->tail_max);

                /* The last n bytes, unwrapped. */
                if (n > 0)
                        memcpy(t->buf, (const char *) tails[i] + sizes[i] - n, n);
                t->start = 0;
                t->size = n;
        }
        return 0;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if it is not one. */
static size_t utf8_char_len(const uint8_t *s, size_t n) {
        uint32_t cp;
        size_t len;

        if (s[0] < 0x80)
                return s[0] == 0 ? 0 : 1;
        if ((s[0] & 0xE0) == 0xC0) {
                len = 2;
                cp = s[0] & 0x1F;
        } else if ((s[0] & 0xF0) == 0xE0) {
                len = 3;
                cp = s[0] & 0x0F;
        } else if ((s[0] & 0xF8) == 0xF0) {
                len = 4;
                cp = s[0] & 0x07;
        } else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3F);
        }
        /* Overlong forms, surrogates, beyond Unicode. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
                return 0;
        return len;
}

char *utf8_sanitize(const char *s, size_t size) {
        const uint8_t *p = (const uint8_t *) s;
        char *out, *o;

        /* Worst case: every byte becomes a 3-byte replacement character. */
        out = o = malloc(size * 3 + 1);
        if (!out)
                return NULL;
        for (size_t i = 0; i < size;) {
                size_t l = utf8_char_len(p + i, size - i);
                if (l == 0) {
                        memcpy(o, "\xEF\xBF\xBD", 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(o, p + i, l);
                        o += l;
                        i += l;
                }
        }
        *o = 0;
        return out;
}

char *output_capture_tail(const OutputCapture *c, OutputStream stream) {
        const OutputTail *t;
        _cleanup_free_ char *lin = NULL;
        size_t skip = 0;

        if (stream != OUTPUT_STDOUT && stream != OUTPUT_STDERR)
                return NULL;
        t = &c->tails[stream - 1];
        lin = malloc(t->size + 1);
        if (!lin)
                return NULL;
        for (size_t i = 0; i < t->size; i++)
                lin[i] = t->buf[(t->start + i) % MAX(c->tail_max, (size_t) 1)];
        /* When the ring has wrapped, its first bytes may be the end of a cut character. */
        if (t->size == c->tail_max && c->total > c->tail_max)
                while (skip < t->size && skip < 3 && ((uint8_t) lin[skip] & 0xC0) == 0x80)
                        skip++;
        return utf8_sanitize(lin + skip, t->size - skip);
}

char *output_capture_output(const OutputCapture *c) {
        return utf8_sanitize(c->output ?: "", c->output_size);
}

int docker_log_demux_feed(DockerLogDemux *d, OutputCapture *c, const void *data, size_t size) {
        const uint8_t *p = data;
        int r;

        while (size > 0) {
                if (d->remaining == 0) {
                        size_t n = MIN(size, sizeof(d->header) - d->header_size);
                        memcpy(d->header + d->header_size, p, n);
                        d->header_size += n;
                        p += n;
                        size -= n;
                        if (d->header_size < sizeof(d->header))
                                break;
                        d->header_size = 0;
                        if (d->header[0] > 2)
                                return -EBADMSG;
                        d->stream = d->header[0];
                        d->remaining = (uint32_t) d->header[4] << 24 | (uint32_t) d->header[5] << 16 |
                                       (uint32_t) d->header[6] << 8 | (uint32_t) d->header[7];
                        continue;
                }
                size_t n = MIN(size, (size_t) d->remaining);
                /* Stream 0 (stdin) cannot come back from a container we started without it; count it
                 * as output rather than lose it. */
                r = output_capture_add(c, d->stream == OUTPUT_STDERR ? OUTPUT_STDERR : OUTPUT_STDOUT, p, n);
                if (r < 0)
                        return r;
                d->remaining -= (uint32_t) n;
                p += n;
                size -= n;
        }
        return 0;
}

bool docker_log_demux_complete(const DockerLogDemux *d) {
        return d->remaining == 0 && d->header_size == 0;
}
