/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* What several commands take the same way. */

#include <getopt.h>
#include <stdio.h>

#include "id-util.h"
#include "mcctl.h"

int mcctl_usage_error(const char *command, const char *message) {
        fprintf(stderr, "mcctl %s: %s (see mcctl %s --help).\n", command, message, command);
        return MCCTL_EXIT_USAGE;
}

int mcctl_id_argument(int argc, char *argv[], const char *what, const char **ret) {
        if (optind >= argc)
                return mcctl_usage_error(argv[0], streq(what, "task") ? "which task? give its ID" : "which node? give its id");
        if (optind + 1 < argc)
                return mcctl_usage_error(argv[0], "one argument only");
        if (!id_is_valid(argv[optind])) {
                fprintf(stderr, "mcctl %s: \"%s\" is not a valid %s id ([A-Za-z0-9][A-Za-z0-9._-], at most 128).\n",
                        argv[0], argv[optind], what);
                return MCCTL_EXIT_USAGE;
        }
        *ret = argv[optind];
        return 0;
}

int mcctl_only_id(int argc, char *argv[], const char *what, const char **ret) {
        if (getopt_long(argc, argv, "", (const struct option[]) { {} }, NULL) >= 0)
                return MCCTL_EXIT_USAGE;
        return mcctl_id_argument(argc, argv, what, ret);
}

int mcctl_parse_output(const char *command, const char *value, bool *ret_json) {
        if (!streq(value, "json") && !streq(value, "table"))
                return mcctl_usage_error(command, "-o wants json or table");
        *ret_json = streq(value, "json");
        return 0;
}

int mcctl_output_option(int argc, char *argv[], bool *ret_json) {
        static const struct option longopts[] = {
                { "output", required_argument, NULL, 'o' },
                {}
        };
        int c, r;

        *ret_json = false;
        while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) >= 0) {
                if (c != 'o')
                        return MCCTL_EXIT_USAGE;
                r = mcctl_parse_output(argv[0], optarg, ret_json);
                if (r != 0)
                        return r;
        }
        return 0;
}
