/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* config_load(): defaults < file < environment (MC_<KEY>, then aliases; never the bare key) < flags,
 * aliases, every error case naming what is
 * wrong, and nothing leaked (the test runs under ASan). */

#include <stddef.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "tests.h"

typedef struct Conf {
        char *dsn;
        int64_t port;
        bool debug;
        char **peers;
        char *node;
} Conf;

static const ConfigOption options[] = {
        { "DB_DSN", "PG_DSN SEED_DSN", CONFIG_STRING, offsetof(Conf, dsn), 0, 0, "host=/run/postgresql", "database" },
        { "LISTEN_PORT", NULL, CONFIG_INT, offsetof(Conf, port), 1, 65535, "8080", "port" },
        { "DEBUG", NULL, CONFIG_BOOL, offsetof(Conf, debug), 0, 0, "no", "debug" },
        { "PEERS", NULL, CONFIG_STRV, offsetof(Conf, peers), 0, 0, NULL, "peers" },
        { "NODE_NAME", "NODE_ID", CONFIG_STRING, offsetof(Conf, node), 0, 0, NULL, "node" },
};

static char dir[] = "/tmp/mc-test-config-XXXXXX";
static char path[sizeof(dir) + 16], other[sizeof(dir) + 16];

static void reset_environment(void) {
        static const char *const names[] = {
                "DB_DSN", "MC_DB_DSN", "PG_DSN", "SEED_DSN", "LISTEN_PORT", "MC_LISTEN_PORT", "DEBUG", "MC_DEBUG",
                "PEERS", "MC_PEERS", "NODE_NAME", "MC_NODE_NAME", "NODE_ID", "MC_CONFIG",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                unsetenv(names[i]);
}

static void write_config(const char *text) {
        FILE *f = fopen(path, "we");
        if (!f)
                abort();
        fputs(text, f);
        fclose(f);
}

/* Loads with argv (NULL-terminated, without argv[0]) and the file at `path` as the default path. */
static int load_args(Conf *c, char ***ret_args, const char *const *args) {
        char *argv[32] = { (char *) "test-config" };
        int argc = 1;
        ConfigSpec spec = {
                .program = "test-config",
                .summary = "Tests.",
                .default_path = path,
                .options = options,
                .n_options = ELEMENTSOF(options),
        };

        for (; args && args[argc - 1]; argc++)
                argv[argc] = (char *) args[argc - 1];
        *c = (Conf) {};
        return config_load(&spec, c, argc, argv, ret_args);
}

#define LOAD(c, ...) load_args(c, NULL, (const char *const[]){ __VA_ARGS__, NULL })
#define LOAD_NONE(c) load_args(c, NULL, NULL)

static void conf_free(Conf *c) {
        ConfigSpec spec = { .options = options, .n_options = ELEMENTSOF(options) };
        config_free(&spec, c);
}

static void test_defaults(void) {
        Conf c;

        reset_environment();
        unlink(path);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0); /* a missing default file is fine */
        ASSERT_STREQ(c.dsn, "host=/run/postgresql");
        ASSERT_INT_EQ(c.port, 8080);
        ASSERT_TRUE(!c.debug);
        ASSERT_NULL(c.peers);
        ASSERT_NULL(c.node);
        conf_free(&c);
        ASSERT_NULL(c.dsn);
}

