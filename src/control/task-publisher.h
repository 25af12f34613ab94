/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The control's side of the DHT (docs/architecture.md): it joins the DHT, announces its HTTP port under the
 * cluster info-hash (so agents find live replicas), and publishes each task's state as a BEP 44
 * mutable item signed by the cluster key, salt "task/<id>" (src/dht/task-record.h), so that
 * `mc-dhtget task <id>` can read and verify it with no control running.
 *
 * Publishing is best effort and never slows the API: the database stays the only source of truth.
 * State changes are coalesced per task (only the newest is published), at most PUBLISH_IN_FLIGHT puts
 * run at once, and when more than PUBLISH_MAX_PENDING tasks wait the oldest are dropped (counted in
 * /metrics). Leased and running tasks are republished while they last; other states are put once
 * (BEP 44 storage keeps them about two hours). */

#include "control.h"

typedef struct TaskPublisher TaskPublisher;

/* Sets *ret = NULL when DHT_PORT is 0. */
int task_publisher_new(Control *c, uint16_t http_port, TaskPublisher **ret);
TaskPublisher *task_publisher_free(TaskPublisher *p);

void task_publisher_changed(TaskPublisher *p, const char *id, TaskStatus status, const char *node,
                            const char *lease_token, const char *attempt);

typedef struct TaskPublisherStats {
        uint64_t published, failed, dropped;
        size_t pending;
        size_t dht_nodes;
} TaskPublisherStats;
void task_publisher_stats(TaskPublisher *p, TaskPublisherStats *ret);
