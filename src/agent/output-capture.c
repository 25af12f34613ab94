/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "output-capture.h"
#include "utf8.h"

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
