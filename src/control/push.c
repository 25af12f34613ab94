/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "daemon-util.h"
#include "id-util.h"
#include "json-util.h"
#include "log.h"
#include "push.h"

#define PUSH_BATCH_MAX 512
/* One statement at a time: the pushes that arrive meanwhile all go in the next. With two, the second
 * left as soon as one push waited, so batches stayed small (2.7 pushes at 8 clients) and each push paid
 * a larger share of a statement, a commit and the listeners' wake: on two cores, one in flight took a
 * third less CPU per push in PostgreSQL and a quarter less in mc-control, and pushed more at 2 to 32
 * clients (bench/control/README.md, "One push statement at a time"). */
#define PUSH_MAX_IN_FLIGHT 1
#define PUSH_MAX_PENDING 100000

typedef struct PushItem PushItem;
struct PushItem {
        TaskSpec spec;
        char id[129];
        PushCallback callback;
        void *userdata;
        bool full;              /* PUSH_ONE_SQL inserted nothing: ask mc_push, which says why */
        char *spec_json;        /* item_spec_json() */
        PushItem *next;
};

typedef struct PushBatch {
        PushBatcher *batcher;
        PushItem **items;
        size_t n_items;
} PushBatch;

struct PushBatcher {
        Control *control;
        PushItem *head, *tail;
        size_t n_pending;
        unsigned in_flight;
        sd_event_source *defer;
};

static void push_flush(PushBatcher *p);

static void item_answer(PushBatcher *p, PushItem *it, unsigned code, const char *body) {
        it->callback(p->control, code, it->id, body, it->userdata);
        task_spec_done(&it->spec);
        free(it->spec_json);
        free(it);
}

static void item_answer_error(PushBatcher *p, PushItem *it, unsigned code, const char *field, const char *msg) {
        _cleanup_free_ char *body = control_error_body(field, "%s", msg);
        item_answer(p, it, code, body ?: "{}");
}

/* The specification as stored, serialised once for both the statement and the answer. */
static const char *item_spec_json(PushItem *it) {
        if (!it->spec_json)
                it->spec_json = strdup(json_to_string(it->spec.spec));
        return it->spec_json;
}

/* The 201 answer: the record as GET would return it, built here instead of read back. It is the
 * specification with the record's fields after it, put together as text: the specification is already
 * serialised (item_spec_json()) and holds none of these keys (task_spec_from_json() allows none), the
 * id is [A-Za-z0-9._-] only and created_at is mc_ts()'s digits and punctuation, so nothing needs
 * escaping; building a json-c object of it all to serialise it again was a tenth of the control's CPU
 * per push. */
static char *created_record(PushItem *it, const char *created_at) {
        const char *spec = item_spec_json(it);
        size_t n;
        char *body;

        if (!spec || !id_is_valid(it->id))
                return NULL;
        n = strlen(spec);
        /* A specification always has "image": a non-empty object. */
        if (n < 2 || spec[n - 1] != '}')
                return NULL;
        if (asprintf(&body, "%.*s,\"id\":\"%s\",\"status\":\"%s\",\"attempt\":0,\"created_at\":%s%s%s,"
                     "\"updated_at\":%s%s%s,\"finished_at\":null,\"pending_reason\":null,\"lease\":null,"
                     "\"result\":null,\"attempts\":[]}",
                     (int) (n - 1), spec, it->id, task_status_to_string(TASK_STATUS_QUEUED),
                     created_at ? "\"" : "", created_at ?: "null", created_at ? "\"" : "",
                     created_at ? "\"" : "", created_at ?: "null", created_at ? "\"" : "") < 0)
                return NULL;
        return body;
}

/* The commit's fate is unknown or it failed: tell the clients to retry (with an id, a retry is safe).
 * -ECONNRESET: the connection broke with the commit in flight, or the commit was not confirmed by the
 * synchronous standby (db.h); the tasks may be stored. */
static void batch_fail(PushBatcher *p, PushBatch *b, int error) {
        unsigned code = error == -EIO ? 500 : 503;
        const char *msg = error == -EIO ? "Database error; the task was not stored." :
                          error == -ECONNRESET ? "Database unavailable during the commit; the task may or may not be "
                                                 "stored: retry with the same id (200 if it was)." :
                                                 "Database unavailable; the task was not stored, retry.";

        for (size_t i = 0; i < b->n_items; i++)
                item_answer_error(p, b->items[i], code, NULL, msg);
}

static void item_created(PushBatcher *p, PushItem *it, const char *created_at) {
        Control *c = p->control;
        _cleanup_free_ char *body = created_record(it, created_at);

        c->metrics.tasks_pushed++;
        control_task_changed(c, it->id, TASK_STATUS_QUEUED, MC_EVENT_TASK_QUEUED, it->spec.target_node,
                             NULL, "0", "Task queued");
        item_answer(p, it, 201, body ?: "{}");
}

