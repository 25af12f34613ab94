/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "awaits.h"
#include "claim.h"
#include "daemon-util.h"
#include "json-check.h"
#include "json-util.h"
#include "list.h"
#include "log.h"

/* The claims of several waiters go to the database as one statement (mc_claim_batch): group commit.
 * A claim that needs a query joins the ready queue, which is sent from a deferred event (so the claims
 * that arrive in one loop iteration share a statement) while fewer than CLAIM_MAX_IN_FLIGHT statements
 * run (the second only with enough claims: may_send()); the claims that arrive while they run share
 * the next one. Alone, a claim is sent at once, as before; under load the batches grow with the
 * load, up to CLAIM_BATCH_MAX. */
#define CLAIM_BATCH_MAX 64
#define CLAIM_MAX_IN_FLIGHT 2
#define CLAIM_SECOND_BATCH_MIN 8
#define CLAIM_SECOND_BATCH_WAIT_USEC (5 * USEC_PER_MSEC)

typedef enum WaiterState {
        WAITER_READY,           /* in the ready queue, its query not sent yet */
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
        uint64_t arrived_usec;  /* when the claim came (its body read) */
        uint64_t query_start_usec;
        sd_event_source *timer;
        Waiter *ready_next;
        LIST_FIELDS(Waiter);
};

/* One statement in flight: its waiters in the order of p_nodes. */
typedef struct ClaimBatch {
        ClaimWaiters *owner;
        size_t n;
        Waiter *waiters[];
} ClaimBatch;

