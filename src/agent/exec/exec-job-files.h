/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What an exec job keeps on disk, so that an agent restarted while it runs can take it over. The
 * directory <work_dir>/<task>-<lease>.job sits next to the task's own working directory (the task
 * cannot mistake these files for its own, nor remove them by emptying its home) and holds:
 *
 *   job      the agent's record: task, lease, attempt, timeout, and the supervisor (pid and start
 *            time, which tell it from a process that took its pid over later). Written before the
 *            supervisor is allowed to start the task: a job without it never ran its command.
 *   started  by the supervisor once the command runs: its pid and when (wall clock).
 *   output   by the supervisor as it comes: the first <cap> bytes of the output, both streams
 *            interleaved as they were read.
 *   result   by the supervisor when it is all over: the exit code (or why the command could not run),
 *            whether the OOM killer struck, the byte count, and the last bytes of each stream.
 *
 * Each is written to a temporary file, fsynced and renamed into place: it is there whole or not at all. */

#include "macro.h"

#define EXEC_JOB_DIR_SUFFIX ".job"

typedef struct ExecJobRecord {
        char *task_id;
        int64_t lease_token;
        int64_t attempt;
        int64_t timeout_sec;
        pid_t supervisor_pid;
        uint64_t supervisor_start;      /* field 22 of /proc/PID/stat: clock ticks since boot */
} ExecJobRecord;

typedef struct ExecJobStarted {
        pid_t pid;
        uint64_t realtime_usec;
} ExecJobStarted;

typedef struct ExecJobResult {
        char *error;                    /* the command could not run, and why; NULL: it ran */
        int64_t exit_code;              /* 128 + signal when killed */
        uint64_t total;                 /* bytes of output, both streams */
        bool truncated;                 /* more than the cap came */
        int oom_killed;                 /* the kernel's OOM killer struck in the job's cgroup: 1 or 0;
                                         * -1: not recorded (a supervisor older than this field) */
        uint64_t ended_usec;            /* CLOCK_MONOTONIC when the command ended; 0: not recorded (it never
                                         * ran, or a supervisor older than this field) */
        char *tails[2];                 /* stdout, stderr: the last bytes (not NUL-terminated) */
        size_t tail_sizes[2];
} ExecJobResult;

int exec_job_record_write(const char *dir, const ExecJobRecord *r);
int exec_job_record_read(const char *dir, ExecJobRecord *ret);
void exec_job_record_done(ExecJobRecord *r);

int exec_job_started_write(const char *dir, const ExecJobStarted *s);
/* -ENOENT when the command has not started (yet). */
int exec_job_started_read(const char *dir, ExecJobStarted *ret);

int exec_job_result_write(const char *dir, const ExecJobResult *r);
/* -ENOENT when the supervisor has not recorded a result (yet). */
int exec_job_result_read(const char *dir, ExecJobResult *ret);
void exec_job_result_done(ExecJobResult *r);

/* The first max bytes of the output file. */
int exec_job_output_read(const char *dir, size_t max, char **ret, size_t *ret_size);

/* When the process started (field 22 of /proc/PID/stat); -ESRCH when there is none. */
int pid_start_time(pid_t pid, uint64_t *ret);

/* A pidfd for the recorded supervisor while it is the process recorded; -ESRCH when it has ended
 * (and its pid is free, or taken by another process). */
int exec_job_supervisor_open(const ExecJobRecord *r, int *ret_pidfd);

