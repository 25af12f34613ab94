/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The fence keeper: a small process beside the agent that enforces the lease deadlines in the lease
 * file even when the agent is not there to do it (killed, crashed, stopped and not restarted).
 * Containers outlive the agent on purpose (a restarted agent adopts them); without the keeper, a
 * container whose agent stayed away longer than a lease would keep running while the control hands
 * its task to another node.
 *
 * It polls the lease file (rewritten by the agent after every renewal) and, when a lease's fence time
 * has come, SIGKILLs every process of the job's cgroup. It finds that cgroup from the job's process
 * once the agent has recorded it (looked up when the lease is loaded, so it is known even if that
 * process has ended by the fence); until then it knows the job only by the mark its cgroup path
 * carries (the container id, which the agent records before it asks the engine to start the
 * container, or the exec job's cgroup name) and scans every process for it, less and less often: that
 * reaches a container even when the agent died between asking for its start and learning its pid. It leaves once the agent is gone and nothing is left to watch; an agent that starts finds a
 * running keeper by its pid file and leaves it be.
 *
 * Under systemd it has a unit of its own (mc-fence-keeper.service, Restart=always, --persistent: it
 * never leaves), outside mc-agent.service's cgroup, so that `systemctl kill mc-agent` does not take
 * it. A keeper that (re)starts kills at once whatever is past its fence time in the file, however
 * long ago that was. */

#include "macro.h"

/* The keeper's main loop (mc-fence-keeper --fence-keeper LEASE_FILE PID_FILE [--persistent]). Never
 * returns. persistent: stays when the agent is gone and nothing is left to watch (its unit would only
 * start it again). */
_noreturn_ void fence_keeper_run(const char *lease_file, const char *pid_file, bool persistent);

/* Starts a keeper (detached: mc-fence-keeper) unless one runs already, and waits until it has
 * detached. */
int fence_keeper_ensure(const char *lease_file, const char *pid_file);

/* In a keeper started with --detach: forks; the parent records the child's pid in pid_file and exits
 * (its starter waits for that), and the child, which belongs to nobody once its parent is gone, returns
 * 0 to run the keeper. A fork of this small process costs little; the agent spawns it rather than
 * forking itself twice (spawn-util.h). */
int fence_keeper_detach(const char *pid_file);
