/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "docker-client.h"
#include "json-lines.h"

/* Called for each event the engine reports (parsed JSON, valid during the call). The stream is
 * read with json-lines.h. */
typedef JsonLineHandler DockerEventHandler;

/* Follows the engine's event stream from now on (or since since_usec, wall clock, when non-zero).
 * filters: the engine's filter object, e.g. {"type": ["container"], "label": ["mc.node=a"]}, or NULL.
 * The callback is called when the stream ends (the engine went away), which it normally does not. */
int docker_events_follow(DockerClient *c, json_object *filters, uint64_t since_usec,
                         DockerEventHandler on_event, DockerCallback cb, void *userdata, DockerCall **ret);
