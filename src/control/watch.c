/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Watching tasks: long polls, live output, the event stream (watch.h). */

#include <assert.h>

#include "awaits.h"
#include "id-util.h"
#include "json-util.h"
#include "list.h"
#include "log.h"
#include "watch.h"

/* How often the streams are looked at (client gone, keep-alive comment). */
#define WATCH_TICK_USEC (10 * USEC_PER_SEC)
/* An event stream whose client does not read keeps at most this much waiting; beyond, it is ended
 * (the client reconnects with its cursor). */
#define EVENTS_BUFFER_MAX (1024 * 1024)
/* A follower reads more output from the database only once what it has is almost sent. */
#define FOLLOW_REFILL_BELOW (64 * 1024)
#define EVENTS_CATCHUP_MAX 1000

typedef enum WatchKind {
        WATCH_WAIT,
        WATCH_FOLLOW,
        WATCH_EVENTS,
        _WATCH_KIND_MAX,
} WatchKind;

typedef struct Watcher Watcher;
struct Watcher {
        Watchers *owner;
        WatchKind kind;
        HttpRequest *req;               /* NULL once answered, or the client gone */
        char task_id[ID_MAX + 1];       /* "" for an event stream of every task */
        bool query_running, query_again;
        bool streaming, ended;
        /* wait: the state (a status) or version (updated_at) the answer must differ from */
        char *since;
        bool since_is_status, deadline_passed;
        sd_event_source *timer;
        /* follow: the lease whose live output is being sent, and how much of it was */
        int64_t lease_token;
        int64_t pos;
        /* streams: what is still to be sent */
        char *buf;
        size_t buf_size, buf_sent, buf_allocated;
        /* events: the catch-up (a cursor was given) is being read; what came meanwhile waits */
        bool catching_up;
        /* events: not begun, until the database announces every change to this replica (awaits.h);
         * the cursor, if one was given, in since */
        bool awaiting;
        unsigned awaited_ticks;
        char **pending;
        size_t n_pending;
        LIST_FIELDS(Watcher);
};

struct Watchers {
        Control *control;
        Watcher *head;
        size_t n;
        sd_event_source *tick;
};

static void watcher_free(Watcher *w) {
        Watchers *o = w->owner;

        LIST_REMOVE(o->head, w);
        o->n--;
        sd_event_source_disable_unref(w->timer);
        for (size_t i = 0; i < w->n_pending; i++)
                free(w->pending[i]);
        free(w->pending);
        free(w->since);
        free(w->buf);
        free(w);
}

/* The request is answered or gone: the watcher goes as soon as no query of it is in flight. */
static void watcher_done(Watcher *w) {
        w->req = NULL;
        if (!w->query_running)
                watcher_free(w);
}

static Watcher *watcher_new(Control *c, HttpRequest *req, WatchKind kind, const char *task_id) {
        Watchers *o = c->watchers;
        Watcher *w;

        if (o->n >= (size_t) c->config.http_max_streams) {
                http_request_add_header(req, "Retry-After", "1");
                http_request_reply_error(req, 503, NULL, "Too many watches and streams on this replica (HTTP_MAX_STREAMS=%" PRIi64
                                         "); retry, or ask another replica.", c->config.http_max_streams);
                return NULL;
        }
        w = calloc(1, sizeof(Watcher));
        if (!w) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return NULL;
        }
        w->owner = o;
        w->kind = kind;
        w->req = req;
        w->lease_token = -1;
        snprintf(w->task_id, sizeof(w->task_id), "%s", task_id ?: "");
        LIST_PREPEND(o->head, w);
        o->n++;
        /* Before its first look at the task: what changes after must be announced to it. */
        awaits_need(c->awaits, AWAIT_EVENTS);
        return w;
}

/* ---- streams */

static void stream_end(Watcher *w) {
        if (w->ended)
                return;
        w->ended = true;
        if (w->req && w->streaming)
                http_request_stream_wake(w->req);
}

static int stream_append(Watcher *w, const char *data, size_t size) {
        if (size == 0 || w->ended)
                return 0;
        if (w->buf_sent > 0 && w->buf_sent == w->buf_size)
                w->buf_sent = w->buf_size = 0;
        if (w->buf_size + size > w->buf_allocated) {
                size_t a = MAX(w->buf_allocated * 2, w->buf_size + size);
                char *b = realloc(w->buf, a);
                if (!b)
                        return -ENOMEM;
                w->buf = b;
                w->buf_allocated = a;
        }
        memcpy(w->buf + w->buf_size, data, size);
        w->buf_size += size;
        if (w->req && w->streaming)
                http_request_stream_wake(w->req);
        return 0;
}

