/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "config.h"
#include "exec-user.h"
#include "log.h"

static const char *const exec_priv_step_table[_EXEC_PRIV_STEP_MAX] = {
        [EXEC_PRIV_GROUPS] = "drop the supplementary groups",
        [EXEC_PRIV_GID] = "set the task's gid",
        [EXEC_PRIV_BOUNDING] = "empty the capability bounding set",
        [EXEC_PRIV_AMBIENT] = "clear the ambient capabilities",
        [EXEC_PRIV_UID] = "set the task's uid",
        [EXEC_PRIV_CAPS] = "clear the capabilities",
        [EXEC_PRIV_NO_NEW_PRIVS] = "set no_new_privs",
};

const char *exec_priv_step_to_string(ExecPrivStep s) {
        return s >= 0 && s < _EXEC_PRIV_STEP_MAX ? exec_priv_step_table[s] : NULL;
}

static int parse_id(const char *s, uint32_t *ret) {
        int64_t v;

        /* (uid_t) -1 is "no change" to the set*id() calls: never an id. */
        if (parse_int64(s, &v) < 0 || v < 0 || v >= UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t) v;
        return 0;
}

static int resolve_explicit(const char *spec, uid_t *ret_uid, gid_t *ret_gid) {
        _cleanup_free_ char *user = strdup(spec);
        char *group;
        uint32_t id;

        if (!user)
                return -ENOMEM;
        group = strchr(user, ':');
        if (group)
                *group++ = 0;
        if (isempty(user) || (group && isempty(group)))
                return -EINVAL;

        if (parse_id(user, &id) >= 0) {
                struct passwd *pw = getpwuid(id);
                *ret_uid = id;
                *ret_gid = pw ? pw->pw_gid : id;        /* a uid of no user: its own number as gid */
        } else {
                struct passwd *pw = getpwnam(user);
                if (!pw)
                        return -ESRCH;
                *ret_uid = pw->pw_uid;
                *ret_gid = pw->pw_gid;
        }
        if (group) {
                if (parse_id(group, &id) >= 0)
                        *ret_gid = id;
                else {
                        struct group *gr = getgrnam(group);
                        if (!gr)
                                return -ESRCH;
                        *ret_gid = gr->gr_gid;
                }
        }
        return 0;
}

int exec_user_resolve(const char *spec, ExecUser *ret) {
        uid_t uid;
        gid_t gid;
        int r;

        assert(ret);

        if (isempty(spec)) {
                if (geteuid() != 0) {
                        log_info("exec driver: tasks run as our own uid %u (we are not root, so EXEC_USER=%s is not taken).",
                                 (unsigned) geteuid(), EXEC_USER_DEFAULT);
                        *ret = (ExecUser) { .change = false, .uid = geteuid(), .gid = getegid() };
                        return 0;
                }
                r = resolve_explicit(EXEC_USER_DEFAULT, &uid, &gid);
                if (r == -ESRCH) {
                        struct passwd *pw = getpwuid(EXEC_USER_FALLBACK_UID);
                        uid = EXEC_USER_FALLBACK_UID;
                        gid = pw ? pw->pw_gid : (gid_t) EXEC_USER_FALLBACK_UID;
                        log_warning("exec driver: there is no user %s (sysusers.d/mc.conf creates it): tasks run as "
                                    "nobody (uid %u, gid %u) instead; set EXEC_USER to choose.",
                                    EXEC_USER_DEFAULT, (unsigned) uid, (unsigned) gid);
                } else if (r < 0)
                        return r;
        } else {
                r = resolve_explicit(spec, &uid, &gid);
                if (r < 0)
                        return r;
                if (geteuid() != 0) {
                        if (uid != geteuid() || gid != getegid())
                                return -EPERM;
                        *ret = (ExecUser) { .change = false, .uid = uid, .gid = gid };
                        return 0;
                }
                if (uid == 0)
                        log_warning("exec driver: EXEC_USER=%s: tasks run as root (without capabilities, but "
                                    "owning every root file).", spec);
        }
        *ret = (ExecUser) { .change = true, .uid = uid, .gid = gid };
        return 0;
}

