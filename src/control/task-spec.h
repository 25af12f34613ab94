/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The push body: parsed, checked field by field, and turned into the normalised specification that is
 * stored (and compared, for idempotent pushes) as JSON. */

#include <json-c/json.h>

#include "json-check.h"

#define TASK_TIMEOUT_DEFAULT_SEC 3600
#define TASK_TIMEOUT_MAX_SEC 604800
#define TASK_MAX_ATTEMPTS_DEFAULT 3
#define TASK_MAX_ATTEMPTS_MAX 100
#define TASK_MIN_NANO_CPUS INT64_C(1000000)
#define TASK_MAX_NANO_CPUS INT64_C(1024000000000)
#define TASK_MIN_MEMORY_BYTES (INT64_C(6) * 1024 * 1024)
#define TASK_MAX_MEMORY_BYTES (INT64_C(16) * 1024 * 1024 * 1024 * 1024)

typedef struct TaskSpec {
        json_object *spec;      /* normalised: defaults filled, "command" renamed "cmd", without "id" */
        char *id;               /* given by the client, or NULL */
        const char *target_node;/* borrowed from spec, or NULL */
        int64_t nano_cpus;      /* 0: no limit */
        int64_t memory_bytes;   /* 0: no limit */
        int64_t max_attempts;
} TaskSpec;

void task_spec_done(TaskSpec *t);

/* Returns 0, -EINVAL with e filled, or -ENOMEM. */
int task_spec_parse(const char *body, size_t size, TaskSpec *ret, CheckError *e);
/* The same, for an already parsed object (the D-Bus path). Takes a reference of o. */
int task_spec_from_json(json_object *o, TaskSpec *ret, CheckError *e);

/* Builds the element mc_push() takes: {"id","spec","target_node","nano_cpus","memory_bytes","labels","max_attempts"}. */
json_object *task_spec_to_push_row(const TaskSpec *t, const char *id);

/* A fresh task id: 32 hex digits, time-ordered (UUIDv7 layout without dashes) so that new rows land at
 * the end of the primary key index. */
int task_id_generate(char ret[static 33]);
