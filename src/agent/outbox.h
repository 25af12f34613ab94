/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Results on disk until a control has them: one file per result under <state>/outbox, written to a
 * temporary name, fsynced, renamed into place and the directory fsynced, so that after a crash the
 * file is either whole or absent. An entry goes away when a control accepts the result (200) or
 * rejects it for good (409: the lease is stale, or the task already has a result).
 *
 * The writes are synchronous on the event loop: a few KiB (at most the output cap) once per task, on
 * the local disk; a thread for that would cost more than it saves. */

#include <json-c/json.h>

#include "macro.h"

typedef struct OutboxEntry {
        char *task_id;
        int64_t lease_token;
        json_object *finish;    /* the body of POST /api/tasks/<id>/finish */
} OutboxEntry;

int outbox_init(const char *dir);
int outbox_write(const char *dir, const char *task_id, int64_t lease_token, json_object *finish);
int outbox_remove(const char *dir, const char *task_id, int64_t lease_token);
/* Every whole entry (a torn temporary file from a crash is removed). */
int outbox_load(const char *dir, OutboxEntry **ret, size_t *ret_n);
/* One entry from its file's content: 0, -EBADMSG or -ENOMEM (exposed for the fuzzer). */
int outbox_entry_parse(const char *text, size_t size, OutboxEntry *ret);
void outbox_entries_free(OutboxEntry *e, size_t n);
