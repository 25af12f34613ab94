/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Daemon configuration: KEY=value files, the environment, and command-line flags, in increasing order
 * of precedence. Each option has one canonical key ("DB_DSN"), which is its name in the file and its
 * flag ("--db-dsn"); in the environment it is MC_<KEY> ("MC_DB_DSN"), so that a stray PORT= in a shell
 * changes nothing. Optional aliases (the seed's names, such as "CONTROL_URL" or "NODE_ID") are accepted
 * in the file and the environment. Unknown keys and flags are errors that name the key and where it
 * was found, so a typo never passes silently. */

#include <stdint.h>

#include "macro.h"
#include "strv.h"

typedef enum ConfigType {
        CONFIG_STRING,  /* char * */
        CONFIG_INT,     /* int64_t, within [min, max] */
        CONFIG_BOOL,    /* bool: 1/0, yes/no, true/false, on/off */
        CONFIG_STRV,    /* char **, comma- or space-separated, flags may repeat */
} ConfigType;

typedef struct ConfigOption {
        const char *key;
        const char *aliases;    /* space-separated alternative names (file and environment), or NULL */
        ConfigType type;
        size_t offset;          /* where in the target struct the value lives */
        int64_t min, max;       /* CONFIG_INT only */
        const char *default_value;
        const char *help;
        char short_name;        /* -X on the command line (a tool's convenience), or 0 */
} ConfigOption;

/* The directory of the daemons' configuration files: meson passes sysconfdir/mc, the path the units and
 * tmpfiles.d name too, so that daemons and units agree whatever the prefix. */
#ifndef MC_PKGSYSCONFDIR
#define MC_PKGSYSCONFDIR "/etc/mc"
#endif

typedef struct ConfigSpec {
        const char *program;            /* for --help */
        const char *summary;            /* one line for --help */
        const char *usage;              /* e.g. "[OPTIONS...] COMMAND", or NULL */
        const char *default_path;       /* e.g. MC_PKGSYSCONFDIR "/control.conf"; a missing default file is fine */
        const ConfigOption *options;
        size_t n_options;
} ConfigSpec;

/* Fills target from defaults, file, environment and argv. Returns 0 when the program should run,
 * 1 when --help or --version was printed, negative errno (already logged) on bad configuration.
 * Positional arguments are returned in ret_args (may be NULL if the program takes none, in which case
 * any positional argument is an error). */
int config_load(const ConfigSpec *spec, void *target, int argc, char *argv[], char ***ret_args);
void config_free(const ConfigSpec *spec, void *target);
/* The KEY=value lines of a configuration file read from f (path names it in messages), applied on top
 * of what target holds. Returns 0, or a negative errno already logged. Exposed for the fuzzer. */
int config_parse_file(const ConfigSpec *spec, void *target, FILE *f, const char *path);

int parse_boolean(const char *v);
int parse_int64(const char *v, int64_t *ret);
