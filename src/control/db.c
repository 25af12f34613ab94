/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <sys/epoll.h>

#include "daemon-util.h"
#include "db-hosts.h"
#include "db.h"
#include "log.h"

#define RECONNECT_MIN_USEC (100 * USEC_PER_MSEC)
#define RECONNECT_MAX_USEC (2 * USEC_PER_SEC)
#define WATCH_INTERVAL_USEC (250 * USEC_PER_MSEC)
#define MIGRATION_LOCK_KEY "7302018117" /* arbitrary, fixed: "mc schema" */
#define PREPARED_MAX 8                  /* statements a connection keeps prepared; more run unprepared */

typedef struct DbQuery DbQuery;
struct DbQuery {
        char *sql;
        const char *name;       /* prepared statement's name (static), or NULL */
        bool reprepared;        /* it failed for want of its prepared statement and was sent again */
        int n_params;
        char **params;
        DbCallback callback;
        void *userdata;
        uint64_t queued_usec;
        DbQuery *next;
};

/* Lease renewals first: a heartbeat that waits behind a burst of pushes and claims until its leases
 * run out makes the control recall tasks from nodes that are alive (seen with 1 000 agents claiming at
 * once: heartbeats answered after 2 s and more, and the agents fenced their own leases). */
typedef enum DbQueueKind {
        DB_QUEUE_URGENT,
        DB_QUEUE_NORMAL,
        _DB_QUEUE_MAX,
} DbQueueKind;

typedef struct DbQueue {
        DbQuery *head, *tail;
} DbQueue;

typedef enum ConnState {
        CONN_DOWN,              /* waiting for the reconnect timer */
        CONN_CONNECTING,
        CONN_SETUP,             /* SET ...; LISTEN ... */
        CONN_MIGRATE_READ,      /* taking the lock, reading the schema version */
        CONN_MIGRATE_APPLY,     /* applying what is missing, releasing the lock */
        CONN_WAIT_SCHEMA,       /* up, waiting for another connection to finish migrating */
        CONN_IDLE,
        CONN_BUSY,
} ConnState;

typedef struct DbConn {
        Db *db;
        PGconn *conn;
        ConnState state;
        bool listener;
        int fd;
        sd_event_source *io;
        sd_event_source *reconnect_timer;
        uint64_t backoff_usec;
        DbQuery *query;                 /* in flight */
        uint64_t busy_since_usec;
        PGresult *result;               /* kept result of the statement in flight */
        bool commit_unconfirmed;        /* the server gave up waiting for the synchronous standby */
        unsigned rotation;              /* Db.host_rotation when this connection attempt began */
        bool preparing;                 /* the query in flight is being prepared, then runs */
        const char *prepared[PREPARED_MAX]; /* the names (DbQuery.name) prepared on this connection */
        size_t n_prepared;
        unsigned prepare_gen;           /* in the server's names: raised when they must be made anew */
} DbConn;

struct Db {
        sd_event *event;
        char *dsn;
        unsigned pool_size;
        uint64_t query_timeout_usec;
        char *listen_sql;               /* "LISTEN a; LISTEN b; "; NULL: no listener */
        char *listener_state_sql;       /* db_set_listener_state(); NULL: none */
        bool listener_state_due;        /* it changed, or the session is new, or its last run failed */
        bool listener_state_failed;     /* its last run failed: again at the next watch round */
        bool listener_state_applied;    /* the latest ran, on the session connected now */
        void (*on_listener_state)(void *userdata);
        const DbMigration *migrations;
        size_t n_migrations;
        const char *functions_sql;
        DbNotifyCallback on_notify;
        DbStateCallback on_state;
        void *userdata;

        DbConn *conns;                  /* pool_size query connections, then the listener if any */
        size_t n_conns;
        DbQueue queues[_DB_QUEUE_MAX];  /* served in this order, each first in first out */
        size_t n_queued;
        size_t n_running;
        sd_event_source *watch_timer;

        bool schema_ready;
        bool migrating;
        int schema_version;
        bool available;
        bool closing;
        uint64_t n_errors;
        uint64_t unavailable_since_usec;        /* 0: available, or never was */
        char *hosts[3];                         /* the DSN's host, hostaddr and port lists, or NULL */
        unsigned host_rotation;                 /* connect attempts given up as stuck */
        uint64_t connect_timeout_usec;
        char last_error[256];                   /* why the last connection failed, for the event */
};

static void conn_dispatch(DbConn *c);
static void conn_fail(DbConn *c, const char *why);
static void db_update_available(Db *db);

static void query_free(DbQuery *q) {
        if (!q)
                return;
        for (int i = 0; i < q->n_params; i++)
                free(q->params[i]);
        free(q->params);
        free(q->sql);
        free(q);
}

static void query_complete(DbQuery *q, PGresult *r, int error) {
        if (q->callback)
                q->callback(r, error, q->userdata);
        query_free(q);
}

const char *db_result_sqlstate(const PGresult *r) {
        const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        return s ?: "";
}

static DbQuery *queue_pop_kind(Db *db, DbQueueKind k) {
        DbQueue *queue = &db->queues[k];
        DbQuery *q = queue->head;

        if (!q)
                return NULL;
        queue->head = q->next;
        if (!queue->head)
                queue->tail = NULL;
        q->next = NULL;
        db->n_queued--;
        return q;
}

