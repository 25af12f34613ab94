/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A minimal daemon built like ours (src/shared's event loop, sd_notify, watchdog, logging) for the
 * fixtures' self-test: it proves that READY=1 and WATCHDOG=1 reach Daemon, that structured log
 * fields reach the private journal, and that sanitizer reports are caught (FIXTURE_LEAK=1 leaks at
 * exit, FIXTURE_UB=1 overflows a signed int). */

#include <limits.h>

#include "daemon-util.h"
#include "log.h"

static void *volatile leaked;

int main(int argc, char *argv[]) {
        _cleanup_event_unref_ sd_event *e = NULL;
        int r;

        log_setup("mc-fixture-daemon");
        r = daemon_event_new(&e);
        if (r < 0)
                return 1;
        daemon_notify_ready("Fixture ready.");
        log_event(LOG_INFO, MC_EVENT_NODE_REGISTERED, LOG_FIELDS("NODE_ID", "fixture-node"), "Fixture daemon ready.");

        r = sd_event_loop(e);
        daemon_notify_stopping();
        log_info("Fixture daemon stopping.");

        if (getenv("FIXTURE_LEAK")) {
                leaked = malloc(17);
                leaked = NULL;
        }
        if (getenv("FIXTURE_UB")) {
                volatile int x = INT_MAX, one = 1;
                x += one;
        }
        return r < 0 ? 1 : 0;
}
