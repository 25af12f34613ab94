/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Task pushes, committed in batches: pushes that arrive while a batch is being committed wait and go
 * together in the next one, in one transaction, so that many concurrent pushes share one WAL flush
 * (group commit at the application level). A push is answered only after its batch committed, so a
 * 201 always means the task is durable. */

#include "control.h"
#include "task-spec.h"

int push_batcher_new(Control *c, PushBatcher **ret);
/* Answers every waiting push with 503. */
PushBatcher *push_batcher_free(PushBatcher *p);
size_t push_batcher_n_pending(PushBatcher *p);

/* The answer to a push: code 201 (created), 200 (same id and body existed), 400 (an input names a
 * content that is not registered), 409 (same id, other body), 500 or 503, with the task record or an
 * error as body; id is the task's, given or generated. */
typedef void (*PushCallback)(Control *c, unsigned code, const char *id, const char *body, void *userdata);

/* Takes over spec. The callback may run before this returns (when the database is unavailable). */
int control_push(Control *c, TaskSpec *spec, PushCallback cb, void *userdata);
