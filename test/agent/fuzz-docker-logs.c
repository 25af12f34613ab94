/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for Docker's multiplexed log stream (docker_log_demux_feed) and the capture it
 * feeds. The first two bytes choose the output cap and tail size, the third how the rest is cut into
 * pieces. Properties: never crash or leak; the whole output and the tails are valid UTF-8 that JSON
 * accepts; nothing beyond the cap is kept; cut into pieces or not, the result is the same. */

#include "json-util.h"
#include "docker-log-demux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_utf8(char *s) {
        _cleanup_json_ json_object *str = NULL, *back = NULL;
        const char *text;

        if (!s)
                return;
        str = json_object_new_string(s);
        if (!str)
                abort();
        text = json_to_string(str);
        if (json_parse_strict(text, strlen(text), &back, NULL) < 0)
                abort();
        free(s);
}

static int run(const uint8_t *data, size_t size, size_t cap, size_t tail, size_t piece, OutputCapture *c) {
        DockerLogDemux d = {};
        int r = 0;

        if (output_capture_init(c, cap, tail) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < size && r >= 0; i += piece)
                r = docker_log_demux_feed(&d, c, data + i, MIN(piece, size - i));
        if (r >= 0 && !docker_log_demux_complete(&d))
                r = -EPIPE;
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        OutputCapture whole, cut;
        size_t cap, tail, piece;
        int r1, r2;

        if (size < 3)
                return 0;
        cap = data[0] * 4;
        tail = data[1] % 64;
        piece = data[2] % 16 + 1;
        data += 3;
        size -= 3;

        r1 = run(data, size, cap, tail, size ?: 1, &whole);
        r2 = run(data, size, cap, tail, piece, &cut);
        if (r1 != r2 && r1 != -ENOMEM && r2 != -ENOMEM)
                abort();
        if (r1 >= 0 && r2 >= 0) {
                if (whole.output_size > cap || whole.output_size != cut.output_size || whole.total != cut.total ||
                    whole.truncated != cut.truncated ||
                    (whole.output_size > 0 && memcmp(whole.output, cut.output, whole.output_size) != 0))
                        abort();
                for (OutputStream s = OUTPUT_STDOUT; s <= OUTPUT_STDERR; s++) {
                        char *a = output_capture_tail(&whole, s), *b = output_capture_tail(&cut, s);
                        if (a && b && !streq(a, b))
                                abort();
                        check_utf8(a);
                        check_utf8(b);
                }
                check_utf8(output_capture_output(&whole));
        }
        output_capture_done(&whole);
        output_capture_done(&cut);
        return 0;
}
