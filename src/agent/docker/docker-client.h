/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The Docker Engine API over its unix socket, asynchronous on the event loop (curl-event). Every call
 * ends with one DockerCallback, unless cancelled with docker_call_cancel() first. Errors are negative
 * errno values with the engine's own message when it gave one:
 *
 *   -ENOENT   404: no such container / image
 *   -EBUSY    409: conflict (name in use, container being removed, ...)
 *   -EINVAL   400: the engine refused the request (an unknown runtime, a bad parameter)
 *   -EIO      500 and anything else the engine answered with
 *   other     no answer: -ECONNREFUSED, -ENOENT (no socket), -ETIMEDOUT, -ECONNRESET
 *
 * The calls themselves are in docker-container.h, docker-image.h, docker-logs.h, docker-events.h. */

#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "curl-event.h"
#include "macro.h"

#define DOCKER_SOCKET_DEFAULT "/var/run/docker.sock"
/* The API version we speak: Debian 12's engine (20.10) serves 1.41, newer engines still accept it. */
#define DOCKER_API_VERSION "v1.41"

typedef struct DockerClient DockerClient;
typedef struct DockerCall DockerCall;

typedef struct DockerResult {
        int error;                      /* 0 or negative errno, see above */
        long code;                      /* HTTP status, 0 when the engine did not answer */
        const char *message;            /* the engine's (or the transport's) explanation when error < 0 */
        json_object *json;              /* the parsed answer, when it was JSON; owned by the call */
        const char *id;                 /* create: the new container's id */
        int64_t exit_code;              /* wait: the container's exit status */
        bool not_modified;              /* 304: already started / already stopped */
} DockerResult;

typedef void (*DockerCallback)(const DockerResult *result, void *userdata);
/* A piece of a streamed answer; a negative return ends the call with that error. */
typedef int (*DockerDataHandler)(const void *data, size_t size, void *userdata);

int docker_client_new(sd_event *e, CurlEvent *curl, const char *socket_path, DockerClient **ret);
/* Cancels every call still running (their callbacks are not called). */
DockerClient *docker_client_free(DockerClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(DockerClient *, docker_client_free);

/* Never calls the callback afterwards. NULL is fine. */
void docker_call_cancel(DockerCall *call);
/* destroy(userdata) runs when the call is gone, after its callback or when cancelled. */
void docker_call_set_destroy(DockerCall *call, void (*destroy)(void *userdata));

/* Low level, for the typed calls: path is below /v1.41 (e.g. "/containers/json?all=1"); body is
 * serialised when non-NULL. The result's json is the parsed answer (when it is JSON). */
typedef struct DockerCallOptions {
        const char *method;
        const char *path;
        json_object *body;
        uint64_t timeout_usec;          /* 0: none (wait, logs, events may take as long as they take) */
        DockerDataHandler on_data;      /* stream a 2xx answer (logs, events, pull), with the callback's userdata */
        void (*destroy)(void *userdata);/* called when the call is gone (after its callback, or cancelled) */
        bool fresh_connect;             /* on a new connection: an engine shutting down still answers on
                                         * the ones it has, but accepts no new one */
} DockerCallOptions;

int docker_call(DockerClient *c, const DockerCallOptions *o, DockerCallback cb, void *userdata, DockerCall **ret);

/* Percent-encodes s for a URL path segment or query value. */
char *docker_url_escape(const char *s);
