/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "awaits.h"
#include "claim.h"
#include "daemon-util.h"
#include "db.h"
#include "log.h"
#include "watch.h"

#define AWAITS_LINGER_USEC (5 * USEC_PER_SEC)
#define AWAITS_CHECK_USEC USEC_PER_SEC
/* Ticks between two looks for listeners of older controls, and how long one seen counts. */
#define AWAITS_UNAWARE_EVERY 5
#define AWAITS_UNAWARE_USEC (12 * USEC_PER_SEC)
#define AWAITS_ALL ((1u << _AWAIT_KIND_MAX) - 1)

struct Awaits {
        Control *control;
        unsigned kinds;                         /* asked of the database */
        uint64_t last_needed[_AWAIT_KIND_MAX];  /* when a claim or watch last needed each kind */
        uint64_t unaware_seen_usec;             /* when a listener of an older control was last seen */
        bool looking;                           /* mc_unaware_listeners() in flight */
        unsigned ticks;
        sd_event_source *timer;
};

static const char *const await_kind_table[_AWAIT_KIND_MAX] = {
        [AWAIT_QUEUED] = "queued",
        [AWAIT_EVENTS] = "events",
};

const char *await_kind_to_string(AwaitKind k) {
        return k >= 0 && k < _AWAIT_KIND_MAX ? await_kind_table[k] : NULL;
}

/* Whether anyone here needs kind now. */
static bool kind_in_use(Awaits *a, AwaitKind kind) {
        Control *c = a->control;

        assert(kind >= 0 && kind < _AWAIT_KIND_MAX);
        if (kind == AWAIT_QUEUED)
                return c->waiters && claim_waiters_n(c->waiters) > 0;
        return c->watchers && watchers_n(c->watchers) > 0;
}

static void awaits_set(Awaits *a, unsigned kinds) {
        bool queued = kinds & (1u << AWAIT_QUEUED), events = kinds & (1u << AWAIT_EVENTS);
        char sql[64];
        int r;

        if (kinds == a->kinds)
                return;
        /* mc_await()'s argument: the kinds' names, comma-separated. */
        snprintf(sql, sizeof(sql), "SELECT mc_await('%s%s%s')", queued ? await_kind_to_string(AWAIT_QUEUED) : "",
                 queued && events ? "," : "", events ? await_kind_to_string(AWAIT_EVENTS) : "");
        r = db_set_listener_state(a->control->db, sql);
        if (r < 0) {
                log_warning_errno(r, "Cannot ask the database for notifications (%s): %m", sql);
                return;
        }
        log_debug("Waiting for the database's notifications: %s", sql);
        a->kinds = kinds;
}

static bool unaware_listening(Awaits *a, uint64_t now) {
        return a->unaware_seen_usec > 0 && now - a->unaware_seen_usec < AWAITS_UNAWARE_USEC;
}

static void on_unaware_listeners(PGresult *r, int error, void *userdata) {
        Awaits *a = userdata;
        uint64_t now = now_usec();
        bool before = unaware_listening(a, now);

        a->looking = false;
        if (error < 0 || PQntuples(r) != 1)
                return; /* next time */
        if (atoll(PQgetvalue(r, 0, 0)) > 0)
                a->unaware_seen_usec = now;
        if (unaware_listening(a, now) != before)
                log_info(before ? "No control of an older version listens any more; the database announces changes only to "
                                  "replicas waiting for them." :
                                  "A control of an older version listens without saying what it waits for; asking the "
                                  "database to announce every change on its behalf.");
        if (!before && unaware_listening(a, now))
                awaits_set(a, AWAITS_ALL);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Awaits *a = userdata;
        Control *c = a->control;
        uint64_t now = now_usec();
        unsigned kinds = 0;

        for (AwaitKind k = 0; k < _AWAIT_KIND_MAX; k++) {
                if (kind_in_use(a, k))
                        a->last_needed[k] = now;
                if (a->last_needed[k] > 0 && now - a->last_needed[k] < AWAITS_LINGER_USEC)
                        kinds |= 1u << k;
        }
        if (unaware_listening(a, now))
                kinds = AWAITS_ALL;
        awaits_set(a, kinds);

        if (++a->ticks % AWAITS_UNAWARE_EVERY == 0 && !a->looking && db_is_available(c->db) &&
            db_query(c->db, "SELECT mc_unaware_listeners()", 0, NULL, on_unaware_listeners, a) >= 0)
                a->looking = true;
        (void) sd_event_source_set_time_relative(s, AWAITS_CHECK_USEC);
        return 0;
}

void awaits_need(Awaits *a, AwaitKind kind) {
        assert(a);
        assert(kind >= 0 && kind < _AWAIT_KIND_MAX);

        a->last_needed[kind] = now_usec();
        awaits_set(a, a->kinds | (1u << kind));
}

unsigned awaits_kinds(const Awaits *a) {
        return a ? a->kinds : 0;
}

bool awaits_holds(const Awaits *a, AwaitKind kind) {
        return a && (a->kinds & (1u << kind)) && db_listener_state_applied(a->control->db);
}

int awaits_new(Control *c, Awaits **ret) {
        Awaits *a;
        int r;

        a = calloc(1, sizeof(Awaits));
        if (!a)
                return -ENOMEM;
        a->control = c;
        r = sd_event_add_time_relative(c->event, &a->timer, CLOCK_MONOTONIC, AWAITS_CHECK_USEC,
                                       100 * USEC_PER_MSEC, on_timer, a);
        if (r < 0) {
                free(a);
                return r;
        }
        (void) sd_event_source_set_enabled(a->timer, SD_EVENT_ON);
        /* Waiting for nothing yet, but holding mc_await_key('aware'), which tells other controls
         * that this one says what it waits for. */
        r = db_set_listener_state(c->db, "SELECT mc_await('')");
        if (r < 0) {
                awaits_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

Awaits *awaits_free(Awaits *a) {
        if (!a)
                return NULL;
        sd_event_source_disable_unref(a->timer);
        free(a);
        return NULL;
}
