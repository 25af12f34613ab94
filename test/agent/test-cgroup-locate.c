/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Finding a job's cgroup directory from one of its processes (cgroup-locate.h): the layouts a host may
 * have (v2, v1, hybrid, a container's view of a subtree) from their /proc texts, then this host for
 * real: a cgroup made here with a process and its child in it is found from the process, and emptied
 * by its directory alone. */

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "agent-test.h"
#include "cgroup-locate.h"
#include "file-util.h"

static const char *MOUNTS_V2 =
        "24 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";

static const char *MOUNTS_HYBRID =
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:13 master:2 - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

static void expect_dir(const char *proc, const char *mounts, const char *marker, const char *want) {
        _cleanup_free_ char *dir = NULL;
        int r = cgroup_dir_from_texts(proc, mounts, marker, &dir);

        if (r < 0 || !streq(dir, want))
                fprintf(stderr, "marker %s: got %d %s, want %s\n", marker, r, strna(dir), want);
        ASSERT(r >= 0 && streq(dir, want));
}

static void expect_error(const char *proc, const char *mounts, const char *marker, int want) {
        _cleanup_free_ char *dir = NULL;
        int r = cgroup_dir_from_texts(proc, mounts, marker, &dir);

        if (r != want)
                fprintf(stderr, "marker %s: got %d %s, want %d\n", marker, r, strna(dir), want);
        ASSERT(r == want && !dir);
}

static void test_layouts(void) {
        /* v2: Docker's systemd driver and an exec job. */
        expect_dir("0::/system.slice/docker-0123abcd.scope\n", MOUNTS_V2, "0123abcd",
                   "/sys/fs/cgroup/system.slice/docker-0123abcd.scope");
        expect_dir("0::/mc.agent/node-a/t1-7\n", MOUNTS_V2, "/t1-7\n", "/sys/fs/cgroup/mc.agent/node-a/t1-7");
        /* An exec job's mark ends its line: task t1, lease 7 is not task t1, lease 72, nor xt1-7. */
        expect_error("0::/mc.agent/node-a/t1-72\n", MOUNTS_V2, "/t1-7\n", -ENXIO);
        expect_error("0::/mc.agent/node-a/xt1-7\n", MOUNTS_V2, "/t1-7\n", -ENXIO);
        /* The last line without its newline still ends there. */
        expect_dir("0::/mc.agent/node-a/t1-7", MOUNTS_V2, "/t1-7", "/sys/fs/cgroup/mc.agent/node-a/t1-7");

        /* Hybrid: the exec driver's job is in the v1 memory and cpu hierarchies; the first line that
         * carries the mark and whose hierarchy is mounted wins. Controllers listed together are one
         * hierarchy, found whatever the order of the mount's options. */
        expect_dir("9:name=systemd:/\n5:memory:/mc.agent/t2-1\n2:cpu,cpuacct:/mc.agent/t2-1\n0::/\n",
                   MOUNTS_HYBRID, "/t2-1\n", "/sys/fs/cgroup/memory/mc.agent/t2-1");
        expect_dir("2:cpu,cpuacct:/mc.agent/t2-1\n", MOUNTS_HYBRID, "/t2-1\n",
                   "/sys/fs/cgroup/cpu,cpuacct/mc.agent/t2-1");
        expect_dir("1:name=systemd:/docker/feed42\n0::/docker/feed42\n", MOUNTS_HYBRID, "feed42",
                   "/sys/fs/cgroup/systemd/docker/feed42");
        expect_dir("0::/docker/feed42\n", MOUNTS_HYBRID, "feed42", "/sys/fs/cgroup/unified/docker/feed42");
        /* A hierarchy that is not mounted here; a path that holds ':'. */
        expect_error("3:blkio:/docker/feed42\n", MOUNTS_HYBRID, "feed42", -ENOMEDIUM);
        expect_dir("3:blkio:/docker/feed42\n5:memory:/a:b/feed42\n", MOUNTS_HYBRID, "feed42",
                   "/sys/fs/cgroup/memory/a:b/feed42");

        /* A container's view: the mount shows a subtree (its root field), paths are below it. */
        expect_dir("0::/machine.slice/m1/payload/job-9\n",
                   "50 40 0:22 /machine.slice/m1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "/job-9\n",
                   "/sys/fs/cgroup/payload/job-9");
        expect_error("0::/other/job-9\n", "50 40 0:22 /machine.slice/m1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
                     "/job-9\n", -ENOMEDIUM);

        /* Nothing carries the mark; mount lines that are cut short or not cgroups are skipped. */
        expect_error("0::/\n", MOUNTS_V2, "nothing", -ENXIO);
        expect_error("", MOUNTS_V2, "x", -ENXIO);
        expect_error("0::/x\n", "garbage\n1 2 3\n24 1 0:22 / /mnt rw - cgroup2\n", "x", -ENOMEDIUM);
}

static void test_dir_carries_marker(void) {
        ASSERT(cgroup_dir_carries_marker("/sys/fs/cgroup/mc.agent/node-a/t1-7", "/t1-7\n"));
        ASSERT(cgroup_dir_carries_marker("/sys/fs/cgroup/system.slice/docker-0123abcd.scope", "0123abcd"));
        /* A parent, another job, the root, a relative or climbing path: never. */
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup/mc.agent/node-a", "/t1-7\n"));
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup/mc.agent/node-a/t1-72", "/t1-7\n"));
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup/mc.agent/node-a/xt1-7", "/t1-7\n"));
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup", "/t1-7\n"));
        ASSERT(!cgroup_dir_carries_marker("sys/fs/cgroup/t1-7", "/t1-7\n"));
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup/t1-7/..", "/t1-7"));
        ASSERT(!cgroup_dir_carries_marker("/sys/fs/cgroup/t1-7/../x", "/t1-7"));
        ASSERT(!cgroup_dir_carries_marker("", "x") && !cgroup_dir_carries_marker("/a", "") && !cgroup_dir_carries_marker(NULL, "x"));
}

/* The directory of a hierarchy this host mounts where a cgroup can be made here (a test runs as root). */
static const char *writable_hierarchy(void) {
        static const char *const candidates[] = {
                "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup",
        };
        for (size_t i = 0; i < ELEMENTSOF(candidates); i++) {
                char p[256];
                snprintf(p, sizeof(p), "%s/cgroup.procs", candidates[i]);
                if (access(p, W_OK) == 0)
                        return candidates[i];
        }
        return NULL;
}

static pid_t spawn_in(const char *dir, bool with_child) {
        char procs[512];
        pid_t pid;

        snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
        pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                if (write_string_file(procs, "0") < 0)
                        _exit(3);
                if (with_child && fork() == 0)
                        execlp("sleep", "sleep", "600", NULL);
                execlp("sleep", "sleep", "600", NULL);
                _exit(127);
        }
        return pid;
}

