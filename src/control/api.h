/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "control.h"
#include "id-util.h"
#include "json-check.h"

/* Shared by api.c (routing, user endpoints) and api-agents.c. */

/* 400 with the CheckError's field and message. */
void api_reply_check_error(HttpRequest *req, const CheckError *e);

/* What the router found out about a request before its handler runs. */
typedef struct ApiCall {
        AuthIdentity identity;  /* who asks (kind AUTH_NONE on public endpoints) */
        char cert_node[ID_MAX + 1]; /* identity.name when a client certificate proved it */
        const char *task_id;    /* the {id} of the path, a valid task id; NULL when the path has none */
        const char *content_id; /* the {content} of the path, a valid content id; NULL when none */
        const char *node_id;    /* the {node} of the path, a valid node id; NULL when none */
} ApiCall;

/* An endpoint (the table in api.c): answers req, now or later. */
typedef void (*ApiHandler)(Control *c, HttpRequest *req, const ApiCall *call);

/* Agent endpoints: the identity was checked to be an agent (or auth is disabled). */
void api_agent_register(Control *c, HttpRequest *req, const ApiCall *call);
void api_agent_claim(Control *c, HttpRequest *req, const ApiCall *call);
void api_agent_heartbeat(Control *c, HttpRequest *req, const ApiCall *call);
/* The same, for the task call->task_id. */
void api_task_started(Control *c, HttpRequest *req, const ApiCall *call);
void api_task_finish(Control *c, HttpRequest *req, const ApiCall *call);
void api_task_release(Control *c, HttpRequest *req, const ApiCall *call);
/* A chunk of the live output of the task's lease. */
void api_task_output(Control *c, HttpRequest *req, const ApiCall *call);

/* Contents (api-contents.c): PUT and GET call->content_id, and the list. */
void api_content_put(Control *c, HttpRequest *req, const ApiCall *call);
void api_content_get(Control *c, HttpRequest *req, const ApiCall *call);
void api_contents_list(Control *c, HttpRequest *req, const ApiCall *call);
