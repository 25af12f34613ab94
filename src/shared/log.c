/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <stdio.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "log.h"

#define LOG_MAX_FIELDS 24
#define LOG_LINE_MAX 4096

static const char *log_identifier = "mc";
static int log_max_level = LOG_INFO;
static LogTarget log_target = LOG_TARGET_AUTO;
static int journal_usable = -1; /* -1: not probed yet */
static int stderr_is_journal = -1;      /* JOURNAL_STREAM set, looked up once (not per line); -1: not yet */

void log_setup(const char *identifier) {
        const char *e;

        if (identifier)
                log_identifier = identifier;

        e = getenv("MC_LOG_LEVEL");
        if (e) {
                int l = log_level_from_string(e);
                if (l >= 0)
                        log_max_level = l;
        }

        e = getenv("MC_LOG_TARGET");
        if (e) {
                if (streq(e, "console"))
                        log_target = LOG_TARGET_CONSOLE;
                else if (streq(e, "journal"))
                        log_target = LOG_TARGET_JOURNAL;
        }
}

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

void log_set_target(LogTarget target) {
        log_target = target;
        journal_usable = -1;
        stderr_is_journal = -1;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = {
                "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
        };

        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (streq(s, "warn"))
                return LOG_WARNING;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == 0)
                return s[0] - '0';
        return -EINVAL;
}

static const char *const event_names[_MC_EVENT_MAX] = {
#define EVENT_NAME_(upper, name, message_id) [MC_EVENT_##upper] = #name,
        MC_EVENT_TABLE(EVENT_NAME_)
#undef EVENT_NAME_
};

static const char *const event_message_ids[_MC_EVENT_MAX] = {
#define EVENT_MESSAGE_ID_(upper, name, message_id) [MC_EVENT_##upper] = message_id,
        MC_EVENT_TABLE(EVENT_MESSAGE_ID_)
#undef EVENT_MESSAGE_ID_
};

const char *log_event_name(McEvent event) {
        assert((unsigned) event < _MC_EVENT_MAX);
        return event_names[event];
}

const char *log_event_message_id(McEvent event) {
        assert((unsigned) event < _MC_EVENT_MAX);
        return event_message_ids[event];
}

static bool use_journal(void) {
        if (log_target == LOG_TARGET_CONSOLE)
                return false;
        if (log_target == LOG_TARGET_JOURNAL)
                return true;
        if (journal_usable < 0)
                journal_usable = access("/run/systemd/journal/socket", W_OK) == 0;
        return journal_usable;
}

static int log_to_journal(int level, int error, McEvent event, const char *const *fields,
                          const char *file, int line, const char *func, const char *message) {
        char buf[LOG_MAX_FIELDS][256];
        struct iovec iov[LOG_MAX_FIELDS + 8];
        _cleanup_free_ char *msg = NULL;
        size_t n = 0, b = 0;

#define ADD_FIELD(...)                                                                  \
        do {                                                                            \
                if (b < LOG_MAX_FIELDS) {                                               \
                        int _l = snprintf(buf[b], sizeof(buf[b]), __VA_ARGS__);         \
                        iov[n++] = (struct iovec){ buf[b], (size_t) MIN(_l, (int) sizeof(buf[b]) - 1) }; \
                        b++;                                                            \
                }                                                                       \
        } while (0)

        if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                return -ENOMEM;
        iov[n++] = (struct iovec){ msg, strlen(msg) };
        ADD_FIELD("PRIORITY=%d", level);
        ADD_FIELD("SYSLOG_IDENTIFIER=%s", log_identifier);
        ADD_FIELD("CODE_FILE=%s", file);
        ADD_FIELD("CODE_LINE=%d", line);
        ADD_FIELD("CODE_FUNC=%s", func);
        if (error != 0)
                ADD_FIELD("ERRNO=%d", abs(error));
        if (event != MC_EVENT_NONE)
                ADD_FIELD("MC_EVENT=%s", log_event_name(event));
        if (log_event_message_id(event))
                ADD_FIELD("MESSAGE_ID=%s", log_event_message_id(event));
        for (size_t i = 0; fields && fields[i] && fields[i + 1]; i += 2)
                ADD_FIELD("%s=%s", fields[i], fields[i + 1]);
#undef ADD_FIELD

        return sd_journal_sendv(iov, (int) n);
}

static void log_to_console(int level, McEvent event, const char *const *fields, const char *message) {
        static const char *const prefix[] = { "<0>", "<1>", "<2>", "<3>", "<4>", "<5>", "<6>", "<7>" };
        char line[LOG_LINE_MAX];
        size_t off = 0;

#define APPEND(...)                                                                     \
        do {                                                                            \
                if (off < sizeof(line)) {                                               \
                        int _l = snprintf(line + off, sizeof(line) - off, __VA_ARGS__); \
                        if (_l > 0)                                                     \
                                off += (size_t) _l;                                     \
                }                                                                       \
        } while (0)

        /* Under systemd, stderr goes to the journal, which understands the <N> priority prefix. */
        if (stderr_is_journal < 0)
                stderr_is_journal = !!getenv("JOURNAL_STREAM");
        APPEND("%s%s: %s", stderr_is_journal ? prefix[level & 7] : "", log_identifier, message);
        if (event != MC_EVENT_NONE)
                APPEND(" MC_EVENT=%s", log_event_name(event));
        for (size_t i = 0; fields && fields[i] && fields[i + 1]; i += 2)
                APPEND(" %s=%s", fields[i], fields[i + 1]);
        /* Last: a reader looks for the event and its fields first. */
        if (log_event_message_id(event))
                APPEND(" MESSAGE_ID=%s", log_event_message_id(event));
#undef APPEND
        if (off >= sizeof(line))
                off = sizeof(line) - 1;
        line[off] = 0;
        fprintf(stderr, "%s\n", line);
}

int log_internal(int level, int error, McEvent event, const char *const *fields,
                 const char *file, int line, const char *func, const char *format, ...) {
        char message[LOG_LINE_MAX];
        int saved_errno = errno;
        va_list ap;

        if ((level & 7) > log_max_level)
                return -abs(error);

        /* Let %m refer to the error we were given, not whatever errno happens to be. */
        if (error != 0)
                errno = abs(error);
        va_start(ap, format);
        vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);

        if (!use_journal() || log_to_journal(level, error, event, fields, file, line, func, message) < 0)
                log_to_console(level, event, fields, message);

        errno = saved_errno;
        return -abs(error);
}
