/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "daemon-util.h"
#include "log.h"
#include "macro.h"
#include "task-signals.h"

struct TaskSignals {
        sd_bus *bus;
        const char *path, *interface;   /* static strings of the caller */
        sd_event_source *timer;         /* armed while changes wait for the interval to pass */
        sd_bus_message *pending;        /* the next signal, its array open; NULL: nothing waits */
        unsigned n_pending;
        uint64_t sent_usec;             /* when the last signal went out (0: never) */
};

static void task_signals_send(TaskSignals *s) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = TAKE_PTR(s->pending);
        int r;

        s->n_pending = 0;
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        if (!m)
                return;
        s->sent_usec = now_usec();
        r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_send(s->bus, m, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to send TasksChanged: %m");
}

static int on_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        task_signals_send(userdata);
        return 0;
}

void task_signals_add(TaskSignals *s, const char *id, const char *status) {
        int r;

        if (!s)
                return;
        assert(id);
        assert(status);

        if (!s->pending) {
                r = sd_bus_message_new_signal(s->bus, &s->pending, s->path, s->interface, "TasksChanged");
                if (r >= 0)
                        r = sd_bus_message_open_container(s->pending, 'a', "(ss)");
                if (r < 0) {
                        s->pending = sd_bus_message_unref(s->pending);
                        log_debug_errno(r, "Failed to start a TasksChanged signal: %m");
                        return;
                }
        }
        r = sd_bus_message_append(s->pending, "(ss)", id, status);
        if (r < 0) {
                /* A message half-appended cannot be closed: drop what waited rather than send garbage. */
                s->pending = sd_bus_message_unref(s->pending);
                s->n_pending = 0;
                log_debug_errno(r, "Failed to add to a TasksChanged signal: %m");
                return;
        }
        s->n_pending++;

        uint64_t due = s->sent_usec + TASK_SIGNALS_INTERVAL_USEC;
        if (s->sent_usec == 0 || s->n_pending >= TASK_SIGNALS_MAX || now_usec() >= due) {
                task_signals_send(s);
                return;
        }
        if (s->n_pending == 1 &&
            (sd_event_source_set_time(s->timer, due) < 0 ||
             sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT) < 0))
                task_signals_send(s);   /* no timer: better a signal now than one never sent */
}

int task_signals_new(sd_bus *bus, sd_event *event, const char *path, const char *interface,
                     TaskSignals **ret) {
        _cleanup_free_ TaskSignals *s = NULL;
        int r;

        assert(bus);
        assert(event);
        assert(path);
        assert(interface);
        assert(ret);

        s = calloc(1, sizeof(TaskSignals));
        if (!s)
                return -ENOMEM;
        r = sd_event_add_time(event, &s->timer, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC, on_timer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        s->bus = sd_bus_ref(bus);
        s->path = path;
        s->interface = interface;
        *ret = TAKE_PTR(s);
        return 0;
}

TaskSignals *task_signals_free(TaskSignals *s) {
        if (!s)
                return NULL;
        task_signals_send(s);
        sd_event_source_disable_unref(s->timer);
        sd_bus_unref(s->bus);
        free(s);
        return NULL;
}
