/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "daemon-util.h"
#include "dht-daemon.h"
#include "hashmap.h"
#include "list.h"
#include "log.h"
#include "task-publisher.h"

#define PUBLISH_IN_FLIGHT 16
#define PUBLISH_MAX_PENDING 4096
#define KEY_SIZE (TASK_ID_MAX + 1)

typedef struct Pending Pending;
struct Pending {
        char key[KEY_SIZE];     /* the task id, zero-padded: the hash map's fixed-size key */
        TaskStatus status;
        char node[TASK_NODE_MAX + 1];
        int64_t lease_token, attempt, updated_at_usec;
        LIST_FIELDS(Pending);   /* oldest first */
};

struct TaskPublisher {
        Control *control;
        Dht *dht;
        EVP_PKEY *key;
        uint8_t pub[BEP44_KEY_SIZE];
        Hashmap *pending;
        Pending *head, *tail;
        unsigned in_flight;
        int64_t last_seq;
        uint64_t published, failed, dropped;
};

static void publish_more(TaskPublisher *p);

static void pending_unlink(TaskPublisher *p, Pending *e) {
        LIST_REMOVE_QUEUED(p->head, p->tail, e);
        hashmap_remove(p->pending, e->key);
}

static void on_published(Dht *d, const DhtResult *r, void *userdata) {
        TaskPublisher *p = userdata;

        if (r->error == -ECANCELED)
                return; /* shutting down: p may be gone */
        p->in_flight--;
        if (r->error < 0 || r->n_stored == 0) {
                p->failed++;
                log_debug("Publishing a task record in the DHT failed: %s", strerror(-(r->error ?: -EHOSTUNREACH)));
        } else
                p->published++;
        publish_more(p);
}

static bool status_is_active(TaskStatus s) {
        return s == TASK_STATUS_LEASED || s == TASK_STATUS_RUNNING;
}

static void publish_one(TaskPublisher *p, Pending *e) {
        uint8_t target[DHT_ID_SIZE];
        TaskRecord t = {
                .id = e->key,
                .status = task_status_to_string(e->status),
                .attempt = e->attempt,
                .lease_token = e->lease_token,
                .node = e->node[0] ? e->node : NULL,
                .updated_at_usec = e->updated_at_usec,
        };
        /* BEP 44 needs seq to grow; the update time does, except when two updates share a microsecond. */
        int64_t seq = MAX(e->updated_at_usec, p->last_seq + 1);
        int r;

        p->last_seq = seq;
        /* A task that is no longer leased needs no keeping alive; one that is gets republished. */
        if (task_record_target(p->pub, e->key, target) >= 0)
                (void) dht_unpublish(p->dht, target);
        r = task_record_publish(p->dht, p->key, &t, seq, status_is_active(e->status) ? DHT_REPUBLISH : 0,
                                on_published, p);
        if (r < 0) {
                p->failed++;
                log_debug_errno(r, "Cannot publish the record of task %s: %m", e->key);
                return;
        }
        p->in_flight++;
}

static void publish_more(TaskPublisher *p) {
        while (p->head && p->in_flight < PUBLISH_IN_FLIGHT) {
                Pending *e = p->head;
                pending_unlink(p, e);
                publish_one(p, e);
                free(e);
        }
}

