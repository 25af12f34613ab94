/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* mc-fence-init: the first process of every task, so that a task whose lease nobody renews dies even
 * when no mc process is left on the node (all killed at once, the agent stopped, the engine wedged).
 *
 *   mc-fence-init LEASE_FILE [--cgroup DIR] -- COMMAND [ARG...]
 *
 * It reads LEASE_FILE (fence-protocol.h), waits until it says the task is "running", starts COMMAND
 * as its child, and from then on polls the file every POLL_USEC on its own clock. Each new write
 * promises the task some more time; when the time last promised has run out, it kills the task's
 * processes and exits with FENCE_EXIT_FENCED. Otherwise it exits as the command did (128 + the signal
 * when a signal ended it).
 *
 * In a container it is PID 1 of the container's pid namespace (the Docker driver bind-mounts it at
 * FENCE_INIT_CONTAINER_PATH and makes it the entrypoint): it reaps whatever is re-parented to it,
 * forwards the signals a stop sends, and fences with kill(-1, SIGKILL), which as PID 1 reaches every
 * other process of the namespace. For an exec job it is the command's parent, a child subreaper in
 * the job's own cgroup; it fences by killing every process in --cgroup DIR but itself, and the
 * command's process group.
 *
 * Built static, without anything of the project's: it has to run in any image (busybox, alpine,
 * distroless, scratch). */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fence-protocol.h"

#define POLL_USEC (100 * 1000ULL)
/* While waiting for the start to be confirmed: the command waits on this. */
#define GATE_POLL_USEC (5 * 1000ULL)

/* The signals passed on to the command (what `docker stop`, `docker kill -s` and a terminal send). */
static const int forwarded[] = {
        SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM, SIGPWR, SIGURG,
};

