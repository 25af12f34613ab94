/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Starting a helper process (an exec job's supervisor, the fence keeper) with posix_spawn(3), not
 * fork(2). A fork copies the caller's page tables holding its memory map's lock for writing, and on a
 * host starting many processes at once that copy took seconds: every other thread of the caller that
 * touched a new page waited for it, the agent's event loop among them (found with 1 000 agents on one
 * host). posix_spawn shares the memory until the exec instead.
 *
 * The child is a session leader of its own, with every signal at its default disposition and none
 * blocked, and no descriptor above 2 open. */

#include <sys/types.h>

#include "macro.h"

/* stdin_fd, stdout_fd: the child's descriptors 0 and 1 (-1: the caller's own). Returns a negative errno
 * when the program could not be started (not found, not executable, no memory). */
int spawn_helper(const char *path, char *const *argv, int stdin_fd, int stdout_fd, pid_t *ret_pid);
