/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Calls to the control replicas (agent endpoints: register, claim, heartbeat, started, finish), with
 * failover: a call goes to the replica that answered last, and when it cannot be reached (or answers
 * 5xx) to the next one, each at most once per call. */

#include <json-c/json.h>

#include "curl-event.h"
#include "macro.h"

typedef struct ControlClient ControlClient;
typedef struct ControlCall ControlCall;

typedef struct ControlReply {
        int error;              /* 0: an HTTP answer (see code); < 0: no replica answered */
        long code;
        json_object *json;      /* the parsed body, if JSON */
        const char *message;    /* the body's "error", or the transport's explanation */
        const char *url;        /* the replica that answered (or the last one tried) */
        uint64_t sent_usec;     /* CLOCK_MONOTONIC, when the request that got this answer was sent */
} ControlReply;

typedef void (*ControlCallback)(const ControlReply *reply, void *userdata);

int control_client_new(CurlEvent *curl, char *const *urls, const char *token, ControlClient **ret);
ControlClient *control_client_free(ControlClient *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(ControlClient *, control_client_free);

/* POST path (e.g. "/api/agents/claim") with body. timeout_usec bounds each try. */
int control_post(ControlClient *c, const char *path, json_object *body, uint64_t timeout_usec,
                 ControlCallback cb, void *userdata, ControlCall **ret);
void control_call_cancel(ControlCall *call);

const char *control_client_current_url(ControlClient *c);
