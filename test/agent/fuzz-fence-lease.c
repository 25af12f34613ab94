/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the lease file mc-fence-init reads (fence_lease_parse), and the decision taken
 * on what it read. Properties: never crash or read out of bounds; what parses has a known state and
 * formats back into a file that parses to the same lease; a new write never sets a deadline before
 * now, and nothing but "off" leaves a task running past its deadline. */

#include <stdlib.h>
#include <string.h>

#include "fence-protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        FenceLease l, back;
        FenceWatch w = {};
        char buf[256];
        int n;

        if (fence_lease_parse((const char *) data, size, &l) < 0)
                return 0;
        if (!fence_lease_state_to_string(l.state))
                abort();
        n = fence_lease_format(&l, buf, sizeof(buf));
        if (n <= 0 || fence_lease_parse(buf, (size_t) n, &back) < 0 || back.seq != l.seq || back.state != l.state ||
            back.remaining_ms != l.remaining_ms)
                abort();
        (void) fence_watch_step(&w, &l, 1000000, 100000);
        if (w.deadline_usec < 1000000)
                abort();
        if (l.state != FENCE_LEASE_OFF && fence_watch_step(&w, NULL, w.deadline_usec, 100000) != FENCE_KILL)
                abort();
        return 0;
}
