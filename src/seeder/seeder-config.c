/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "daemon-util.h"
#include "file-util.h"
#include "log.h"
#include "seeder-config.h"

#define SEEDER_STATE_DIRECTORY "/var/lib/mc-seeder"

/* The block sender's paths (SEND_PATH=), checked here so that a typo stops the daemon at start. */
static const char *const send_paths[] = { "auto", "splice", "send-zc", "sendfile" };

static const ConfigOption seeder_options[] = {
        { "PORT", NULL, CONFIG_INT, offsetof(SeederConfig, port), 0, 65535, "6881",
          "TCP port peers reach the seeder on, when not socket-activated (0: any free port; announced in the DHT)" },
        { "LISTEN_ADDRESS", NULL, CONFIG_STRING, offsetof(SeederConfig, listen_address), 0, 0, "",
          "Address to listen on when not socket-activated (empty: all)" },
        { "CONTROL_URLS", "CONTROL_URL MC_CONTROL_URL", CONFIG_STRV, offsetof(SeederConfig, control_urls), 0, 0, NULL,
          "Control replicas to register manifests with, comma-separated (then those found in the DHT)" },
        { "TOKEN", NULL, CONFIG_STRING, offsetof(SeederConfig, token), 0, 0, NULL,
          "A user token of the control, for PUT /api/contents/{id}" },
        { "TOKEN_FILE", NULL, CONFIG_STRING, offsetof(SeederConfig, token_file), 0, 0, NULL,
          "File holding the token [$CREDENTIALS_DIRECTORY/token when that exists]" },
        { "STORE_MAX_BYTES", NULL, CONFIG_INT, offsetof(SeederConfig, store_max_bytes), 0, INT64_MAX, "0",
          "Most bytes of contents the store holds; an add beyond is refused (0: no limit)" },
        { "SEND_PATH", NULL, CONFIG_STRING, offsetof(SeederConfig, send_path), 0, 0, "auto",
          "How blocks are sent to peers: auto (send-zc, else splice, else sendfile: the first the kernel has), "
          "send-zc, splice or sendfile" },
        { "MAX_PEERS", NULL, CONFIG_INT, offsetof(SeederConfig, max_peers), 1, 65536, "256",
          "Peer connections served at once; more are accepted and closed at once" },
        { "MAX_PEERS_PER_ADDRESS", NULL, CONFIG_INT, offsetof(SeederConfig, max_peers_per_address), 1, 65536, "16",
          "Peer connections served at once from one IP address" },
        { "BUS", NULL, CONFIG_BOOL, offsetof(SeederConfig, bus), 0, 0, "yes",
          "Serve org.mutualcloud.Seeder1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS)" },
        { "BUS_GROUP", NULL, CONFIG_STRING, offsetof(SeederConfig, bus_group), 0, 0, "mc",
          "Group whose members may call Add, AddFd and Remove (besides root)" },
        { "LOG_LEVEL", NULL, CONFIG_STRING, offsetof(SeederConfig, log_level), 0, 0, "info",
          "debug, info, notice, warning, err" },
        TLS_CLIENT_CA_OPTION(SeederConfig, tls),
        DHT_CONFIG_OPTIONS(SeederConfig, dht),
};

const ConfigSpec seeder_config_spec = {
        .program = "mc-seeder",
        .usage = "[OPTIONS...] [COMMAND [ARGS...]]",
        .summary = "The mc seeder: keeps contents (task inputs) in its store, registers their manifests with the "
                   "control, announces them in the DHT and serves them to peers. Without a command it runs as "
                   "the daemon.\n\n"
                   "Commands (each with --help):\n"
                   "  add FILE        Copy FILE into the store; print its content id\n"
                   "  list [--json]   The contents of the store\n"
                   "  remove ID       Remove a content from the store\n"
                   "  torrent ID      Write a content's .torrent to standard output\n"
                   "  magnet ID       Print a content's magnet link\n\n"
                   "The commands go through the running daemon (D-Bus org.mutualcloud.Seeder1); with none on "
                   "the bus they use the store themselves, with this configuration.",
        .default_path = MC_PKGSYSCONFDIR "/seeder.conf",
        .options = seeder_options,
        .n_options = ELEMENTSOF(seeder_options),
};

bool seeder_config_wants_dht(const SeederConfig *c) {
        return c->dht.port > 0 || strv_length(c->dht.bootstrap) > 0;
}

const char *seeder_state_directory(void) {
        return daemon_state_directory(SEEDER_STATE_DIRECTORY);
}

int seeder_config_finish(SeederConfig *c) {
        bool known = false;
        int r, level;

        level = log_level_from_string(c->log_level);
        if (level < 0)
                return log_error_errno(EINVAL, "LOG_LEVEL=%s is not a log level.", c->log_level);
        log_set_max_level(level);

        for (char **u = c->control_urls; u && *u; u++)
                if (!startswith(*u, "http://") && !startswith(*u, "https://"))
                        return log_error_errno(EINVAL, "CONTROL_URLS: \"%s\" is not an http(s) URL.", *u);
        if (isempty(c->dht.cluster_name))
                return log_error_errno(EINVAL, "CLUSTER_NAME must not be empty.");
        r = tls_client_settings_check(&c->tls, c->control_urls);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(send_paths); i++)
                known = known || streq(c->send_path, send_paths[i]);
        if (!known)
                return log_error_errno(EINVAL, "SEND_PATH must be auto, send-zc, splice or sendfile, not \"%s\".",
                                       c->send_path);

        if (isempty(c->token)) {
                _cleanup_free_ char *cred = NULL;
                const char *creds = getenv("CREDENTIALS_DIRECTORY"), *file = c->token_file;

                if (isempty(file) && creds && asprintf(&cred, "%s/token", creds) >= 0 && access(cred, R_OK) == 0)
                        file = cred;
                if (!isempty(file)) {
                        _cleanup_free_ char *t = NULL;

                        r = read_one_line_file(file, &t);
                        if (r < 0)
                                return log_error_errno(r, "Cannot read the token file %s: %m", file);
                        free(c->token);
                        c->token = TAKE_PTR(t);
                }
        }
        return 0;
}

void seeder_config_done(SeederConfig *c) {
        config_free(&seeder_config_spec, c);
}
