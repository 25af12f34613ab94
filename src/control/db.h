/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* PostgreSQL from the event loop, never blocking it: a small pool of libpq connections in nonblocking
 * mode, each watched by an sd-event io source, a FIFO of queries waiting for a free connection (and one
 * served before it, for urgent ones), and one extra connection that LISTENs (and runs the statements
 * that notify, when it is idle: db_query_prepared_notifying()). Connections that
 * break are re-opened with backoff; while none is up, queries fail at once with -ECONNREFUSED (the API
 * answers 503) instead of piling up. The schema migrations run on the first connection, under an
 * advisory lock, before any query is served.
 *
 * Failover (docs/postgresql-ha.md): connections go only to a read-write server (target_session_attrs
 * unless the DSN says otherwise), so with several hosts (host=a,b) every reconnection finds whichever
 * is the primary now. A server that answers nothing in time is given up on all its connections, and
 * the next attempts begin with the next host. */

#include <libpq-fe.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct Db Db;

/* result is NULL when the query could not run or its outcome is unknown (error: -ECONNREFUSED no
 * connection, -ECONNRESET the connection broke or the server is going away or is a standby, or it
 * committed without the synchronous standby's confirmation; -ETIMEDOUT it waited or ran too long,
 * -ECANCELED shutting down); otherwise it is the query's result, which may be an error result (check
 * PQresultStatus; -EIO). Db frees it afterwards. */
typedef void (*DbCallback)(PGresult *result, int error, void *userdata);
typedef void (*DbNotifyCallback)(const char *channel, const char *payload, void *userdata);
/* Called when the database becomes usable (schema applied, listener up) or stops being so. */
typedef void (*DbStateCallback)(bool available, void *userdata);

typedef struct DbMigration {
        int version;
        const char *name;
        const char *sql;
} DbMigration;

typedef struct DbConfig {
        const char *dsn;                /* libpq keyword/value string or URI */
        unsigned pool_size;
        uint64_t query_timeout_usec;    /* queued plus running */
        const char *const *listen_channels; /* NULL-terminated; NULL or empty: no listener */
        const DbMigration *migrations;
        size_t n_migrations;
        const char *functions_sql;      /* applied after the migrations at every start; NULL: none */
        /* Called after the listener's session state (db_set_listener_state()) was put in place. */
        void (*on_listener_state)(void *userdata);
} DbConfig;

int db_new(sd_event *e, const DbConfig *config, DbNotifyCallback on_notify, DbStateCallback on_state,
           void *userdata, Db **ret);
/* Fails every pending query with -ECANCELED, then closes the connections. */
Db *db_free(Db *db);
DEFINE_TRIVIAL_CLEANUP_FUNC(Db *, db_free);

/* Queues a query with text parameters (copied; a NULL entry is SQL NULL). */
int db_query(Db *db, const char *sql, int n_params, const char *const *params, DbCallback callback, void *userdata);
/* The same, served before every query queued with the others (lease renewals, which must not wait
 * behind a burst of other work); among themselves, in order. */
int db_query_urgent(Db *db, const char *sql, int n_params, const char *const *params, DbCallback callback,
                    void *userdata);
/* The same as db_query(), as a prepared statement: each connection prepares sql under name at its first use (one
 * more round trip), and afterwards only runs it, without parsing or planning it again (the server's
 * plan cache decides between a generic and a custom plan, as for any prepared statement). name must be
 * a string constant (it is compared by address) and always go with the same sql. */
int db_query_prepared(Db *db, const char *name, const char *sql, int n_params, const char *const *params,
                      DbCallback callback, void *userdata);

/* The same, for a statement that sends notifications this control listens to: run on the listening
 * connection when that is idle, so that the server hands them to it with the statement's result rather
 * than waking the listening backend to send them apart (a second process woken per statement, and a
 * second read here); on a query connection otherwise. Whoever else listens hears them as before. */
int db_query_prepared_notifying(Db *db, const char *name, const char *sql, int n_params, const char *const *params,
                                DbCallback callback, void *userdata);

/* What the listening connection's session holds (advisory locks, settings), as one statement that sets
 * it from scratch (sql is copied; NULL: nothing). It runs on the listener when it changes and after
 * every reconnection (a new session holds nothing), before the listener takes any other statement;
 * after an error, again at the next round of the connections' watch. DbConfig.on_listener_state is
 * called after each run that succeeded while sql was still the latest. */
int db_set_listener_state(Db *db, const char *sql);
/* Whether the latest listener state ran on the listener's present session. */
bool db_listener_state_applied(Db *db);

bool db_is_available(Db *db);
/* Queries waiting for a connection plus those running. */
size_t db_n_pending(Db *db);
uint64_t db_n_errors(Db *db);
int db_schema_version(Db *db);

/* Convenience: the SQLSTATE of an error result, or "" */
const char *db_result_sqlstate(const PGresult *r);
