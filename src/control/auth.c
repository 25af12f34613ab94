/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "json-check.h"
#include "log.h"
#include "random-util.h"
#include "siphash.h"

#define TOKEN_MIN_RECOMMENDED 16
#define TOKEN_MAX 512

/* A token is kept only as its tag: two SipHash-2-4 values under two random keys of this Auth, 128 bits
 * that a client can neither predict nor learn anything from by timing the search among them. The
 * daemon's memory holds no token a client could send. SipHash rather than SHA-256: OpenSSL's first
 * digest costs 2 MiB of resident memory to set itself up, a fifth of the control's at rest. */
typedef struct TokenTag {
        uint64_t h[2];
} TokenTag;

typedef struct AuthEntry {
        TokenTag tag;
        size_t order;           /* its place in the file: of two entries with one token, the first counts */
        AuthKind kind;
        char *name;
} AuthEntry;

struct Auth {
        bool disabled;
        uint8_t keys[2][16];
        AuthEntry *entries;     /* by tag, then order, once auth_index() ran */
        size_t n_entries;
};

static TokenTag token_tag(const Auth *a, const char *token, size_t len) {
        return (TokenTag) { .h = { siphash24(token, len, a->keys[0]), siphash24(token, len, a->keys[1]) } };
}

static int tag_compare(const TokenTag *x, const TokenTag *y) {
        for (size_t i = 0; i < ELEMENTSOF(x->h); i++)
                if (x->h[i] != y->h[i])
                        return x->h[i] < y->h[i] ? -1 : 1;
        return 0;
}

Auth *auth_free(Auth *a) {
        if (!a)
                return NULL;
        for (size_t i = 0; i < a->n_entries; i++)
                free(a->entries[i].name);
        free(a->entries);
        explicit_bzero(a->keys, sizeof(a->keys));
        free(a);
        return NULL;
}

static int auth_add(Auth *a, AuthKind kind, const char *name, const char *token) {
        AuthEntry *n;

        n = realloc(a->entries, sizeof(AuthEntry) * (a->n_entries + 1));
        if (!n)
                return -ENOMEM;
        a->entries = n;
        n[a->n_entries] = (AuthEntry) { .tag = token_tag(a, token, strlen(token)), .order = a->n_entries,
                                        .kind = kind, .name = strdup(name) };
        if (!n[a->n_entries].name)
                return -ENOMEM;
        a->n_entries++;
        return 0;
}

static int entry_compare(const void *x, const void *y) {
        const AuthEntry *a = x, *b = y;
        int d = tag_compare(&a->tag, &b->tag);

        if (d != 0)
                return d;
        return a->order < b->order ? -1 : a->order > b->order;
}

/* Sorts the entries by tag, so that a token is found by a binary search rather than by comparing
 * it with every entry: with 1 000 agents, every request spent 70 µs on the walk. Two entries with one
 * token are the operator's mistake (either may act as the other); the first in the file counts, as it
 * did when the entries were walked in order, and the mistake is logged, by name. */
static void auth_index(Auth *a) {
        if (a->n_entries == 0)
                return;
        qsort(a->entries, a->n_entries, sizeof(AuthEntry), entry_compare);
        for (size_t i = 1, first = 0; i < a->n_entries; i++) {
                if (tag_compare(&a->entries[first].tag, &a->entries[i].tag) != 0) {
                        first = i;
                        continue;
                }
                log_warning("Tokens: %s and %s have the same token; requests with it are taken as %s.",
                            a->entries[first].name, a->entries[i].name, a->entries[first].name);
        }
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

/* getline()'s buffer, which holds tokens: erased on every way out. */
typedef struct LineBuffer {
        char *p;
        size_t cap;
} LineBuffer;

static void line_buffer_erase(LineBuffer *b) {
        if (b->p)
                explicit_bzero(b->p, b->cap);
        free(b->p);
}

static int load_lines(Auth *a, FILE *f, const char *path) {
        _cleanup_(line_buffer_erase) LineBuffer line = {};
        unsigned lineno = 0;

        for (;;) {
                AuthKind kind;
                char *name = NULL, *token = NULL;
                ssize_t len;
                int r;

                len = getline(&line.p, &line.cap, f);
                if (len < 0)
                        break;
                lineno++;
                /* What follows a NUL would be cut off unseen: a token that is not what the file says. */
                if (memchr(line.p, 0, (size_t) len))
                        return log_error_errno(EINVAL, "%s:%u: the line contains a NUL byte.", path, lineno);
                r = auth_parse_line(line.p, &kind, &name, &token);
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
                        return log_error_errno(r, "%s:%u: cannot add the entry: %m", path, lineno);
        }
        return 0;
}

int auth_load_stream(Auth *a, FILE *f, const char *path) {
        int r;

        assert(a);
        assert(f);

        r = load_lines(a, f, path);
        /* Also after an error: what was added stays findable. */
        auth_index(a);
        return r;
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
        return load_lines(a, f, path);
}

int auth_new(const char *tokens_file, const char *control_token, bool disabled, Auth **ret) {
        _cleanup_(auth_freep) Auth *a = NULL;
        int r;

        a = calloc(1, sizeof(Auth));
        if (!a)
                return log_oom();
        a->disabled = disabled;
        random_bytes(a->keys, sizeof(a->keys));

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
                        return log_error_errno(r, "Cannot add CONTROL_TOKEN: %m");
        }
        auth_index(a);
        *ret = TAKE_PTR(a);
        return 0;
}

size_t auth_n_tokens(const Auth *a) {
        return a->n_entries;
}

/* The first entry whose tag is not below tag. */
static size_t lower_bound(const Auth *a, const TokenTag *tag) {
        size_t lo = 0, hi = a->n_entries;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (tag_compare(&a->entries[mid].tag, tag) < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

AuthIdentity auth_check_header(const Auth *a, const char *authorization) {
        AuthIdentity id = { .kind = AUTH_NONE };
        TokenTag tag;
        const char *token;
        size_t len, i;

        assert(a);

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

        /* The search compares tags, not tokens: its timing tells at most where the tag of what was
         * sent falls among the stored ones, under keys the client does not know, which says nothing
         * about any token. */
        tag = token_tag(a, token, len);
        i = lower_bound(a, &tag);
        if (i < a->n_entries && memeq_consttime(&a->entries[i].tag, sizeof(TokenTag), &tag, sizeof(TokenTag)))
                id = (AuthIdentity) { .kind = a->entries[i].kind, .name = a->entries[i].name };
        explicit_bzero(&tag, sizeof(tag));
        return id;
}