static DbQuery *queue_pop(Db *db) {
        for (DbQueueKind k = 0; k < _DB_QUEUE_MAX; k++)
                if (db->queues[k].head)
                        return queue_pop_kind(db, k);
        return NULL;
}

static void queue_push(Db *db, DbQueueKind k, DbQuery *q) {
        DbQueue *queue = &db->queues[k];

        if (queue->tail)
                queue->tail->next = q;
        else
                queue->head = q;
        queue->tail = q;
        db->n_queued++;
}

static void fail_all_queued(Db *db, int error) {
        DbQuery *q;

        while ((q = queue_pop(db)))
                query_complete(q, NULL, error);
}

/* The connection that LISTENs: db_new() puts it last, or makes none. */
static DbConn *db_listener(Db *db) {
        DbConn *last = db->n_conns > 0 ? db->conns + db->n_conns - 1 : NULL;

        return last && last->listener ? last : NULL;
}

static bool any_query_conn_up(Db *db) {
        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *c = db->conns + i;
                if (!c->listener && c->state >= CONN_SETUP)
                        return true;
        }
        return false;
}

static bool any_query_conn_trying(Db *db) {
        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *c = db->conns + i;
                if (!c->listener && c->state != CONN_DOWN)
                        return true;
        }
        return false;
}

static int conn_watch(DbConn *c, uint32_t events);

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int conn_watch(DbConn *c, uint32_t events) {
        int fd = PQsocket(c->conn), r;

        if (fd < 0)
                return -EBADF;
        if (c->io && fd != c->fd) {
                /* libpq may move to another socket while trying several addresses. */
                c->io = sd_event_source_disable_unref(c->io);
        }
        c->fd = fd;
        if (!c->io) {
                r = sd_event_add_io(c->db->event, &c->io, fd, events, on_conn_io, c);
                if (r < 0)
                        return r;
                (void) sd_event_source_set_description(c->io, c->listener ? "db-listener" : "db-conn");
                return 0;
        }
        r = sd_event_source_set_io_events(c->io, events);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->io, SD_EVENT_ON);
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata);

static void conn_close(DbConn *c) {
        if (c->listener) {
                c->db->listener_state_due = true;       /* the next session holds nothing */
                c->db->listener_state_applied = false;
        }
        c->io = sd_event_source_disable_unref(c->io);
        c->fd = -1;
        c->preparing = false;
        c->n_prepared = 0;
        if (c->result) {
                PQclear(c->result);
                c->result = NULL;
        }
        if (c->conn) {
                PQfinish(c->conn);
                c->conn = NULL;
        }
}

static void conn_schedule_reconnect(DbConn *c) {
        int r;

        c->state = CONN_DOWN;
        c->backoff_usec = c->backoff_usec == 0 ? RECONNECT_MIN_USEC : MIN(c->backoff_usec * 2, RECONNECT_MAX_USEC);
        if (!c->reconnect_timer) {
                r = sd_event_add_time_relative(c->db->event, &c->reconnect_timer, CLOCK_MONOTONIC,
                                               c->backoff_usec, 10 * USEC_PER_MSEC, on_reconnect, c);
                if (r < 0)
                        log_error_errno(r, "Failed to schedule a database reconnect: %m");
                return;
        }
        (void) sd_event_source_set_time_relative(c->reconnect_timer, c->backoff_usec);
        (void) sd_event_source_set_enabled(c->reconnect_timer, SD_EVENT_ONESHOT);
}

static void conn_fail(DbConn *c, const char *why) {
        Db *db = c->db;
        DbQuery *q = TAKE_PTR(c->query);
        bool was_up = c->state >= CONN_SETUP;
        size_t n;

        if (was_up || c->backoff_usec == RECONNECT_MIN_USEC)
                log_warning("Database connection %s: %s", was_up ? "lost" : "failed", why);
        else
                log_debug("Database connection failed: %s", why);
        db->n_errors++;
        /* libpq's messages end with a newline, and may hold several lines (one per host tried). */
        snprintf(db->last_error, sizeof(db->last_error), "%s", why);
        for (n = strlen(db->last_error); n > 0 && strchr("\n\r ", db->last_error[n - 1]); n--)
                db->last_error[n - 1] = 0;
        for (char *p = db->last_error; *p; p++)
                if (*p == '\n' || *p == '\r' || *p == '\t')
                        *p = ' ';
        if (c->state == CONN_MIGRATE_READ || c->state == CONN_MIGRATE_APPLY)
                db->migrating = false;
        conn_close(c);
        if (was_up)
                c->backoff_usec = 0;
        conn_schedule_reconnect(c);

        if (q) {
                db->n_running--;
                query_complete(q, NULL, -ECONNRESET);
        }
        /* Nothing will serve the queue soon: answer now rather than let requests hang. */
        if (!any_query_conn_up(db))
                fail_all_queued(db, -ECONNREFUSED);
        db_update_available(db);

        /* Another connection may take over the migration. */
        if (!db->schema_ready && !db->migrating)
                for (size_t i = 0; i < db->n_conns; i++)
                        if (db->conns[i].state == CONN_WAIT_SCHEMA) {
                                conn_dispatch(db->conns + i);
                                break;
                        }
}

static int conn_send(DbConn *c, const char *sql, ConnState next) {
        if (!PQsendQuery(c->conn, sql)) {
                conn_fail(c, PQerrorMessage(c->conn));
                return -EIO;
        }
        c->state = next;
        c->busy_since_usec = now_usec();
        if (conn_watch(c, PQflush(c->conn) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN) < 0) {
                conn_fail(c, "cannot watch socket");
                return -EIO;
        }
        return 0;
}