/* Back to the front of the queue, for the next batch. */
static void item_requeue(PushBatcher *p, PushItem *it) {
        it->next = p->head;
        p->head = it;
        if (!p->tail)
                p->tail = it;
        p->n_pending++;
}

static void on_one_done(PGresult *r, int error, void *userdata) {
        PushBatch *b = userdata;
        PushBatcher *p = b->batcher;
        PushItem *it = b->items[0];

        p->in_flight--;
        if (error >= 0 && (!r || PQntuples(r) > 1 || PQnfields(r) < 1))
                error = -EIO;
        if (error < 0)
                batch_fail(p, b, error);
        else {
                histogram_observe(&p->control->metrics.push_batch_size, metrics_batch_bounds, 1.0);
                if (PQntuples(r) == 0) {
                        /* Not inserted: the id exists, or was pushed at the same time. */
                        it->full = true;
                        item_requeue(p, it);
                } else
                        item_created(p, it, PQgetvalue(r, 0, 0));
        }
        free(b->items);
        free(b);
        push_flush(p);
}

static void on_batch_done(PGresult *r, int error, void *userdata) {
        PushBatch *b = userdata;
        PushBatcher *p = b->batcher;
        Control *c = p->control;
        size_t n_rows = r && !error ? (size_t) PQntuples(r) : 0;

        p->in_flight--;

        if (error < 0 || n_rows != b->n_items) {
                batch_fail(p, b, error);
                goto finish;
        }

        histogram_observe(&c->metrics.push_batch_size, metrics_batch_bounds, (double) b->n_items);
        for (size_t i = 0; i < b->n_items; i++) {
                PushItem *it = b->items[i];
                const char *result = PQgetvalue(r, (int) i, 1);
                const char *record = PQgetisnull(r, (int) i, 2) ? NULL : PQgetvalue(r, (int) i, 2);

                if (streq(result, "created")) {
                        _cleanup_json_ json_object *meta = NULL;
                        const char *created_at = NULL;

                        if (record && json_parse_strict(record, strlen(record), &meta, NULL) >= 0)
                                (void) json_get_string(meta, "created_at", &created_at);
                        item_created(p, it, created_at);
                } else if (streq(result, "exists"))
                        item_answer(p, it, 200, record ?: "{}");
                else if (streq(result, "invalid"))
                        /* What only the database can check: an input's content is not registered.
                         * record is the {"error", "field"} to answer with; nothing was stored. */
                        item_answer(p, it, 400, record ?: "{}");
                else if (streq(result, "retry"))
                        /* A concurrent push of the same id committed under us: look again next batch. */
                        item_requeue(p, it);
                else
                        item_answer_error(p, it, 409, "id",
                                          "A task with this id exists with a different specification.");
        }

finish:
        free(b->items);
        free(b);
        push_flush(p);
}

static void on_many_done(PGresult *r, int error, void *userdata) {
        PushBatch *b = userdata;
        PushBatcher *p = b->batcher;
        size_t n_rows;

        p->in_flight--;
        if (error >= 0 && (!r || PQnfields(r) != 2 || (size_t) PQntuples(r) > b->n_items))
                error = -EIO;
        if (error < 0) {
                batch_fail(p, b, error);
                goto finish;
        }

        histogram_observe(&p->control->metrics.push_batch_size, metrics_batch_bounds, (double) b->n_items);
        n_rows = (size_t) PQntuples(r);
        for (size_t row = 0; row < n_rows; row++) {
                const char *id = PQgetvalue(r, (int) row, 0);

                /* The rows come in about the order of the items: look from where the last one was. */
                for (size_t k = 0; k < b->n_items; k++) {
                        size_t i = (row + k) % b->n_items;

                        if (b->items[i] && streq(b->items[i]->id, id)) {
                                item_created(p, b->items[i], PQgetvalue(r, (int) row, 1));
                                b->items[i] = NULL;
                                break;
                        }
                }
        }
        /* Not inserted: the id exists, or was pushed at the same time. */
        for (size_t i = b->n_items; i > 0; i--)
                if (b->items[i - 1]) {
                        b->items[i - 1]->full = true;
                        item_requeue(p, b->items[i - 1]);
                }

finish:
        free(b->items);
        free(b);
        push_flush(p);
}

static bool batch_has_id(PushItem **items, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (streq(items[i]->id, id))
                        return true;
        return false;
}

