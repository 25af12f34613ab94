/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for configuration files (KEY=value lines): config_parse_file() with options of
 * every type, aliases included. Properties: never crash or leak; a refusal is a negative errno;
 * a file with a NUL byte is refused; accepted integers are within their bounds. */

#include "config.h"
#include "log.h"

typedef struct FuzzConfig {
        char *name;
        int64_t port;
        int64_t ttl;
        bool flag;
        char **list;
} FuzzConfig;

static const ConfigOption options[] = {
        { "NAME", "MC_NAME OLD_NAME", CONFIG_STRING, offsetof(FuzzConfig, name), 0, 0, "default", "a string" },
        { "PORT", NULL, CONFIG_INT, offsetof(FuzzConfig, port), 0, 65535, "80", "an integer" },
        { "TTL_MS", "MC_TTL", CONFIG_INT, offsetof(FuzzConfig, ttl), INT64_MIN, INT64_MAX, NULL, "any integer" },
        { "FLAG", NULL, CONFIG_BOOL, offsetof(FuzzConfig, flag), 0, 0, "no", "a boolean" },
        { "URLS", "MC_URLS", CONFIG_STRV, offsetof(FuzzConfig, list), 0, 0, NULL, "a list" },
};

static const ConfigSpec spec = {
        .program = "fuzz-config",
        .summary = "fuzz",
        .options = options,
        .n_options = ELEMENTSOF(options),
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *text = NULL;
        FuzzConfig c = { .port = 80 };
        FILE *f;
        int r;

        log_set_max_level(LOG_CRIT);
        if (size == 0)
                return 0;
        text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data, size);
        f = fmemopen(text, size, "r");
        if (!f)
                return 0;
        r = config_parse_file(&spec, &c, f, "fuzz.conf");
        fclose(f);
        if (r > 0 || (r == 0 && (c.port < 0 || c.port > 65535)))
                abort();
        /* A NUL byte would hide the rest of its line: the file is refused. */
        if (r == 0 && memchr(data, 0, size))
                abort();
        for (size_t i = 0; i < strv_length(c.list); i++)
                if (isempty(c.list[i]) || strpbrk(c.list[i], ", \t\n"))
                        abort();
        config_free(&spec, &c);
        return 0;
}