static void follow_query(Watcher *w);

static ssize_t on_stream_read(void *userdata, char *buf, size_t max) {
        Watcher *w = userdata;
        size_t left = w->buf_size - w->buf_sent, n;

        if (left == 0) {
                if (!w->ended && w->kind == WATCH_FOLLOW && w->query_again && !w->query_running)
                        follow_query(w);
                /* Also when that query could not even be queued. */
                return w->ended ? -1 : 0;
        }
        n = MIN(left, max);
        memcpy(buf, w->buf + w->buf_sent, n);
        w->buf_sent += n;
        if (w->kind == WATCH_FOLLOW && w->query_again && !w->query_running &&
            w->buf_size - w->buf_sent < FOLLOW_REFILL_BELOW)
                follow_query(w);
        return (ssize_t) n;
}

static void on_stream_closed(void *userdata) {
        watcher_done(userdata);
}

static int stream_start(Watcher *w, const char *content_type) {
        int r;

        r = http_request_add_header(w->req, "Cache-Control", "no-cache");
        if (r >= 0)
                /* Proxies (nginx) would otherwise hold the stream back in their buffers. */
                r = http_request_add_header(w->req, "X-Accel-Buffering", "no");
        if (r >= 0)
                r = http_request_reply_stream(w->req, 200, content_type, on_stream_read, on_stream_closed, w);
        if (r < 0)
                return r;
        w->streaming = true;
        return 0;
}

/* A query of w failed, or its answer is not what it must be. */
static void watcher_fail(Watcher *w, int error, const char *what) {
        if (w->streaming) {
                log_warning("Ending the %s stream of %s: %s.", what, isempty(w->task_id) ? "all tasks" : w->task_id,
                            error < 0 ? "database unavailable" : "unexpected database answer");
                stream_end(w);
                return;
        }
        http_request_reply_error(w->req, error < 0 ? control_db_error_code(error) : 500, NULL,
                                 error < 0 ? "Database unavailable; retry." : "Unexpected database answer.");
        watcher_done(w);
}

/* Out of memory: a 500 while nothing was sent, else the stream ends (its client sees it cut short). */
static void watcher_oom(Watcher *w) {
        log_oom();
        if (!w->streaming) {
                http_request_reply_error(w->req, 500, NULL, "Out of memory.");
                return watcher_done(w);
        }
        stream_end(w);
}

static bool result_ok(PGresult *r, int error, int columns) {
        return error >= 0 && r && PQresultStatus(r) == PGRES_TUPLES_OK && PQnfields(r) == columns;
}

/* ---- GET /api/tasks/{id}?wait= */

static void wait_query(Watcher *w);

static void on_wait_done(PGresult *r, int error, void *userdata) {
        Watcher *w = userdata;
        const char *status, *updated;
        bool changed;

        w->query_running = false;
        if (!w->req) {
                watcher_free(w);
                return;
        }
        if (!result_ok(r, error, 3))
                return watcher_fail(w, error, "wait");
        if (PQntuples(r) == 0) {
                http_request_reply_error(w->req, 404, "id", "No such task.");
                return watcher_done(w);
        }
        status = PQgetvalue(r, 0, 1);
        updated = PQgetvalue(r, 0, 2);
        if (!w->since) {
                /* No state named: the one found now is what a change is measured from. */
                w->since = strdup(updated);
                if (!w->since) {
                        http_request_reply_error(w->req, 500, NULL, "Out of memory.");
                        return watcher_done(w);
                }
        }
        changed = !streq(w->since_is_status ? status : updated, w->since);
        if (changed || w->deadline_passed) {
                http_request_reply(w->req, 200, "application/json", PQgetvalue(r, 0, 0), (size_t) PQgetlength(r, 0, 0));
                return watcher_done(w);
        }
        if (w->query_again) {
                w->query_again = false;
                wait_query(w);
        }
}

static void wait_query(Watcher *w) {
        const char *params[] = { w->task_id };
        int r;

        if (w->query_running) {
                w->query_again = true;
                return;
        }
        r = db_query(w->owner->control->db,
                     "SELECT mc_task_json(t, true), t.status, mc_ts(t.updated_at) FROM tasks t WHERE t.id = $1",
                     1, params, on_wait_done, w);
        if (r < 0)
                return watcher_fail(w, r, "wait");
        w->query_running = true;
}