int exec_user_path_check(const ExecUser *u, const char *path, char **ret_blocking) {
        _cleanup_free_ char *p = strdup(path);
        size_t n;

        assert(u);
        assert(path && path[0] == '/');
        assert(ret_blocking);

        if (!p)
                return -ENOMEM;
        *ret_blocking = NULL;
        if (u->uid == 0)
                return 0;
        /* From "/" down: each directory must let the task through. */
        n = strlen(p);
        for (size_t i = 1; i <= n; i++) {
                struct stat st;
                mode_t bit;
                char c = p[i];

                if (c != '/' && c != 0)
                        continue;
                p[i] = 0;
                if (stat(p, &st) < 0)
                        return -errno;
                bit = st.st_uid == u->uid ? S_IXUSR : st.st_gid == u->gid ? S_IXGRP : S_IXOTH;
                if (!(st.st_mode & bit)) {
                        *ret_blocking = strdup(p);
                        return *ret_blocking ? 0 : -ENOMEM;
                }
                p[i] = c;
        }
        return 0;
}

int exec_user_format(const ExecUser *u, char **ret) {
        assert(u);
        assert(ret);

        if (!u->change)
                *ret = strdup("-");
        else if (asprintf(ret, "%u:%u", (unsigned) u->uid, (unsigned) u->gid) < 0)
                *ret = NULL;
        return *ret ? 0 : -ENOMEM;
}

int exec_user_parse_numeric(const char *s, ExecUser *ret) {
        _cleanup_free_ char *copy = NULL;
        uint32_t uid, gid;
        char *colon;

        assert(s);
        assert(ret);

        if (streq(s, "-")) {
                *ret = (ExecUser) { .change = false, .uid = getuid(), .gid = getgid() };
                return 0;
        }
        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        colon = strchr(copy, ':');
        if (!colon)
                return -EINVAL;
        *colon = 0;
        if (parse_id(copy, &uid) < 0 || parse_id(colon + 1, &gid) < 0)
                return -EINVAL;
        *ret = (ExecUser) { .change = true, .uid = uid, .gid = gid };
        return 0;
}

int exec_user_drop_privileges(const ExecUser *u, ExecPrivStep *ret_step) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};
        ExecPrivStep step;

        assert(u);
        assert(ret_step);

        if (u->change) {
                step = EXEC_PRIV_GROUPS;
                if (setgroups(0, NULL) < 0)
                        goto fail;
                step = EXEC_PRIV_GID;
                if (setresgid(u->gid, u->gid, u->gid) < 0)
                        goto fail;
        }
        /* Needs CAP_SETPCAP, so before the uid changes. Without it (an agent that is not root, or a unit
         * that does not give it) what is left in the set can never be gained back: no_new_privs stops
         * every execve() from adding capabilities. */
        step = EXEC_PRIV_BOUNDING;
        for (unsigned long c = 0;; c++) {
                int k = prctl(PR_CAPBSET_READ, c, 0, 0, 0);
                if (k < 0)
                        break;          /* EINVAL: past the last capability the kernel knows */
                if (k > 0 && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EPERM)
                        goto fail;
        }
        step = EXEC_PRIV_AMBIENT;
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                goto fail;
        if (u->change) {
                /* From uid 0 to another, the kernel clears the permitted and effective sets itself. */
                step = EXEC_PRIV_UID;
                if (setresuid(u->uid, u->uid, u->uid) < 0)
                        goto fail;
                if (getuid() != u->uid || geteuid() != u->uid || getgid() != u->gid) {
                        errno = EPERM;
                        goto fail;
                }
        }
        /* The inheritable set too, and everything for a task that stays root. */
        step = EXEC_PRIV_CAPS;
        if (syscall(SYS_capset, &h, d) < 0)
                goto fail;
        step = EXEC_PRIV_NO_NEW_PRIVS;
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                goto fail;
        return 0;

fail:
        *ret_step = step;
        return -errno;
}
