/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* mc-seeder's configuration: /etc/mc/seeder.conf, MC_<KEY> in the environment, --key flags. The
 * daemon and the command line read the same table, so that `mc-seeder add` without a daemon uses
 * the daemon's store, controls and token. */

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "dht-daemon.h"
#include "tls-client.h"

typedef struct SeederConfig {
        int64_t port;
        char *listen_address;
        char **control_urls;
        char *token;
        char *token_file;
        int64_t store_max_bytes;
        bool bus;
        char *bus_group;
        char *log_level;
        char *send_path;
        int64_t max_peers;
        int64_t max_peers_per_address;
        TlsClientSettings tls;  /* CONTROL_CA only */
        DhtSettings dht;
} SeederConfig;

extern const ConfigSpec seeder_config_spec;

/* Checks what the table cannot (URLs, log level, send path), reads the token file (TOKEN_FILE, or
 * $CREDENTIALS_DIRECTORY/token when that exists) and sets the log level. Errors are logged. */
int seeder_config_finish(SeederConfig *c);
void seeder_config_done(SeederConfig *c);

/* Whether the DHT is wanted: a port, or bootstrap nodes (then any free port, as for the agent). */
bool seeder_config_wants_dht(const SeederConfig *c);

/* The store's directory: $STATE_DIRECTORY (first entry) or /var/lib/mc-seeder. */
const char *seeder_state_directory(void);
