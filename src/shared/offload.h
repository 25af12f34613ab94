/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Calls that may block for long, run on a thread of their own so that the event loop goes on.
 *
 * What it is for: creating or removing a cgroup directory (mkdir(2), rmdir(2)) waits on the kernel's
 * one global cgroup mutex. On a host where many cgroups come and go at once (a thousand agents'
 * tasks), one such call waited for seconds, and an agent waiting in its loop renewed no lease.
 *
 * An Offload has one thread, which runs the calls' work in the order they were submitted. When a
 * work has returned, its done runs on the event loop with the work's result, then its destroy. The
 * work gets nothing from the loop while it runs: it owns its userdata until done.
 *
 * A pending call can be cancelled (its owner goes away): its done is not called; its work runs all
 * the same (what it does on the host, its owner had asked for) and destroy frees userdata after.
 *
 * offload_free() runs what is still queued, so that the host is left as the owners asked, joins the
 * thread and destroys every call's userdata; it calls no done. Not to be called from a done. */

#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Offload Offload;
typedef struct OffloadCall OffloadCall;

typedef int (*OffloadWorkFn)(void *userdata);                   /* on the thread */
typedef void (*OffloadDoneFn)(int result, void *userdata);      /* on the loop */
typedef void (*OffloadDestroyFn)(void *userdata);               /* on the loop, or in offload_free() */

int offload_new(sd_event *e, const char *name, Offload **ret);
Offload *offload_free(Offload *o);
DEFINE_TRIVIAL_CLEANUP_FUNC(Offload *, offload_free);

/* ret_call (may be NULL) is valid until done is called or the call is cancelled. On failure nothing
 * was taken: userdata is still the caller's. */
int offload_submit(Offload *o, OffloadWorkFn work, OffloadDoneFn done, OffloadDestroyFn destroy, void *userdata,
                   OffloadCall **ret_call);
void offload_call_cancel(OffloadCall *c);

/* Calls submitted whose done has not run yet (cancelled ones included). */
size_t offload_pending(Offload *o);
