/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-agent: one per worker node. See agent.h. */

#include <signal.h>
#include <sys/stat.h>

#include "agent.h"
#include "config.h"
#include "file-util.h"
#include "id-util.h"
#include "daemon-util.h"
#include "log.h"

static const ConfigOption agent_options[] = {
        { "CONTROL_URLS", "CONTROL_URL MC_CONTROL_URL", CONFIG_STRV, offsetof(AgentConfig, control_urls), 0, 0, NULL,
          "Control replicas, comma-separated (failover in this order, then those found in the DHT)" },
        { "NODE_ID", "NODE_ID", CONFIG_STRING, offsetof(AgentConfig, node_id), 0, 0, NULL,
          "This node's name [the hostname]" },
        { "AGENT_TOKEN", "CONTROL_TOKEN", CONFIG_STRING, offsetof(AgentConfig, token), 0, 0, NULL,
          "Bearer token for the control (bound to this node)" },
        { "AGENT_TOKEN_FILE", NULL, CONFIG_STRING, offsetof(AgentConfig, token_file), 0, 0, NULL,
          "File holding the token [$CREDENTIALS_DIRECTORY/agent-token when that exists]" },
        { "DRIVER", NULL, CONFIG_STRING, offsetof(AgentConfig, driver), 0, 0, "docker",
          "docker (containers) or exec (child processes in cgroups)" },
        { "DOCKER_RUNTIME", "DOCKER_RUNTIME", CONFIG_STRING, offsetof(AgentConfig, docker_runtime), 0, 0, "runc",
          "Container runtime for tasks that name none" },
        { "DOCKER_SOCKET", NULL, CONFIG_STRING, offsetof(AgentConfig, docker_socket), 0, 0, "/var/run/docker.sock",
          "The Docker Engine API socket" },
        { "DOCKER_NETWORK", NULL, CONFIG_STRING, offsetof(AgentConfig, docker_network), 0, 0, "",
          "Network mode of task containers (empty: the engine's default)" },
        { "CAPACITY_NANO_CPUS", NULL, CONFIG_INT, offsetof(AgentConfig, capacity_nano_cpus), 0, INT64_C(1) << 50, "0",
          "CPU offered to tasks, in billionths of a CPU (0: detect)" },
        { "CAPACITY_MEMORY_BYTES", NULL, CONFIG_INT, offsetof(AgentConfig, capacity_memory_bytes), 0, INT64_C(1) << 56, "0",
          "Memory offered to tasks (0: detect)" },
        { "LABELS", NULL, CONFIG_STRV, offsetof(AgentConfig, labels), 0, 0, NULL,
          "Node labels, KEY=VALUE, comma-separated" },
        { "LEASE_TTL_MS", NULL, CONFIG_INT, offsetof(AgentConfig, lease_ttl_ms), 0, 3600000, "0",
          "Upper bound on the lease TTL the agent trusts (0: the control's)" },
        { "MAX_TASKS", NULL, CONFIG_INT, offsetof(AgentConfig, max_tasks), 1, 100000, "32",
          "Most tasks run at once" },
        { "CLAIM_WAIT_MS", NULL, CONFIG_INT, offsetof(AgentConfig, claim_wait_ms), 0, 300000, "20000",
          "Long-poll wait of a claim (at most a third of the lease TTL, and the control's CLAIM_WAIT_MAX_MS)" },
        { "STOP_GRACE_SEC", NULL, CONFIG_INT, offsetof(AgentConfig, stop_grace_sec), 0, 3600, "10",
          "Between SIGTERM and SIGKILL when a task times out or is cancelled" },
        { "OUTPUT_CAP_BYTES", NULL, CONFIG_INT, offsetof(AgentConfig, output_cap_bytes), 0, INT64_C(1) << 30, "1048576",
          "Output kept per task" },
        { "TAIL_BYTES", NULL, CONFIG_INT, offsetof(AgentConfig, tail_bytes), 0, 65536, "4096",
          "Bytes of stdout and of stderr sent as tails with the result" },
        { "REQUEST_TIMEOUT_MS", NULL, CONFIG_INT, offsetof(AgentConfig, request_timeout_ms), 100, 600000, "5000",
          "Longest a call to the control may take (long-poll waits come on top; a heartbeat to the only control waits until the first lease's fence)" },
        { "CGROUP_ROOT", NULL, CONFIG_STRING, offsetof(AgentConfig, cgroup_root), 0, 0, "/sys/fs/cgroup",
          "Where cgroups are mounted" },
        { "CGROUP_PATH", NULL, CONFIG_STRING, offsetof(AgentConfig, cgroup_path), 0, 0, "",
          "exec driver: cgroup of the tasks, relative to the root [mc.agent/NODE_ID]" },
        { "EXEC_USER", NULL, CONFIG_STRING, offsetof(AgentConfig, exec_user), 0, 0, "",
          "exec driver: the user tasks run as, NAME, UID, NAME:GROUP or UID:GID, without capabilities "
          "[mc-task, else nobody]" },
        { "BUS", NULL, CONFIG_BOOL, offsetof(AgentConfig, bus), 0, 0, "yes",
          "Serve org.mutualcloud.Agent1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS)" },
        { "BUS_GROUP", NULL, CONFIG_STRING, offsetof(AgentConfig, bus_group), 0, 0, "mc",
          "Group whose members may call Drain() and Resume() (besides root)" },
        { "LOG_LEVEL", NULL, CONFIG_STRING, offsetof(AgentConfig, log_level), 0, 0, "info",
          "debug, info, notice, warning, err" },
        { "SEEDERS", NULL, CONFIG_STRV, offsetof(AgentConfig, seeders), 0, 0, NULL,
          "mc-seeders to fetch task inputs from, HOST:PORT, comma-separated (names resolved once at start), "
          "besides the peers the DHT names" },
        { "PEER_PORT", NULL, CONFIG_INT, offsetof(AgentConfig, peer_port), -1, 65535, "6882",
          "TCP port other agents fetch inputs from (0: any free port, -1: serve nobody); a socket systemd "
          "passes as \"peer\" wins" },
        { "INPUT_CACHE_DIR", NULL, CONFIG_STRING, offsetof(AgentConfig, input_cache_dir), 0, 0, "",
          "Where task inputs are kept [$STATE_DIRECTORY/inputs]" },
        { "CACHE_MAX_BYTES", NULL, CONFIG_INT, offsetof(AgentConfig, cache_max_bytes), 0, INT64_C(1) << 56,
          "10737418240", "Most bytes of inputs kept; the least recently used that no task holds are evicted" },
        { "INPUT_FETCH_TIMEOUT_SEC", NULL, CONFIG_INT, offsetof(AgentConfig, input_fetch_timeout_sec), 1, 86400, "120",
          "A fetch that makes no progress for this long fails (the lease goes back: inputs_unavailable)" },
        { "INPUT_FETCHES", NULL, CONFIG_INT, offsetof(AgentConfig, input_fetches), 1, 64, "4",
          "Inputs downloaded at once" },
        { "METRICS_PORT", NULL, CONFIG_INT, offsetof(AgentConfig, metrics_port), 0, 65535, "0",
          "TCP port of GET /metrics, Prometheus text (0: none); a socket systemd passes as \"metrics\" "
          "(mc-agent.socket) wins" },
        { "METRICS_ADDRESS", NULL, CONFIG_STRING, offsetof(AgentConfig, metrics_address), 0, 0, "127.0.0.1",
          "Address of the metrics port (empty: every address)" },
        /* For the agent, DHT_PORT=0 with DHT_BOOTSTRAP set means any free port, and a socket systemd
         * passes as "dht" (mc-agent-dht.socket) wins over DHT_PORT (see agent-discovery.c). */
        TLS_CLIENT_CONFIG_OPTIONS(AgentConfig, tls),
        DHT_CONFIG_OPTIONS(AgentConfig, dht),
};