static void test_file(void) {
        Conf c;

        reset_environment();
        write_config("# comment\n"
                     "; another comment\n"
                     "\n"
                     "  DB_DSN = \"host=/tmp dbname=mc\"  \n"
                     "export LISTEN_PORT=9090\n"
                     "DEBUG=yes\n"
                     "PEERS=a, b  c,,d\n"
                     "NODE_ID='node-b'\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "host=/tmp dbname=mc");
        ASSERT_INT_EQ(c.port, 9090);
        ASSERT_TRUE(c.debug);
        ASSERT_UINT_EQ(strv_length(c.peers), 4);
        ASSERT_STREQ(c.peers[0], "a");
        ASSERT_STREQ(c.peers[3], "d");
        ASSERT_STREQ(c.node, "node-b"); /* alias */
        conf_free(&c);
}

static void test_file_errors(void) {
        Conf c;

        reset_environment();
        write_config("DB_DSM=typo\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
        write_config("LISTEN_PORT\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
        write_config("LISTEN_PORT=80x\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
        write_config("LISTEN_PORT=70000\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -ERANGE);
        conf_free(&c);
        write_config("LISTEN_PORT=99999999999999999999\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -ERANGE);
        conf_free(&c);
        write_config("DEBUG=maybe\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
        /* Flags are not keys: the file takes only canonical names and aliases. */
        write_config("db-dsn=x\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
}

static void test_precedence(void) {
        Conf c;

        reset_environment();
        write_config("DB_DSN=file\nLISTEN_PORT=1000\nNODE_NAME=file\nPEERS=f1 f2\n");
        setenv("MC_DB_DSN", "env", 1);
        setenv("MC_LISTEN_PORT", "2000", 1);
        setenv("MC_PEERS", "e1", 1);
        ASSERT_INT_EQ(LOAD(&c, "--listen-port=3000"), 0);
        ASSERT_STREQ(c.dsn, "env");             /* env over file */
        ASSERT_INT_EQ(c.port, 3000);            /* flag over env */
        ASSERT_STREQ(c.node, "file");           /* file over default */
        ASSERT_UINT_EQ(strv_length(c.peers), 1); /* env replaces the file's list */
        ASSERT_STREQ(c.peers[0], "e1");
        conf_free(&c);

        /* A list flag replaces the env's value; repeated, it adds up. */
        ASSERT_INT_EQ(LOAD(&c, "--peers", "p1,p2", "--peers=p3"), 0);
        ASSERT_UINT_EQ(strv_length(c.peers), 3);
        ASSERT_STREQ(c.peers[0], "p1");
        ASSERT_STREQ(c.peers[2], "p3");
        conf_free(&c);
        reset_environment();
}

static void test_aliases_in_environment(void) {
        Conf c;

        reset_environment();
        unlink(path);
        /* A bare key in the environment is somebody else's (a shell's PORT=3000): ignored. */
        setenv("DB_DSN", "bare", 1);
        setenv("LISTEN_PORT", "1", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "host=/run/postgresql");
        ASSERT_INT_EQ(c.port, 8080);
        conf_free(&c);
        setenv("SEED_DSN", "second-alias", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "second-alias");
        conf_free(&c);
        setenv("PG_DSN", "seed", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "seed"); /* the first alias listed wins */
        conf_free(&c);
        setenv("MC_DB_DSN", "prefixed", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "prefixed"); /* MC_<KEY> wins over aliases */
        conf_free(&c);
        /* Aliases and environment names are not flags. */
        ASSERT_INT_EQ(LOAD(&c, "--pg-dsn=x"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--mc-db-dsn=x"), -EINVAL);
        conf_free(&c);
        setenv("MC_LISTEN_PORT", "0", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), -ERANGE); /* an environment value is checked like any other */
        conf_free(&c);
        reset_environment();
}

static void test_environment_names_in_file(void) {
        Conf c;

        /* One file may serve as the configuration and as a unit's EnvironmentFile=. */
        reset_environment();
        write_config("MC_DB_DSN=from-file\nMC_LISTEN_PORT=81\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.dsn, "from-file");
        ASSERT_INT_EQ(c.port, 81);
        conf_free(&c);
        write_config("MC_DB_DSNX=typo\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
        write_config("MC_=x\n");
        ASSERT_INT_EQ(LOAD_NONE(&c), -EINVAL);
        conf_free(&c);
}

static void test_flags(void) {
        Conf c;

        reset_environment();
        write_config("DEBUG=yes\n");
        ASSERT_INT_EQ(LOAD(&c, "--no-debug", "--db-dsn", "a b", "--node-name=n1"), 0);
        ASSERT_TRUE(!c.debug);
        ASSERT_STREQ(c.dsn, "a b");
        ASSERT_STREQ(c.node, "n1");
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--debug=no", "--debug"), 0);
        ASSERT_TRUE(c.debug);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--debug=off"), 0);
        ASSERT_TRUE(!c.debug);
        conf_free(&c);

        ASSERT_INT_EQ(LOAD(&c, "--bogus"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "-x"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--DB_DSN=x"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--db-dsn"), -EINVAL); /* needs a value */
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--no-db-dsn"), -EINVAL); /* --no- only for booleans */
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--no-debug=yes"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--listen-port", "-5"), -ERANGE);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--listen-port= 5"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--listen-port=0x10"), -EINVAL);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--debug=2"), -EINVAL);
        conf_free(&c);
}

static void test_positional(void) {
        _cleanup_strv_free_ char **args = NULL;
        Conf c;

        reset_environment();
        unlink(path);
        ASSERT_INT_EQ(load_args(&c, &args, (const char *const[]){ "add", "--debug", "file", "--", "--not-a-flag", "-", NULL }), 0);
        ASSERT_TRUE(c.debug);
        ASSERT_UINT_EQ(strv_length(args), 4);
        ASSERT_STREQ(args[0], "add");
        ASSERT_STREQ(args[1], "file");
        ASSERT_STREQ(args[2], "--not-a-flag");
        ASSERT_STREQ(args[3], "-");
        conf_free(&c);
        /* A program that takes no arguments refuses them. */
        ASSERT_INT_EQ(LOAD(&c, "stray"), -EINVAL);
        conf_free(&c);
}

static void test_config_path(void) {
        Conf c;

        reset_environment();
        write_config("NODE_NAME=default-file\n");
        FILE *f = fopen(other, "we");
        ASSERT_TRUE(f);
        fputs("NODE_NAME=other-file\n", f);
        fclose(f);

        ASSERT_INT_EQ(LOAD(&c, "--config", other), 0);
        ASSERT_STREQ(c.node, "other-file");
        conf_free(&c);
        /* --config is found wherever it is, so the file stays below flags given before it. */
        ASSERT_INT_EQ(LOAD(&c, "--node-name=flag", "--config=", other), -ENOENT);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--node-name=flag", "--config", other), 0);
        ASSERT_STREQ(c.node, "flag");
        conf_free(&c);
        setenv("MC_CONFIG", other, 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), 0);
        ASSERT_STREQ(c.node, "other-file");
        conf_free(&c);
        unsetenv("MC_CONFIG");
        /* An explicitly named file must exist; the default one need not. */
        ASSERT_INT_EQ(LOAD(&c, "--config=/nonexistent/mc.conf"), -ENOENT);
        conf_free(&c);
        setenv("MC_CONFIG", "/nonexistent/mc.conf", 1);
        ASSERT_INT_EQ(LOAD_NONE(&c), -ENOENT);
        conf_free(&c);
        unsetenv("MC_CONFIG");
        /* --config without a value is an error, not silently the default file. */
        ASSERT_INT_EQ(LOAD(&c, "--config"), -EINVAL);
        conf_free(&c);
        unlink(other);
}

static void test_help_and_version(void) {
        Conf c;

        reset_environment();
        unlink(path);
        ASSERT_INT_EQ(LOAD(&c, "--help"), 1);
        conf_free(&c);
        ASSERT_INT_EQ(LOAD(&c, "--version"), 1);
        conf_free(&c);
}

static void test_parsers(void) {
        int64_t v = 5;
        char **l;

        ASSERT_INT_EQ(parse_boolean("YES"), 1);
        ASSERT_INT_EQ(parse_boolean("On"), 1);
        ASSERT_INT_EQ(parse_boolean("0"), 0);
        ASSERT_INT_EQ(parse_boolean(""), -EINVAL);
        ASSERT_INT_EQ(parse_boolean(NULL), -EINVAL);
        ASSERT_INT_EQ(parse_int64("-9223372036854775808", &v), 0);
        ASSERT_INT_EQ(v, INT64_MIN);
        v = 5;
        ASSERT_INT_EQ(parse_int64("9223372036854775808", &v), -ERANGE);
        ASSERT_INT_EQ(parse_int64("", &v), -EINVAL);
        ASSERT_INT_EQ(parse_int64(" 1", &v), -EINVAL);
        ASSERT_INT_EQ(parse_int64("1 ", &v), -EINVAL);
        ASSERT_INT_EQ(v, 5);

        l = strv_split(" ,, ");
        ASSERT_TRUE(l);
        ASSERT_UINT_EQ(strv_length(l), 0);
        strv_free(l);
        l = strv_split("x");
        ASSERT_UINT_EQ(strv_length(l), 1);
        strv_free(l);
}

int main(void) {
        if (!mkdtemp(dir))
                return 2;
        snprintf(path, sizeof(path), "%s/mc.conf", dir);
        snprintf(other, sizeof(other), "%s/other.conf", dir);
        log_set_target(LOG_TARGET_CONSOLE);

        RUN_TEST(test_defaults);
        RUN_TEST(test_file);
        RUN_TEST(test_file_errors);
        RUN_TEST(test_precedence);
        RUN_TEST(test_aliases_in_environment);
        RUN_TEST(test_environment_names_in_file);
        RUN_TEST(test_flags);
        RUN_TEST(test_positional);
        RUN_TEST(test_config_path);
        RUN_TEST(test_help_and_version);
        RUN_TEST(test_parsers);

        unlink(path);
        unlink(other);
        rmdir(dir);
        return TESTS_DONE();
}
