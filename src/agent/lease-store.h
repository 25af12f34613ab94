/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The agent's own lease deadlines, kept in <state>/leases.json so that an agent restarted while no
 * control answers still knows how long each container it finds may run. Deadlines are CLOCK_MONOTONIC,
 * which is shared by every process of one boot; the boot id tells a stale file from a current one.
 * Written (renamed into place, not fsynced: a machine crash takes the containers with it) after each
 * renewal. */

#include "macro.h"

typedef struct LeaseRecord {
        char *task_id;
        int64_t lease_token;
        uint64_t deadline_usec;
        uint64_t fence_usec;            /* when the fence keeper kills it (deadline minus the margin) */
        int64_t pid;                    /* its process, 0 if none (yet) */
        char *cgroup_marker;            /* what /proc/PID/cgroup must contain */
        char *cgroup_dir;               /* the job's cgroup directory, when the driver made it (NULL: not known) */
        bool timed_out;                 /* stopped for its timeout_sec: a restarted agent reports it so */
} LeaseRecord;

/* ttl_usec: the lease TTL in force, which a restarted agent needs before the control tells it;
 * agent_pid: who writes the file (the fence keeper leaves when it is gone and nothing is left). */
int lease_store_save(const char *path, uint64_t ttl_usec, pid_t agent_pid, const LeaseRecord *l, size_t n);
/* Records of this boot only; none (and 0) when the file is missing or from another boot. */
int lease_store_load(const char *path, uint64_t *ret_ttl_usec, pid_t *ret_agent_pid, LeaseRecord **ret, size_t *ret_n);
/* The same from the file's text, for the boot whose id is boot (exposed for the fuzzer). */
int lease_store_parse(const char *text, size_t size, const char *boot, uint64_t *ret_ttl_usec, pid_t *ret_agent_pid,
                      LeaseRecord **ret, size_t *ret_n);
void lease_records_free(LeaseRecord *l, size_t n);
