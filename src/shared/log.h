/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Structured logging. Messages go to journald with their fields (MC_EVENT=, TASK_ID=, ...) when the
 * journal socket is there, and to stderr otherwise (or when MC_LOG_TARGET=console), one line each with
 * the fields appended as KEY=value so that they stay greppable.
 *
 * Events are the McEvent values of log-events.h; fields are passed as a NULL-terminated list of
 * key/value string pairs, built with LOG_FIELDS():
 *
 *     log_event(LOG_INFO, MC_EVENT_TASK_QUEUED, LOG_FIELDS("TASK_ID", id), "Task %s queued.", id);
 *
 * The log_*_errno() variants return -abs(error), so that "return log_error_errno(r, ...);" both logs
 * and propagates. */

#include <stdarg.h>
#include <syslog.h>

#include "log-events.h"
#include "macro.h"

#define LOG_FIELDS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define LOG_NO_FIELDS ((const char *const[]){ NULL })

typedef enum LogTarget {
        LOG_TARGET_AUTO,
        LOG_TARGET_JOURNAL,
        LOG_TARGET_CONSOLE,
} LogTarget;

void log_setup(const char *identifier);
void log_set_max_level(int level);
int log_get_max_level(void);
void log_set_target(LogTarget target);
/* Parses "debug", "info", ... or a number 0..7. */
int log_level_from_string(const char *s);

int log_internal(int level, int error, McEvent event, const char *const *fields,
                 const char *file, int line, const char *func,
                 const char *format, ...) _printf_(8, 9);

#define log_full_errno(level, error, ...) \
        log_internal(level, error, MC_EVENT_NONE, NULL, __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_full(level, ...) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...)   log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...)   log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...)    log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...)  log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...)   log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* An event with MC_EVENT=<name>, MESSAGE_ID= when it has one, and further fields. The _Generic turns
 * an event given as a string (or NULL) into a compile error ("invalid use of void expression") even
 * without -Werror: events are MC_EVENT_* values of log-events.h. */
#define log_event(level, event, fields, ...)                                                     \
        log_internal(level, 0,                                                                  \
                     _Generic((event), char *: (void) 0, const char *: (void) 0, void *: (void) 0, \
                              default: (event)),                                                \
                     fields, __FILE__, __LINE__, __func__, __VA_ARGS__)

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