static const ConfigSpec agent_config_spec = {
        .program = "mc-agent",
        .summary = "The mc agent: runs leased tasks in Docker (or as processes in cgroups), with self-fencing. "
                   "It talks to the controls in CONTROL_URLS and to those it finds in the DHT through "
                   "DHT_BOOTSTRAP (on DHT_PORT, or any free port when that is 0). Under systemd it takes the sockets "
                   "passed as \"metrics\", \"dht\" and \"peer\" instead of METRICS_PORT, DHT_PORT and PEER_PORT.",
        .default_path = MC_PKGSYSCONFDIR "/agent.conf",
        .options = agent_options,
        .n_options = ELEMENTSOF(agent_options),
};

static int read_token_file(const char *path, char **ret) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = read_one_line_file(path, &s);
        if (r < 0)
                return log_error_errno(r, "Cannot read the token file %s: %m", path);
        *ret = TAKE_PTR(s);
        return 0;
}

static int finish_config(AgentConfig *c) {
        int r;

        if (strv_length(c->control_urls) == 0 && strv_length(c->dht.bootstrap) == 0)
                return log_error_errno(EINVAL, "No control to talk to: set CONTROL_URLS (or CONTROL_URL), "
                                       "or DHT_BOOTSTRAP (with CLUSTER_NAME) to find the controls in the DHT.");
        for (char **u = c->control_urls; u && *u; u++)
                if (!startswith(*u, "http://") && !startswith(*u, "https://"))
                        return log_error_errno(EINVAL, "CONTROL_URLS: \"%s\" is not an http(s) URL.", *u);
        if (isempty(c->dht.cluster_name))
                return log_error_errno(EINVAL, "CLUSTER_NAME must not be empty.");
        if (!isempty(c->dht.cluster_key)) {
                uint8_t k[BEP44_KEY_SIZE];
                if (cluster_key_parse_public(c->dht.cluster_key, k) < 0)
                        return log_error_errno(EINVAL, "CLUSTER_KEY=%s is not a public key (64 hex digits or base64).",
                                               c->dht.cluster_key);
        }
        if (isempty(c->node_id)) {
                char host[256] = "";
                if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == 0)
                        return log_error_errno(errno, "NODE_ID is not set and the hostname cannot be read: %m");
                host[strcspn(host, ".")] = 0;
                free(c->node_id);
                c->node_id = strdup(host);
                if (!c->node_id)
                        return log_oom();
        }
        /* The control's rule (it answers 400 at register otherwise), checked here so that a bad name
         * stops the agent at once instead of leaving it retrying. */
        if (!id_is_valid(c->node_id))
                return log_error_errno(EINVAL, "NODE_ID \"%s\" is not a node id: 1 to %d characters of "
                                       "[A-Za-z0-9._-], the first a letter or digit.", c->node_id, ID_MAX);
        if (!streq(c->driver, "docker") && !streq(c->driver, "exec"))
                return log_error_errno(EINVAL, "DRIVER must be docker or exec, not \"%s\".", c->driver);

        if (isempty(c->token)) {
                _cleanup_free_ char *cred = NULL;
                const char *creds = getenv("CREDENTIALS_DIRECTORY"), *file = c->token_file;

                if (isempty(file) && creds && asprintf(&cred, "%s/agent-token", creds) >= 0 && access(cred, R_OK) == 0)
                        file = cred;
                if (!isempty(file)) {
                        free(c->token);
                        c->token = NULL;
                        r = read_token_file(file, &c->token);
                        if (r < 0)
                                return r;
                }
        }
        r = tls_client_settings_check(&c->tls, c->control_urls);
        if (r < 0)
                return r;
        if (isempty(c->token) && !tls_client_has_cert(&c->tls))
                log_warning("No agent token (AGENT_TOKEN) nor client certificate (TLS_CERT) configured: the control "
                            "will refuse us unless its auth is off.");
        if (!isempty(c->log_level)) {
                int l = log_level_from_string(c->log_level);
                if (l < 0)
                        return log_error_errno(EINVAL, "LOG_LEVEL=%s is not a log level.", c->log_level);
                log_set_max_level(l);
        }
        return 0;
}

