/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "docker-client.h"

/* -ENOENT when the engine does not have it. */
int docker_image_inspect(DockerClient *c, const char *image, DockerCallback cb, void *userdata, DockerCall **ret);

/* Pulls image ("name", "name:tag", "name@digest"; no tag means "latest"). The engine reports
 * failures inside its progress stream too: those end the call with -EIO and the engine's message. */
int docker_image_pull(DockerClient *c, const char *image, DockerCallback cb, void *userdata, DockerCall **ret);
