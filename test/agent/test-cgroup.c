/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The cgroup file formats of both layouts. This host has one layout (test-driver-exec exercises it for
 * real); the other is checked here on a directory laid out like it, with the files a kernel would
 * have created, so that a v2-only host (or a v1 one) gets exactly the values it expects. */

#include <fcntl.h>
#include <sys/stat.h>

#include "agent-test.h"
#include "cgroup.h"
#include "file-util.h"

static char root[256];

static void touch(const char *dir, const char *name) {
        char p[512];
        int fd;
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        ASSERT(fd >= 0);
        close(fd);
}

static void mkdirs(const char *p) {
        char b[512];
        snprintf(b, sizeof(b), "mkdir -p '%s'", p);
        ASSERT(system(b) == 0);
}

static char *content(const char *dir, const char *name) {
        char p[512];
        char *s = NULL;
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        ASSERT(read_one_line_file(p, &s) >= 0);
        return s;
}

static void test_v2(void) {
        char dir[600], parent[512];
        Cgroup *cg = NULL;
        CgroupMode mode;
        int64_t q, per, mem;
        _cleanup_free_ char *cpu = NULL, *memory = NULL, *swap = NULL, *sc_root = NULL, *sc_parent = NULL;

        snprintf(root, sizeof(root), "/tmp/mc-test-cgroup-v2-%d", (int) getpid());
        snprintf(parent, sizeof(parent), "%s/mc.agent/node-a", root);
        snprintf(dir, sizeof(dir), "%s/task-7", parent);
        mkdirs(dir);
        touch(root, "cgroup.controllers");
        touch(root, "cgroup.subtree_control");
        touch(root, "mc.agent/cgroup.subtree_control");
        touch(parent, "cgroup.subtree_control");
        touch(dir, "cpu.max");
        touch(dir, "memory.max");
        touch(dir, "memory.swap.max");
        touch(dir, "cgroup.procs");

        ASSERT(cgroup_detect(root, &mode) >= 0 && mode == CGROUP_V2);
        ASSERT(cgroup_create(root, mode, "mc.agent/node-a/task-7", 1500000000, 100 * 1024 * 1024, &cg) >= 0);
        cpu = content(dir, "cpu.max");
        memory = content(dir, "memory.max");
        swap = content(dir, "memory.swap.max");
        ASSERT(streq(cpu, "150000 100000"));
        ASSERT(streq(memory, "104857600"));
        ASSERT(streq(swap, "0"));
        /* Controllers enabled down to the job's parent ("+cpu" written over "+memory": a plain file has
         * no truncation on write, a cgroup file takes each write as a command). */
        sc_root = content(root, "cgroup.subtree_control");
        sc_parent = content(parent, "cgroup.subtree_control");
        ASSERT(strncmp(sc_root, "+cpu", 4) == 0 && strncmp(sc_parent, "+cpu", 4) == 0);
        ASSERT(cgroup_get_limits(cg, &q, &per, &mem) >= 0);
        ASSERT(q == 150000 && per == 100000 && mem == 104857600);
        cg = cgroup_free(cg);

        /* A tiny CPU share is raised to the kernel's minimum quota (1 ms). */
        touch(dir, "cpu.max");
        ASSERT(cgroup_create(root, mode, "mc.agent/node-a/task-7", 1000000, 0, &cg) >= 0);
        free(cpu);
        cpu = content(dir, "cpu.max");
        ASSERT(streq(cpu, "1000 100000"));
        cg = cgroup_free(cg);

        {
                char b[600];
                snprintf(b, sizeof(b), "rm -rf '%s'", root);
                ASSERT(system(b) == 0);
        }
}

static void test_v1(void) {
        char mem_dir[512], cpu_dir[512];
        Cgroup *cg = NULL;
        CgroupMode mode;
        int64_t q, per, mem;
        _cleanup_free_ char *quota = NULL, *period = NULL, *limit = NULL, *memsw = NULL;

        snprintf(root, sizeof(root), "/tmp/mc-test-cgroup-v1-%d", (int) getpid());
        snprintf(mem_dir, sizeof(mem_dir), "%s/memory/mc.agent/node-a/task-7", root);
        snprintf(cpu_dir, sizeof(cpu_dir), "%s/cpu/mc.agent/node-a/task-7", root);
        mkdirs(mem_dir);
        mkdirs(cpu_dir);
        touch(mem_dir, "memory.limit_in_bytes");
        touch(mem_dir, "memory.memsw.limit_in_bytes");
        touch(cpu_dir, "cpu.cfs_quota_us");
        touch(cpu_dir, "cpu.cfs_period_us");

        ASSERT(cgroup_detect(root, &mode) >= 0 && mode == CGROUP_V1);
        ASSERT(cgroup_create(root, mode, "mc.agent/node-a/task-7", 500000000, 256 * 1024 * 1024, &cg) >= 0);
        quota = content(cpu_dir, "cpu.cfs_quota_us");
        period = content(cpu_dir, "cpu.cfs_period_us");
        limit = content(mem_dir, "memory.limit_in_bytes");
        memsw = content(mem_dir, "memory.memsw.limit_in_bytes");
        ASSERT(streq(quota, "50000") && streq(period, "100000"));
        ASSERT(streq(limit, "268435456") && streq(memsw, "268435456"));
        ASSERT(cgroup_get_limits(cg, &q, &per, &mem) >= 0);
        ASSERT(q == 50000 && per == 100000 && mem == 268435456);
        cg = cgroup_free(cg);
        {
                char b[600];
                snprintf(b, sizeof(b), "rm -rf '%s'", root);
                ASSERT(system(b) == 0);
        }

        /* Neither layout. */
        ASSERT(cgroup_detect("/nonexistent", &mode) == -ENOMEDIUM);
}

int main(void) {
        RUN_TEST(test_v2);
        RUN_TEST(test_v1);
        return 0;
}
