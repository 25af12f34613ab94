/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What this machine can give to tasks: its CPUs (those we may run on, and no more than the CPU quota
 * of the cgroup we run in) and its memory (no more than our cgroup's memory limit). */

#include "macro.h"

int capacity_detect(const char *cgroup_root, int64_t *ret_nano_cpus, int64_t *ret_memory_bytes);
