/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-fence-keeper: started by mc-agent, see fence-keeper.h. */

#include "daemon-util.h"
#include "fence-keeper.h"

static int run(int argc, char *argv[]) {
        if (argc != 4 || !streq(argv[1], "--fence-keeper")) {
                fprintf(stderr, "mc-fence-keeper is started by mc-agent (--fence-keeper LEASE_FILE PID_FILE).\n");
                return 2;
        }
        fence_keeper_run(argv[2], argv[3]);
}

DEFINE_MAIN_FUNCTION(run);