static int on_wait_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Watcher *w = userdata;

        w->deadline_passed = true;
        wait_query(w);
        return 0;
}

int watch_task_wait(Control *c, HttpRequest *req, const char *task_id, uint64_t wait_usec, const char *since) {
        Watcher *w;
        int r;

        assert(task_id);
        assert(wait_usec > 0);
        w = watcher_new(c, req, WATCH_WAIT, task_id);
        if (!w)
                return 0;
        if (since) {
                w->since = strdup(since);
                if (!w->since) {
                        watcher_oom(w);
                        return 0;
                }
                w->since_is_status = task_status_from_string(since) >= 0;
        }
        r = sd_event_add_time_relative(c->event, &w->timer, CLOCK_MONOTONIC, wait_usec, 10 * USEC_PER_MSEC,
                                       on_wait_deadline, w);
        if (r < 0) {
                watcher_oom(w);
                return 0;
        }
        wait_query(w);
        return 0;
}

/* ---- GET /api/tasks/{id}/logs?follow=1 */

static void on_follow_done(PGresult *r, int error, void *userdata) {
        Watcher *w = userdata;
        const char *data;
        int64_t current, next;
        size_t size;
        bool authoritative, final;

        w->query_running = false;
        if (!w->req) {
                watcher_free(w);
                return;
        }
        if (!result_ok(r, error, 5))
                return watcher_fail(w, error, "logs");
        if (PQntuples(r) == 0) {
                /* Unknown, or deleted while followed. */
                if (!w->streaming) {
                        http_request_reply_error(w->req, 404, "id", "No such task.");
                        return watcher_done(w);
                }
                return stream_end(w);
        }
        final = task_status_is_final(task_status_from_string(PQgetvalue(r, 0, 0)));
        authoritative = streq(PQgetvalue(r, 0, 1), "t");
        current = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
        next = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        data = PQgetvalue(r, 0, 4);
        size = (size_t) PQgetlength(r, 0, 4);

        if (authoritative) {
                /* The result's output is the authority: what of it was not sent live goes now. That is
                 * the rest past what was sent of the same lease (the live text is its beginning), or
                 * all of it when nothing of that lease was. */
                size_t from = w->lease_token == current && w->pos > 0 && (size_t) w->pos <= size ? (size_t) w->pos : 0;
                if (w->lease_token == current && w->pos > 0 && (size_t) w->pos > size)
                        from = size;
                if (stream_append(w, data + from, size - from) < 0)
                        return watcher_oom(w);
                w->query_again = false;
                w->ended = true;
        } else {
                if (w->lease_token < 0)
                        w->lease_token = current;
                if (stream_append(w, data, size) < 0)
                        return watcher_oom(w);
                w->pos = next;
                if (final) {
                        w->query_again = false;
                        w->ended = true;
                } else if (current != w->lease_token) {
                        /* A new lease (the task was queued again): its output follows. */
                        w->lease_token = current;
                        w->pos = 0;
                        w->query_again = true;
                }
        }

        if (!w->streaming) {
                if (stream_start(w, "text/plain; charset=utf-8") < 0)
                        return watcher_oom(w);
        } else if (w->ended)
                http_request_stream_wake(w->req);
        if (w->query_again && w->buf_size - w->buf_sent < FOLLOW_REFILL_BELOW)
                follow_query(w);
}

static void follow_query(Watcher *w) {
        char token[32], pos[32];
        const char *params[] = { w->task_id, NULL, pos };
        int r;

        w->query_again = false;
        if (w->lease_token >= 0) {
                snprintf(token, sizeof(token), "%" PRIi64, w->lease_token);
                params[1] = token;
        }
        snprintf(pos, sizeof(pos), "%" PRIi64, w->pos);
        r = db_query(w->owner->control->db,
                     "SELECT status, authoritative, lease_token, next_pos, data FROM mc_task_logs($1, $2::bigint, $3::bigint)",
                     3, params, on_follow_done, w);
        if (r < 0)
                return watcher_fail(w, r, "logs");
        w->query_running = true;
}

/* Something changed for a follower: read again, now or once what it has is almost sent. */
static void follow_poke(Watcher *w) {
        if (w->ended)
                return;
        if (w->query_running || w->buf_size - w->buf_sent >= FOLLOW_REFILL_BELOW) {
                w->query_again = true;
                return;
        }
        follow_query(w);
}

int watch_task_follow(Control *c, HttpRequest *req, const char *task_id) {
        Watcher *w;

        assert(task_id);
        w = watcher_new(c, req, WATCH_FOLLOW, task_id);
        if (!w)
                return 0;
        follow_query(w);
        return 0;
}

