/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Long-poll claims. A claim that finds nothing waits (its HTTP request suspended) until a task that it
 * could take is queued on any replica, which PostgreSQL's NOTIFY tells every replica (the task's event
 * on mc_events), or its node has capacity again (mc_queued), or until its wait runs out (204). A
 * notification wakes only as many waiting claims as tasks were queued, or the waiting claims of one
 * node; a woken claim that finds nothing passes its turn on to another waiting claim, so a task no
 * woken node can take still reaches one that can. */

#include "control.h"

int claim_waiters_new(Control *c, ClaimWaiters **ret);
/* Answers every waiting claim with 204. Call after db_free(), which answers claims with a query in flight. */
ClaimWaiters *claim_waiters_free(ClaimWaiters *w);
size_t claim_waiters_n(ClaimWaiters *w);

/* Starts a claim for node; answers req when done. */
int claim_start(Control *c, HttpRequest *req, const char *node_id, uint64_t wait_usec);

/* A NOTIFY payload on mc_queued: "@node" (claim_waiters_wake_node()) or "<n>" (claim_waiters_wake_any()). */
void claim_waiters_notify(ClaimWaiters *w, const char *payload);
/* The waiting claims of node_id look again: a task for it was queued, or it has capacity again. */
void claim_waiters_wake_node(ClaimWaiters *w, const char *node_id);
/* As many waiting claims as n_tasks untargeted tasks were queued look again. */
void claim_waiters_wake_any(ClaimWaiters *w, uint64_t n_tasks);
/* Wakes every waiting claim (after the listener reconnected and may have missed notifications). */
void claim_waiters_wake_all(ClaimWaiters *w);