static void conn_start_setup(DbConn *c) {
        char sql[640];  /* the settings, and up to 400 bytes of LISTEN (db_new()) */

        /* Server-side limits, so a stuck statement or an abandoned transaction never holds locks long;
         * the listener too, as it runs the statements that notify (db_query_prepared_notifying()). */
        snprintf(sql, sizeof(sql),
                 "SET application_name = 'mc-control%s'; SET statement_timeout = %" PRIu64 "; "
                 "SET idle_in_transaction_session_timeout = 10000; %s",
                 c->listener ? "-listener" : "", MAX(c->db->query_timeout_usec / USEC_PER_MSEC, (uint64_t) 1000),
                 c->listener ? c->db->listen_sql : "");
        (void) conn_send(c, sql, CONN_SETUP);
}

static void conn_start_migration(DbConn *c) {
        c->db->migrating = true;
        (void) conn_send(c,
                         "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ");"
                         "CREATE TABLE IF NOT EXISTS mc_schema (version integer PRIMARY KEY,"
                         " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
                         "SELECT coalesce(max(version), 0) FROM mc_schema;",
                         CONN_MIGRATE_READ);
}

static int latest_migration(const Db *db) {
        return db->n_migrations > 0 ? db->migrations[db->n_migrations - 1].version : 0;
}

/* The migrations after `current`, then the functions, each in a transaction of its own, all under the
 * advisory lock that conn_start_migration() took. */
static void conn_apply_migrations(DbConn *c, int current) {
        Db *db = c->db;
        _cleanup_free_ char *sql = NULL;
        size_t size = 0;
        FILE *f;
        int applied = 0;

        f = open_memstream(&sql, &size);
        if (!f) {
                conn_fail(c, "out of memory");
                return;
        }
        for (size_t i = 0; i < db->n_migrations; i++) {
                const DbMigration *m = db->migrations + i;
                if (m->version <= current)
                        continue;
                log_info("Applying database migration %d (%s).", m->version, m->name);
                fprintf(f, "BEGIN;\n%s\nINSERT INTO mc_schema (version, name) VALUES (%d, '%s');\nCOMMIT;\n",
                        m->sql, m->version, m->name);
                applied = m->version;
        }
        /* A schema newer than ours has a newer control's functions, which ours must not replace. */
        if (db->functions_sql && current <= latest_migration(db))
                fprintf(f, "BEGIN;\n%s\nCOMMIT;\n", db->functions_sql);
        fputs("SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ");", f);
        if (fclose(f) != 0) {
                conn_fail(c, "out of memory");
                return;
        }
        db->schema_version = applied > 0 ? applied : current;
        (void) conn_send(c, sql, CONN_MIGRATE_APPLY);
}

/* The server a query connection is on now: with several hosts in the DSN, the one that was
 * read-write when it connected. */
static PGconn *current_server(Db *db) {
        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *c = db->conns + i;
                if (!c->listener && c->state >= CONN_SETUP && c->conn)
                        return c->conn;
        }
        return NULL;
}

static void log_available(Db *db) {
        PGconn *server = current_server(db);
        const char *host = server ? PQhost(server) : NULL, *port = server ? PQport(server) : NULL;
        const char *fields[9];
        char version[16], outage[32];
        size_t n = 0;

        snprintf(version, sizeof(version), "%d", db->schema_version);
        fields[n++] = "DB_HOST";
        fields[n++] = host ?: "";
        fields[n++] = "DB_PORT";
        fields[n++] = port ?: "";
        fields[n++] = "DB_SCHEMA_VERSION";
        fields[n++] = version;
        if (db->unavailable_since_usec > 0) {
                snprintf(outage, sizeof(outage), "%" PRIu64, now_usec() - db->unavailable_since_usec);
                fields[n++] = "DB_OUTAGE_USEC";
                fields[n++] = outage;
        }
        fields[n] = NULL;
        log_event(LOG_INFO, MC_EVENT_DATABASE_AVAILABLE, fields,
                  "Database is available at %s port %s (schema version %d)%s%s%s.", host ?: "?", port ?: "?",
                  db->schema_version, db->unavailable_since_usec > 0 ? " after an outage of " : "",
                  db->unavailable_since_usec > 0 ? outage : "", db->unavailable_since_usec > 0 ? " us" : "");
}

static void db_update_available(Db *db) {
        DbConn *listener = db_listener(db);
        bool listener_ok = !listener || listener->state == CONN_IDLE || listener->state == CONN_BUSY, available;

        available = db->schema_ready && any_query_conn_up(db) && listener_ok;
        if (available == db->available)
                return;
        db->available = available;
        if (available) {
                log_available(db);
                db->unavailable_since_usec = 0;
        } else {
                db->unavailable_since_usec = now_usec();
                log_event(LOG_WARNING, MC_EVENT_DATABASE_UNAVAILABLE, LOG_FIELDS("DB_ERROR", db->last_error),
                          "Database is unavailable (%s); answering 503 until it returns.", db->last_error);
        }
        if (db->on_state)
                db->on_state(available, db->userdata);
}

static bool conn_has_prepared(const DbConn *c, const char *name) {
        for (size_t i = 0; i < c->n_prepared; i++)
                if (c->prepared[i] == name)
                        return true;
        return false;
}

