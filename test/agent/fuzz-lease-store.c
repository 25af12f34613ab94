/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the lease file read back after a restart (lease_store_parse). The boot id the
 * corpus uses is "fuzz-boot". Properties: never crash or leak; records have a task id, deadlines that
 * are not negative, and no empty cgroup marker (the fence keeper would kill every process with it). */

#include "lease-store.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        LeaseRecord *l = NULL;
        uint64_t ttl;
        pid_t pid;
        size_t n;
        int r;

        log_set_max_level(LOG_CRIT);
        r = lease_store_parse((const char *) data, size, "fuzz-boot", &ttl, &pid, &l, &n);
        if (r == -ENOMEM || r == -EBADMSG)
                return 0;
        if (r < 0 || (n > 0 && !l) || pid < 0)
                abort();
        for (size_t i = 0; i < n; i++)
                if (!l[i].task_id || (int64_t) l[i].deadline_usec < 0 ||
                    (l[i].cgroup_marker && !l[i].cgroup_marker[0]))
                        abort();
        lease_records_free(l, n);
        return 0;
}
