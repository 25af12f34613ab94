/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* db-queue-probe DSN: on a pool of one connection to DSN, a slow query first, then four ordinary ones,
 * then two urgent ones (db_query_urgent); prints the order in which they were answered, one name per
 * line, and exits 0 once all have been, 1 when one failed or nothing came within 30 s.
 * test-control-heartbeat-batch.py runs it against a real PostgreSQL. */

#include <stdio.h>
#include <stdlib.h>

#include "db.h"
#include "log.h"
#include "macro.h"

#define N_QUERIES 7

static sd_event *event;
static bool available;
static unsigned answered, failed;

static void on_state(bool up, void *userdata) {
        available = up;
}

static void on_answer(PGresult *r, int error, void *userdata) {
        const char *name = userdata;

        if (error < 0 || !r || PQresultStatus(r) != PGRES_TUPLES_OK) {
                fprintf(stderr, "%s failed: %s\n", name, error < 0 ? strerror(-error) : "an error result");
                failed++;
        }
        printf("%s\n", name);
        fflush(stdout);
        if (++answered == N_QUERIES)
                (void) sd_event_exit(event, 0);
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        fprintf(stderr, "db-queue-probe: %u of %d answered within 30 s\n", answered, N_QUERIES);
        return sd_event_exit(event, 1);
}

int main(int argc, char *argv[]) {
        _cleanup_(db_freep) Db *db = NULL;
        int r;

        if (argc != 2) {
                fprintf(stderr, "Usage: %s DSN\n", argv[0]);
                return 2;
        }
        log_setup("db-queue-probe");
        if (sd_event_default(&event) < 0 ||
            sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, 30 * USEC_PER_SEC, 0, on_deadline, NULL) < 0)
                return 1;
        r = db_new(event, &(DbConfig) { .dsn = argv[1], .pool_size = 1, .query_timeout_usec = 20 * USEC_PER_SEC },
                   NULL, on_state, NULL, &db);
        if (r < 0) {
                fprintf(stderr, "db_new: %s\n", strerror(-r));
                return 1;
        }
        while (!available)
                if (sd_event_run(event, UINT64_MAX) < 0 || sd_event_get_state(event) == SD_EVENT_FINISHED)
                        return 1;

        /* The slow one takes the only connection at once; the others wait in the queues. */
        if (db_query(db, "SELECT pg_sleep(0.3)", 0, NULL, on_answer, (void *) "slow") < 0 ||
            db_query(db, "SELECT 1", 0, NULL, on_answer, (void *) "normal-1") < 0 ||
            db_query(db, "SELECT 1", 0, NULL, on_answer, (void *) "normal-2") < 0 ||
            db_query_urgent(db, "SELECT 2", 0, NULL, on_answer, (void *) "urgent-1") < 0 ||
            db_query(db, "SELECT 1", 0, NULL, on_answer, (void *) "normal-3") < 0 ||
            db_query_urgent(db, "SELECT 2", 0, NULL, on_answer, (void *) "urgent-2") < 0 ||
            db_query(db, "SELECT 1", 0, NULL, on_answer, (void *) "normal-4") < 0)
                return 1;
        r = sd_event_loop(event);
        db = db_free(db);
        sd_event_unref(event);
        return r == 0 && failed == 0 ? 0 : 1;
}
