/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What mc-control and mc-agent need to join the DHT, in a few lines each.
 *
 * Configuration (add to the daemon's ConfigOption table, with a DhtSettings member in its config):
 *
 *     typedef struct Config { ...; DhtSettings dht; } Config;
 *     static const ConfigOption options[] = { ..., DHT_CONFIG_OPTIONS(Config, dht) };
 *
 * gives DHT_PORT (UDP port, 0 = no DHT, the default), DHT_BOOTSTRAP (HOST:PORT list), CLUSTER_NAME
 * (default "mc") and CLUSTER_KEY (the cluster's public key, hex or base64: agents and mc-dhtget).
 *
 * mc-control:
 *     r = dht_from_settings(event, &cfg.dht, state_dir, &dht);           // dht == NULL when DHT_PORT=0
 *     r = cluster_key_load_or_generate(state_dir, &cluster_key);          // cluster-key.h
 *     r = dht_control_announce(dht, cfg.dht.cluster_name, http_port);    // re-announced every 15 min
 *     on each task state change:
 *     task_record_publish(dht, cluster_key, &(TaskRecord) { .id = id, .status = "running", .attempt = 2,
 *                         .lease_token = 7, .node = "node-b", .updated_at_usec = t }, t, DHT_REPUBLISH,
 *                         NULL, NULL);                                    // task-record.h
 *     when a task is deleted or long finished: task_record_target() + dht_unpublish().
 *
 * mc-agent:
 *     r = dht_from_settings(event, &cfg.dht, state_dir, &dht);
 *     r = dht_find_controls(dht, cfg.dht.cluster_name, on_controls, userdata);
 *     static void on_controls(int error, char **urls, void *userdata);   // urls: "http://host:port", NULL-terminated, owned by the callee
 */

#include <stddef.h>

#include "cluster-key.h"
#include "config.h"
#include "dht.h"
#include "task-record.h"

typedef struct DhtSettings {
        int64_t port;
        char **bootstrap;
        char *cluster_name;
        char *cluster_key;
} DhtSettings;

#define DHT_CONFIG_OPTIONS(type, member)                                                                \
        { "DHT_PORT", NULL, CONFIG_INT, offsetof(type, member.port), 0, 65535, "0",                    \
          "UDP port of the DHT node (0: no DHT node, except that an agent with DHT_BOOTSTRAP joins on any free port)" },                                                     \
        { "DHT_BOOTSTRAP", NULL, CONFIG_STRV, offsetof(type, member.bootstrap), 0, 0, NULL,             \
          "DHT bootstrap nodes, HOST:PORT, comma-separated" },                                          \
        { "CLUSTER_NAME", NULL, CONFIG_STRING, offsetof(type, member.cluster_name), 0, 0, "mc",         \
          "cluster name; controls announce themselves under SHA-1(\"mc-control:\" + name)" },           \
        { "CLUSTER_KEY", NULL, CONFIG_STRING, offsetof(type, member.cluster_key), 0, 0, NULL,           \
          "public cluster key (hex or base64) that task records must be signed with" }

/* Creates the node on port s->port with s->bootstrap, keeping its id and table in state_dir. Sets
 * *ret = NULL and returns 0 when s->port is 0. Errors are logged. */
int dht_from_settings(sd_event *e, const DhtSettings *s, const char *state_dir, Dht **ret);

/* Announces http_port under the cluster info-hash, and keeps announcing it. */
int dht_control_announce(Dht *d, const char *cluster_name, uint16_t http_port);

/* Finds the controls announced under the cluster info-hash. error: 0, -ENOENT (none announced),
 * -EHOSTUNREACH (no DHT node answered). urls is NULL-terminated and belongs to the callback. */
typedef void (*DhtControlsCallback)(int error, char **urls, void *userdata);
int dht_find_controls(Dht *d, const char *cluster_name, DhtControlsCallback cb, void *userdata);
/* "http://1.2.3.4:8080", "http://[::1]:8080". */
char *dht_addr_to_http_url(const DhtAddr *a);
