/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The event table of log-events.h as the compiled code sees it: names well-formed and unique,
 * MESSAGE_IDs valid 128-bit ids and unique, and log_event() putting both on the console line. With
 * --list it prints the table instead ("<name> <message id or ->" per line), for
 * test-event-docs.py, which checks the catalog and the docs against it. */

#include <stdlib.h>
#include <sys/mman.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#include "log.h"
#include "tests.h"

static bool is_event_name(const char *s) {
        if (!s || !*s || *s == '_')
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || *p == '_'))
                        return false;
        return true;
}

static void test_none_is_no_event(void) {
        ASSERT_NULL(log_event_name(MC_EVENT_NONE));
        ASSERT_NULL(log_event_message_id(MC_EVENT_NONE));
}

static void test_names(void) {
        for (McEvent e = MC_EVENT_NONE + 1; e < _MC_EVENT_MAX; e++) {
                const char *name = log_event_name(e);

                ASSERT_TRUE(is_event_name(name));
                for (McEvent o = MC_EVENT_NONE + 1; o < e; o++)
                        if (streq(name, log_event_name(o)))
                                TEST_FAIL_("event %s is in the table twice", name);
        }
}

static void test_message_ids(void) {
        for (McEvent e = MC_EVENT_NONE + 1; e < _MC_EVENT_MAX; e++) {
                const char *id = log_event_message_id(e);
                char back[SD_ID128_STRING_MAX];
                sd_id128_t v;

                if (!id)
                        continue;
                if (sd_id128_from_string(id, &v) < 0)
                        TEST_FAIL_("%s: MESSAGE_ID %s is not a 128-bit id", log_event_name(e), id);
                /* The form journald stores and journalctl matches on: 32 lowercase hex digits. */
                ASSERT_STREQ(sd_id128_to_string(v, back), id);
                ASSERT_TRUE(!sd_id128_is_null(v));
                for (McEvent o = MC_EVENT_NONE + 1; o < e; o++)
                        if (log_event_message_id(o) && streq(id, log_event_message_id(o)))
                                TEST_FAIL_("%s and %s share MESSAGE_ID %s", log_event_name(o), log_event_name(e), id);
        }
}

/* What log_event() writes to stderr when there is no journal: every event with its name, its
 * fields and its MESSAGE_ID, read back from a memfd standing in for stderr. */
static void test_console_line(void) {
        _cleanup_close_ int fd = memfd_create("stderr", MFD_CLOEXEC), saved = dup(STDERR_FILENO);
        _cleanup_free_ char *text = NULL;
        off_t size;

        ASSERT_TRUE(fd >= 0 && saved >= 0);
        log_set_target(LOG_TARGET_CONSOLE);
        fflush(stderr);
        ASSERT_TRUE(dup2(fd, STDERR_FILENO) >= 0);
        for (McEvent e = MC_EVENT_NONE + 1; e < _MC_EVENT_MAX; e++)
                log_event(LOG_INFO, e, LOG_FIELDS("TASK_ID", "t-1"), "Event %s.", log_event_name(e));
        log_info("No event.");
        fflush(stderr);
        ASSERT_TRUE(dup2(saved, STDERR_FILENO) >= 0);

        size = lseek(fd, 0, SEEK_END);
        ASSERT_TRUE(size > 0);
        text = calloc(1, (size_t) size + 1);
        ASSERT_TRUE(text);
        ASSERT_INT_EQ(pread(fd, text, (size_t) size, 0), size);

        char *line = text;
        for (McEvent e = MC_EVENT_NONE + 1; e < _MC_EVENT_MAX; e++) {
                char *end = strchr(line, '\n'), want[128];

                ASSERT_TRUE(end);
                *end = 0;
                snprintf(want, sizeof(want), " MC_EVENT=%s ", log_event_name(e));
                if (!strstr(line, want) || !strstr(line, " TASK_ID=t-1"))
                        TEST_FAIL_("no \"%s\" and TASK_ID in: %s", want, line);
                if (log_event_message_id(e)) {
                        snprintf(want, sizeof(want), " MESSAGE_ID=%s", log_event_message_id(e));
                        if (!strstr(line, want))
                                TEST_FAIL_("no \"%s\" in: %s", want, line);
                } else if (strstr(line, "MESSAGE_ID="))
                        TEST_FAIL_("a MESSAGE_ID for an event without one: %s", line);
                line = end + 1;
        }
        ASSERT_TRUE(strstr(line, "No event."));
        ASSERT_TRUE(!strstr(line, "MC_EVENT=") && !strstr(line, "MESSAGE_ID="));
}

int main(int argc, char *argv[]) {
        if (argc == 2 && streq(argv[1], "--list")) {
                for (McEvent e = MC_EVENT_NONE + 1; e < _MC_EVENT_MAX; e++)
                        printf("%s %s\n", log_event_name(e), log_event_message_id(e) ?: "-");
                return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        }

        log_setup("test-log-events");
        RUN_TEST(test_none_is_no_event);
        RUN_TEST(test_names);
        RUN_TEST(test_message_ids);
        RUN_TEST(test_console_line);
        return TESTS_DONE();
}