/* The server's name of a prepared statement: ours, and the generation, so that after the server lost
 * or refused its statements (conn_finished()) they are made again under other names. */
static void prepared_name(const DbConn *c, const char *name, char ret[static 64]) {
        snprintf(ret, 64, "%s_%u", name, c->prepare_gen);
}

/* Sends c->query: a prepared statement that is prepared on c runs by its name (nothing parsed or
 * planned); one that is not is prepared first (conn_finished() then runs it); others are sent whole. */
static int conn_send_query(DbConn *c) {
        DbQuery *q = c->query;
        char name[64];
        int ok;

        if (q->name && conn_has_prepared(c, q->name)) {
                prepared_name(c, q->name, name);
                ok = PQsendQueryPrepared(c->conn, name, q->n_params, (const char *const *) q->params, NULL, NULL, 0);
        } else if (q->name && c->n_prepared < PREPARED_MAX) {
                prepared_name(c, q->name, name);
                ok = PQsendPrepare(c->conn, name, q->sql, q->n_params, NULL);
                c->preparing = ok;
        } else
                ok = PQsendQueryParams(c->conn, q->sql, q->n_params, NULL, (const char *const *) q->params,
                                       NULL, NULL, 0);
        if (!ok) {
                conn_fail(c, PQerrorMessage(c->conn));
                return -EIO;
        }
        return 0;
}

/* Sends q on c, which is idle. */
static void conn_start_query(DbConn *c, DbQuery *q) {
        c->query = q;
        c->commit_unconfirmed = false;
        c->db->n_running++;
        if (conn_send_query(c) < 0)
                return;
        c->state = CONN_BUSY;
        c->busy_since_usec = now_usec();
        if (conn_watch(c, PQflush(c->conn) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN) < 0)
                conn_fail(c, "cannot watch socket");
}

static void on_listener_state_done(PGresult *r, int error, void *userdata) {
        Db *db = userdata;

        if (!r)
                return; /* the connection broke (conn_close() made it due for the next) or we are closing */
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                /* Again at the watch's next round, not at once: a statement that cannot run must not
                 * spin. */
                log_warning("Setting the listening connection's session state failed: %s", PQresultErrorMessage(r));
                db->listener_state_failed = true;
                return;
        }
        if (db->listener_state_due)
                return; /* changed meanwhile: the latest runs next */
        db->listener_state_applied = true;
        if (db->on_listener_state)
                db->on_listener_state(db->userdata);
}

/* Runs the listener's session state if it is due and the listener idle. */
static void listener_state_apply(Db *db) {
        DbConn *listener = db_listener(db);
        DbQuery *q;

        if (!listener || listener->state != CONN_IDLE || !db->listener_state_due || db->listener_state_failed ||
            !db->schema_ready)
                return;
        db->listener_state_due = false;
        if (!db->listener_state_sql)
                return;
        q = calloc(1, sizeof(DbQuery));
        if (!q || !(q->sql = strdup(db->listener_state_sql)) || !(q->params = calloc(1, sizeof(char *)))) {
                query_free(q);
                db->listener_state_due = true;
                db->listener_state_failed = true;
                log_oom();
                return;
        }
        q->callback = on_listener_state_done;
        q->userdata = db;
        q->queued_usec = now_usec();
        conn_start_query(listener, q);
}

/* Picks the next thing for an idle (or freshly set up) connection to do. */
static void conn_dispatch(DbConn *c) {
        Db *db = c->db;
        DbQuery *q;

        if (c->listener) {
                c->state = CONN_IDLE;
                (void) conn_watch(c, EPOLLIN);
                /* Before anything else can take the listener (db_query_prepared_notifying()). */
                listener_state_apply(db);
                db_update_available(db);
                return;
        }
        if (!db->schema_ready) {
                if (!db->migrating) {
                        conn_start_migration(c);
                        return;
                }
                c->state = CONN_WAIT_SCHEMA;
                (void) conn_watch(c, EPOLLIN);
                return;
        }

        q = queue_pop(db);
        if (!q) {
                c->state = CONN_IDLE;
                (void) conn_watch(c, EPOLLIN);
                return;
        }
        conn_start_query(c, q);
}

static void schema_became_ready(Db *db) {
        db->schema_ready = true;
        db->migrating = false;
        for (size_t i = 0; i < db->n_conns; i++)
                if (db->conns[i].state == CONN_WAIT_SCHEMA)
                        conn_dispatch(db->conns + i);
        listener_state_apply(db);       /* it runs the schema's functions */
        db_update_available(db);
}

/* SQLSTATEs after which the connection is of no more use, though only the query failed: the server is
 * going away (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now), or it is a standby,
 * which cannot write (25006 read_only_sql_transaction: a failover demoted it, or the DSN let us reach
 * it). Class 08 (connection exception) too. Whether the query committed is unknown or it did not run:
 * the caller answers 503, and the connection is made again, to whichever host is read-write now. */
static const char *const connection_gone_sqlstates[] = { "57P01", "57P02", "57P03", "25006" };

static bool result_means_connection_gone(DbConn *c, const PGresult *r) {
        const char *state = db_result_sqlstate(r);

        if (PQstatus(c->conn) == CONNECTION_BAD || startswith(state, "08"))
                return true;
        for (size_t i = 0; i < ELEMENTSOF(connection_gone_sqlstates); i++)
                if (streq(state, connection_gone_sqlstates[i]))
                        return true;
        return false;
}