static int count_procs(const char *dir) {
        _cleanup_free_ char *p = NULL, *text = NULL;
        int n = 0;

        ASSERT(asprintf(&p, "%s/cgroup.procs", dir) >= 0);
        if (read_full_file(p, 1 << 20, &text, NULL) < 0)
                return -1;
        for (char *c = text; *c; c++)
                n += *c == '\n';
        return n;
}

static void test_this_host(void) {
        const char *h = writable_hierarchy();
        char dir[512], sub[600], marker[128];
        _cleanup_free_ char *found = NULL;
        pid_t pid, outsider;
        int status;

        ASSERT(h);
        snprintf(marker, sizeof(marker), "/mc-locate-%d\n", (int) getpid());
        snprintf(dir, sizeof(dir), "%s/mc-locate-%d", h, (int) getpid());
        snprintf(sub, sizeof(sub), "%s/inner", dir);
        ASSERT(mkdir(dir, 0755) == 0);
        ASSERT(mkdir(sub, 0755) == 0);

        pid = spawn_in(dir, true);
        outsider = spawn_in(sub, false);
        for (uint64_t end = now_usec() + 60 * USEC_PER_SEC; count_procs(dir) < 2 || count_procs(sub) < 1;) {
                ASSERT(now_usec() < end);
                usleep(10000);
        }

        /* Found from the process; not from one outside it (its own cgroup does not carry the mark). */
        ASSERT(cgroup_dir_of_pid(pid, marker, &found) == 0);
        ASSERT(streq(found, dir));
        {
                _cleanup_free_ char *none = NULL;
                ASSERT(cgroup_dir_of_pid(getpid(), marker, &none) == -ENXIO && !none);
                ASSERT(cgroup_dir_of_pid(outsider, marker, &none) == -ENXIO && !none);
        }

        /* Emptied by the directory: the process, its child and what a sub-cgroup holds; three processes,
         * however many passes saw them still dying. */
        ASSERT(cgroup_dir_kill_all(dir) == 3);
        ASSERT(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        ASSERT(waitpid(outsider, &status, 0) == outsider && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        for (uint64_t end = now_usec() + 60 * USEC_PER_SEC; count_procs(dir) != 0 || count_procs(sub) != 0;) {
                ASSERT(now_usec() < end);
                usleep(10000);
        }
        ASSERT(cgroup_dir_kill_all(dir) == 0);
        ASSERT(cgroup_dir_of_pid(pid, marker, &found) == -ESRCH);

        /* A removed cgroup: nothing can be in it any more. */
        ASSERT(rmdir(sub) == 0 && rmdir(dir) == 0);
        ASSERT(cgroup_dir_kill_all(dir) == -ENOENT);
}

int main(void) {
        RUN_TEST(test_layouts);
        RUN_TEST(test_dir_carries_marker);
        RUN_TEST(test_this_host);
        return 0;
}
