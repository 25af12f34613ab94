/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-seeder: the daemon (no command), or one of its commands (seeder-cli.h). See seeder.h. */

#include "daemon-util.h"
#include "log.h"
#include "seeder-cli.h"
#include "seeder.h"

static void seeder_config_donep(SeederConfig *c) {
        seeder_config_done(c);
}

/* The command word, if any: the first argument that names one. Options' values are never command
 * names that matter here ("--config add" would be a strange file name). */
static const char *find_command(int argc, char *argv[]) {
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        return i + 1 < argc && seeder_cli_is_command(argv[i + 1]) ? argv[i + 1] : NULL;
                if (argv[i][0] != '-' && seeder_cli_is_command(argv[i]))
                        return argv[i];
        }
        return NULL;
}

static bool has_flag(int argc, char *argv[], const char *a, const char *b) {
        for (int i = 1; i < argc && !streq(argv[i], "--"); i++)
                if (streq(argv[i], a) || (b && streq(argv[i], b)))
                        return true;
        return false;
}

/* Takes --json (an option of `list`, not of the configuration) out of argv. */
static bool take_json_flag(int *argc, char *argv[]) {
        bool found = false;
        int j = 1;

        for (int i = 1; i < *argc; i++) {
                if (streq(argv[i], "--")) {
                        while (i < *argc)
                                argv[j++] = argv[i++];
                        break;
                }
                if (streq(argv[i], "--json")) {
                        found = true;
                        continue;
                }
                argv[j++] = argv[i];
        }
        *argc = j;
        argv[j] = NULL;
        return found;
}

static int run_daemon(SeederConfig *config) {
        _cleanup_(seeder_freep) Seeder *s = NULL;
        int r;

        r = seeder_new(config, &s);
        if (r < 0)
                return r;
        r = seeder_start(s);
        if (r < 0)
                return r;
        daemon_notify_ready("Serving.");
        log_info("mc-seeder %s running: %zu content(s), peer port %u.", MC_VERSION, store_n_contents(s->store),
                 s->peer_port);
        r = sd_event_loop(s->event);
        daemon_notify_stopping();
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(seeder_config_donep) SeederConfig config = {};
        _cleanup_strv_free_ char **words = NULL;
        const char *command;
        bool json = false;
        int r;

        log_setup("mc-seeder");
        command = find_command(argc, argv);
        if (command) {
                /* A command is run by a person: messages to the terminal, not the journal. */
                log_set_target(LOG_TARGET_CONSOLE);
                if (has_flag(argc, argv, "--help", "-h")) {
                        seeder_cli_help(command);
                        return 0;
                }
                json = take_json_flag(&argc, argv);
        }
        r = config_load(&seeder_config_spec, &config, argc, argv, &words);
        if (r != 0)
                return r < 0 ? r : 0;
        r = seeder_config_finish(&config);
        if (r < 0)
                return r;
        if (strv_length(words) > 0) {
                if (!seeder_cli_is_command(words[0]))
                        return log_error_errno(EINVAL, "Unknown command \"%s\" (see --help).", words[0]);
                return seeder_cli_run(&config, words, json);
        }
        return run_daemon(&config);
}

DEFINE_MAIN_FUNCTION(run);
