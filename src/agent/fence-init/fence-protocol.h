/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The lease file between mc-agent and mc-fence-init, the first process of every task (PID 1 of a
 * container; the command's parent for an exec job). The agent rewrites it, renamed into place, each
 * time it learns something about the lease; the init polls it and kills the task's processes when the
 * time it was last promised has run out on its own clock. It is plain text so that the init needs no
 * library to read it:
 *
 *   mc-fence 1
 *   seq 123456789            a number that changes with every write (the agent's CLOCK_MONOTONIC, which
 *                            only tells a new write from an old one: the init never reads it as a time)
 *   state running            created: the container is being started; the init starts nothing until
 *                            "running" (written once the start succeeded), so that a value written
 *                            long before the task came up is never trusted;
 *                            running: the task may run for remaining_ms;
 *                            off: the lease was cancelled (nothing runs the task elsewhere): no fence
 *   remaining_ms 2666        how long from the moment of the write the task may still run: the agent's
 *                            lease deadline (the time it sent the last renewal that succeeded plus the
 *                            TTL) minus its fencing margin, minus now. A duration, never an instant:
 *                            the init's clock need not be the agent's (a VM runtime).
 *
 * Lines may come in any order; unknown ones are ignored, so that fields can be added. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FENCE_PROTOCOL_MAGIC "mc-fence 1"
/* Where the Docker driver puts the init and the lease directory in a container. */
#define FENCE_INIT_CONTAINER_PATH "/.mc/fence-init"
#define FENCE_LEASE_CONTAINER_DIR "/.mc/lease"
#define FENCE_LEASE_FILE_NAME "lease"

/* Exit codes of mc-fence-init itself (anything else is the command's own, or 128 + the signal that
 * killed it). */
enum {
        FENCE_EXIT_FENCED = 250,        /* the lease ran out: the task's processes were killed (or never
                                         * started) */
        FENCE_EXIT_NO_LEASE = 251,      /* the lease file could not be read at start */
        FENCE_EXIT_USAGE = 252,
        FENCE_EXIT_CANNOT_EXECUTE = 126,
        FENCE_EXIT_NOT_FOUND = 127,
};

/* The line the init writes to the command's stderr when it cannot execute it, the rest being
 * "<command>: <strerror>": the agent gives it as the task's reason. */
#define FENCE_INIT_EXEC_ERROR_PREFIX "mc-fence-init: cannot execute "

typedef enum FenceLeaseState {
        FENCE_LEASE_CREATED,
        FENCE_LEASE_RUNNING,
        FENCE_LEASE_OFF,
        _FENCE_LEASE_STATE_MAX,
        _FENCE_LEASE_STATE_INVALID = -1,
} FenceLeaseState;

typedef struct FenceLease {
        uint64_t seq;
        FenceLeaseState state;
        uint64_t remaining_ms;
} FenceLease;

const char *fence_lease_state_to_string(FenceLeaseState s);
FenceLeaseState fence_lease_state_from_string(const char *s, size_t n);

/* 0, or -EBADMSG for anything but a complete file (each of the three fields present once). */
int fence_lease_parse(const char *text, size_t size, FenceLease *ret);
/* Into buf (at most size bytes, NUL-terminated); the length, or -ENOBUFS. */
int fence_lease_format(const FenceLease *l, char *buf, size_t size);

/* What the init makes of what it read, on its own clock (microseconds). */
typedef enum FenceVerdict {
        FENCE_WAIT,                     /* not confirmed started yet: do not start the command */
        FENCE_RUN,                      /* within the lease (or no fence) */
        FENCE_KILL,                     /* the time promised has run out */
} FenceVerdict;

typedef struct FenceWatch {
        bool have;                      /* a lease was read */
        uint64_t seq;                   /* the last write seen */
        bool started;                   /* "running" was seen: the command may run */
        bool off;
        uint64_t deadline_usec;         /* on the init's clock */
} FenceWatch;

/* l: what was just read, NULL when the file could not be read or parsed (which changes nothing: the
 * deadline stands). slack_usec is taken off every deadline: how late the init may see a write (its
 * poll interval). */
FenceVerdict fence_watch_step(FenceWatch *w, const FenceLease *l, uint64_t now_usec, uint64_t slack_usec);
