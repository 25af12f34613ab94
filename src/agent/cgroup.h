/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One cgroup per task of the exec driver, with a CPU and a memory limit, on whichever cgroup layout
 * the host has, detected at run time:
 *
 *   v2 (unified): <root>/<path>/ with cpu.max ("<quota> <period>") and memory.max (+ memory.swap.max 0);
 *                 the cpu and memory controllers are enabled in every ancestor's cgroup.subtree_control.
 *   v1 (legacy or hybrid): <root>/memory/<path>/memory.limit_in_bytes (+ memory.memsw.limit_in_bytes
 *                 when swap is accounted) and <root>/cpu/<path>/cpu.cfs_quota_us over cpu.cfs_period_us.
 *
 * root is /sys/fs/cgroup on a real host. */

#include "macro.h"

typedef enum CgroupMode {
        CGROUP_V1,
        CGROUP_V2,
} CgroupMode;

#define CGROUP_ROOT_DEFAULT "/sys/fs/cgroup"
#define CGROUP_CPU_PERIOD_USEC 100000

typedef struct Cgroup {
        CgroupMode mode;
        char *v2;               /* v2: the directory */
        char *memory, *cpu;     /* v1: the directory in each hierarchy */
} Cgroup;

/* -ENOMEDIUM when root has neither layout. */
int cgroup_detect(const char *root, CgroupMode *ret);
const char *cgroup_mode_to_string(CgroupMode m);

/* Creates (or reuses) the cgroup at relative path `path` and applies the limits (0: none). May block
 * for long on the kernel's cgroup lock: not on an event loop. */
int cgroup_create(const char *root, CgroupMode mode, const char *path, int64_t nano_cpus, int64_t memory_bytes,
                  Cgroup **ret);
/* Names the cgroup, touching nothing on the host: it may not be there (yet). */
int cgroup_at(const char *root, CgroupMode mode, const char *path, Cgroup **ret);
/* Opens without creating; -ENOENT when it is not there. */
int cgroup_open(const char *root, CgroupMode mode, const char *path, Cgroup **ret);
/* The same cgroup's names, for another owner (a thread). */
int cgroup_dup(const Cgroup *cg, Cgroup **ret);
Cgroup *cgroup_free(Cgroup *cg);
DEFINE_TRIVIAL_CLEANUP_FUNC(Cgroup *, cgroup_free);

/* Opens the cgroup.procs files a new process writes "0" to, to join (up to 2, -1 for unused), so
 * that the child of a fork needs only write(2). */
int cgroup_open_procs(Cgroup *cg, int ret_fds[2]);

/* Sends sig to every process in it; returns how many there were. Opens a cgroup file, which can wait
 * for long on a busy host: not on an event loop. */
int cgroup_kill(Cgroup *cg, int sig);
/* 1 when no process is left, 0 otherwise. */
int cgroup_is_empty(Cgroup *cg);
/* Whether the kernel's OOM killer acted in it. Not on an event loop, for the same reason. */
bool cgroup_oom_killed(Cgroup *cg);
/* Kills what is left and removes the directories. May block for long (the kernel's cgroup lock,
 * processes slow to die): not on an event loop. */
int cgroup_destroy(Cgroup *cg);

/* The limits as applied (for tests and ListTasks): quota per period, bytes; -1 for none. */
int cgroup_get_limits(Cgroup *cg, int64_t *ret_cpu_quota_usec, int64_t *ret_cpu_period_usec, int64_t *ret_memory);

/* Names of the children of <root>/<path> (the tasks a previous run left), NULL-terminated. */
int cgroup_list_children(const char *root, CgroupMode mode, const char *path, char ***ret);
