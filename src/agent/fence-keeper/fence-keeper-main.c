/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-fence-keeper: started by mc-agent, or by its own unit (mc-fence-keeper.service, with
 * --persistent), see fence-keeper.h. */

#include "daemon-util.h"
#include "fence-keeper.h"

static int run(int argc, char *argv[]) {
        if ((argc != 4 && argc != 5) || !streq(argv[1], "--fence-keeper") ||
            (argc == 5 && !streq(argv[4], "--persistent"))) {
                fprintf(stderr, "Usage: mc-fence-keeper --fence-keeper LEASE_FILE PID_FILE [--persistent]\n"
                        "(started by mc-agent, or with --persistent by mc-fence-keeper.service)\n");
                return 2;
        }
        fence_keeper_run(argv[2], argv[3], argc == 5);
}

DEFINE_MAIN_FUNCTION(run);