/* A statement sequence finished on c (PQgetResult returned NULL); r is its kept result. */
static void conn_finished(DbConn *c, PGresult *r) {
        Db *db = c->db;
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

        switch (c->state) {
        case CONN_SETUP:
                PQclear(r);
                if (!ok) {
                        conn_fail(c, "connection setup failed");
                        return;
                }
                c->backoff_usec = 0;
                log_debug("Database connection %s ready.", c->listener ? "(listener)" : "");
                conn_dispatch(c);
                /* Availability needs the listener and a query connection; whichever comes back last
                 * makes the database available again, so check after every connection, not only the
                 * listener (else a listener back first left the control "unavailable" for good). */
                db_update_available(c->db);
                return;

        case CONN_MIGRATE_READ: {
                int current;
                if (!ok || PQntuples(r) != 1) {
                        log_error("Reading the schema version failed: %s", r ? PQresultErrorMessage(r) : "no result");
                        PQclear(r);
                        conn_fail(c, "migration failed");
                        return;
                }
                current = atoi(PQgetvalue(r, 0, 0));
                PQclear(r);
                if (current > latest_migration(db))
                        log_warning("The database schema (version %d) is newer than this mc-control knows; "
                                    "continuing with its functions, as migrations only add.", current);
                conn_apply_migrations(c, current);
                return;
        }

        case CONN_MIGRATE_APPLY:
                if (!ok) {
                        log_error("Database migration failed: %s", r ? PQresultErrorMessage(r) : "no result");
                        PQclear(r);
                        conn_fail(c, "migration failed");
                        return;
                }
                PQclear(r);
                schema_became_ready(db);
                conn_dispatch(c);
                return;

        case CONN_BUSY: {
                DbQuery *q;

                if (!ok && result_means_connection_gone(c, r)) {
                        /* conn_fail() answers the query with -ECONNRESET: 503, never 500. */
                        conn_fail(c, r ? PQresultErrorMessage(r) : "no result");
                        PQclear(r);
                        return;
                }
                if (c->preparing) {
                        c->preparing = false;
                        if (ok) {
                                /* Prepared: now it runs. */
                                PQclear(r);
                                c->prepared[c->n_prepared++] = c->query->name;
                                if (conn_send_query(c) < 0)
                                        return;
                                if (conn_watch(c, PQflush(c->conn) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN) < 0)
                                        conn_fail(c, "cannot watch socket");
                                return;
                        }
                        /* It did not run; the error is the query's (as if it had been sent whole). */
                } else if (!ok && c->query->name && !c->query->reprepared &&
                           (streq(db_result_sqlstate(r), "26000") || streq(db_result_sqlstate(r), "0A000"))) {
                        /* The server lost the connection's prepared statements (26000: a DISCARD ALL),
                         * or the plan of one cannot be kept: a function it calls now returns another
                         * type, as after a newer control replaced it (0A000 "cached plan must not change
                         * result type"). The statement did not run: all are prepared again, under new
                         * names, and this one runs again, once. */
                        PQclear(r);
                        c->n_prepared = 0;
                        c->prepare_gen++;
                        c->query->reprepared = true;
                        if (conn_send_query(c) < 0)
                                return;
                        if (conn_watch(c, PQflush(c->conn) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN) < 0)
                                conn_fail(c, "cannot watch socket");
                        return;
                }
                q = TAKE_PTR(c->query);
                db->n_running--;
                if (ok && c->commit_unconfirmed) {
                        /* The transaction committed here, but the server stopped waiting for the
                         * synchronous standby (its wait was cancelled): after a failover now it may be
                         * gone. Not acknowledged, as if the connection had broken; a retry with the
                         * same id is safe. */
                        log_warning("The database committed without confirming it reached the synchronous standby; "
                                    "answering as if the outcome were unknown.");
                        db->n_errors++;
                        c->state = CONN_IDLE;
                        query_complete(q, NULL, -ECONNRESET);
                        PQclear(r);
                        if (c->state == CONN_IDLE && c->conn)
                                conn_dispatch(c);
                        return;
                }
                if (!ok) {
                        db->n_errors++;
                        log_warning("Database query failed (%s): %s", db_result_sqlstate(r),
                                    r ? PQresultErrorMessage(r) : "no result");
                }
                /* Make the connection available before the callback, which may queue more. */
                c->state = CONN_IDLE;
                query_complete(q, r, ok ? 0 : -EIO);
                PQclear(r);
                if (c->state == CONN_IDLE && c->conn)
                        conn_dispatch(c);
                return;
        }

        default:
                PQclear(r);
                return;
        }
}

static void conn_read(DbConn *c) {
        if (!PQconsumeInput(c->conn)) {
                conn_fail(c, PQerrorMessage(c->conn));
                return;
        }

        if (c->listener) {
                PGnotify *n;
                while ((n = PQnotifies(c->conn))) {
                        if (c->db->on_notify)
                                c->db->on_notify(n->relname, n->extra, c->db->userdata);
                        PQfreemem(n);
                }
        }

        while (!PQisBusy(c->conn)) {
                PGresult *r = PQgetResult(c->conn);
                if (!r) {
                        if (c->state == CONN_IDLE || c->state == CONN_WAIT_SCHEMA)
                                return; /* nothing was in flight: just notifications */
                        conn_finished(c, TAKE_PTR(c->result));
                        return;
                }
                /* Keep the first error, else the last result: for multi-statement strings that is the
                 * one that matters. */
                if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR)
                        PQclear(r);
                else {
                        PQclear(c->result);
                        c->result = r;
                }
        }
        if (PQstatus(c->conn) == CONNECTION_BAD)
                conn_fail(c, PQerrorMessage(c->conn));
}

