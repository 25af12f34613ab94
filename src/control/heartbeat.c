/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "heartbeat.h"
#include "json-util.h"
#include "log.h"

/* Up to this many heartbeats share a statement, and up to this many statements run at once (the
 * others wait in the queue, where the next ones join them). */
#define HEARTBEAT_BATCH_MAX 128
#define HEARTBEAT_MAX_IN_FLIGHT 2

typedef struct Heartbeat Heartbeat;
struct Heartbeat {
        json_object *beat;      /* {"node_id", "leases", "draining"}: one element of the statement's array */
        HttpRequest *req;       /* NULL: wanted whatever happens to its client */
        HeartbeatCallback cb;
        void *userdata;
        Heartbeat *next;
};

struct Heartbeats {
        Control *control;
        Heartbeat *head, *tail;
        size_t n_queued;
        unsigned in_flight;
        sd_event_source *defer;
};

typedef struct HeartbeatBatch {
        Heartbeats *owner;
        size_t n;
        Heartbeat *beats[];
} HeartbeatBatch;

static void heartbeat_done(Heartbeat *b, int error, unsigned code, const char *body) {
        b->cb(error, code, body, b->userdata);
        json_object_put(b->beat);
        free(b);
}

static void flush(Heartbeats *h);

static void on_batch_result(PGresult *r, int error, void *userdata) {
        HeartbeatBatch *batch = userdata;
        Heartbeats *h = batch->owner;
        _cleanup_free_ int *rows = calloc(batch->n, sizeof(int));

        assert(h->in_flight > 0);
        h->in_flight--;

        if (!rows)
                error = -ENOMEM;
        else if (error >= 0 && (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 3))
                error = -EIO;
        if (error >= 0) {
                for (size_t i = 0; i < batch->n; i++)
                        rows[i] = -1;
                for (int i = 0; i < PQntuples(r); i++) {
                        long k = strtol(PQgetvalue(r, i, 0), NULL, 10);
                        if (k >= 1 && (size_t) k <= batch->n)
                                rows[k - 1] = i;
                }
        }
        for (size_t i = 0; i < batch->n; i++) {
                if (error < 0)
                        heartbeat_done(batch->beats[i], error, 0, NULL);
                else if (rows[i] < 0)
                        heartbeat_done(batch->beats[i], -EIO, 0, NULL);
                else
                        heartbeat_done(batch->beats[i], 0, (unsigned) atoi(PQgetvalue(r, rows[i], 1)),
                                       PQgetvalue(r, rows[i], 2));
        }
        free(batch);
        flush(h);
}

static void send_batch(Heartbeats *h, HeartbeatBatch *batch) {
        Control *c = h->control;
        _cleanup_json_ json_object *array = json_object_new_array();
        const char *params[2];
        char ttl[32];
        bool ok = array;
        int r = -ENOMEM;

        h->in_flight++;
        histogram_observe(&c->metrics.heartbeat_batch_size, metrics_batch_bounds, (double) batch->n);
        for (size_t i = 0; ok && i < batch->n; i++)
                if (json_object_array_add(array, json_object_get(batch->beats[i]->beat)) < 0) {
                        json_object_put(batch->beats[i]->beat);        /* the reference it did not take */
                        ok = false;
                }
        if (ok) {
                snprintf(ttl, sizeof(ttl), "%" PRIi64, c->config.lease_ttl_ms);
                params[0] = json_to_string(array);
                params[1] = ttl;
                /* Urgent: a renewal that waits behind other work until its leases run out makes
                 * the control recall tasks from live nodes. */
                r = params[0] ? db_query_urgent(c->db, "SELECT r_i, r_code, r_body FROM mc_heartbeat_batch($1::jsonb, $2::integer)",
                                                2, params, on_batch_result, batch)
                              : -ENOMEM;
        }
        if (r < 0)
                on_batch_result(NULL, r, batch);
}

static void flush(Heartbeats *h) {
        while (h->head && h->in_flight < HEARTBEAT_MAX_IN_FLIGHT) {
                HeartbeatBatch *batch = malloc(offsetof(HeartbeatBatch, beats) + HEARTBEAT_BATCH_MAX * sizeof(Heartbeat *));
                Heartbeat *b;

                if (!batch) {
                        /* Answer one, so that something moves; the others stay queued. */
                        b = h->head;
                        h->head = b->next;
                        if (!h->head)
                                h->tail = NULL;
                        h->n_queued--;
                        heartbeat_done(b, -ENOMEM, 0, NULL);
                        continue;
                }
                *batch = (HeartbeatBatch) { .owner = h };
                while (batch->n < HEARTBEAT_BATCH_MAX && (b = h->head)) {
                        h->head = b->next;
                        b->next = NULL;
                        h->n_queued--;
                        /* Its agent timed out and sends another: under a backlog (a thousand agents
                         * taking their first tasks at once, heartbeats answered in 2-3 s) it would only
                         * add work, renewing what its successor renews again. */
                        if (b->req && http_request_peer_gone(b->req)) {
                                h->control->metrics.heartbeats_abandoned++;
                                heartbeat_done(b, -ECANCELED, 0, NULL);
                                continue;
                        }
                        batch->beats[batch->n++] = b;
                }
                if (!h->head)
                        h->tail = NULL;
                if (batch->n == 0) {
                        free(batch);
                        continue;
                }
                send_batch(h, batch);
        }
}

static int on_defer(sd_event_source *s, void *userdata) {
        flush(userdata);
        return 0;
}

int heartbeat_send(Heartbeats *h, const char *node_id, json_object *leases, bool draining, HttpRequest *req,
                   HeartbeatCallback cb, void *userdata) {
        _cleanup_free_ Heartbeat *b = NULL;

        assert(h);
        assert(node_id);
        assert(cb);

        b = calloc(1, sizeof(Heartbeat));
        if (!b)
                return -ENOMEM;
        b->beat = json_object_new_object();
        if (!b->beat || json_add_string(b->beat, "node_id", node_id) < 0 ||
            json_object_object_add(b->beat, "leases", leases ? json_object_get(leases) : json_object_new_array()) < 0 ||
            json_object_object_add(b->beat, "draining", json_object_new_boolean(draining)) < 0) {
                json_object_put(b->beat);
                return -ENOMEM;
        }
        b->req = req;
        b->cb = cb;
        b->userdata = userdata;
        if (h->tail)
                h->tail->next = b;
        else
                h->head = b;
        h->tail = TAKE_PTR(b);
        h->n_queued++;
        /* From a deferred event, so that the heartbeats of one loop iteration share a statement. */
        if (h->in_flight < HEARTBEAT_MAX_IN_FLIGHT)
                (void) sd_event_source_set_enabled(h->defer, SD_EVENT_ONESHOT);
        return 0;
}

size_t heartbeats_n_queued(Heartbeats *h) {
        assert(h);
        return h->n_queued;
}

int heartbeats_new(Control *c, Heartbeats **ret) {
        _cleanup_free_ Heartbeats *h = calloc(1, sizeof(Heartbeats));
        int r;

        if (!h)
                return -ENOMEM;
        h->control = c;
        r = sd_event_add_defer(c->event, &h->defer, on_defer, h);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(h->defer, SD_EVENT_OFF);
        *ret = TAKE_PTR(h);
        return 0;
}

Heartbeats *heartbeats_free(Heartbeats *h) {
        Heartbeat *b;

        if (!h)
                return NULL;
        while ((b = h->head)) {
                h->head = b->next;
                heartbeat_done(b, -ECANCELED, 0, NULL);
        }
        sd_event_source_disable_unref(h->defer);
        free(h);
        return NULL;
}
