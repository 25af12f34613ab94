/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "output-capture.h"

/* Docker's multiplexed log stream: frames of an 8-byte header (stream type, 3 zero bytes, big-endian
 * payload length) and the payload. Fed with arbitrary pieces; passes payloads on to the capture. */
typedef struct DockerLogDemux {
        uint8_t header[8];
        size_t header_size;
        uint32_t remaining;
        uint8_t stream;
} DockerLogDemux;

/* Returns -EBADMSG on a stream type that is not stdin/stdout/stderr. */
int docker_log_demux_feed(DockerLogDemux *d, OutputCapture *c, const void *data, size_t size);
/* True when the stream ended between frames. */
bool docker_log_demux_complete(const DockerLogDemux *d);