static void conn_connect_poll(DbConn *c) {
        switch (PQconnectPoll(c->conn)) {
        case PGRES_POLLING_READING:
                if (conn_watch(c, EPOLLIN) < 0)
                        conn_fail(c, "cannot watch socket");
                return;
        case PGRES_POLLING_WRITING:
                if (conn_watch(c, EPOLLOUT) < 0)
                        conn_fail(c, "cannot watch socket");
                return;
        case PGRES_POLLING_OK:
                if (PQsetnonblocking(c->conn, 1) < 0) {
                        conn_fail(c, "cannot make connection nonblocking");
                        return;
                }
                conn_start_setup(c);
                return;
        default:
                conn_fail(c, PQerrorMessage(c->conn));
                return;
        }
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        DbConn *c = userdata;

        if (c->state == CONN_CONNECTING) {
                conn_connect_poll(c);
                return 0;
        }
        if (revents & EPOLLOUT) {
                int f = PQflush(c->conn);
                if (f < 0) {
                        conn_fail(c, PQerrorMessage(c->conn));
                        return 0;
                }
                if (f == 0)
                        (void) conn_watch(c, EPOLLIN);
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_read(c);
        return 0;
}

/* Notices come with every statement's result; the one that matters is the warning that a commit stopped
 * waiting for the synchronous standby (the wait was cancelled: pg_cancel_backend(), a signal). The
 * server then reports success for a transaction the standby may not have: see CONN_BUSY. The routine
 * name is the one field of that warning that neither translation nor rewording changes. */
static void on_notice(void *userdata, const PGresult *r) {
        DbConn *c = userdata;
        const char *routine = PQresultErrorField(r, PG_DIAG_SOURCE_FUNCTION);

        if (c->state == CONN_BUSY && routine && streq(routine, "SyncRepWaitForLSN"))
                c->commit_unconfirmed = true;
        log_debug("Database notice: %s", PQresultErrorMessage(r));
}

static const char *const host_keywords[] = { "host", "hostaddr", "port" };

/* What the control asks of every connection unless the DSN says otherwise (it comes after these and
 * overrides them: expand_dbname), or the environment variable named does. */
static const struct {
        const char *keyword, *value, *env;
} connect_defaults[] = {
        /* The control writes: a standby is of no use to it. With several hosts (host=a,b), libpq skips
         * the standbys and takes the primary, whichever it is now. */
        { "target_session_attrs", "read-write", "PGTARGETSESSIONATTRS" },
        /* A server whose host vanished (powered off, cut off) sends nothing, not even a reset: without
         * keepalives an idle connection to it, the listener's above all, would wait for the system's
         * default of two hours before anyone noticed. With these, about 11 s (TCP only). */
        { "keepalives_idle",      "5",          NULL },
        { "keepalives_interval",  "2",          NULL },
        { "keepalives_count",     "3",          NULL },
};

static void free_rotated(char *(*rotated)[ELEMENTSOF(host_keywords)]) {
        for (size_t i = 0; i < ELEMENTSOF(*rotated); i++)
                free((*rotated)[i]);
}

static void conn_connect(DbConn *c) {
        Db *db = c->db;
        _cleanup_(free_rotated) char *rotated[ELEMENTSOF(host_keywords)] = {};
        const char *keywords[ELEMENTSOF(connect_defaults) + 1 + ELEMENTSOF(host_keywords) + 1];
        const char *values[ELEMENTSOF(keywords)];
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(connect_defaults); i++)
                if (!connect_defaults[i].env || !getenv(connect_defaults[i].env)) {
                        keywords[n] = connect_defaults[i].keyword;
                        values[n++] = connect_defaults[i].value;
                }
        keywords[n] = "dbname";
        values[n++] = db->dsn;
        /* libpq tries the hosts in order and, in nonblocking mode, waits on one that does not answer
         * at all (a host that is off, packets dropped) for as long as TCP does, never reaching the
         * next. An attempt given up as stuck (on_watch) makes the next ones start one host further. */
        for (size_t i = 0; i < ELEMENTSOF(host_keywords); i++)
                if (db->hosts[i] && db->host_rotation > 0 && (rotated[i] = db_hosts_rotate(db->hosts[i], db->host_rotation))) {
                        keywords[n] = host_keywords[i];
                        values[n++] = rotated[i];
                }
        keywords[n] = values[n] = NULL;
        c->rotation = db->host_rotation;

        c->conn = PQconnectStartParams(keywords, values, /* expand_dbname= */ 1);
        if (!c->conn) {
                conn_fail(c, "out of memory");
                return;
        }
        if (PQstatus(c->conn) == CONNECTION_BAD) {
                conn_fail(c, PQerrorMessage(c->conn));
                return;
        }
        (void) PQsetNoticeReceiver(c->conn, on_notice, c);
        c->state = CONN_CONNECTING;
        c->busy_since_usec = now_usec();
        conn_connect_poll(c);
}

static int on_reconnect(sd_event_source *s, uint64_t usec, void *userdata) {
        conn_connect(userdata);
        return 0;
}

