/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "docker-client.h"

/* Called for each event the engine reports (parsed JSON, valid during the call). */
typedef void (*DockerEventHandler)(json_object *event, void *userdata);

/* The parser of the event stream: one JSON object per line, fed in arbitrary pieces. Starts zeroed. */
typedef struct DockerEventStream {
        char *line;             /* the start of a line whose end has not come yet */
        size_t line_size;
} DockerEventStream;

void docker_event_stream_done(DockerEventStream *s);
/* Calls on_event for each line's object; -EBADMSG when a line is not one JSON object (or is longer
 * than 256 KiB). A last line without its "\n" is not an event (yet). */
int docker_event_stream_feed(DockerEventStream *s, const void *data, size_t size, DockerEventHandler on_event,
                             void *userdata);

/* Follows the engine's event stream from now on (or since since_usec, wall clock, when non-zero).
 * filters: the engine's filter object, e.g. {"type": ["container"], "label": ["mc.node=a"]}, or NULL.
 * The callback is called when the stream ends (the engine went away), which it normally does not. */
int docker_events_follow(DockerClient *c, json_object *filters, uint64_t since_usec,
                         DockerEventHandler on_event, DockerCallback cb, void *userdata, DockerCall **ret);
