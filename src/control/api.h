/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "control.h"
#include "json-check.h"

/* Shared by api.c (routing, user endpoints) and api-agents.c. */

/* Answers req from a task operation's completion (userdata is the request). */
void api_reply_op(Control *c, unsigned code, const char *body, void *userdata);
/* 400 with the CheckError's field and message. */
void api_reply_check_error(HttpRequest *req, const CheckError *e);

/* Agent endpoints: the identity was checked to be an agent (or auth is disabled). */
void api_agent_register(Control *c, HttpRequest *req, const AuthIdentity *id);
void api_agent_claim(Control *c, HttpRequest *req, const AuthIdentity *id);
void api_agent_heartbeat(Control *c, HttpRequest *req, const AuthIdentity *id);
void api_task_started(Control *c, HttpRequest *req, const AuthIdentity *id, const char *task_id);
void api_task_finish(Control *c, HttpRequest *req, const AuthIdentity *id, const char *task_id);