/* The server of c did not answer a query, even the cancel its statement_timeout makes: it (or its host,
 * or the way to it) is gone, and the idle connections to it would each hold the next query that far
 * again before failing, one after the other. They are made again now instead, like c, to whichever
 * host is read-write; the listener too, which would otherwise wait for TCP keepalives to notice. */
static void fail_idle_on_same_server(Db *db, DbConn *c) {
        _cleanup_free_ char *host = NULL, *port = NULL;

        if (!c->conn || !PQhost(c->conn) || !PQport(c->conn))
                return;
        host = strdup(PQhost(c->conn));
        port = strdup(PQport(c->conn));
        if (!host || !port)
                return;
        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *d = db->conns + i;

                if (d != c && d->state == CONN_IDLE && d->conn && streq_ptr(PQhost(d->conn), host) &&
                    streq_ptr(PQport(d->conn), port))
                        conn_fail(d, "its server did not answer another connection in time");
        }
}

/* Fails queries that waited too long for a connection, and connections whose query ran too long
 * (a database that stopped answering without closing the socket). */
static int on_watch(sd_event_source *s, uint64_t usec, void *userdata) {
        Db *db = userdata;
        uint64_t now = now_usec();

        for (DbQueueKind k = 0; k < _DB_QUEUE_MAX; k++)
                while (db->queues[k].head && now - db->queues[k].head->queued_usec > db->query_timeout_usec)
                        query_complete(queue_pop_kind(db, k), NULL, -ETIMEDOUT);

        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *c = db->conns + i;
                bool stuck = (c->state == CONN_BUSY || c->state == CONN_SETUP) &&
                             now - c->busy_since_usec > db->query_timeout_usec + USEC_PER_SEC;
                bool stuck_connecting = c->state == CONN_CONNECTING && now - c->busy_since_usec > db->connect_timeout_usec;

                if (!stuck && !stuck_connecting)
                        continue;
                /* A server that does not answer may be on a host that is gone: the next attempts begin
                 * with the next host (conn_connect()); should this one be only slow, they pass over the
                 * others (standbys: not read-write) back to it. Once per host: the connections to it
                 * all get stuck together. */
                if (db->host_rotation == c->rotation)
                        db->host_rotation++;
                if (stuck)
                        fail_idle_on_same_server(db, c);
                conn_fail(c, stuck_connecting ? "no answer in time while connecting" : "no answer in time");
        }

        if (db->listener_state_failed) {
                db->listener_state_failed = false;
                db->listener_state_due = true;
                listener_state_apply(db);
        }

        (void) sd_event_source_set_time_relative(s, WATCH_INTERVAL_USEC);
        return 0;
}

/* Checks the DSN once, and keeps what conn_connect() rotates and the connect deadline. */
static int db_parse_dsn(Db *db) {
        char *error = NULL;
        PQconninfoOption *options = PQconninfoParse(db->dsn, &error);

        if (!options) {
                log_error("DB_DSN is not a valid PostgreSQL connection string or URI: %s",
                          error ?: "out of memory");
                PQfreemem(error);
                return -EINVAL;
        }
        for (PQconninfoOption *o = options; o->keyword; o++) {
                if (!o->val)
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(host_keywords); i++)
                        if (streq(o->keyword, host_keywords[i]) && !(db->hosts[i] = strdup(o->val))) {
                                PQconninfoFree(options);
                                return log_oom();
                        }
                /* libpq's own connect_timeout is not applied in nonblocking mode: ours, per attempt
                 * (at least 2 s, as libpq would). */
                if (streq(o->keyword, "connect_timeout") && atoi(o->val) > 0)
                        db->connect_timeout_usec = (uint64_t) MAX(atoi(o->val), 2) * USEC_PER_SEC;
        }
        PQconninfoFree(options);
        return 0;
}

int db_new(sd_event *e, const DbConfig *config, DbNotifyCallback on_notify, DbStateCallback on_state,
           void *userdata, Db **ret) {
        _cleanup_(db_freep) Db *db = NULL;
        int r;

        if (config->pool_size == 0)
                return -EINVAL;

        db = calloc(1, sizeof(Db));
        if (!db)
                return log_oom();
        db->event = sd_event_ref(e);
        db->dsn = strdup(config->dsn ?: "");
        if (!db->dsn)
                return log_oom();
        if (config->listen_channels && config->listen_channels[0]) {
                _cleanup_free_ char *sql = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&sql, &size);

                if (!f)
                        return log_oom();
                for (const char *const *ch = config->listen_channels; *ch; ch++)
                        fprintf(f, "LISTEN %s; ", *ch);
                if (fclose(f) != 0)
                        return log_oom();
                if (size > 400)
                        return -E2BIG;  /* conn_start_setup()'s buffer */
                db->listen_sql = TAKE_PTR(sql);
        }
        r = db_parse_dsn(db);
        if (r < 0)
                return r;
        db->pool_size = config->pool_size;
        db->query_timeout_usec = config->query_timeout_usec ?: 10 * USEC_PER_SEC;
        if (db->connect_timeout_usec == 0)
                db->connect_timeout_usec = db->query_timeout_usec + USEC_PER_SEC;
        db->migrations = config->migrations;
        db->n_migrations = config->n_migrations;
        db->functions_sql = config->functions_sql;
        db->on_notify = on_notify;
        db->on_state = on_state;
        db->on_listener_state = config->on_listener_state;
        db->userdata = userdata;

        db->n_conns = config->pool_size + (db->listen_sql ? 1 : 0);
        db->conns = calloc(db->n_conns, sizeof(DbConn));
        if (!db->conns)
                return log_oom();
        for (size_t i = 0; i < db->n_conns; i++) {
                db->conns[i].db = db;
                db->conns[i].fd = -1;
                db->conns[i].listener = i >= config->pool_size;
        }

        r = sd_event_add_time_relative(e, &db->watch_timer, CLOCK_MONOTONIC, WATCH_INTERVAL_USEC,
                                       50 * USEC_PER_MSEC, on_watch, db);
        if (r < 0)
                return log_error_errno(r, "Failed to add database watch timer: %m");
        (void) sd_event_source_set_enabled(db->watch_timer, SD_EVENT_ON);

        for (size_t i = 0; i < db->n_conns; i++)
                conn_connect(db->conns + i);

        *ret = TAKE_PTR(db);
        return 0;
}

