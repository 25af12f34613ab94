/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Bearer tokens. User tokens may push and read; agent tokens are bound to one node id and may only act
 * as that node. Tokens come from a file of "KIND NAME TOKEN" lines (mode 0600, or 0640 with the
 * daemon's own group, like /etc/shadow), plus the seed's single CONTROL_TOKEN as a user token.
 * Only a keyed tag of each token is kept (SipHash under random keys of this process), sorted, and a
 * request's token is found by a binary search of its tag: the cost of a request does not grow with
 * the number of agents, and timing reveals nothing of a token (at most where the tag of what was sent
 * falls among the stored tags, under keys nobody else knows). Tokens are never logged. */

#include "macro.h"

typedef enum AuthKind {
        AUTH_NONE,
        AUTH_USER,
        AUTH_AGENT,
        AUTH_DISABLED,  /* MC_DISABLE_AUTH: everything allowed, as any node */
} AuthKind;

typedef struct AuthIdentity {
        AuthKind kind;
        const char *name;       /* user name or node id; owned by the Auth */
} AuthIdentity;

typedef struct Auth Auth;

int auth_new(const char *tokens_file, const char *control_token, bool disabled, Auth **ret);
Auth *auth_free(Auth *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Auth *, auth_free);

size_t auth_n_tokens(const Auth *a);

/* From an Authorization header value. Returns AUTH_NONE when missing or unknown. */
AuthIdentity auth_check_header(const Auth *a, const char *authorization);

/* Adds the entries of a tokens file read from f (path names it in messages); exposed for the fuzzer.
 * Returns 0, or a negative errno already logged. */
int auth_load_stream(Auth *a, FILE *f, const char *path);

/* Parses one line; exposed for tests. Returns 1 for an entry, 0 for blank/comment, -EINVAL. */
int auth_parse_line(const char *line, AuthKind *ret_kind, char **ret_name, char **ret_token);
