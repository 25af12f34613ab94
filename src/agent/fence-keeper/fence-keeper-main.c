/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-fence-keeper: started by mc-agent, or by its own unit (mc-fence-keeper.service, with
 * --persistent), see fence-keeper.h. */

#include "daemon-util.h"
#include "fence-keeper.h"

static int run(int argc, char *argv[]) {
        bool persistent = argc == 5 && streq(argv[4], "--persistent"), detach = argc == 5 && streq(argv[4], "--detach");
        int r;

        if ((argc != 4 && argc != 5) || !streq(argv[1], "--fence-keeper") || (argc == 5 && !persistent && !detach)) {
                fprintf(stderr, "Usage: mc-fence-keeper --fence-keeper LEASE_FILE PID_FILE [--persistent|--detach]\n"
                        "(started by mc-agent with --detach, or with --persistent by mc-fence-keeper.service)\n");
                return 2;
        }
        if (detach) {
                r = fence_keeper_detach(argv[3]);
                if (r < 0)
                        return 1;
        }
        fence_keeper_run(argv[2], argv[3], persistent);
}

DEFINE_MAIN_FUNCTION(run);
