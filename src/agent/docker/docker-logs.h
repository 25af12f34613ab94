/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "docker-client.h"
#include "docker-log-demux.h"

/* Reads a container's whole output so far (stdout and stderr, demultiplexed) into capture, which
 * must stay valid until the callback. With follow, keeps reading until the container stops. */
int docker_container_logs(DockerClient *c, const char *id, bool follow, OutputCapture *capture,
                          DockerCallback cb, void *userdata, DockerCall **ret);
