/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Contents (docs/api.md, "Contents"): registering a content's manifest, serving it as a .torrent or
 * as a JSON summary, listing them. The manifest is checked here, before the database sees it
 * (content-manifest.c); the database only stores it, compares it and serves it. */

#include <assert.h>
#include <strings.h>

#include "api.h"
#include "content-manifest.h"
#include "daemon-util.h"
#include "hex.h"
#include "json-util.h"
#include "list-query.h"
#include "log.h"

#define TORRENT_MEDIA_TYPE "application/x-bittorrent"

typedef enum ContentReply {
        REPLY_JSON,             /* the body column as it is, JSON */
        REPLY_TORRENT,          /* the body column is the .torrent in hex */
} ContentReply;

typedef struct ContentCall {
        HttpRequest *req;
        ContentReply reply;
        char id[TORRENT_ID_HEX_SIZE];
} ContentCall;

static void reply_db_failed(HttpRequest *req, int r) {
        if (r == -ENOMEM)
                http_request_reply_error(req, 500, NULL, "Out of memory.");
        else
                http_request_reply_error(req, control_db_error_code(r), NULL,
                                         r == -EIO ? "Database error." : "Database unavailable; retry.");
}

/* The .torrent from its hex (the body of a bytea in text form, "\x" + hex, is what encode() avoids). */
static void reply_torrent(HttpRequest *req, const char *hex) {
        _cleanup_free_ char *bytes = NULL;
        size_t n = strlen(hex) / 2;

        bytes = malloc(MAX(n, (size_t) 1));
        if (!bytes) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        if (strlen(hex) % 2 != 0 || hex_decode(hex, bytes, n) < 0) {
                http_request_reply_error(req, 500, NULL, "The stored manifest is not hex.");
                return;
        }
        http_request_reply(req, 200, TORRENT_MEDIA_TYPE, bytes, n);
}

/* Every query here returns (code, body) rows: one row, or none for an unknown content. */
static void on_content_done(PGresult *r, int error, void *userdata) {
        _cleanup_free_ ContentCall *call = userdata;
        HttpRequest *req = call->req;
        unsigned code;
        const char *body;

        if (error < 0 || !r) {
                reply_db_failed(req, error < 0 ? error : -EIO);
                return;
        }
        if (PQntuples(r) == 0) {
                http_request_reply_error(req, 404, "id", "No such content.");
                return;
        }
        code = (unsigned) atoi(PQgetvalue(r, 0, 0));
        body = PQgetvalue(r, 0, 1);
        if (code == 201) {
                char location[sizeof("/api/contents/") + TORRENT_ID_HEX_SIZE];

                /* A content id needs no escaping in a path: it is lowercase hex. */
                snprintf(location, sizeof(location), "/api/contents/%s", call->id);
                (void) http_request_add_header(req, "Location", location);
        }
        if (code == 200 && call->reply == REPLY_TORRENT) {
                reply_torrent(req, body);
                return;
        }
        http_request_reply(req, code, "application/json", body, strlen(body));
}

static int content_query(Control *c, HttpRequest *req, const char *id, ContentReply reply, const char *sql,
                         int n, const char *const *params) {
        ContentCall *call;
        int r;

        call = calloc(1, sizeof(ContentCall));
        if (!call)
                return -ENOMEM;
        call->req = req;
        call->reply = reply;
        if (id)
                snprintf(call->id, sizeof(call->id), "%s", id);
        r = db_query(c->db, sql, n, params, on_content_done, call);
        if (r < 0)
                free(call);
        return r;
}