static const char *lease_path;
static const char *cgroup_dir;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
        va_list ap;

        fputs("mc-fence-init: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static uint64_t now_usec(void) {
        struct timespec ts;

        /* BOOTTIME: a suspended machine's leases have run out at the control meanwhile. */
        if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
                (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* 0 and the lease, or < 0 (unreadable, or not a whole lease file). */
static int read_lease(FenceLease *ret) {
        char buf[512];
        ssize_t n, total = 0;
        int fd, r;

        fd = open(lease_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        for (;;) {
                n = read(fd, buf + total, sizeof(buf) - 1 - (size_t) total);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                total += n;
                if ((size_t) total >= sizeof(buf) - 1)
                        break;
        }
        r = n < 0 ? -errno : 0;
        close(fd);
        if (r < 0)
                return r;
        return fence_lease_parse(buf, (size_t) total, ret);
}

static FenceVerdict check(FenceWatch *w, uint64_t slack) {
        FenceLease l;
        bool ok = read_lease(&l) >= 0;

        return fence_watch_step(w, ok ? &l : NULL, now_usec(), slack);
}

/* Every process of the exec job's cgroup but us, until none is left (a forking one gets the next
 * round). */
static void kill_cgroup(void) {
        char path[4096], buf[8192];

        if (!cgroup_dir)
                return;
        /* Not cgroup.kill (v2): it would take us too, and then nobody says why the task ended. */
        if ((size_t) snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup_dir) >= sizeof(path))
                return;
        for (int round = 0; round < 100; round++) {
                unsigned killed = 0;
                ssize_t n;
                int fd;

                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return;
                n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (n <= 0)
                        return;
                buf[n] = 0;
                for (char *p = buf, *e; *p; p = e) {
                        long pid = strtol(p, &e, 10);
                        if (e == p)
                                break;
                        if (pid > 0 && pid != (long) getpid() && kill((pid_t) pid, SIGKILL) >= 0)
                                killed++;
                }
                if (killed == 0)
                        return;
                usleep(1000);
        }
}

/* Reaps what can be reaped; 1 when child was among them (its status in *status). */
static int reap(pid_t child, int *status) {
        int found = 0;

        for (;;) {
                int st;
                pid_t p = waitpid(-1, &st, WNOHANG);

                if (p <= 0)
                        return found;
                if (p == child) {
                        *status = st;
                        found = 1;
                }
        }
}

static int exit_code_of(int status) {
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return 255;
}

static _Noreturn void fence(pid_t child, const char *why) {
        /* The kill first: saying so may fail (the exec supervisor that read our stderr killed too). */
        if (getpid() == 1)
                (void) kill(-1, SIGKILL);
        else {
                if (child > 0) {
                        (void) kill(-child, SIGKILL);
                        (void) kill(child, SIGKILL);
                }
                kill_cgroup();
        }
        say("%s; killed the task's processes.", why);
        /* Collect them, so that none is left a zombie holding the namespace (bounded: a process in
         * uninterruptible sleep dies when it wakes, and the engine sees to the rest). */
        for (int i = 0; i < 200; i++) {
                int st;
                pid_t p = waitpid(-1, &st, WNOHANG);
                if (p < 0 && errno == ECHILD)
                        break;
                if (p == 0)
                        usleep(5000);
        }
        _exit(FENCE_EXIT_FENCED);
}

static _Noreturn void start_command(char **cmd, const sigset_t *orig, pid_t parent) {
        struct sigaction sa = { .sa_handler = SIG_DFL };
        int e;

        for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
                (void) sigaction(forwarded[i], &sa, NULL);
        (void) sigaction(SIGCHLD, &sa, NULL);
        (void) sigaction(SIGPIPE, &sa, NULL);
        (void) sigprocmask(SIG_SETMASK, orig, NULL);
        if (parent != 1) {
                /* A process group of its own, so that a fence outside a container reaches what it
                 * forked without us; and should we be killed, the command goes with us (the cgroup's
                 * other processes the supervisor kills, if it is alive). */
                (void) setpgid(0, 0);
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                if (getppid() != parent)
                        _exit(FENCE_EXIT_FENCED);
        }
        execvp(cmd[0], cmd);
        e = errno;
        fprintf(stderr, FENCE_INIT_EXEC_ERROR_PREFIX "%s: %s\n", cmd[0], strerror(e));
        _exit(e == ENOENT ? FENCE_EXIT_NOT_FOUND : FENCE_EXIT_CANNOT_EXECUTE);
}

static void usage(void) {
        fputs("Usage: mc-fence-init LEASE_FILE [--cgroup DIR] -- COMMAND [ARG...]\n"
              "(the first process of an mc task, set up by mc-agent)\n", stderr);
}

int main(int argc, char *argv[]) {
        FenceWatch w = {};
        FenceVerdict v;
        sigset_t set, orig;
        pid_t child, self;
        char **cmd = NULL;
        int status = 0, i;

        if (argc < 4) {
                usage();
                return FENCE_EXIT_USAGE;
        }
        lease_path = argv[1];
        for (i = 2; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0) {
                        cmd = argv + i + 1;
                        break;
                }
                if (strcmp(argv[i], "--cgroup") == 0 && i + 1 < argc)
                        cgroup_dir = argv[++i];
                else {
                        usage();
                        return FENCE_EXIT_USAGE;
                }
        }
        if (!cmd || !cmd[0]) {
                usage();
                return FENCE_EXIT_USAGE;
        }

        sigemptyset(&set);
        for (size_t k = 0; k < sizeof(forwarded) / sizeof(forwarded[0]); k++)
                sigaddset(&set, forwarded[k]);
        sigaddset(&set, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &set, &orig);
        /* Our stderr may be a pipe nobody reads any more (the exec supervisor killed): a message must
         * never cost us our life, and the fence with it. */
        (void) signal(SIGPIPE, SIG_IGN);
        if (getpid() != 1) {
                /* Orphans of the command come to us, not to the supervisor: we reap them. */
                (void) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
                /* The exec supervisor has us die with it: then the command's children would be
                 * orphans nobody fences, should every mc process be killed at once. We outlive it;
                 * whoever kills a job on purpose kills its cgroup, and so us. */
                (void) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
        }

        {
                FenceLease l;
                int r = read_lease(&l);
                if (r < 0) {
                        say("cannot read the lease file %s: %s; not starting the task.", lease_path,
                            r == -EBADMSG ? "not a lease file" : strerror(-r));
                        return FENCE_EXIT_NO_LEASE;
                }
                v = fence_watch_step(&w, &l, now_usec(), GATE_POLL_USEC);
        }

        /* The start confirmed, or the time given runs out first: then the command never starts. */
        while (v == FENCE_WAIT) {
                struct timespec ts = { 0, (long) GATE_POLL_USEC * 1000L };
                int sig = sigtimedwait(&set, NULL, &ts);

                if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT)
                        return 128 + sig;
                v = check(&w, POLL_USEC);
        }
        if (v == FENCE_KILL) {
                say("the start of the task was not confirmed while its lease lasted; not starting it.");
                return FENCE_EXIT_FENCED;
        }

        self = getpid();
        child = fork();
        if (child < 0) {
                say("cannot fork: %s", strerror(errno));
                return FENCE_EXIT_CANNOT_EXECUTE;
        }
        if (child == 0)
                start_command(cmd, &orig, self);

        for (;;) {
                uint64_t now = now_usec(), wait = POLL_USEC;
                struct timespec ts;
                int sig;

                if (!w.off && w.deadline_usec > now && w.deadline_usec - now < wait)
                        wait = w.deadline_usec - now;
                ts.tv_sec = (time_t) (wait / 1000000ULL);
                ts.tv_nsec = (long) (wait % 1000000ULL) * 1000L;
                sig = sigtimedwait(&set, NULL, &ts);
                if (sig == SIGCHLD) {
                        if (reap(child, &status))
                                break;
                } else if (sig > 0)
                        (void) kill(child, sig);

                if (check(&w, POLL_USEC) == FENCE_KILL)
                        fence(child, "the lease was not renewed in time");
        }
        /* The command is done. In a container, what it left behind dies with us (the namespace
         * goes); for an exec job the supervisor empties the cgroup. */
        return exit_code_of(status);
}
