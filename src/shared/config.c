/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>

#include "config.h"
#include "log.h"

int parse_boolean(const char *v) {
        if (!v)
                return -EINVAL;
        if (streq(v, "1") || strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "on") == 0)
                return 1;
        if (streq(v, "0") || strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "off") == 0)
                return 0;
        return -EINVAL;
}

int parse_int64(const char *v, int64_t *ret) {
        char *end;
        long long l;

        if (isempty(v) || isspace((unsigned char) v[0]))
                return -EINVAL;
        errno = 0;
        l = strtoll(v, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != 0)
                return -EINVAL;
        *ret = l;
        return 0;
}

static const ConfigOption *find_option(const ConfigSpec *spec, const char *name, size_t len, bool flag) {
        for (size_t i = 0; i < spec->n_options; i++) {
                const ConfigOption *o = spec->options + i;
                const char *k = o->key;

                if (strlen(k) == len) {
                        size_t j;
                        for (j = 0; j < len; j++) {
                                char c = k[j];
                                if (flag)
                                        c = c == '_' ? '-' : (char) tolower((unsigned char) c);
                                if (c != name[j])
                                        break;
                        }
                        if (j == len)
                                return o;
                }
                /* A file may use the environment's name too (MC_<KEY>), so that one file serves
                 * as a configuration file and as a unit's EnvironmentFile=. */
                if (!flag && len == strlen(k) + 3 && strncmp(name, "MC_", 3) == 0 && strncmp(name + 3, k, len - 3) == 0)
                        return o;
                if (!flag && o->aliases) {
                        const char *a = o->aliases;
                        while (*a) {
                                size_t n = strcspn(a, " ");
                                if (n == len && strncmp(a, name, len) == 0)
                                        return o;
                                a += n;
                                a += strspn(a, " ");
                        }
                }
        }
        return NULL;
}

static const ConfigOption *find_short_option(const ConfigSpec *spec, char c) {
        for (size_t i = 0; i < spec->n_options; i++)
                if (spec->options[i].short_name != 0 && spec->options[i].short_name == c)
                        return spec->options + i;
        return NULL;
}

static int set_value(const ConfigOption *o, void *target, const char *value, const char *origin, bool append) {
        void *p = (uint8_t *) target + o->offset;
        int r;

        switch (o->type) {
        case CONFIG_STRING: {
                char *s = strdup(value), **sp = p;
                if (!s)
                        return log_oom();
                free(*sp);
                *sp = s;
                return 0;
        }
        case CONFIG_INT: {
                int64_t v;
                r = parse_int64(value, &v);
                if (r == -ERANGE)
                        return log_error_errno(r, "%s: %s=%s is out of range.", origin, o->key, value);
                if (r < 0)
                        return log_error_errno(r, "%s: %s=%s is not an integer.", origin, o->key, value);
                if (v < o->min || v > o->max)
                        return log_error_errno(ERANGE, "%s: %s=%s is out of range %" PRIi64 "..%" PRIi64 ".",
                                               origin, o->key, value, o->min, o->max);
                *(int64_t *) p = v;
                return 0;
        }
        case CONFIG_BOOL:
                r = parse_boolean(value);
                if (r < 0)
                        return log_error_errno(r, "%s: %s=%s is not a boolean (yes/no).", origin, o->key, value);
                *(bool *) p = r;
                return 0;
        case CONFIG_STRV: {
                char ***lp = p, **l = strv_split(value);
                if (!l)
                        return log_oom();
                if (append) {
                        for (char **i = l; *i; i++)
                                if (strv_extend(lp, *i) < 0) {
                                        strv_free(l);
                                        return log_oom();
                                }
                        strv_free(l);
                } else {
                        strv_free(*lp);
                        *lp = l;
                }
                return 0;
        }
        }
        return -EINVAL;
}

/* Strips surrounding whitespace and one level of matching quotes, as systemd's EnvironmentFile= does
 * for the simple cases. */
static char *strip_value(char *v) {
        size_t l;

        while (isspace((unsigned char) *v))
                v++;
        l = strlen(v);
        while (l > 0 && isspace((unsigned char) v[l - 1]))
                v[--l] = 0;
        if (l >= 2 && (v[0] == '"' || v[0] == '\'') && v[l - 1] == v[0]) {
                v[l - 1] = 0;
                v++;
        }
        return v;
}

