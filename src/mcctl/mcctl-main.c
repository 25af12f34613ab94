/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mcctl: options before the command are the configuration's (URL, TOKEN, CONTROL_CA, from
 * ~/.config/mc/mcctl.conf, MC_<KEY> and flags, as the daemons take theirs); options after it are the
 * command's own. */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon-util.h"
#include "log.h"
#include "mcctl.h"
#include "strv.h"

typedef struct Command {
        const char *name;
        const char *usage;
        const char *help;
        int (*run)(Mcctl *m, int argc, char *argv[]);
} Command;

static const Command commands[] = {
        { "push", "-f FILE [--wait]",
          "Push the task in FILE (JSON as in the API's push body; - for standard input). Prints its id.\n"
          "  -f, --file=FILE   the task\n"
          "  -w, --wait        then follow it like `watch`, and exit with its exit code",
          cmd_push },
        { "run", "--image=IMAGE [OPTIONS] [--] COMMAND [ARGUMENT...]",
          "Push a task that runs COMMAND in IMAGE. Prints its id.\n"
          "  -i, --image=IMAGE        the container image (required)\n"
          "  -n, --node=NODE          only NODE may run it\n"
          "  -c, --cpus=CPUS          CPUs to reserve and limit to, e.g. 0.5\n"
          "  -m, --memory=BYTES       memory to reserve and limit to, e.g. 256M (K, M, G, T)\n"
          "  -t, --timeout=SECONDS    how long it may run (default: the control's, 3600)\n"
          "  -I, --input=ID:PATH      a registered content, as the file PATH in the task (repeatable)\n"
          "  -e, --env=NAME=VALUE     an environment variable (repeatable)\n"
          "  -l, --label=KEY=VALUE    a label (repeatable)\n"
          "      --id=ID              the task's id (makes the push idempotent)\n"
          "      --max-attempts=N     leases it may be given (default 3)\n"
          "      --runtime=RUNTIME    the OCI runtime (default: the node's)\n"
          "  -w, --wait               then follow it like `watch`, and exit with its exit code",
          cmd_run },
        { "get", "[-o json] ID", "Show task ID (-o json: the record as the API gives it).", cmd_get },
        { "list", "[--status=STATUS] [--label=KEY=VALUE]... [--limit=N] [--all] [-o json]",
          "List tasks, newest first (100 unless --limit; --all: every page).", cmd_list },
        { "watch", "ID",
          "Follow task ID until it ends, its state changes on standard error; exit with its exit code\n"
          "(1 when it ended without one: cancelled, timed out, lost).",
          cmd_watch },
        { "logs", "[-f] ID",
          "Print task ID's output. -f, --follow: keep printing what it prints until it ends.", cmd_logs },
        { "cancel", "ID", "Cancel task ID (a running one is stopped). Prints its final state.", cmd_cancel },
        { "nodes", "[-o json]", "List the nodes: state, capacity, what is reserved, running tasks.", cmd_nodes },
        { "drain", "NODE", "Give NODE no new tasks; the running ones finish.", cmd_drain },
        { "undrain", "NODE", "Give NODE tasks again.", cmd_undrain },
        { "content", "add FILE",
          "Store FILE with this machine's mc-seeder, which registers it with the control and seeds it.\n"
          "Prints the content id, for --input=ID:PATH.",
          cmd_content },
};

#define SUMMARY "Push, follow and manage mc tasks and nodes."

static const ConfigOption options[] = {
        { "URL", "CONTROL_URL", CONFIG_STRING, offsetof(Mcctl, url), 0, 0, "http://localhost:8080",
          "The control's URL (one replica)", 'u' },
        { "TOKEN", NULL, CONFIG_STRING, offsetof(Mcctl, token), 0, 0, "",
          "A user token of the control", 't' },
        TLS_CLIENT_CA_OPTION(Mcctl, tls),
        { "TIMEOUT", NULL, CONFIG_INT, offsetof(Mcctl, timeout_sec), 1, 3600, "30",
          "Seconds one request may take" },
        { "SEEDER", NULL, CONFIG_STRING, offsetof(Mcctl, seeder), 0, 0, "mc-seeder",
          "The mc-seeder program `content add` runs" },
};

static ConfigSpec spec = {
        .program = "mcctl",
        .summary = SUMMARY,
        .usage = "[OPTIONS...] COMMAND [COMMAND OPTIONS...]",
        .options = options,
        .n_options = ELEMENTSOF(options),
};

static const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, name))
                        return commands + i;
        return NULL;
}

