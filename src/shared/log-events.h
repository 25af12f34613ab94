/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Every event the daemons put in the journal as MC_EVENT=<name>: this table is the only list.
 * log_event() takes an McEvent, so a misspelt event does not compile, and adds MESSAGE_ID= for the
 * events that have one. Those IDs are what `journalctl -x` looks up in catalog/mc.catalog to explain
 * an entry to the operator; docs/events.md says when each event is logged and with which fields.
 * test/shared/test-event-docs.py fails when an event here lacks either, or when src/ logs an event
 * some other way.
 *
 * A MESSAGE_ID is an interface: operators filter on it (journalctl MESSAGE_ID=...), so it never
 * changes or moves to another event. A new event gets a new one from `systemd-id128 new`. An event
 * may go without (NULL), but must still be in docs/events.md. */

#define MC_EVENT_TABLE(X)                                                                       \
        /* the life of a task */                                                                \
        X(TASK_QUEUED,          task_queued,          "808bd4c212d34b089cbf5ab7508b1f35")       \
        X(LEASE_ACQUIRED,       lease_acquired,       "f6e802cb68c44974838749864c8b813a")       \
        X(CONTAINER_STARTED,    container_started,    "1d372d6c54f24ef5ae13a5b41283177f")       \
        X(TASK_TIMEOUT,         task_timeout,         "4c9330f259234bf5b0e12b8632ac096e")       \
        X(CONTAINER_EXITED,     container_exited,     "2c09291be5a24c42af5e5ea95e31b8ba")       \
        X(CONTAINER_LOST,       container_lost,       "1875656dff0a468a87420173eeccb43c")       \
        X(RESULT_QUEUED,        result_queued,        "f79210b7eadb4425ac125ab17df22e84")       \
        X(RESULT_REJECTED,      result_rejected,      "f7b1f8f4ecf244949403c4bd5c192b27")       \
        X(TASK_FINISHED,        task_finished,        "e2f0c4e808fa4d01827457f7dd1acede")       \
        /* leases that end early */                                                             \
        X(LEASE_EXPIRED,        lease_expired,        "f6f044c5cc2d40fe98ccf978f0e188c7")       \
        X(LEASE_REVOKED,        lease_revoked,        "4dcb110e0de342158ccdc92150285078")       \
        X(LEASE_RELEASED,       lease_released,       "19d8a3bb543a4d41988d6ee41ad1c80f")       \
        X(STALE_LEASE,          stale_lease,          "e52181c27680460ebd4bdeaa26469b40")       \
        /* an agent restarted over running work */                                              \
        X(CONTAINER_ADOPTED,    container_adopted,    "aa6cc6e6c3e2495a9c7e87295ab61635")       \
        X(CONTAINER_DISCARDED,  container_discarded,  "729c6825982a4986a9dc4d2927e93655")       \
        /* nodes */                                                                             \
        X(NODE_REGISTERED,      node_registered,      "d6a843a67fdb499bb335eeff77134e59")       \
        X(NODE_DRAINING,        node_draining,        "238305f40a6a45acb040fab4101c6b70")       \
        X(NODE_RESUMED,         node_resumed,         "a685a475006545b1b68d24c27d7225bb")       \
        X(ENGINE_UNAVAILABLE,   engine_unavailable,   "c6634b9ae96c44229d6c54fa74a22d4a")       \
        X(ENGINE_AVAILABLE,     engine_available,     "2cc706f1aa094de2930700ae48687fd2")       \
        X(NODE_REMOVED,         node_removed,         "99baeba4b92841f4a8118f5800be2a8c")       \
        /* what the control deletes: DELETE /api/tasks/{id}, retention */                      \
        X(TASKS_DELETED,        tasks_deleted,        "b14765cb541f4217a5e7a3c54a869edb")       \
        /* an agent finding the controls */                                                     \
        X(CONTROL_URLS_CHANGED, control_urls_changed, "59f76b2a54f3418b8b75b17bf9679324")       \
        X(CONTROLS_FOUND,       controls_found,       "8cca37b6b48148f99145ae77adf803cf")       \
        X(CONTROLS_NOT_FOUND,   controls_not_found,   "b9db86c66f2e4e30a88caec49a914b73")       \
        X(DHT_LOOKUP_FAILED,    dht_lookup_failed,    "3e00ecb530b04bc5b453f7cd5eda002b")       \
        /* the seeder's contents */                                                             \
        X(CONTENT_ADDED,        content_added,        "c7e9a86ea82849ef82787786bcd33fa3")       \
        X(CONTENT_REMOVED,      content_removed,      "1c8e27a1553f47fe83fbfab878c34122")       \
        X(CONTENT_REGISTERED,   content_registered,   "31a157816b814fc3a3c5c4cd96fb644e")       \
        X(CONTENT_REGISTER_FAILED, content_register_failed, "12c5c588848042ff873117176a8bd49c") \
        /* the seeder serving peers */                                                          \
        X(PEER_VIOLATION,       peer_violation,       "b1156933d8bc4aafa6e49b5463a09ca6")       \
        X(PEER_LIMIT,           peer_limit,           "275b9588db4c481193b93441830a7ed1")       \
        X(SERVING_SUMMARY,      serving_summary,      "496e5e8aa92c46209c25f1401cae9504")       \
        /* HTTP servers under load or attack */                                                  \
        X(HTTP_LIMIT,           http_limit,           "91975fb2cd55434d8e0cb1c8c7911676")       \
        X(HTTP_TIMEOUT,         http_timeout,         "5722a1126e9f410cade55a7bc578255f")       \
        X(HTTP_NOT_SERVING,     http_not_serving,     "653a33e45c85417daefbc0fb05ca62b2")       \
        /* the control's database */                                                            \
        X(DATABASE_UNAVAILABLE, database_unavailable, "b3cac9db4beb4720b2e8ff4f4ab51727")       \
        X(DATABASE_AVAILABLE,   database_available,   "b8a5bd77693e4cff94f6dedf761a221a")       \
        /* an agent fetching a task's inputs */                                                 \
        X(INPUTS_FETCHED,       inputs_fetched,       "61804d4718fd4d65ad62702c766b2ba9")       \
        X(INPUTS_FAILED,        inputs_failed,        "55dddac9fc014c8ea8127cad72b6593d")       \
        /* transport security */                                                                \
        X(PLAINTEXT_HTTP,       plaintext_http,       "a3c8754dd71d4407b0c8e48855578472")       \
        X(CREDENTIALS_RELOADED, credentials_reloaded, "2200b691a06c409bb9c4eac85fdface5")       \
        X(CREDENTIALS_RELOAD_FAILED, credentials_reload_failed, "bc091d1ec4204e73a33ccb25254f9026") \
        X(CONTROL_TLS_FAILED,   control_tls_failed,   "1b04c5bde7f84a9c85a0222db4aafef2") \
        /* sockets systemd passes (socket units) */                                              \
        X(PASSED_SOCKET_REJECTED, passed_socket_rejected, "ec738755c23a41948f5a594df74d9ca8")   \
        X(PASSED_SOCKET_OVERRIDES_CONFIG, passed_socket_overrides_config, "7a673519de27477f8fa5a869ab54e2af")

typedef enum McEvent {
        MC_EVENT_NONE,          /* a plain message: no MC_EVENT= field */
#define MC_EVENT_ENUM_(upper, name, message_id) MC_EVENT_##upper,
        MC_EVENT_TABLE(MC_EVENT_ENUM_)
#undef MC_EVENT_ENUM_
        _MC_EVENT_MAX,
} McEvent;

/* MC_EVENT_TASK_QUEUED for MC_EVENT_TASK_QUEUED; NULL for MC_EVENT_NONE. */
const char *log_event_name(McEvent event);
/* The event's MESSAGE_ID as 32 hex digits, or NULL when it has none. */
const char *log_event_message_id(McEvent event);
