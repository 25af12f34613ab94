/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "macro.h"
#include "task-status.h"

static const char *const task_status_table[_TASK_STATUS_MAX] = {
        [TASK_STATUS_QUEUED] = "queued",
        [TASK_STATUS_LEASED] = "leased",
        [TASK_STATUS_RUNNING] = "running",
        [TASK_STATUS_SUCCEEDED] = "succeeded",
        [TASK_STATUS_FAILED] = "failed",
        [TASK_STATUS_TIMED_OUT] = "timed_out",
        [TASK_STATUS_CANCELLED] = "cancelled",
};

const char *task_status_to_string(TaskStatus s) {
        return s >= 0 && s < _TASK_STATUS_MAX ? task_status_table[s] : NULL;
}

TaskStatus task_status_from_string(const char *s) {
        for (TaskStatus i = 0; i < _TASK_STATUS_MAX; i++)
                if (streq_ptr(s, task_status_table[i]))
                        return i;
        return _TASK_STATUS_INVALID;
}

bool task_status_is_final(TaskStatus s) {
        switch (s) {
        case TASK_STATUS_SUCCEEDED:
        case TASK_STATUS_FAILED:
        case TASK_STATUS_TIMED_OUT:
        case TASK_STATUS_CANCELLED:
                return true;
        default:
                return false;
        }
}