static void agent_config_done(AgentConfig *c) {
        config_free(&agent_config_spec, c);
}

static int run(int argc, char *argv[]) {
        _cleanup_(agent_config_done) AgentConfig config = {};
        _cleanup_(agent_freep) Agent *a = NULL;
        sigset_t mask;
        int r;

        log_setup("mc-agent");
        umask(0022);

        r = config_load(&agent_config_spec, &config, argc, argv, NULL);
        if (r != 0)
                return r < 0 ? r : 0;
        r = finish_config(&config);
        if (r < 0)
                return r;

        /* SIGCHLD blocked before any thread (libcurl's resolver) exists, so that no thread takes it:
         * children (the exec driver's supervisors, the fence keeper's launcher) are reaped with
         * waitpid() by whoever forked them, never by a handler. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block SIGCHLD: %m");

        r = agent_new(&config, &a);
        if (r < 0)
                return r;
        if (config.bus) {
                r = agent_bus_init(a);
                if (r < 0)
                        log_warning("Continuing without D-Bus.");
        }
        r = agent_start(a);
        if (r < 0)
                return r;

        daemon_notify_ready("Starting.");
        r = sd_event_loop(a->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        daemon_notify_stopping();
        return 0;
}

DEFINE_MAIN_FUNCTION(run);
