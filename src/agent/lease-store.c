/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>

#include "file-util.h"
#include "json-util.h"
#include "cgroup-locate.h"
#include "lease-store.h"
#include "log.h"

static int boot_id(char **ret) {
        return read_one_line_file("/proc/sys/kernel/random/boot_id", ret);
}

int lease_store_save(const char *path, uint64_t ttl_usec, pid_t agent_pid, const LeaseRecord *l, size_t n) {
        _cleanup_json_ json_object *o = json_object_new_object(), *a = json_object_new_array();
        _cleanup_free_ char *boot = NULL;
        const char *text;
        int r;

        if (!o || !a)
                return -ENOMEM;
        r = boot_id(&boot);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_new_object();
                if (!e || json_object_array_add(a, e) < 0)
                        return -ENOMEM;
                if (json_add_string(e, "task_id", l[i].task_id) < 0 ||
                    json_add_int64(e, "lease_token", l[i].lease_token) < 0 ||
                    json_add_int64(e, "deadline_usec", (int64_t) l[i].deadline_usec) < 0 ||
                    json_add_int64(e, "fence_usec", (int64_t) l[i].fence_usec) < 0 ||
                    json_add_int64(e, "pid", l[i].pid) < 0 ||
                    (l[i].cgroup_marker && json_add_string(e, "cgroup_marker", l[i].cgroup_marker) < 0) ||
                    (l[i].cgroup_dir && json_add_string(e, "cgroup_dir", l[i].cgroup_dir) < 0) ||
                    (l[i].timed_out && json_add(e, "timed_out", json_object_new_boolean(true)) < 0))
                        return -ENOMEM;
        }
        if (json_add_string(o, "boot_id", boot) < 0 || json_add_int64(o, "ttl_usec", (int64_t) ttl_usec) < 0 ||
            json_add_int64(o, "agent_pid", agent_pid) < 0 ||
            json_add(o, "leases", TAKE_PTR(a)) < 0)
                return -ENOMEM;
        text = json_to_string(o);
        /* Not synced: it is rewritten every third of a TTL, and a machine crash takes the
         * containers it fences with it. */
        return write_file_atomic(path, text, strlen(text), 0600, 0);
}

void lease_records_free(LeaseRecord *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(l[i].task_id);
                free(l[i].cgroup_marker);
                free(l[i].cgroup_dir);
        }
        free(l);
}

int lease_store_parse(const char *text, size_t size, const char *boot, uint64_t *ret_ttl_usec, pid_t *ret_agent_pid,
                      LeaseRecord **ret, size_t *ret_n) {
        _cleanup_json_ json_object *o = NULL;
        LeaseRecord *l = NULL;
        json_object *a;
        const char *b;
        size_t n = 0, m;
        int64_t ttl;

        *ret = NULL;
        *ret_n = 0;
        *ret_ttl_usec = 0;
        if (ret_agent_pid)
                *ret_agent_pid = 0;
        /* A damaged file is an error, not "no leases": the fence keeper then keeps what it knew. */
        if (json_parse_strict(text, size, &o, NULL) < 0 || json_get_string(o, "boot_id", &b) < 0 ||
            !json_object_object_get_ex(o, "leases", &a) || !json_object_is_type(a, json_type_array))
                return -EBADMSG;
        /* Written before a reboot: none of its processes is alive. */
        if (!boot || !streq(boot, b))
                return 0;
        if (json_get_int64(o, "ttl_usec", &ttl) >= 0 && ttl > 0)
                *ret_ttl_usec = (uint64_t) ttl;
        /* A pid beyond pid_t would wrap, possibly to 1 (init), which never goes away. */
        if (ret_agent_pid && json_get_int64(o, "agent_pid", &ttl) >= 0 && ttl > 0 && ttl <= INT32_MAX)
                *ret_agent_pid = (pid_t) ttl;
        m = json_object_array_length(a);
        l = calloc(m + 1, sizeof(LeaseRecord));
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < m; i++) {
                json_object *e = json_object_array_get_idx(a, i);
                const char *id, *marker = NULL, *dir = NULL;
                int64_t token, deadline, fence = 0, pid = 0;
                if (json_get_string(e, "task_id", &id) < 0 || json_get_int64(e, "lease_token", &token) < 0 ||
                    json_get_int64(e, "deadline_usec", &deadline) < 0 || deadline < 0)
                        continue;
                (void) json_get_int64(e, "fence_usec", &fence);
                (void) json_get_int64(e, "pid", &pid);
                (void) json_get_string(e, "cgroup_marker", &marker);
                (void) json_get_string(e, "cgroup_dir", &dir);
                (void) json_get_bool(e, "timed_out", &l[n].timed_out);
                if (marker && !marker[0]) {
                        /* The fence keeper kills whatever cgroup path contains the marker: an empty
                         * one is in every path. */
                        log_warning("Lease file: task %s has an empty cgroup marker; it cannot be fenced.", id);
                        marker = NULL;
                }
                if (dir && !cgroup_dir_carries_marker(dir, marker)) {
                        /* Everything in it and below dies at the fence: only the job's own cgroup,
                         * the one whose path its marker names, will do. */
                        log_warning("Lease file: task %s's cgroup directory \"%s\" does not carry its marker; ignored.", id, dir);
                        dir = NULL;
                }
                l[n].task_id = strdup(id);
                l[n].cgroup_marker = marker ? strdup(marker) : NULL;
                l[n].cgroup_dir = dir ? strdup(dir) : NULL;
                if (!l[n].task_id || (marker && !l[n].cgroup_marker) || (dir && !l[n].cgroup_dir)) {
                        lease_records_free(l, n + 1);
                        return -ENOMEM;
                }
                l[n].lease_token = token;
                l[n].deadline_usec = (uint64_t) deadline;
                l[n].fence_usec = fence > 0 ? (uint64_t) fence : (uint64_t) deadline;
                l[n].pid = pid;
                n++;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

int lease_store_load(const char *path, uint64_t *ret_ttl_usec, pid_t *ret_agent_pid, LeaseRecord **ret, size_t *ret_n) {
        _cleanup_free_ char *boot = NULL, *text = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size = 0;

        *ret = NULL;
        *ret_n = 0;
        *ret_ttl_usec = 0;
        if (ret_agent_pid)
                *ret_agent_pid = 0;
        f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        if (getdelim(&text, &size, 0, f) < 0)
                return feof(f) ? -EBADMSG : -errno;
        if (boot_id(&boot) < 0)
                return 0;
        return lease_store_parse(text, strlen(text), boot, ret_ttl_usec, ret_agent_pid, ret, ret_n);
}