static void print_commands(void) {
        printf("\nCommands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %-8s %s\n", commands[i].name, commands[i].usage);
        printf("\n`mcctl COMMAND --help` says more. Configuration: %s, then MC_URL, MC_TOKEN,\n"
               "MC_CONTROL_CA..., then the flags above.\n", spec.default_path);
}

static void print_command_help(const Command *c) {
        printf("mcctl %s %s\n\n%s\n", c->name, c->usage, c->help);
}

/* Whether argv[i] is a configuration flag that takes the next word as its value. */
static bool takes_value(const char *a) {
        if (streq(a, "--config"))
                return true;
        if (a[0] == '-' && a[1] != '-' && a[1] != 0 && a[2] == 0) {
                for (size_t i = 0; i < ELEMENTSOF(options); i++)
                        if (options[i].short_name == a[1])
                                return options[i].type != CONFIG_BOOL;
                return false;
        }
        if (!startswith(a, "--") || strchr(a, '='))
                return false;
        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                const char *k = options[i].key, *f = a + 2;
                size_t j = 0;

                /* The flag of key "CONTROL_CA" is --control-ca. */
                while (k[j] && f[j] == (k[j] == '_' ? '-' : tolower((unsigned char) k[j])))
                        j++;
                if (!k[j] && !f[j])
                        return options[i].type != CONFIG_BOOL;
        }
        return false;
}

/* The index of the command word, or argc. */
static int command_index(int argc, char *argv[]) {
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        return i + 1 < argc ? i + 1 : argc;
                if (argv[i][0] != '-')
                        return i;
                if (takes_value(argv[i]))
                        i++;
        }
        return argc;
}

static int default_config_path(char **ret) {
        const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

        if (x && x[0] == '/')
                return asprintf(ret, "%s/mc/mcctl.conf", x) < 0 ? -ENOMEM : 0;
        return asprintf(ret, "%s/.config/mc/mcctl.conf", home && home[0] ? home : "/") < 0 ? -ENOMEM : 0;
}

static void mcctl_done(Mcctl *m) {
        curl_event_free(m->curl);
        sd_event_unref(m->event);
        config_free(&spec, m);
}

static int run(int argc, char *argv[]) {
        _cleanup_(mcctl_done) Mcctl m = {};
        _cleanup_free_ char *config_path = NULL;
        const Command *c;
        size_t len;
        int ci, r;

        log_setup("mcctl");
        log_set_target(LOG_TARGET_CONSOLE);
        if (default_config_path(&config_path) < 0)
                return MCCTL_EXIT_ERROR;
        spec.default_path = config_path;

        ci = command_index(argc, argv);
        if (ci < argc && !find_command(argv[ci])) {
                fprintf(stderr, "mcctl: unknown command \"%s\" (see mcctl --help).\n", argv[ci]);
                return MCCTL_EXIT_USAGE;
        }
        r = config_load(&spec, &m, ci, argv, NULL);
        if (r != 0) {
                if (r > 0)
                        print_commands();
                return r > 0 ? 0 : MCCTL_EXIT_USAGE;
        }
        if (ci >= argc) {
                fprintf(stderr, "mcctl: no command given (see mcctl --help).\n");
                return MCCTL_EXIT_USAGE;
        }
        c = find_command(argv[ci]);
        /* Up to the first argument: in `run -i IMG sh -c x --help` it is the task's. */
        for (int i = ci + 1; i < argc && argv[i][0] == '-' && !streq(argv[i], "--"); i++)
                if (streq(argv[i], "--help") || streq(argv[i], "-h")) {
                        print_command_help(c);
                        return 0;
                }

        len = strlen(m.url);
        while (len > 0 && m.url[len - 1] == '/')
                m.url[--len] = 0;
        if (!startswith(m.url, "http://") && !startswith(m.url, "https://")) {
                fprintf(stderr, "mcctl: URL \"%s\" is not an http:// or https:// URL.\n", m.url);
                return MCCTL_EXIT_USAGE;
        }
        r = sd_event_new(&m.event);
        if (r >= 0)
                r = curl_event_new(m.event, &m.curl);
        if (r >= 0)
                r = curl_event_set_tls(m.curl, &m.tls);
        if (r < 0) {
                fprintf(stderr, "mcctl: cannot set up: %s\n", strerror(-r));
                return MCCTL_EXIT_ERROR;
        }
        optind = 0;
        return c->run(&m, argc - ci, argv + ci);
}

DEFINE_MAIN_FUNCTION(run);
