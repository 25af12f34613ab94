/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Finding a job's cgroup from one of its processes, and emptying a cgroup known only by its directory.
 *
 * The fence keeper knows a job by a mark its cgroup path carries (a container id, an exec job's
 * "/<task>-<lease>\n") and, once the agent learned it, by one process of the job. Scanning every
 * process of the machine for the mark is what it falls back to; with the process known, one read of
 * /proc/PID/cgroup and of the mount table gives the job's cgroup directory, whose cgroup.procs lists
 * every process of the job, on whichever layout the host has (v2, v1, hybrid): the first line of
 * /proc/PID/cgroup that carries the mark, mapped to where its hierarchy is mounted. */

#include "macro.h"

/* The directory of the cgroup process pid is in whose line in /proc/PID/cgroup contains marker.
 * -ESRCH: the process is gone; -ENXIO: no line carries marker (not the job's process: the pid was
 * reused); -ENOMEDIUM: that hierarchy is not mounted here. */
int cgroup_dir_of_pid(pid_t pid, const char *marker, char **ret_dir);

/* The same from the texts of /proc/PID/cgroup and /proc/self/mountinfo (exposed for the tests). */
int cgroup_dir_from_texts(const char *proc_cgroup, const char *mountinfo, const char *marker, char **ret_dir);

/* Whether dir is an absolute cgroup directory whose path carries marker the way a line of
 * /proc/PID/cgroup of the job's processes would ("/a/t1-7" carries "/t1-7\n", "/x/docker-ID.scope"
 * carries "ID"), so that a fence by directory can never reach beyond the job (the root, a parent). */
bool cgroup_dir_carries_marker(const char *dir, const char *marker);

/* SIGKILLs every process in dir and the cgroups below it, pass after pass until a pass finds none (a
 * process forking while it dies has its child found by the next). Returns how many processes the
 * fullest pass signalled (a killed process stays listed until it has exited, which under load can take
 * every pass: a sum counted three such processes as 48); -ENOENT when dir is gone (a removed cgroup
 * holds no process, and never will again). */
int cgroup_dir_kill_all(const char *dir);
