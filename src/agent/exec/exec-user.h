/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Who an exec task runs as (EXEC_USER), and how the supervisor makes it so just before it executes the
 * task's command (or the command's mc-fence-init): no supplementary groups, the task's gid and uid, an
 * empty capability bounding set, no ambient, inheritable, permitted or effective capabilities, and
 * no_new_privs. */

#include <sys/types.h>

#include "macro.h"

/* The dedicated user sysusers.d/mc.conf creates; when it does not exist, EXEC_USER_FALLBACK_UID. */
#define EXEC_USER_DEFAULT "mc-task"
#define EXEC_USER_FALLBACK_UID ((uid_t) 65534)      /* nobody */

typedef struct ExecUser {
        bool change;            /* false: the tasks keep the agent's uid and gid (the agent is not root) */
        uid_t uid;
        gid_t gid;
} ExecUser;

/* EXEC_USER as configured: "NAME", "UID", "NAME:GROUP" or "UID:GID". NULL or empty: the default
 * (EXEC_USER_DEFAULT, else nobody, said in the log). -ESRCH: no such user or group (explicit only);
 * -EINVAL: not one of these forms; -EPERM: another user than ours while we are not root. */
int exec_user_resolve(const char *spec, ExecUser *ret);

/* The first directory on the way to path (path included) that uid/gid cannot search, by the mode
 * bits (ACLs aside): 0 and *ret_blocking NULL when there is none. */
int exec_user_path_check(const ExecUser *u, const char *path, char **ret_blocking);

/* "UID:GID", or "-" when the identity is kept: the supervisor's argument. */
int exec_user_format(const ExecUser *u, char **ret);
int exec_user_parse_numeric(const char *s, ExecUser *ret);

/* Steps of the drop, for the message when one fails. */
typedef enum ExecPrivStep {
        EXEC_PRIV_GROUPS,
        EXEC_PRIV_GID,
        EXEC_PRIV_BOUNDING,
        EXEC_PRIV_AMBIENT,
        EXEC_PRIV_UID,
        EXEC_PRIV_CAPS,
        EXEC_PRIV_NO_NEW_PRIVS,
        _EXEC_PRIV_STEP_MAX,
} ExecPrivStep;

const char *exec_priv_step_to_string(ExecPrivStep s);

/* In the task's child between fork() and execve(): system calls only. 0, or -errno with the step that
 * failed in *ret_step. */
int exec_user_drop_privileges(const ExecUser *u, ExecPrivStep *ret_step);
