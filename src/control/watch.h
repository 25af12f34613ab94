/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Watching tasks over HTTP (docs/api.md, "Watching"): the long poll GET /api/tasks/{id}?wait=, the
 * live output GET /api/tasks/{id}/logs?follow=1 and the event stream GET /api/events. All three hang
 * on the database's notifications, so that what happens on any replica reaches them: every change of a
 * task's state comes on mc_events (from a trigger, functions.sql), every chunk of live output on
 * mc_output. The notification only says what changed; the state served is read from the database.
 *
 * A replica serves at most HTTP_MAX_STREAMS of them at once (503 beyond, with Retry-After). Every ten
 * seconds the streams are looked at: one whose client left is ended, and an event stream gets a
 * comment line, so that a stream nothing happens on still shows traffic to proxies and clients. */

#include <json-c/json.h>

#include "control.h"

typedef struct Watchers Watchers;

int watchers_new(Control *c, Watchers **ret);
/* Answers the long polls (503) and ends the streams. */
Watchers *watchers_free(Watchers *w);

/* From the listener: a task's event (the JSON of mc_event_json(): parsed, and its text as sent), new
 * live output of a task. */
void watchers_task_event(Watchers *w, json_object *event, const char *payload);
void watchers_task_output(Watchers *w, const char *task_id);
/* The listener is back: notifications may have been missed, everyone looks again. */
void watchers_recheck_all(Watchers *w);

size_t watchers_n(Watchers *w);

/* The handlers; the arguments were checked by the caller. wait_usec > 0; since may be NULL. */
int watch_task_wait(Control *c, HttpRequest *req, const char *task_id, uint64_t wait_usec, const char *since);
int watch_task_follow(Control *c, HttpRequest *req, const char *task_id);
/* task_id: only that task's events (NULL: all); since: a cursor (an event's id), or NULL. */
int watch_events(Control *c, HttpRequest *req, const char *task_id, const char *since);
