/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <signal.h>

#include "cgroup-locate.h"
#include "file-util.h"
#include "strv.h"

/* /proc/self/mountinfo of a host with hundreds of mounts (containers' overlays) stays far below. */
#define MOUNTINFO_MAX (4U * 1024U * 1024U)
#define PROC_CGROUP_MAX (64U * 1024U)
/* Passes of cgroup_dir_kill_all(): a job forking as fast as it can still loses, since every pass
 * kills what the last one missed and a SIGKILLed process forks no more. */
#define KILL_PASSES 16

/* Whether every name of the list want is an item of the list have ("cpu,cpuacct" in
 * "rw,nosuid,cpu,cpuacct"; "name=systemd" in "rw,xattr,name=systemd"). */
static int all_in_list(const char *want, const char *have) {
        _cleanup_strv_free_ char **w = NULL, **h = NULL;

        w = strv_split_separators(want, ",");
        h = strv_split_separators(have, ",");
        if (!w || !h)
                return -ENOMEM;
        if (!w[0])
                return 0;
        for (char **i = w; *i; i++)
                if (!strv_contains(h, *i))
                        return 0;
        return 1;
}

/* Where the hierarchy of a /proc/PID/cgroup line ("" for v2, else its controllers) is mounted, and the
 * mount's root within it, from mountinfo's lines "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...]
 * - FSTYPE SOURCE SUPEROPTS". */
static int hierarchy_mount(const char *mountinfo, const char *controllers, char **ret_mountpoint, char **ret_root) {
        for (const char *p = mountinfo; *p;) {
                size_t len = strcspn(p, "\n");
                _cleanup_free_ char *line = strndup(p, len);
                _cleanup_strv_free_ char **f = NULL;
                size_t n, dash;
                int k;

                p += len + (p[len] == '\n');
                if (!line)
                        return -ENOMEM;
                f = strv_split_separators(line, " ");
                if (!f)
                        return -ENOMEM;
                n = strv_length(f);
                for (dash = 6; dash < n && !streq(f[dash], "-"); dash++)
                        ;
                if (dash + 3 >= n)
                        continue;
                if (isempty(controllers))
                        k = streq(f[dash + 1], "cgroup2");
                else
                        k = streq(f[dash + 1], "cgroup") ? all_in_list(controllers, f[dash + 3]) : 0;
                if (k < 0)
                        return k;
                if (k == 0)
                        continue;
                *ret_mountpoint = strdup(f[4]);
                *ret_root = strdup(f[3]);
                if (!*ret_mountpoint || !*ret_root) {
                        free(*ret_mountpoint);
                        free(*ret_root);
                        *ret_mountpoint = *ret_root = NULL;
                        return -ENOMEM;
                }
                return 0;
        }
        return -ENOMEDIUM;
}

int cgroup_dir_from_texts(const char *proc_cgroup, const char *mountinfo, const char *marker, char **ret_dir) {
        _cleanup_strv_free_ char **lines = NULL;
        int r = -ENXIO;

        assert(proc_cgroup);
        assert(mountinfo);
        assert(!isempty(marker));
        assert(ret_dir);

        /* The marker may end with "\n" (a name that must end the line): match on whole lines. */
        for (const char *p = proc_cgroup; *p;) {
                const char *eol = strchr(p, '\n'), *c1, *c2;
                size_t len = eol ? (size_t) (eol - p + 1) : strlen(p);
                _cleanup_free_ char *line = strndup(p, len), *controllers = NULL, *path = NULL;
                _cleanup_free_ char *mountpoint = NULL, *root = NULL;
                const char *rel;
                int k;

                p += len;
                if (!line)
                        return -ENOMEM;
                if (!strstr(line, marker))
                        continue;
                /* "ID:CONTROLLERS:PATH"; PATH may itself contain ':'. */
                c1 = strchr(line, ':');
                c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c2)
                        continue;
                controllers = strndup(c1 + 1, (size_t) (c2 - c1 - 1));
                path = strndup(c2 + 1, strcspn(c2 + 1, "\n"));
                if (!controllers || !path)
                        return -ENOMEM;
                k = hierarchy_mount(mountinfo, controllers, &mountpoint, &root);
                if (k == -ENOMEM)
                        return k;
                if (k < 0) {
                        r = k;
                        continue;
                }
                /* A mount of a subtree (a container's view) shows the paths below its root. */
                rel = path;
                if (!streq(root, "/")) {
                        size_t rl = strlen(root);
                        if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != 0)) {
                                r = -ENOMEDIUM;
                                continue;
                        }
                        rel = path + rl;
                }
                if (asprintf(ret_dir, "%s%s%s", mountpoint, *rel == '/' || *rel == 0 ? "" : "/", rel) < 0)
                        return -ENOMEM;
                return 0;
        }
        return r;
}

int cgroup_dir_of_pid(pid_t pid, const char *marker, char **ret_dir) {
        _cleanup_free_ char *path = NULL, *cg = NULL, *mi = NULL;
        int r;

        assert(pid > 0);

        if (asprintf(&path, "/proc/%d/cgroup", (int) pid) < 0)
                return -ENOMEM;
        r = read_full_file(path, PROC_CGROUP_MAX, &cg, NULL);
        if (r < 0)
                return r == -ENOENT || r == -ESRCH ? -ESRCH : r;
        r = read_full_file("/proc/self/mountinfo", MOUNTINFO_MAX, &mi, NULL);
        if (r < 0)
                return r;
        return cgroup_dir_from_texts(cg, mi, marker, ret_dir);
}

bool cgroup_dir_carries_marker(const char *dir, const char *marker) {
        _cleanup_free_ char *line = NULL;

        if (isempty(dir) || dir[0] != '/' || isempty(marker) || strstr(dir, "/../") || endswith(dir, "/.."))
                return false;
        /* As the line of /proc/PID/cgroup ends: with a newline after the path. */
        if (asprintf(&line, "%s\n", dir) < 0)
                return false;
        return strstr(line, marker);
}

/* Signals every process listed in dir/cgroup.procs and below; how many, or -ENOENT when dir is gone. */
static int kill_pass(const char *dir) {
        _cleanup_free_ char *procs = NULL, *text = NULL;
        _cleanup_closedir_ DIR *d = NULL;
        struct dirent *de;
        int n = 0, r;

        if (asprintf(&procs, "%s/cgroup.procs", dir) < 0)
                return -ENOMEM;
        r = read_full_file(procs, 16U * 1024U * 1024U, &text, NULL);
        if (r < 0)
                return r;
        for (char *p = text, *e; *p; p = e) {
                long v = strtol(p, &e, 10);
                if (e == p)
                        break;
                if (v > 0 && kill((pid_t) v, SIGKILL) >= 0)
                        n++;
                while (*e == '\n')
                        e++;
        }
        d = opendir(dir);
        if (!d)
                return n;
        while ((de = readdir(d))) {
                _cleanup_free_ char *sub = NULL;
                if (de->d_type != DT_DIR || de->d_name[0] == '.')
                        continue;
                if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0)
                        return -ENOMEM;
                r = kill_pass(sub);
                if (r > 0)
                        n += r;
        }
        return n;
}

int cgroup_dir_kill_all(const char *dir) {
        int total = 0;

        assert(dir);

        for (unsigned pass = 0; pass < KILL_PASSES; pass++) {
                int r = kill_pass(dir);
                if (r == -ENOENT)
                        return pass == 0 ? -ENOENT : total;
                if (r < 0)
                        return total > 0 ? total : r;
                if (r == 0)
                        return total;
                total = MAX(total, r);
        }
        return total;
}