int config_parse_file(const ConfigSpec *spec, void *target, FILE *f, const char *path) {
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        unsigned n = 0;

        for (;;) {
                char origin[PATH_MAX + 32], *k, *eq, *v;
                const ConfigOption *o;
                ssize_t len;
                int r;

                errno = 0;
                len = getline(&line, &cap, f);
                if (len < 0) {
                        if (errno != 0)
                                return log_error_errno(errno, "Cannot read %s: %m", path);
                        break;
                }
                n++;
                snprintf(origin, sizeof(origin), "%s:%u", path, n);
                /* What follows a NUL would be dropped unseen. */
                if (memchr(line, 0, (size_t) len))
                        return log_error_errno(EINVAL, "%s: the line contains a NUL byte.", origin);

                k = line;
                while (isspace((unsigned char) *k))
                        k++;
                if (*k == 0 || *k == '#' || *k == ';')
                        continue;
                if (startswith(k, "export "))
                        k += 7;
                eq = strchr(k, '=');
                if (!eq)
                        return log_error_errno(EINVAL, "%s: expected KEY=value, got \"%.*s\".", origin,
                                               (int) strcspn(k, "\n"), k);
                v = strip_value(eq + 1);
                while (eq > k && isspace((unsigned char) eq[-1]))
                        eq--;
                o = find_option(spec, k, (size_t) (eq - k), false);
                if (!o)
                        return log_error_errno(EINVAL, "%s: unknown key \"%.*s\".", origin, (int) (eq - k), k);
                r = set_value(o, target, v, origin, false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int load_file(const ConfigSpec *spec, void *target, const char *path, bool must_exist) {
        _cleanup_fclose_ FILE *f = NULL;

        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT && !must_exist)
                        return 0;
                return log_error_errno(errno, "Cannot open configuration file %s: %m", path);
        }
        return config_parse_file(spec, target, f, path);
}

/* The environment is shared with everything else a shell runs, so a bare PORT or DRIVER there is
 * not meant for us: options are read as MC_<KEY>, then as their aliases, which are the seed's names
 * (MC_DB_DSN, CONTROL_URL, NODE_ID, ...). The first one set wins. */
static const char *option_getenv(const ConfigOption *o) {
        char name[128];
        const char *v, *a;

        if (snprintf(name, sizeof(name), "MC_%s", o->key) < (int) sizeof(name) && (v = getenv(name)))
                return v;
        for (a = o->aliases; a && *a;) {
                size_t n = strcspn(a, " ");
                if (n < sizeof(name)) {
                        memcpy(name, a, n);
                        name[n] = 0;
                        if ((v = getenv(name)))
                                return v;
                }
                a += n;
                a += strspn(a, " ");
        }
        return NULL;
}

static int load_environment(const ConfigSpec *spec, void *target) {
        for (size_t i = 0; i < spec->n_options; i++) {
                const ConfigOption *o = spec->options + i;
                const char *v = option_getenv(o);
                int r;

                if (!v)
                        continue;
                r = set_value(o, target, v, "environment", false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static const char *const config_type_placeholder[] = {
        [CONFIG_STRING] = "=VALUE",
        [CONFIG_INT] = "=NUMBER",
        [CONFIG_BOOL] = "",
        [CONFIG_STRV] = "=LIST",
};

static void print_help(const ConfigSpec *spec) {
        printf("%s %s\n\n%s\n\nOptions (each also a KEY=value line in %s, or MC_KEY in the environment):\n",
               spec->program, spec->usage ?: "[OPTIONS...]", spec->summary,
               spec->default_path ?: "the file given with --config");
        printf("  %-32s %s\n", "-h --help", "Show this help");
        printf("  %-32s %s\n", "   --version", "Show the version");
        printf("  %-32s %s\n", "   --config=PATH", "Read this configuration file instead of the default");
        for (size_t i = 0; i < spec->n_options; i++) {
                const ConfigOption *o = spec->options + i;
                char flag[128], shortname[4] = "   ";
                size_t j;

                for (j = 0; o->key[j] && j < 80; j++)
                        flag[j] = o->key[j] == '_' ? '-' : (char) tolower((unsigned char) o->key[j]);
                snprintf(flag + j, sizeof(flag) - j, "%s", config_type_placeholder[o->type]);
                if (o->short_name)
                        snprintf(shortname, sizeof(shortname), "-%c ", o->short_name);
                printf("  %s--%-27s %s", shortname, flag, o->help ?: "");
                if (o->default_value)
                        printf(" [%s]", o->default_value);
                printf(" ($MC_%s", o->key);
                for (const char *a = o->aliases; a && *a;) {
                        size_t n = strcspn(a, " ");
                        printf(", $%.*s", (int) n, a);
                        a += n;
                        a += strspn(a, " ");
                }
                printf(")\n");
        }
}

int config_load(const ConfigSpec *spec, void *target, int argc, char *argv[], char ***ret_args) {
        _cleanup_strv_free_ char **args = NULL;
        const char *config_path = NULL;
        bool explicit_config = false;
        int r;

        for (size_t i = 0; i < spec->n_options; i++) {
                const ConfigOption *o = spec->options + i;
                if (!o->default_value)
                        continue;
                r = set_value(o, target, o->default_value, "default", false);
                if (r < 0)
                        return r;
        }

        /* The config file is named first, so scan for --config before anything else. */
        for (int i = 1; i < argc; i++) {
                const char *v;
                if (streq(argv[i], "--"))
                        break;
                if ((v = startswith(argv[i], "--config="))) {
                        config_path = v;
                        explicit_config = true;
                } else if (streq(argv[i], "--config")) {
                        if (i + 1 >= argc)
                                return log_error_errno(EINVAL, "Option \"--config\" needs a value.");
                        config_path = argv[++i];
                        explicit_config = true;
                }
        }
        if (!config_path && getenv("MC_CONFIG")) {
                config_path = getenv("MC_CONFIG");
                explicit_config = true;
        }
        if (!config_path)
                config_path = spec->default_path;
        bool seen_on_command_line[spec->n_options + 1];
        memset(seen_on_command_line, 0, sizeof(seen_on_command_line));
        if (config_path) {
                r = load_file(spec, target, config_path, explicit_config);
                if (r < 0)
                        return r;
        }

        r = load_environment(spec, target);
        if (r < 0)
                return r;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *name, *value = NULL;
                const ConfigOption *o;
                size_t len;

                if (streq(a, "--")) {
                        for (i++; i < argc; i++)
                                if (strv_extend(&args, argv[i]) < 0)
                                        return log_oom();
                        break;
                }
                if (streq(a, "-h") || streq(a, "--help")) {
                        print_help(spec);
                        return 1;
                }
                if (streq(a, "--version")) {
                        printf("%s %s\n", spec->program, MC_VERSION);
                        return 1;
                }
                if (!startswith(a, "--")) {
                        if (a[0] == '-' && a[1] != 0) {
                                /* -X, -X VALUE or -XVALUE. */
                                o = find_short_option(spec, a[1]);
                                if (!o)
                                        return log_error_errno(EINVAL, "Unknown option \"%s\" (see --help).", a);
                                if (o->type == CONFIG_BOOL) {
                                        if (a[2] != 0)
                                                return log_error_errno(EINVAL, "Option \"-%c\" takes no value.", a[1]);
                                        value = "yes";
                                } else if (a[2] != 0)
                                        value = a + 2;
                                else if (i + 1 < argc)
                                        value = argv[++i];
                                else
                                        return log_error_errno(EINVAL, "Option \"-%c\" needs a value.", a[1]);
                                r = set_value(o, target, value, "command line", seen_on_command_line[o - spec->options]);
                                seen_on_command_line[o - spec->options] = true;
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (strv_extend(&args, a) < 0)
                                return log_oom();
                        continue;
                }
                name = a + 2;
                len = strcspn(name, "=");
                if (name[len] == '=')
                        value = name + len + 1;
                if (len == 6 && strncmp(name, "config", 6) == 0) {
                        if (!value)
                                i++;
                        continue;
                }
                o = find_option(spec, name, len, true);
                if (!o && len > 3 && strncmp(name, "no-", 3) == 0 && !value) {
                        o = find_option(spec, name + 3, len - 3, true);
                        if (o && o->type == CONFIG_BOOL) {
                                *(bool *) ((uint8_t *) target + o->offset) = false;
                                continue;
                        }
                        o = NULL;
                }
                if (!o)
                        return log_error_errno(EINVAL, "Unknown option \"--%.*s\" (see --help).", (int) len, name);
                if (!value) {
                        if (o->type == CONFIG_BOOL)
                                value = "yes";
                        else if (i + 1 < argc)
                                value = argv[++i];
                        else
                                return log_error_errno(EINVAL, "Option \"--%.*s\" needs a value.", (int) len, name);
                }
                /* A repeated list flag adds to what earlier flags gave, but replaces the file's value. */
                r = set_value(o, target, value, "command line", seen_on_command_line[o - spec->options]);
                seen_on_command_line[o - spec->options] = true;
                if (r < 0)
                        return r;
        }

        if (ret_args)
                *ret_args = TAKE_PTR(args);
        else if (args && args[0])
                return log_error_errno(EINVAL, "Unexpected argument \"%s\" (see --help).", args[0]);
        return 0;
}

void config_free(const ConfigSpec *spec, void *target) {
        for (size_t i = 0; i < spec->n_options; i++) {
                const ConfigOption *o = spec->options + i;
                void *p = (uint8_t *) target + o->offset;

                if (o->type == CONFIG_STRING) {
                        free(*(char **) p);
                        *(char **) p = NULL;
                } else if (o->type == CONFIG_STRV) {
                        strv_free(*(char ***) p);
                        *(char ***) p = NULL;
                }
        }
}