void api_content_put(Control *c, HttpRequest *req, const ApiCall *call) {
        _cleanup_(content_manifest_done) ContentManifest m = {};
        _cleanup_free_ char *hex = NULL;
        char length[32], piece_length[16], pieces[16];
        const char *body, *params[7];
        CheckError e = {};
        size_t size;
        int r;

        assert(call->content_id);

        body = http_request_body(req, &size);
        if (size > CONTENT_MANIFEST_MAX) {
                /* The server takes larger bodies for agents' results; a manifest is at most 2 MiB. */
                http_request_reply_error(req, 413, NULL, "A manifest is at most %d bytes.", CONTENT_MANIFEST_MAX);
                return;
        }
        r = content_manifest_check(body, size, call->content_id, &m, &e);
        if (r == -ENOMEM) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        if (r < 0) {
                api_reply_check_error(req, &e);
                return;
        }

        /* bytea in its text form: the queries take text parameters only. */
        hex = malloc(2 + 2 * m.torrent_size + 1);
        if (!hex) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        memcpy(hex, "\\x", 2);
        hex_encode(m.torrent, m.torrent_size, hex + 2);
        snprintf(length, sizeof(length), "%" PRIu64, m.length);
        snprintf(piece_length, sizeof(piece_length), "%" PRIu32, m.piece_length);
        snprintf(pieces, sizeof(pieces), "%" PRIu32, m.pieces);
        params[0] = m.id;
        params[1] = hex;
        params[2] = m.name;
        params[3] = length;
        params[4] = piece_length;
        params[5] = pieces;
        params[6] = call->identity.kind == AUTH_USER ? call->identity.name : NULL;
        r = content_query(c, req, m.id, REPLY_JSON,
                          "SELECT code, body FROM mc_content_put($1, $2::bytea, $3, $4::bigint, $5::integer, "
                          "$6::integer, $7)", ELEMENTSOF(params), params);
        if (r < 0)
                reply_db_failed(req, r);
}

static char *trim(char *s) {
        size_t n;

        s += strspn(s, " \t");
        n = strlen(s);
        while (n > 0 && strchr(" \t", s[n - 1]))
                s[--n] = 0;
        return s;
}

/* Whether the client asked for the JSON summary rather than the .torrent: its Accept names
 * application/json before application/x-bittorrent, q=0 naming nothing. Anything else, no Accept or
 * a wildcard included, gets the .torrent, which is what the content is; other types are not refused
 * (no 406), since the answer's Content-Type says what it is. */
static bool wants_json(const char *accept) {
        _cleanup_free_ char *copy = NULL;
        char *save = NULL;

        if (!accept || !(copy = strdup(accept)))
                return false;
        for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                char *params = NULL, *type = trim(strtok_r(item, ";", &params) ?: item), *param;
                bool refused = false;

                while ((param = strtok_r(NULL, ";", &params))) {
                        param = trim(param);
                        if (strncasecmp(param, "q=", 2) == 0 && strtod(param + 2, NULL) <= 0)
                                refused = true;
                }
                if (refused)
                        continue;
                if (strcasecmp(type, "application/json") == 0)
                        return true;
                if (strcasecmp(type, TORRENT_MEDIA_TYPE) == 0)
                        return false;
        }
        return false;
}

void api_content_get(Control *c, HttpRequest *req, const ApiCall *call) {
        const char *params[] = { call->content_id };
        bool json;
        int r;

        assert(call->content_id);

        json = wants_json(http_request_header(req, "Accept"));
        /* One URL, two representations: caches must key on Accept. */
        (void) http_request_add_header(req, "Vary", "Accept");
        if (json)
                r = content_query(c, req, call->content_id, REPLY_JSON,
                                  "SELECT 200, mc_content_json(c) FROM contents c WHERE c.id = $1", 1, params);
        else
                r = content_query(c, req, call->content_id, REPLY_TORRENT,
                                  "SELECT 200, encode(c.torrent, 'hex') FROM contents c WHERE c.id = $1", 1, params);
        if (r < 0)
                reply_db_failed(req, r);
}

void api_contents_list(Control *c, HttpRequest *req, const ApiCall *call) {
        static const char *const allowed[] = { "limit", "after", NULL };
        _cleanup_(list_query_done) ListQuery q = {};
        char limit[32];
        const char *unknown, *params[2];
        CheckError e = {};
        int r;

        unknown = http_request_query_unknown(req, allowed);
        if (unknown) {
                http_request_reply_error(req, 400, unknown, "Unknown query parameter \"%.64s\" (known: limit, after).",
                                         unknown);
                return;
        }
        r = list_query_parse(NULL, http_request_query(req, "limit"), http_request_query(req, "after"), NULL, 0, &q, &e);
        if (r == -ENOMEM) {
                http_request_reply_error(req, 500, NULL, "Out of memory.");
                return;
        }
        if (r < 0) {
                api_reply_check_error(req, &e);
                return;
        }
        snprintf(limit, sizeof(limit), "%" PRIi64, q.limit);
        params[0] = limit;
        params[1] = q.after;
        r = content_query(c, req, NULL, REPLY_JSON, "SELECT 200, mc_contents_list($1::integer, $2::bigint)", 2, params);
        if (r < 0)
                reply_db_failed(req, r);
}
