/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "json-check.h"
#include "log.h"

#define TOKEN_MIN_RECOMMENDED 16
#define TOKEN_MAX 512

typedef struct AuthEntry {
        AuthKind kind;
        char *name;
        char *token;
} AuthEntry;

struct Auth {
        bool disabled;
        AuthEntry *entries;
        size_t n_entries;
};

Auth *auth_free(Auth *a) {
        if (!a)
                return NULL;
        for (size_t i = 0; i < a->n_entries; i++) {
                free(a->entries[i].name);
                /* Do not leave secrets lying in freed memory. */
                explicit_bzero(a->entries[i].token, strlen(a->entries[i].token));
                free(a->entries[i].token);
        }
        free(a->entries);
        free(a);
        return NULL;
}

static int auth_add(Auth *a, AuthKind kind, const char *name, const char *token) {
        AuthEntry *n;

        n = realloc(a->entries, sizeof(AuthEntry) * (a->n_entries + 1));
        if (!n)
                return -ENOMEM;
        a->entries = n;
        n[a->n_entries] = (AuthEntry) { .kind = kind, .name = strdup(name), .token = strdup(token) };
        if (!n[a->n_entries].name || !n[a->n_entries].token) {
                free(n[a->n_entries].name);
                free(n[a->n_entries].token);
                return -ENOMEM;
        }
        a->n_entries++;
        return 0;
}

int auth_parse_line(const char *line, AuthKind *ret_kind, char **ret_name, char **ret_token) {
        char kind[16], name[160], token[TOKEN_MAX + 2], extra[2];
        const char *p = line;
        int n;

        while (isspace((unsigned char) *p))
                p++;
        if (*p == 0 || *p == '#')
                return 0;
        n = sscanf(p, "%15s %159s %513s %1s", kind, name, token, extra);
        if (n != 3)
                return -EINVAL;
        if (strlen(token) > TOKEN_MAX)
                return -EINVAL;
        if (streq(kind, "user"))
                *ret_kind = AUTH_USER;
        else if (streq(kind, "agent"))
                *ret_kind = AUTH_AGENT;
        else
                return -EINVAL;
        if (!id_is_valid(name))
                return -EINVAL;
        *ret_name = strdup(name);
        *ret_token = strdup(token);
        explicit_bzero(token, sizeof(token));
        if (!*ret_name || !*ret_token) {
                free(*ret_name);
                free(*ret_token);
                return -ENOMEM;
        }
        return 1;
}

int auth_load_stream(Auth *a, FILE *f, const char *path) {
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        unsigned lineno = 0;

        for (;;) {
                AuthKind kind;
                char *name = NULL, *token = NULL;
                ssize_t len;
                int r;

                len = getline(&line, &cap, f);
                if (len < 0)
                        break;
                lineno++;
                /* What follows a NUL would be cut off unseen: a token that is not what the file says. */
                if (memchr(line, 0, (size_t) len)) {
                        explicit_bzero(line, cap);
                        return log_error_errno(EINVAL, "%s:%u: the line contains a NUL byte.", path, lineno);
                }
                r = auth_parse_line(line, &kind, &name, &token);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_error_errno(r, "%s:%u: expected \"user|agent NAME TOKEN\" (NAME [A-Za-z0-9._-], "
                                               "TOKEN at most %d characters).", path, lineno, TOKEN_MAX);
                if (r == 0)
                        continue;
                if (strlen(token) < TOKEN_MIN_RECOMMENDED)
                        log_warning("%s:%u: the token of %s is shorter than %d characters; use a longer random one.",
                                    path, lineno, name, TOKEN_MIN_RECOMMENDED);
                r = auth_add(a, kind, name, token);
                explicit_bzero(token, strlen(token));
                free(token);
                free(name);
                if (r < 0)
                        return log_oom();
        }
        if (line)
                explicit_bzero(line, cap);
        return 0;
}

static int auth_load_file(Auth *a, const char *path) {
        _cleanup_fclose_ FILE *f = NULL;
        struct stat st;

        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Cannot open tokens file %s: %m", path);
        }
        if (fstat(fileno(f), &st) < 0)
                return log_error_errno(errno, "Cannot stat %s: %m", path);
        /* Readable by its owner, and by its group only when that is the daemon's own (the packaged
         * 0640 root:mc-control: the service reads the file itself, so a reload sees new tokens, and
         * cannot change it). Writable by none but the owner, nothing for others. */
        if ((st.st_mode & 0037) || ((st.st_mode & 0040) && st.st_gid != getegid()))
                return log_error_errno(EPERM, "Tokens file %s (mode %03o, group %u) may be read or written by "
                                       "others than its owner and this process's group, or written by a group; "
                                       "run: chmod 600 %s, or chmod 640 and chgrp it to the service's group", path, st.st_mode & 0777,
                                       (unsigned) st.st_gid, path);
        return auth_load_stream(a, f, path);
}

int auth_new(const char *tokens_file, const char *control_token, bool disabled, Auth **ret) {
        _cleanup_(auth_freep) Auth *a = NULL;
        int r;

        a = calloc(1, sizeof(Auth));
        if (!a)
                return log_oom();
        a->disabled = disabled;

        if (!isempty(tokens_file)) {
                r = auth_load_file(a, tokens_file);
                if (r < 0)
                        return r;
        }
        if (!isempty(control_token)) {
                if (strlen(control_token) > TOKEN_MAX)
                        return log_error_errno(EINVAL, "CONTROL_TOKEN is longer than %d characters.", TOKEN_MAX);
                r = auth_add(a, AUTH_USER, "default", control_token);
                if (r < 0)
                        return log_oom();
        }
        *ret = TAKE_PTR(a);
        return 0;
}

size_t auth_n_tokens(const Auth *a) {
        return a->n_entries;
}

AuthIdentity auth_check_header(const Auth *a, const char *authorization) {
        AuthIdentity id = { .kind = AUTH_NONE };
        const char *token;
        size_t len;

        if (a->disabled)
                return (AuthIdentity) { .kind = AUTH_DISABLED, .name = "(auth disabled)" };
        if (!authorization)
                return id;
        if (strncasecmp(authorization, "Bearer ", 7) != 0)
                return id;
        token = authorization + 7;
        while (*token == ' ')
                token++;
        len = strlen(token);
        if (len == 0 || len > TOKEN_MAX)
                return id;

        /* No early exit: every entry is compared, whatever matched. */
        for (size_t i = 0; i < a->n_entries; i++) {
                const AuthEntry *e = a->entries + i;
                bool match = memeq_consttime(e->token, strlen(e->token), token, len);
                if (match && id.kind == AUTH_NONE)
                        id = (AuthIdentity) { .kind = e->kind, .name = e->name };
        }
        return id;
}