struct ClaimWaiters {
        Control *control;
        Waiter *head, *tail;
        size_t n;
        uint64_t gen;
        uint64_t wake_budget;
        Waiter *ready_head, *ready_tail;
        size_t n_ready;
        unsigned in_flight;
        size_t claims_in_flight;
        sd_event_source *defer;
        sd_event_source *hold;          /* armed while claims wait for the second statement */
        bool hold_passed;
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

/* The lease's answer, with how long the claim was held here before the statement that granted the
 * lease began ("held_ms", rounded down): the lease's TTL runs from that statement, so the agent can
 * count its deadline from its request's send plus held_ms, not from the send alone (a claim that
 * queued here under load no longer looks late). NULL when the body is not an object or on OOM: the
 * answer goes without it, and the agent counts from its send, as before. */
static char *answer_with_held_ms(const char *body, uint64_t held_usec) {
        char *s = NULL;

        if (body[0] != '{')
                return NULL;
        if (asprintf(&s, "{\"held_ms\":%" PRIu64 "%s%s", held_usec / USEC_PER_MSEC, body[1] == '}' ? "" : ",",
                     body + 1) < 0)
                return NULL;
        return s;
}

/* The claim of w is done: error < 0 (the statement failed), or code 200 or 404 with body, or code 0
 * (nothing for it now). */
static void waiter_done(Waiter *w, int error, unsigned code, const char *body, const char *task_id,
                        const char *token, const char *attempt) {
        ClaimWaiters *o = w->owner;
        Control *c = o->control;
        bool woken = TAKE_PTR(w->woken) != 0;

        histogram_observe(&c->metrics.claim_latency, metrics_latency_bounds,
                          (double) (now_usec() - w->query_start_usec) / 1e6);

        if (error < 0) {
                _cleanup_free_ char *e = control_error_body(NULL, "Database unavailable; retry the claim.");
                http_request_reply(w->req, control_db_error_code(error), "application/json", e ?: "{}",
                                   e ? strlen(e) : 2);
                waiter_free(w);
                return;
        }

        if (code != 0) {
                _cleanup_free_ char *held = NULL;

                if (code == 200) {
                        c->metrics.leases_granted++;
                        control_task_changed(c, task_id, TASK_STATUS_LEASED, MC_EVENT_LEASE_ACQUIRED,
                                             w->node_id, token, attempt,
                                             "Lease granted");
                        held = answer_with_held_ms(body, w->query_start_usec - w->arrived_usec);
                }
                body = held ?: body;
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
        /* From now on a task queued anywhere must be announced to us. */
        awaits_need(o->control->awaits, AWAIT_QUEUED);
        pump(o);
}

static void claim_flush(ClaimWaiters *o);

static void send_batch(ClaimWaiters *o, ClaimBatch *b);

static void on_batch_result(PGresult *r, int error, void *userdata) {
        ClaimBatch *b = userdata;
        ClaimWaiters *o = b->owner;
        /* 0: nothing found; (unsigned) -1: ask again alone */
        _cleanup_free_ unsigned *codes = calloc(b->n, sizeof(unsigned));
        _cleanup_free_ int *rows = calloc(b->n, sizeof(int));

        assert(o->in_flight > 0);
        o->in_flight--;
        o->claims_in_flight -= b->n;

        if (!codes || !rows)
                error = -ENOMEM;
        else if (error >= 0 && (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 6))
                error = -EIO;
        if (error >= 0)
                for (int i = 0; i < PQntuples(r); i++) {
                        long k = strtol(PQgetvalue(r, i, 0), NULL, 10);
                        unsigned code = (unsigned) atoi(PQgetvalue(r, i, 1));

                        if (k < 1 || (size_t) k > b->n || (code != 0 && code != 200 && code != 404)) {
                                error = -EIO;
                                break;
                        }
                        codes[k - 1] = code == 0 ? (unsigned) -1 : code;
                        rows[k - 1] = i;
                }

        for (size_t i = 0; i < b->n; i++) {
                Waiter *w = b->waiters[i];

                if (error < 0)
                        waiter_done(w, error, 0, NULL, NULL, NULL, NULL);
                else if (codes[i] == (unsigned) -1) {
                        /* Its node's lock, or a task mc_explain_pending holds, is another transaction's:
                         * ask alone, which waits for it, as a claim always did. */
                        ClaimBatch *alone = malloc(offsetof(ClaimBatch, waiters) + sizeof(Waiter *));

                        if (!alone) {
                                waiter_done(w, -ENOMEM, 0, NULL, NULL, NULL, NULL);
                                continue;
                        }
                        *alone = (ClaimBatch) { .owner = o, .n = 1 };
                        alone->waiters[0] = w;
                        send_batch(o, alone);
                } else if (codes[i] == 0)
                        waiter_done(w, 0, 0, NULL, NULL, NULL, NULL);
                else
                        waiter_done(w, 0, codes[i], PQgetvalue(r, rows[i], 2), PQgetvalue(r, rows[i], 3),
                                    PQgetvalue(r, rows[i], 4), PQgetvalue(r, rows[i], 5));
        }
        free(b);
        claim_flush(o);
}

/* The text array literal of the batch's node ids ({"a","b"}); NULL on OOM. Node ids are validated
 * ([A-Za-z0-9._-]), quoted all the same. */
static char *batch_nodes_literal(const ClaimBatch *b) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return NULL;
        fputc('{', f);
        for (size_t i = 0; i < b->n; i++) {
                if (i > 0)
                        fputc(',', f);
                fputc('"', f);
                for (const char *p = b->waiters[i]->node_id; *p; p++) {
                        if (*p == '"' || *p == '\\')
                                fputc('\\', f);
                        fputc(*p, f);
                }
                fputc('"', f);
        }
        fputc('}', f);
        if (fclose(f) != 0)
                return NULL;
        return TAKE_PTR(buf);
}

/* Sends b; a batch of one waits for its node's lock as a claim always did (p_wait), a batch of several
 * never waits (mc_claim_batch). */
static void send_batch(ClaimWaiters *o, ClaimBatch *b) {
        Control *c = o->control;
        _cleanup_free_ char *nodes = batch_nodes_literal(b);
        char ttl[32];
        const char *params[3] = { nodes, ttl, b->n == 1 ? "true" : "false" };
        uint64_t t = now_usec();
        int r;

        for (size_t i = 0; i < b->n; i++) {
                b->waiters[i]->state = WAITER_QUERYING;
                /* The statement sees every task whose notification came before this. */
                b->waiters[i]->query_gen = o->gen;
                b->waiters[i]->query_start_usec = t;
        }
        o->in_flight++;
        o->claims_in_flight += b->n;
        histogram_observe(&c->metrics.claim_batch_size, metrics_batch_bounds, (double) b->n);
        if (!nodes) {
                on_batch_result(NULL, -ENOMEM, b);
                return;
        }
        snprintf(ttl, sizeof(ttl), "%" PRIi64, c->config.lease_ttl_ms);
        r = db_query(c->db,
                     "SELECT r_i, r_code, r_body, r_task, r_token, r_attempt "
                     "FROM mc_claim_batch($1::text[], $2::integer, $3::boolean)",
                     3, params, on_batch_result, b);
        if (r < 0)
                on_batch_result(NULL, r, b);
}

/* A statement goes at once when none runs. While one runs, another goes with half as many claims as
 * the running one has (at most CLAIM_SECOND_BATCH_MIN), or once the first of those waiting has
 * waited CLAIM_SECOND_BATCH_WAIT_USEC (a statement held up by a lock holds the others no longer than
 * that); else they go with what comes meanwhile when the running one returns. A call of
 * mc_claim_batch costs PostgreSQL about as much as three claims in it, so a second statement of one
 * or two claims, sent while the agents' next claims are still on their way, cost more CPU than the
 * wait saved: with 32 claimers the batches' mean rose from 8 to 13 and the claims per second by
 * about a fifth. With a few claimers the running statement is small, and so is the second's
 * threshold: there the second statement is what keeps the cores busy (bench/control/README.md). */
static bool may_send(ClaimWaiters *o, bool waited) {
        size_t needed = MIN((o->claims_in_flight + 1) / 2, (size_t) CLAIM_SECOND_BATCH_MIN);

        if (!o->ready_head)
                return false;
        return o->in_flight == 0 ||
               (o->in_flight < CLAIM_MAX_IN_FLIGHT && (waited || o->n_ready >= needed));
}

static void hold_update(ClaimWaiters *o) {
        int enabled = SD_EVENT_OFF;

        if (!o->ready_head || o->in_flight == 0 || o->in_flight >= CLAIM_MAX_IN_FLIGHT) {
                /* Nothing waits for the second statement's place. */
                (void) sd_event_source_set_enabled(o->hold, SD_EVENT_OFF);
                return;
        }
        /* Armed once, for the first claim that waits: later ones do not push it back. */
        (void) sd_event_source_get_enabled(o->hold, &enabled);
        if (enabled == SD_EVENT_OFF &&
            (sd_event_source_set_time_relative(o->hold, CLAIM_SECOND_BATCH_WAIT_USEC) < 0 ||
             sd_event_source_set_enabled(o->hold, SD_EVENT_ONESHOT) < 0))
                o->hold_passed = true;  /* cannot time the wait: do not wait */
}

static void claim_flush(ClaimWaiters *o) {
        bool waited = o->hold_passed;

        o->hold_passed = false;
        while (may_send(o, waited)) {
                ClaimBatch *b = malloc(offsetof(ClaimBatch, waiters) + CLAIM_BATCH_MAX * sizeof(Waiter *));
                Waiter *w;

                if (!b) {
                        /* Answer one so that we make progress; the others stay ready. */
                        w = o->ready_head;
                        o->ready_head = w->ready_next;
                        o->n_ready--;
                        if (!o->ready_head)
                                o->ready_tail = NULL;
                        w->ready_next = NULL;
                        w->query_start_usec = now_usec();
                        waiter_done(w, -ENOMEM, 0, NULL, NULL, NULL, NULL);
                        continue;
                }
                *b = (ClaimBatch) { .owner = o };
                while (b->n < CLAIM_BATCH_MAX && (w = o->ready_head)) {
                        o->ready_head = w->ready_next;
                        o->n_ready--;
                        w->ready_next = NULL;
                        /* A client that gave up waiting (its agent's timeout) would never learn of a
                         * lease granted to it now: the task would sit leased to nobody until the
                         * lease expired, and count an attempt. */
                        if (http_request_peer_gone(w->req)) {
                                o->control->metrics.claims_abandoned++;
                                waiter_reply_empty(w);
                                continue;
                        }
                        b->waiters[b->n++] = w;
                }
                if (!o->ready_head)
                        o->ready_tail = NULL;
                if (b->n == 0) {
                        free(b);
                        continue;
                }
                send_batch(o, b);
        }
        hold_update(o);
}

static int on_hold(sd_event_source *s, uint64_t usec, void *userdata) {
        ClaimWaiters *o = userdata;

        o->hold_passed = true;
        claim_flush(o);
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        claim_flush(userdata);
        return 0;
}

/* w needs a query: into the ready queue, sent from the deferred event or when a batch returns. */
static void waiter_query(Waiter *w) {
        ClaimWaiters *o = w->owner;

        w->state = WAITER_READY;
        w->ready_next = NULL;
        if (o->ready_tail)
                o->ready_tail->ready_next = w;
        else
                o->ready_head = w;
        o->ready_tail = w;
        o->n_ready++;
        (void) sd_event_source_set_enabled(o->defer, SD_EVENT_ONESHOT);
}

static int on_waiter_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Waiter *w = userdata;

