/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The TasksChanged(a(ss) changes) signal of org.mutualcloud.Control1: every task change, as (id,
 * status) in the order they happened, coalesced so that the bus carries at most one signal per
 * TASK_SIGNALS_INTERVAL_USEC however many tasks change (or one per TASK_SIGNALS_MAX changes, when
 * more than that come within an interval).
 *
 * Why not one signal per change: with the control on a bus (as installed, on the system bus), a
 * TaskChanged per push cost mc-control about 30 µs of CPU and the bus daemon 33 µs, and one client's
 * pushes fell from about 1 730 to 1 410 a second on a 2-core machine (bench/control/push-ab --bus):
 * a fourth process woken for every task, on the path of every push, whether or not anyone listens.
 *
 * A change after a quiet interval goes out at once; changes within TASK_SIGNALS_INTERVAL_USEC of the
 * last signal wait for the next one, and a signal never holds more than TASK_SIGNALS_MAX changes.
 * Signals are best effort, as they always were: the database and the HTTP event stream have every
 * change. */

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#define TASK_SIGNALS_INTERVAL_USEC (100 * USEC_PER_MSEC)
#define TASK_SIGNALS_MAX 4096u

typedef struct TaskSignals TaskSignals;

int task_signals_new(sd_bus *bus, sd_event *event, const char *path, const char *interface,
                     TaskSignals **ret);
/* Sends what is pending, then frees. */
TaskSignals *task_signals_free(TaskSignals *s);

void task_signals_add(TaskSignals *s, const char *id, const char *status);
