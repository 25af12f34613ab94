/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What one control replica knows of the leases it watches, to decide expiry without trusting any wall
 * clock (docs/architecture.md, "Leases"). The database counts every renewal of a lease; the replica
 * reads the counts every sweep and remembers, per lease, the count it saw and the instant on its own
 * CLOCK_BOOTTIME when it first saw that count. A lease is due when its count has stood still for its
 * TTL plus the grace on that clock. A replica that starts knows nothing, so every lease gets a full TTL
 * from its first look: the time no replica was up never counts against a lease.
 *
 * Why that never takes a lease back before its holder has stopped: the holder fences itself at (when
 * it sent its last renewal that succeeded) + TTL - margin on its own monotonic clock. That renewal was
 * sent before the database counted it, and the replica first saw the count after that; the expiry
 * itself is conditional on the count still being the one seen (mc_lease_watch). So the replica waits
 * longer, from a later instant, than the holder; only the rates of the two clocks matter. */

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct LeaseSeen {
        const char *task_id;
        int64_t lease_token;
        int64_t renewals;
        int64_t ttl_ms;         /* the longest TTL its holder was given; <= 0: not known */
} LeaseSeen;

typedef struct LeaseWatch LeaseWatch;

int lease_watch_new(LeaseWatch **ret);
LeaseWatch *lease_watch_free(LeaseWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(LeaseWatch *, lease_watch_free);

/* Replaces the watched leases with `seen`, every lease held as a read that ended at now_usec
 * (CLOCK_BOOTTIME) found them: a lease seen before with the same token and count keeps the instant it
 * was first seen so; any other lease, or count, starts at now_usec. Leases not in `seen` are
 * forgotten. On failure (-ENOMEM) nothing changes. */
int lease_watch_update(LeaseWatch *w, const LeaseSeen *seen, size_t n, uint64_t now_usec);

/* The leases whose count has stood still for their TTL (default_ttl_ms when not known) plus grace_ms
 * at now_usec, as the JSON array of {"task_id", "lease_token", "renewals"} that mc_lease_watch() takes
 * (empty when none is due). */
int lease_watch_due(LeaseWatch *w, uint64_t now_usec, int64_t default_ttl_ms, int64_t grace_ms,
                    json_object **ret);

size_t lease_watch_size(LeaseWatch *w);
