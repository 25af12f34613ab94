/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Task state records in the DHT: what a control publishes on every state change of a task, so that
 * `mc-dhtget task <id>` can show (and prove) a task's state with no control running.
 *
 * Each record is a BEP 44 mutable item signed by the cluster key (cluster-key.h), with
 *   salt  "task/<id>", or "task/~" + 40 hex digits of SHA-1(<id>) when that would exceed BEP 44's 64
 *         bytes (task ids may have 128 characters; "~" cannot occur in an id, so the forms never clash);
 *   seq   increasing with every update: the caller passes the update time in microseconds since the
 *         epoch (so replicas publishing the same task agree on the order);
 *   v     a bencoded dict, keys in this order, at most 1000 bytes (ids <= 128 bytes, node <= 255):
 *           "attempt"     int, leases granted so far
 *           "fmt"         int, 1 (this format)
 *           "id"          string, the task id (checked by the reader against the one asked for)
 *           "lease_token" int, the current fencing token, 0 when not leased
 *           "node"        string, the lease holder (absent when not leased)
 *           "status"      string: queued, leased, running, succeeded, failed, timed_out or cancelled
 *                         (src/shared/task-status.h)
 *           "updated_at"  int, microseconds since the epoch
 *
 * The reader accepts a record only when the signature verifies against the configured cluster public
 * key, the id inside matches, and the dict is exactly this format; anything else is rejected. */

#include "dht.h"

#define TASK_ID_MAX 128
#define TASK_NODE_MAX 255

typedef struct TaskRecord {
        const char *id;
        const char *status;
        int64_t attempt;
        int64_t lease_token;    /* 0: none */
        const char *node;       /* NULL: none */
        int64_t updated_at_usec;
} TaskRecord;

/* A decoded record; the strings live in the struct. */
typedef struct TaskRecordData {
        char id[TASK_ID_MAX + 1];
        char status[16];
        char node[TASK_NODE_MAX + 1];   /* "" when none */
        int64_t attempt, lease_token, updated_at_usec;
        int64_t seq;
} TaskRecordData;

int task_record_salt(const char *id, char ret[BEP44_SALT_MAX + 1], size_t *ret_len);
int task_record_encode(const TaskRecord *t, uint8_t *buf, size_t size, size_t *ret_len);
int task_record_decode(const void *v, size_t n, TaskRecordData *ret);

/* Signs and publishes t (flags: DHT_REPUBLISH to keep it alive; dht_unpublish() with the target from
 * task_record_target() stops that). */
int task_record_publish(Dht *d, EVP_PKEY *cluster_key, const TaskRecord *t, int64_t seq, unsigned flags,
                        DhtCallback cb, void *userdata);
int task_record_target(const uint8_t cluster_pub[BEP44_KEY_SIZE], const char *id, uint8_t ret[DHT_ID_SIZE]);

/* Finds and verifies the record of task id. error: 0, -ENOENT (no record), -EBADMSG (only records
 * that failed verification), or the lookup's error. */
typedef void (*TaskRecordCallback)(int error, const TaskRecordData *rec, unsigned rejected, void *userdata);
int task_record_fetch(Dht *d, const uint8_t cluster_pub[BEP44_KEY_SIZE], const char *id, TaskRecordCallback cb, void *userdata);
