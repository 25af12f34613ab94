/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a task printed: the whole output (stdout and stderr interleaved as they came) up to a cap,
 * plus the last bytes of each stream, which go with the result even when the whole output was cut.
 * Fed by the Docker driver's log demultiplexer or by the exec supervisor's pipes. */

#include "macro.h"

typedef enum OutputStream {
        OUTPUT_STDOUT = 1,
        OUTPUT_STDERR = 2,
} OutputStream;

typedef struct OutputTail {
        char *buf;              /* ring of size tail_max */
        size_t start, size;
} OutputTail;

typedef struct OutputCapture {
        size_t cap, tail_max;
        char *output;           /* the first `cap` bytes */
        size_t output_size, output_allocated;
        bool truncated;         /* more than `cap` bytes came */
        uint64_t total;         /* bytes seen, both streams */
        OutputTail tails[2];
} OutputCapture;

int output_capture_init(OutputCapture *c, size_t cap, size_t tail_max);
void output_capture_done(OutputCapture *c);
int output_capture_add(OutputCapture *c, OutputStream stream, const void *data, size_t size);
/* Sets what another process captured (the exec driver's supervisor): the first bytes (cut to the
 * cap), whether more came, how many in all, and the last bytes of each stream (cut to tail_max). */
int output_capture_restore(OutputCapture *c, const void *output, size_t output_size, bool truncated, uint64_t total,
                           const void *tail_out, size_t tail_out_size, const void *tail_err, size_t tail_err_size);

/* NUL-terminated, valid UTF-8 copies (invalid bytes and NULs become U+FFFD; a character cut by the
 * tail's start is dropped), ready for JSON. */
char *output_capture_tail(const OutputCapture *c, OutputStream stream);
char *output_capture_output(const OutputCapture *c);