/* A push alone, of a task without inputs: one INSERT with plain parameters, about half of what mc_push
 * costs PostgreSQL for one task, and a prepared statement, so that it is parsed and planned once per
 * connection rather than at every push. Not a function in functions.sql: calling one (PL/pgSQL, as
 * an INSERT cannot be inlined) cost another 30-40 µs of PostgreSQL's CPU per push. The tasks trigger
 * announces the task on mc_events, which also wakes the claims that could take it; every push
 * statement runs on the listening connection when it can (db_query_prepared_notifying()), so this
 * replica gets that notification with the statement's result. No row: nothing
 * was inserted (the id exists, or a concurrent push of it committed first): mc_push then says whether
 * it is the same task (200) or another (409). */
#define PUSH_ONE_SQL                                                                                    \
        "INSERT INTO tasks AS t (id, spec, target_node, nano_cpus, memory_bytes, labels, max_attempts) " \
        "VALUES ($1, $2::jsonb, $3, $4::bigint, $5::bigint, $6::jsonb, $7::integer) "                   \
        "ON CONFLICT ON CONSTRAINT tasks_pkey DO NOTHING "                                              \
        "RETURNING mc_ts(t.created_at)"
#define PUSH_BATCH_SQL "SELECT id, result, record FROM mc_push($1::jsonb)"
/* A batch of tasks without inputs, none found stored before: the same INSERT over mc_push's rows
 * (task_spec_to_push_row()), prepared, rather than mc_push's PL/pgSQL over the array with its checks
 * of inputs and of stored tasks. Returns the inserted ones, in no particular order; the others go to
 * mc_push. */
#define PUSH_MANY_SQL                                                                                   \
        "WITH ins AS ("                                                                                 \
        " INSERT INTO tasks AS t (id, spec, target_node, nano_cpus, memory_bytes, labels, max_attempts)" \
        " SELECT x.id, x.spec, x.target_node, x.nano_cpus, x.memory_bytes, x.labels, x.max_attempts"   \
        " FROM jsonb_to_recordset($1::jsonb) AS x(id text, spec jsonb, target_node text, nano_cpus bigint," \
        " memory_bytes bigint, labels jsonb, max_attempts integer)"                                     \
        " ON CONFLICT ON CONSTRAINT tasks_pkey DO NOTHING"                                              \
        " RETURNING t.id, t.created_at"                                                                 \
        ") SELECT ins.id, mc_ts(ins.created_at) FROM ins"

/* Whether the plain INSERTs may take it: not one they already found stored, and without inputs (the
 * content check is mc_push's). */
static bool item_plain(const PushItem *it) {
        json_object *inputs;

        if (it->full)
                return false;
        return !json_object_object_get_ex(it->spec.spec, "inputs", &inputs) || !inputs ||
                (json_object_is_type(inputs, json_type_array) && json_object_array_length(inputs) == 0);
}

static bool push_one_applies(PushBatcher *p) {
        return p->head && !p->head->next && item_plain(p->head);
}

/* Takes the head of the queue. */
static int push_one(PushBatcher *p) {
        Control *c = p->control;
        PushItem *it = p->head;
        json_object *labels = NULL;
        char cpus[32], memory[32], attempts[32];
        const char *params[7];
        PushBatch *b;
        int r;

        b = calloc(1, sizeof(PushBatch));
        if (!b)
                return -ENOMEM;
        b->items = calloc(1, sizeof(PushItem *));
        if (!b->items) {
                free(b);
                return -ENOMEM;
        }
        p->head = p->tail = NULL;
        p->n_pending = 0;
        b->batcher = p;
        b->items[0] = it;
        b->n_items = 1;

        json_object_object_get_ex(it->spec.spec, "labels", &labels);
        snprintf(cpus, sizeof(cpus), "%" PRIi64, it->spec.nano_cpus);
        snprintf(memory, sizeof(memory), "%" PRIi64, it->spec.memory_bytes);
        snprintf(attempts, sizeof(attempts), "%" PRIi64, it->spec.max_attempts);
        params[0] = it->id;
        params[1] = item_spec_json(it);
        if (!params[1]) {
                free(b->items);
                free(b);
                item_answer_error(p, it, 500, NULL, "Out of memory.");
                return 0;
        }
        params[2] = it->spec.target_node;
        params[3] = cpus;
        params[4] = memory;
        params[5] = labels ? json_to_string(labels) : "{}";
        params[6] = attempts;
        r = db_query_prepared_notifying(c->db, "mc_push_one", PUSH_ONE_SQL, 7, params, on_one_done, b);
        if (r < 0) {
                item_answer_error(p, it, control_db_error_code(r), NULL,
                                  "Database unavailable; the task was not stored, retry.");
                free(b->items);
                free(b);
                return 0;
        }
        p->in_flight++;
        return 0;
}

