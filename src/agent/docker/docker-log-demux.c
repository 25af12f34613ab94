/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-log-demux.h"

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
