/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What this replica waits to be told, held in the database so that nobody announces to nobody
 * (functions.sql, "Announcing only to someone waiting"): a task queued, while claims wait here
 * (AWAIT_QUEUED); every change of a task and its live output, while watches or streams are open here
 * (AWAIT_EVENTS). The listening connection holds one advisory lock per kind (mc_await(), run through
 * db_set_listener_state()). A kind is taken as soon as the first claim or watch needs it, and kept
 * until none has for AWAITS_LINGER_USEC, so that claims coming and going do not take and let go of
 * it each time. Once the database holds what was asked, claims and watches look again (control-main.c):
 * a change made before then may not have been announced.
 *
 * A control of an older version listens without saying what it waits for: every fifth second the
 * database is asked whether one does (mc_unaware_listeners()), and while one does, this control
 * asks for everything on its behalf. */

#include "control.h"

typedef enum AwaitKind {
        AWAIT_QUEUED,
        AWAIT_EVENTS,
        _AWAIT_KIND_MAX,
} AwaitKind;

const char *await_kind_to_string(AwaitKind k);

int awaits_new(Control *c, Awaits **ret);
Awaits *awaits_free(Awaits *a);

/* A claim started to wait (AWAIT_QUEUED), a watch or stream began (AWAIT_EVENTS). */
void awaits_need(Awaits *a, AwaitKind kind);
/* The kinds (bits 1 << AwaitKind) last asked of the database, held or about to be. */
unsigned awaits_kinds(const Awaits *a);
/* Whether the database holds kind for this replica now: changes are announced to it. */
bool awaits_holds(const Awaits *a, AwaitKind kind);