void task_publisher_changed(TaskPublisher *p, const char *id, TaskStatus status, const char *node,
                            const char *lease_token, const char *attempt) {
        char key[KEY_SIZE] = {};
        Pending *e;

        if (!p || !id || strlen(id) > TASK_ID_MAX || !task_status_to_string(status))
                return;
        strncpy(key, id, sizeof(key) - 1);

        e = hashmap_get(p->pending, key);
        if (e)
                pending_unlink(p, e);   /* a newer state replaces the one still waiting */
        else {
                if (hashmap_size(p->pending) >= PUBLISH_MAX_PENDING) {
                        Pending *old = p->head;
                        pending_unlink(p, old);
                        free(old);
                        p->dropped++;
                }
                e = calloc(1, sizeof(Pending));
                if (!e)
                        return;
                memcpy(e->key, key, sizeof(key));
        }
        e->status = status;
        snprintf(e->node, sizeof(e->node), "%s", node && status_is_active(status) ? node : "");
        e->lease_token = lease_token ? atoll(lease_token) : 0;
        e->attempt = attempt ? atoll(attempt) : 0;
        e->updated_at_usec = (int64_t) realtime_usec();

        if (hashmap_put(p->pending, e->key, e) < 0) {
                free(e);
                return;
        }
        LIST_APPEND(p->head, p->tail, e);
        publish_more(p);
}

int task_publisher_new(Control *c, uint16_t http_port, TaskPublisher **ret) {
        TaskPublisher *p;
        const char *state_dir = daemon_state_directory("/var/lib/mc-control");
        char hex[CLUSTER_KEY_HEX_MAX];
        int r;

        if (c->config.dht.port == 0) {
                *ret = NULL;
                return 0;
        }
        p = calloc(1, sizeof(TaskPublisher));
        if (!p)
                return log_oom();
        p->control = c;
        p->pending = hashmap_new(KEY_SIZE);
        if (!p->pending) {
                task_publisher_free(p);
                return log_oom();
        }

        r = cluster_key_load_or_generate(state_dir, &p->key);
        if (r < 0) {
                task_publisher_free(p);
                return log_error_errno(r, "Cannot load or create the cluster key in %s: %m", state_dir);
        }
        r = cluster_key_public_hex(p->key, hex);
        if (r >= 0)
                r = cluster_key_parse_public(hex, p->pub);
        if (r < 0) {
                task_publisher_free(p);
                return log_error_errno(r, "Cannot read the cluster public key: %m");
        }
        if (c->config.dht.cluster_key) {
                uint8_t configured[BEP44_KEY_SIZE];
                if (cluster_key_parse_public(c->config.dht.cluster_key, configured) < 0 ||
                    memcmp(configured, p->pub, sizeof(configured)) != 0) {
                        task_publisher_free(p);
                        return log_error_errno(EKEYREJECTED, "CLUSTER_KEY=%s is not the public half of %s/%s (%s): "
                                               "copy the same %s to every replica.", c->config.dht.cluster_key,
                                               state_dir, CLUSTER_KEY_FILE, hex, CLUSTER_KEY_FILE);
                }
        }

        r = dht_from_settings(c->event, &c->config.dht, state_dir, &p->dht);
        if (r < 0) {
                task_publisher_free(p);
                return r;
        }
        r = dht_control_announce(p->dht, c->config.dht.cluster_name, http_port);
        if (r < 0) {
                task_publisher_free(p);
                return log_error_errno(r, "Cannot announce this control in the DHT: %m");
        }
        log_info("DHT node on UDP port %u; cluster \"%s\", public key %s; announcing HTTP port %u.",
                 dht_port(p->dht), c->config.dht.cluster_name, hex, http_port);
        *ret = p;
        return 0;
}

TaskPublisher *task_publisher_free(TaskPublisher *p) {
        if (!p)
                return NULL;
        p->dht = dht_free(p->dht);
        while (p->head) {
                Pending *e = p->head;
                pending_unlink(p, e);
                free(e);
        }
        hashmap_free(p->pending);
        EVP_PKEY_free(p->key);
        free(p);
        return NULL;
}

void task_publisher_stats(TaskPublisher *p, TaskPublisherStats *ret) {
        *ret = (TaskPublisherStats) {};
        if (!p)
                return;
        ret->published = p->published;
        ret->failed = p->failed;
        ret->dropped = p->dropped;
        ret->pending = hashmap_size(p->pending);
        DhtStats st;
        dht_get_stats(p->dht, &st);
        ret->dht_nodes = st.nodes;
}