static void push_flush(PushBatcher *p) {
        Control *c = p->control;

        while (p->head && p->in_flight < PUSH_MAX_IN_FLIGHT) {
                if (push_one_applies(p) && push_one(p) >= 0)
                        continue;

                _cleanup_json_ json_object *rows = json_object_new_array();
                PushItem **items, *it, **prev, *deferred = NULL, **deferred_tail = &deferred;
                PushBatch *b;
                const char *params[1];
                size_t n = 0;
                bool plain = true;
                int r;

                items = calloc(MIN(p->n_pending, (size_t) PUSH_BATCH_MAX), sizeof(PushItem *));
                if (!items || !rows) {
                        free(items);
                        return;
                }

                /* Take up to a batch, leaving a second push of an id already in the batch for later: one
                 * statement cannot insert a row and compare against it. */
                prev = &p->head;
                while ((it = *prev) && n < PUSH_BATCH_MAX) {
                        *prev = it->next;
                        p->n_pending--;
                        it->next = NULL;
                        if (batch_has_id(items, n, it->id)) {
                                *deferred_tail = it;
                                deferred_tail = &it->next;
                                continue;
                        }
                        items[n++] = it;
                        plain = plain && item_plain(it);
                        json_object_array_add(rows, task_spec_to_push_row(&it->spec, it->id));
                }
                /* Put the deferred ones back in front, in order. */
                if (deferred) {
                        size_t k = 0;
                        for (PushItem *d = deferred; d; d = d->next)
                                k++;
                        *deferred_tail = p->head;
                        p->head = deferred;
                        p->n_pending += k;
                }
                p->tail = NULL;
                for (PushItem *x = p->head; x; x = x->next)
                        p->tail = x;

                b = calloc(1, sizeof(PushBatch));
                if (!b) {
                        for (size_t i = 0; i < n; i++)
                                item_answer_error(p, items[i], 500, NULL, "Out of memory.");
                        free(items);
                        return;
                }
                b->batcher = p;
                b->items = items;
                b->n_items = n;

                params[0] = json_to_string(rows);
                r = plain ? db_query_prepared_notifying(c->db, "mc_push_many", PUSH_MANY_SQL, 1, params, on_many_done, b) :
                            db_query_prepared_notifying(c->db, "mc_push", PUSH_BATCH_SQL, 1, params, on_batch_done, b);
                if (r < 0) {
                        for (size_t i = 0; i < n; i++)
                                item_answer_error(p, items[i], control_db_error_code(r), NULL,
                                                  "Database unavailable; the task was not stored, retry.");
                        free(items);
                        free(b);
                        continue;
                }
                p->in_flight++;
        }
}

static int on_defer(sd_event_source *s, void *userdata) {
        push_flush(userdata);
        return 0;
}

int control_push(Control *c, TaskSpec *spec, PushCallback cb, void *userdata) {
        PushBatcher *p = c->pusher;
        PushItem *it;
        int r;

        if (p->n_pending >= PUSH_MAX_PENDING)
                return -EBUSY;

        it = calloc(1, sizeof(PushItem));
        if (!it)
                return -ENOMEM;
        if (spec->id)
                snprintf(it->id, sizeof(it->id), "%s", spec->id);
        else {
                r = task_id_generate(it->id);
                if (r < 0) {
                        free(it);
                        return r;
                }
        }
        it->spec = *spec;
        *spec = (TaskSpec) {};
        it->callback = cb;
        it->userdata = userdata;

        if (p->tail)
                p->tail->next = it;
        else
                p->head = it;
        p->tail = it;
        p->n_pending++;

        /* A push alone with nothing in flight (a client that waits for each answer) goes now: a turn
         * of the event loop less before its statement. Otherwise the flush is from a deferred event,
         * so that the pushes arriving in the same loop iteration share the batch. The callback may
         * run before this returns (no database connection). */
        if (p->in_flight == 0 && p->n_pending == 1)
                push_flush(p);
        else if (p->in_flight < PUSH_MAX_IN_FLIGHT)
                (void) sd_event_source_set_enabled(p->defer, SD_EVENT_ONESHOT);
        return 0;
}

int push_batcher_new(Control *c, PushBatcher **ret) {
        PushBatcher *p;
        int r;

        p = calloc(1, sizeof(PushBatcher));
        if (!p)
                return -ENOMEM;
        p->control = c;
        r = sd_event_add_defer(c->event, &p->defer, on_defer, p);
        if (r < 0) {
                free(p);
                return r;
        }
        (void) sd_event_source_set_enabled(p->defer, SD_EVENT_OFF);
        *ret = p;
        return 0;
}

size_t push_batcher_n_pending(PushBatcher *p) {
        return p ? p->n_pending : 0;
}

PushBatcher *push_batcher_free(PushBatcher *p) {
        PushItem *it;

        if (!p)
                return NULL;
        while ((it = p->head)) {
                p->head = it->next;
                item_answer_error(p, it, 503, NULL, "Server is shutting down; the task was not stored.");
        }
        sd_event_source_disable_unref(p->defer);
        free(p);
        return NULL;
}
