/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "claim.h"
#include "daemon-util.h"
#include "json-check.h"
#include "json-util.h"
#include "list.h"
#include "log.h"

typedef enum WaiterState {
        WAITER_QUERYING,
        WAITER_WAITING,
} WaiterState;

typedef struct Waiter Waiter;
struct Waiter {
        ClaimWaiters *owner;
        HttpRequest *req;
        char node_id[129];
        WaiterState state;
        bool expired;
        bool woken;             /* this query was started by a notification's wake budget */
        uint64_t query_gen;     /* notification generation when the query was sent */
        uint64_t tried_gen;     /* generation in which a notification last woke it */
        uint64_t query_start_usec;
        sd_event_source *timer;
        LIST_FIELDS(Waiter);
};

struct ClaimWaiters {
        Control *control;
        Waiter *head, *tail;
        size_t n;
        uint64_t gen;
        uint64_t wake_budget;
};

static void waiter_query(Waiter *w);

static void waiter_free(Waiter *w) {
        ClaimWaiters *o = w->owner;

        LIST_REMOVE_QUEUED(o->head, o->tail, w);
        o->n--;
        sd_event_source_disable_unref(w->timer);
        free(w);
}

static void waiter_reply_empty(Waiter *w) {
        http_request_reply(w->req, 204, NULL, "", 0);
        waiter_free(w);
}

static void pump(ClaimWaiters *o) {
        while (o->wake_budget > 0) {
                Waiter *w;

                for (w = o->head; w; w = w->next)
                        if (w->state == WAITER_WAITING && !w->expired && w->tried_gen != o->gen)
                                break;
                if (!w) {
                        /* Everybody had a go in this round. */
                        o->wake_budget = 0;
                        return;
                }
                o->wake_budget--;
                w->tried_gen = o->gen;
                w->woken = true;
                waiter_query(w);
        }
}

static void on_claim_result(PGresult *r, int error, void *userdata) {
        Waiter *w = userdata;
        ClaimWaiters *o = w->owner;
        Control *c = o->control;
        bool woken = TAKE_PTR(w->woken) != 0;

        histogram_observe(&c->metrics.claim_latency, metrics_latency_bounds,
                          (double) (now_usec() - w->query_start_usec) / 1e6);

        if (error < 0 || !r) {
                _cleanup_free_ char *body = control_error_body(NULL, "Database unavailable; retry the claim.");
                http_request_reply(w->req, control_db_error_code(error), "application/json", body ?: "{}",
                                   body ? strlen(body) : 2);
                waiter_free(w);
                return;
        }

        if (PQntuples(r) == 1) {
                unsigned code = (unsigned) atoi(PQgetvalue(r, 0, 0));
                const char *body = PQgetvalue(r, 0, 1);

                if (code == 200) {
                        _cleanup_json_ json_object *o2 = NULL;
                        char token[32] = "", attempt[16] = "", id[160] = "";
                        json_object *t, *v;

                        /* Only for the journal entry: pull out id, token and attempt. */
                        if (json_parse_strict(body, strlen(body), &o2, NULL) >= 0) {
                                if (json_object_object_get_ex(o2, "task", &t) && json_object_object_get_ex(t, "id", &v))
                                        snprintf(id, sizeof(id), "%s", json_object_get_string(v));
                                if (json_object_object_get_ex(o2, "lease_token", &v))
                                        snprintf(token, sizeof(token), "%" PRIi64, json_object_get_int64(v));
                                if (json_object_object_get_ex(o2, "attempt", &v))
                                        snprintf(attempt, sizeof(attempt), "%d", json_object_get_int(v));
                        }
                        c->metrics.leases_granted++;
                        control_task_changed(c, id, TASK_STATUS_LEASED, MC_EVENT_LEASE_ACQUIRED,
                                             w->node_id, token, attempt,
                                             "Lease granted");
                }
                http_request_reply(w->req, code, "application/json", body, strlen(body));
                waiter_free(w);
                /* A woken claim that found a task: the notification's task went to this node. */
                return;
        }

        /* Nothing for us now. */
        if (woken) {
                /* Pass the turn on: the task that woke us may fit another node. */
                o->wake_budget++;
        }
        if (w->expired) {
                waiter_reply_empty(w);
                pump(o);
                return;
        }
        if (w->query_gen != o->gen) {
                /* A notification arrived while we were asking: ask again, it may be for us. */
                waiter_query(w);
                pump(o);
                return;
        }
        w->state = WAITER_WAITING;
        pump(o);
}

static void waiter_query(Waiter *w) {
        ClaimWaiters *o = w->owner;
        Control *c = o->control;
        char ttl[32];
        const char *params[2] = { w->node_id, ttl };
        int r;

        snprintf(ttl, sizeof(ttl), "%" PRIi64, c->config.lease_ttl_ms);
        w->state = WAITER_QUERYING;
        w->query_gen = o->gen;
        w->query_start_usec = now_usec();
        r = db_query(c->db, "SELECT code, body FROM mc_claim($1, $2::integer)", 2, params, on_claim_result, w);
        if (r < 0)
                on_claim_result(NULL, r, w);
}

static int on_waiter_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Waiter *w = userdata;

        w->expired = true;
        if (w->state == WAITER_WAITING)
                waiter_reply_empty(w);
        /* A query in flight answers when it returns. */
        return 0;
}

int claim_start(Control *c, HttpRequest *req, const char *node_id, uint64_t wait_usec) {
        ClaimWaiters *o = c->waiters;
        Waiter *w;
        int r;

        w = calloc(1, sizeof(Waiter));
        if (!w)
                return -ENOMEM;
        w->owner = o;
        w->req = req;
        snprintf(w->node_id, sizeof(w->node_id), "%s", node_id);
        w->tried_gen = o->gen;
        w->expired = wait_usec == 0;
        if (wait_usec > 0) {
                r = sd_event_add_time_relative(c->event, &w->timer, CLOCK_MONOTONIC, wait_usec, 10 * USEC_PER_MSEC,
                                               on_waiter_timeout, w);
                if (r < 0) {
                        free(w);
                        return r;
                }
        }
        LIST_APPEND(o->head, o->tail, w);
        o->n++;

        waiter_query(w);
        return 0;
}

void claim_waiters_notify(ClaimWaiters *o, const char *payload) {
        const char *node;

        o->gen++;
        if ((node = startswith(payload, "@"))) {
                for (Waiter *w = o->head, *next; w; w = next) {
                        next = w->next;
                        if (w->state == WAITER_WAITING && !w->expired && streq(w->node_id, node)) {
                                w->tried_gen = o->gen;
                                waiter_query(w);
                        }
                }
                return;
        }

        o->wake_budget += (uint64_t) MAX(atoll(payload), 1LL);
        pump(o);
}

void claim_waiters_wake_all(ClaimWaiters *o) {
        o->gen++;
        o->wake_budget = o->n;
        pump(o);
}

int claim_waiters_new(Control *c, ClaimWaiters **ret) {
        ClaimWaiters *o = calloc(1, sizeof(ClaimWaiters));

        if (!o)
                return -ENOMEM;
        o->control = c;
        *ret = o;
        return 0;
}

size_t claim_waiters_n(ClaimWaiters *o) {
        return o ? o->n : 0;
}

ClaimWaiters *claim_waiters_free(ClaimWaiters *o) {
        if (!o)
                return NULL;
        /* Called after the database was closed, which answered every claim that had a query in flight;
         * what is left is waiting. */
        while (o->head)
                waiter_reply_empty(o->head);
        free(o);
        return NULL;
}