Db *db_free(Db *db) {
        if (!db)
                return NULL;
        /* Callbacks run below may try to queue more work; refuse it. */
        db->closing = true;
        for (size_t i = 0; i < db->n_conns; i++) {
                DbConn *c = db->conns + i;
                DbQuery *q = TAKE_PTR(c->query);
                conn_close(c);
                c->reconnect_timer = sd_event_source_disable_unref(c->reconnect_timer);
                if (q)
                        query_complete(q, NULL, -ECANCELED);
        }
        fail_all_queued(db, -ECANCELED);
        sd_event_source_disable_unref(db->watch_timer);
        free(db->conns);
        free(db->dsn);
        free(db->listen_sql);
        free(db->listener_state_sql);
        for (size_t i = 0; i < ELEMENTSOF(db->hosts); i++)
                free(db->hosts[i]);
        sd_event_unref(db->event);
        free(db);
        return NULL;
}

static int query_enqueue(Db *db, DbQueueKind kind, bool on_listener, const char *name, const char *sql, int n_params,
                         const char *const *params, DbCallback callback, void *userdata) {
        DbConn *listener;
        DbQuery *q;

        assert(db);
        assert(sql);

        if (db->closing)
                return -ECANCELED;
        /* Fail fast when no connection can serve it soon. */
        if (!db->schema_ready && !any_query_conn_trying(db))
                return -ECONNREFUSED;
        if (db->schema_ready && !any_query_conn_up(db))
                return -ECONNREFUSED;

        q = calloc(1, sizeof(DbQuery));
        if (!q)
                return -ENOMEM;
        q->sql = strdup(sql);
        q->name = name;
        q->n_params = n_params;
        q->params = calloc(MAX(n_params, 1), sizeof(char *));
        if (!q->sql || !q->params) {
                query_free(q);
                return -ENOMEM;
        }
        for (int i = 0; i < n_params; i++)
                if (params[i] && !(q->params[i] = strdup(params[i]))) {
                        query_free(q);
                        return -ENOMEM;
                }
        q->callback = callback;
        q->userdata = userdata;
        q->queued_usec = now_usec();
        if (on_listener && db->schema_ready && (listener = db_listener(db)) && listener->state == CONN_IDLE) {
                conn_start_query(listener, q);
                return 0;
        }
        queue_push(db, kind, q);

        for (size_t i = 0; i < db->n_conns; i++)
                if (db->conns[i].state == CONN_IDLE && !db->conns[i].listener) {
                        conn_dispatch(db->conns + i);
                        break;
                }
        return 0;
}

int db_query(Db *db, const char *sql, int n_params, const char *const *params, DbCallback callback, void *userdata) {
        return query_enqueue(db, DB_QUEUE_NORMAL, false, NULL, sql, n_params, params, callback, userdata);
}

int db_query_urgent(Db *db, const char *sql, int n_params, const char *const *params, DbCallback callback,
                    void *userdata) {
        return query_enqueue(db, DB_QUEUE_URGENT, false, NULL, sql, n_params, params, callback, userdata);
}

int db_query_prepared(Db *db, const char *name, const char *sql, int n_params, const char *const *params,
                      DbCallback callback, void *userdata) {
        return query_enqueue(db, DB_QUEUE_NORMAL, false, name, sql, n_params, params, callback, userdata);
}

int db_query_prepared_notifying(Db *db, const char *name, const char *sql, int n_params, const char *const *params,
                                DbCallback callback, void *userdata) {
        return query_enqueue(db, DB_QUEUE_NORMAL, true, name, sql, n_params, params, callback, userdata);
}

int db_set_listener_state(Db *db, const char *sql) {
        char *copy = NULL;

        assert(db);

        if (streq_ptr(db->listener_state_sql, sql))
                return 0;
        if (sql && !(copy = strdup(sql)))
                return -ENOMEM;
        free(db->listener_state_sql);
        db->listener_state_sql = copy;
        db->listener_state_due = true;
        db->listener_state_applied = false;
        listener_state_apply(db);
        return 0;
}

bool db_listener_state_applied(Db *db) {
        return db && db->listener_state_applied;
}

bool db_is_available(Db *db) {
        return db && db->available;
}

size_t db_n_pending(Db *db) {
        return db->n_queued + db->n_running;
}

uint64_t db_n_errors(Db *db) {
        return db->n_errors;
}

int db_schema_version(Db *db) {
        return db->schema_version;
}
