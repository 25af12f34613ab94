/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Heartbeats, committed in batches: the heartbeats that arrive while one is in the database go
 * together in the next statement (mc_heartbeat_batch), one transaction and one WAL flush for all of
 * them. A thousand nodes renewing their leases every second or so were a thousand commits a second,
 * each waiting for its own flush; batched, the flushes are shared and the renewals stay as durable as
 * before (a renewal is answered only once committed). Each node's answer is what mc_heartbeat gives
 * it alone. */

#include "control.h"

int heartbeats_new(Control *c, Heartbeats **ret);
/* Answers every heartbeat still waiting with -ECANCELED. Call after db_free(), which answers the ones
 * whose statement was in flight. */
Heartbeats *heartbeats_free(Heartbeats *h);

/* code and body: mc_heartbeat's answer, when error is 0. */
typedef void (*HeartbeatCallback)(int error, unsigned code, const char *body, void *userdata);

/* Queues node's heartbeat (leases: the JSON array the agent sent, borrowed). req, when given, is the
 * agent's request: if its client has gone by the time the heartbeat would be sent to the database (an
 * agent that timed out and sends it again), it is dropped, answered with -ECANCELED. */
int heartbeat_send(Heartbeats *h, const char *node_id, json_object *leases, bool draining, HttpRequest *req,
                   HeartbeatCallback cb, void *userdata);

/* Heartbeats waiting for a statement (all HEARTBEAT_MAX_IN_FLIGHT are running). */
size_t heartbeats_n_queued(Heartbeats *h);
