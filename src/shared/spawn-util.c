/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include "spawn-util.h"

extern char **environ;

int spawn_helper(const char *path, char *const *argv, int stdin_fd, int stdout_fd, pid_t *ret_pid) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t all, none;
        int r;

        assert(path);
        assert(argv);
        assert(ret_pid);

        sigfillset(&all);
        sigemptyset(&none);
        r = posix_spawnattr_init(&attr);
        if (r != 0)
                return -r;
        r = posix_spawn_file_actions_init(&fa);
        if (r != 0) {
                posix_spawnattr_destroy(&attr);
                return -r;
        }
        r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        if (r == 0)
                r = posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0 && stdin_fd >= 0)
                r = posix_spawn_file_actions_adddup2(&fa, stdin_fd, STDIN_FILENO);
        if (r == 0 && stdout_fd >= 0)
                r = posix_spawn_file_actions_adddup2(&fa, stdout_fd, STDOUT_FILENO);
        if (r == 0)
                r = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        if (r == 0)
                r = posix_spawn(ret_pid, path, &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        return -r;
}