/* ---- GET /api/events */

/* One server-sent event from an event's JSON; its id, the cursor to resume from, is the change's time. */
static int events_append(Watcher *w, const char *json, const char *updated_at) {
        _cleanup_free_ char *text = NULL;
        int n;

        n = asprintf(&text, "id: %s\nevent: task\ndata: %s\n\n", updated_at, json);
        if (n < 0)
                return -ENOMEM;
        if (w->buf_size - w->buf_sent + (size_t) n > EVENTS_BUFFER_MAX) {
                log_notice("Ending an event stream whose client does not read (%zu bytes waiting).",
                           w->buf_size - w->buf_sent);
                stream_end(w);
                return 0;
        }
        return stream_append(w, text, (size_t) n);
}

static const char *event_field(json_object *e, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(e, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static void on_events_catchup_done(PGresult *r, int error, void *userdata) {
        Watcher *w = userdata;

        w->query_running = false;
        w->catching_up = false;
        if (!w->req) {
                watcher_free(w);
                return;
        }
        if (error == -EIO && r && PQresultStatus(r) == PGRES_FATAL_ERROR &&
            startswith(db_result_sqlstate(r), "22")) {
                /* A cursor PostgreSQL cannot read as a time (class 22, data exception). A query that
                 * failed comes with -EIO and its result (db.c). */
                http_request_reply_error(w->req, 400, "since", "The cursor must be an event's id (a time such as "
                                         "2026-11-27T10:00:00.123456Z).");
                return watcher_done(w);
        }
        if (!result_ok(r, error, 2))
                return watcher_fail(w, error, "events");
        if (stream_start(w, "text/event-stream") < 0)
                return watcher_oom(w);
        (void) stream_append(w, ": mc events\n\n", strlen(": mc events\n\n"));
        for (int i = 0; i < PQntuples(r); i++)
                if (events_append(w, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1)) < 0)
                        return watcher_oom(w);
        /* What came while reading, unless the catch-up had it already (same task, same time). */
        for (size_t i = 0; i < w->n_pending; i++) {
                _cleanup_json_ json_object *e = json_tokener_parse(w->pending[i]);
                const char *id = e ? event_field(e, "id") : NULL, *at = e ? event_field(e, "updated_at") : NULL;
                bool seen = false;

                if (!id || !at)
                        continue;
                for (int k = 0; k < PQntuples(r) && !seen; k++) {
                        _cleanup_json_ json_object *x = json_tokener_parse(PQgetvalue(r, k, 0));
                        const char *xid = x ? event_field(x, "id") : NULL;
                        seen = xid && streq(xid, id) && streq(PQgetvalue(r, k, 1), at);
                }
                if (!seen && events_append(w, w->pending[i], at) < 0)
                        return watcher_oom(w);
        }
        for (size_t i = 0; i < w->n_pending; i++)
                free(w->pending[i]);
        free(w->pending);
        w->pending = NULL;
        w->n_pending = 0;
}

/* The stream's start: at once, or after the catch-up from since (NULL: none). */
static void events_begin(Watcher *w, const char *since) {
        Control *c = w->owner->control;
        char limit[16];
        int r;

        w->awaiting = false;
        if (!since) {
                if (stream_start(w, "text/event-stream") < 0)
                        return watcher_oom(w);
                /* A first line at once: the client sees the stream is up. */
                (void) stream_append(w, ": mc events\n\n", strlen(": mc events\n\n"));
                return;
        }

        snprintf(limit, sizeof(limit), "%d", EVENTS_CATCHUP_MAX);
        const char *params[] = { since, limit, isempty(w->task_id) ? NULL : w->task_id };
        r = db_query(c->db, "SELECT e::text, e->>'updated_at' FROM mc_events_since($1::timestamptz, $2::integer) e "
                            "WHERE $3::text IS NULL OR e->>'id' = $3", 3, params, on_events_catchup_done, w);
        if (r < 0)
                return watcher_fail(w, r, "events");
        w->query_running = true;
        w->catching_up = true;
}

int watch_events(Control *c, HttpRequest *req, const char *task_id, const char *since) {
        Watcher *w;

        w = watcher_new(c, req, WATCH_EVENTS, task_id);
        if (!w)
                return 0;
        if (!awaits_holds(c->awaits, AWAIT_EVENTS)) {
                /* Until the database announces every change here, a change would be neither in the
                 * catch-up nor sent: the stream begins when it does (watchers_recheck_all()), or
                 * after two ticks at the most. */
                if (since && !(w->since = strdup(since))) {
                        watcher_oom(w);
                        return 0;
                }
                w->awaiting = true;
                return 0;
        }
        events_begin(w, since);
        return 0;
}

/* ---- notifications */

void watchers_task_event(Watchers *o, json_object *e, const char *payload) {
        const char *id, *at;

        assert(e);
        assert(payload);

        if (!o || !o->head)
                return;
        id = event_field(e, "id");
        at = event_field(e, "updated_at");
        if (!id || !at) {
                log_debug("Ignoring a task event that is not one: %.200s", payload);
                return;
        }
        for (Watcher *w = o->head, *next; w; w = next) {
                next = w->next;
                if (!w->req || w->ended || w->awaiting)
                        continue;
                if (!isempty(w->task_id) && !streq(w->task_id, id))
                        continue;
                switch (w->kind) {
                case WATCH_WAIT:
                        wait_query(w);
                        break;
                case WATCH_FOLLOW:
                        follow_poke(w);
                        break;
                case WATCH_EVENTS:
                        if (w->catching_up) {
                                char *copy = strdup(payload), **p;

                                if (!copy)
                                        break;
                                p = reallocarray(w->pending, w->n_pending + 1, sizeof(char *));
                                if (!p) {
                                        free(copy);
                                        break;
                                }
                                w->pending = p;
                                w->pending[w->n_pending++] = copy;
                        } else if (events_append(w, payload, at) < 0)
                                stream_end(w);
                        break;
                case _WATCH_KIND_MAX:
                        assert(false);
                }
        }
}

void watchers_task_output(Watchers *o, const char *task_id) {
        if (!o)
                return;
        for (Watcher *w = o->head, *next; w; w = next) {
                next = w->next;
                if (w->req && w->kind == WATCH_FOLLOW && streq(w->task_id, task_id))
                        follow_poke(w);
        }
}

void watchers_recheck_all(Watchers *o) {
        if (!o)
                return;
        for (Watcher *w = o->head, *next; w; w = next) {
                next = w->next;
                if (!w->req)
                        continue;
                if (w->kind == WATCH_WAIT)
                        wait_query(w);
                else if (w->kind == WATCH_FOLLOW)
                        follow_poke(w);
                else if (w->awaiting && awaits_holds(o->control->awaits, AWAIT_EVENTS))
                        events_begin(w, w->since);
        }
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Watchers *o = userdata;

        (void) sd_event_source_set_time_relative(s, WATCH_TICK_USEC);
        for (Watcher *w = o->head, *next; w; w = next) {
                next = w->next;
                if (w->req && w->awaiting) {
                        /* The database has not said it holds what was asked for two whole ticks (it
                         * is unreachable, or a transaction left open holds up mc_await()): begin
                         * anyway. */
                        if (++w->awaited_ticks > 2)
                                events_begin(w, w->since);
                        continue;
                }
                if (!w->req || !w->streaming || w->ended)
                        continue;
                if (http_request_peer_gone(w->req)) {
                        stream_end(w);
                        continue;
                }
                if (w->kind == WATCH_EVENTS && w->buf_size == w->buf_sent)
                        (void) stream_append(w, ":\n\n", 3);
        }
        return 0;
}

size_t watchers_n(Watchers *o) {
        return o ? o->n : 0;
}

int watchers_new(Control *c, Watchers **ret) {
        _cleanup_free_ Watchers *o = calloc(1, sizeof(Watchers));
        int r;

        if (!o)
                return -ENOMEM;
        o->control = c;
        r = sd_event_add_time_relative(c->event, &o->tick, CLOCK_MONOTONIC, WATCH_TICK_USEC, USEC_PER_SEC, on_tick, o);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(o->tick, SD_EVENT_ON);
        (void) sd_event_source_set_description(o->tick, "watch-tick");
        *ret = TAKE_PTR(o);
        return 0;
}

Watchers *watchers_free(Watchers *o) {
        if (!o)
                return NULL;
        /* Called after the database was closed: no query is in flight any more. */
        while (o->head) {
                Watcher *w = o->head;

                if (w->req) {
                        if (w->streaming)
                                http_request_stream_detach(w->req);
                        else
                                http_request_reply_error(w->req, 503, NULL, "Server is shutting down.");
                }
                w->req = NULL;
                w->query_running = false;
                watcher_free(w);
        }
        sd_event_source_disable_unref(o->tick);
        free(o);
        return NULL;
}
