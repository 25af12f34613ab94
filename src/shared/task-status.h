/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The states of a task, as docs/api.md names them: one list for the control, the agent and the DHT
 * task records, in the order of the database's CHECK constraint (src/control/sql/001-schema.sql). */

#include <errno.h>
#include <stdbool.h>

typedef enum TaskStatus {
        TASK_STATUS_QUEUED,
        TASK_STATUS_LEASED,
        TASK_STATUS_RUNNING,
        TASK_STATUS_SUCCEEDED,
        TASK_STATUS_FAILED,
        TASK_STATUS_TIMED_OUT,
        TASK_STATUS_CANCELLED,
        _TASK_STATUS_MAX,
        _TASK_STATUS_INVALID = -EINVAL,
} TaskStatus;

/* "queued", ...; NULL for anything out of range. */
const char *task_status_to_string(TaskStatus s);
/* _TASK_STATUS_INVALID (-EINVAL) for NULL or an unknown name. */
TaskStatus task_status_from_string(const char *s);
/* Whether a task in this state is done for good: succeeded, failed, timed_out or cancelled. */
bool task_status_is_final(TaskStatus s);