        w->expired = true;
        if (w->state == WAITER_WAITING)
                waiter_reply_empty(w);
        /* A query in flight, or about to be sent, answers when it returns. */
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
        w->arrived_usec = now_usec();
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

void claim_waiters_wake_node(ClaimWaiters *o, const char *node_id) {
        assert(o);
        assert(node_id);

        o->gen++;
        for (Waiter *w = o->head, *next; w; w = next) {
                next = w->next;
                if (w->state == WAITER_WAITING && !w->expired && streq(w->node_id, node_id)) {
                        w->tried_gen = o->gen;
                        waiter_query(w);
                }
        }
}

void claim_waiters_wake_any(ClaimWaiters *o, uint64_t n_tasks) {
        assert(o);

        o->gen++;
        o->wake_budget += MAX(n_tasks, (uint64_t) 1);
        pump(o);
}

void claim_waiters_notify(ClaimWaiters *o, const char *payload) {
        const char *node;

        if ((node = startswith(payload, "@")))
                claim_waiters_wake_node(o, node);
        else
                claim_waiters_wake_any(o, (uint64_t) MAX(atoll(payload), 1LL));
}

void claim_waiters_wake_all(ClaimWaiters *o) {
        o->gen++;
        o->wake_budget = o->n;
        pump(o);
}

int claim_waiters_new(Control *c, ClaimWaiters **ret) {
        ClaimWaiters *o = calloc(1, sizeof(ClaimWaiters));
        int r;

        if (!o)
                return -ENOMEM;
        o->control = c;
        r = sd_event_add_defer(c->event, &o->defer, on_defer, o);
        if (r < 0) {
                free(o);
                return r;
        }
        (void) sd_event_source_set_description(o->defer, "claim-flush");
        (void) sd_event_source_set_enabled(o->defer, SD_EVENT_OFF);
        r = sd_event_add_time_relative(c->event, &o->hold, CLOCK_MONOTONIC, CLAIM_SECOND_BATCH_WAIT_USEC,
                                       USEC_PER_MSEC, on_hold, o);
        if (r < 0) {
                sd_event_source_disable_unref(o->defer);
                free(o);
                return r;
        }
        (void) sd_event_source_set_description(o->hold, "claim-second-batch");
        (void) sd_event_source_set_enabled(o->hold, SD_EVENT_OFF);
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
         * what is left is waiting, or ready with its query not sent. */
        o->ready_head = o->ready_tail = NULL;
        o->n_ready = 0;
        while (o->head)
                waiter_reply_empty(o->head);
        sd_event_source_disable_unref(o->defer);
        sd_event_source_disable_unref(o->hold);
        free(o);
        return NULL;
}
