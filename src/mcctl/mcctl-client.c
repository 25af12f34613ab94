/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Requests to the control, one at a time: the shared libcurl-on-sd-event client, with the loop run
 * here until the request has ended. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "mcctl.h"

typedef struct Stream Stream;

/* The userdata of a request: libcurl-on-sd-event hands the same one to its completion and, for a
 * stream, to its data handler. */
typedef struct Pending {
        Stream *stream;                 /* NULL unless streamed */
        bool done;
        McctlAnswer *answer;
        int error;
        char *error_message;
        bool tls_failed;
} Pending;

void mcctl_answer_done(McctlAnswer *a) {
        if (!a)
                return;
        json_object_putp(&a->json);
        free(a->body);
        *a = (McctlAnswer) {};
}

static void on_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        Pending *p = userdata;

        p->done = true;
        p->error = resp->error;
        p->tls_failed = resp->tls_failed;
        if (resp->error < 0) {
                p->error_message = strdup(resp->error_message ?: strerror(-resp->error));
                return;
        }
        p->answer->code = resp->code;
        p->answer->body = strndup(resp->body ?: "", resp->size);
        p->answer->size = resp->size;
        if (p->answer->body && resp->size > 0 && resp->content_type &&
            strncmp(resp->content_type, "application/json", strlen("application/json")) == 0)
                (void) json_parse_strict(p->answer->body, resp->size, &p->answer->json, NULL);
}

static int run_request(Mcctl *m, const CurlRequestOptions *o, Stream *stream, McctlAnswer *ret) {
        Pending p = { .stream = stream, .answer = ret };
        int r;

        *ret = (McctlAnswer) {};
        r = curl_event_request(m->curl, o, on_done, &p, NULL);
        if (r < 0) {
                fprintf(stderr, "mcctl: cannot start a request to %s: %s\n", o->url, strerror(-r));
                return MCCTL_EXIT_ERROR;
        }
        while (!p.done) {
                r = sd_event_run(m->event, UINT64_MAX);
                if (r < 0) {
                        fprintf(stderr, "mcctl: event loop failed: %s\n", strerror(-r));
                        return MCCTL_EXIT_ERROR;
                }
        }
        if (p.error < 0) {
                if (p.tls_failed)
                        fprintf(stderr, "mcctl: TLS with the control at %s failed: %s (is CONTROL_CA the "
                                "cluster's CA?)\n", m->url, p.error_message ?: "unknown error");
                else
                        fprintf(stderr, "mcctl: cannot reach the control at %s: %s\n", m->url,
                                p.error_message ?: "unknown error");
                free(p.error_message);
                mcctl_answer_done(ret);
                return MCCTL_EXIT_UNREACHABLE;
        }
        if (!ret->body) {
                fprintf(stderr, "mcctl: out of memory\n");
                return MCCTL_EXIT_ERROR;
        }
        return 0;
}

int mcctl_call(Mcctl *m, const char *method, const char *path, json_object *body, uint64_t timeout_usec,
               McctlAnswer *ret) {
        _cleanup_free_ char *url = NULL;
        const char *text = body ? json_to_string(body) : NULL;

        if (asprintf(&url, "%s%s", m->url, path) < 0)
                return MCCTL_EXIT_ERROR;
        CurlRequestOptions o = {
                .method = method,
                .url = url,
                .body = text,
                .body_size = text ? strlen(text) : 0,
                .bearer_token = m->token && m->token[0] ? m->token : NULL,
                .timeout_usec = timeout_usec ?: (uint64_t) m->timeout_sec * USEC_PER_SEC,
                .connect_timeout_usec = 10 * USEC_PER_SEC,
        };
        return run_request(m, &o, NULL, ret);
}

struct Stream {
        CurlDataHandler on_data;
        void *userdata;
        char *error_body;               /* what a non-200 answer said */
        size_t error_size;
};

static int on_stream_data(CurlRequest *req, const void *data, size_t size, void *userdata) {
        Stream *s = ((Pending *) userdata)->stream;

        if (curl_request_response_code(req) != 200) {
                /* An error answer is small: keep it for the message. */
                char *b = realloc(s->error_body, s->error_size + size + 1);
                if (!b)
                        return -ENOMEM;
                memcpy(b + s->error_size, data, size);
                s->error_size += size;
                b[s->error_size] = 0;
                s->error_body = b;
                return s->error_size > 65536 ? -E2BIG : 0;
        }
        return s->on_data(req, data, size, s->userdata);
}

int mcctl_stream(Mcctl *m, const char *path, CurlDataHandler on_data, void *userdata, McctlAnswer *ret) {
        _cleanup_free_ char *url = NULL;
        Stream s = { on_data, userdata };
        int r;

        if (asprintf(&url, "%s%s", m->url, path) < 0)
                return MCCTL_EXIT_ERROR;
        CurlRequestOptions o = {
                .url = url,
                .bearer_token = m->token && m->token[0] ? m->token : NULL,
                .connect_timeout_usec = 10 * USEC_PER_SEC,
                .on_data = on_stream_data,
        };
        r = run_request(m, &o, &s, ret);
        if (r == 0 && ret->code != 200 && s.error_body) {
                free(ret->body);
                ret->body = TAKE_PTR(s.error_body);
                ret->size = s.error_size;
                (void) json_parse_strict(ret->body, ret->size, &ret->json, NULL);
        }
        free(s.error_body);
        return r;
}

int mcctl_answer_failed(const McctlAnswer *a, const char *what) {
        const char *error = NULL, *field = NULL;

        if (a->json) {
                (void) json_get_string(a->json, "error", &error);
                (void) json_get_string(a->json, "field", &field);
        }
        if (a->code == 401)
                fprintf(stderr, "mcctl: %s: the control does not know this token (HTTP 401); set TOKEN "
                        "(MC_TOKEN, --token) to a user token%s%s\n", what, error ? ": " : "", strempty(error));
        else if (error)
                fprintf(stderr, "mcctl: %s: %s%s%s%s (HTTP %ld)\n", what, error, field ? " (field \"" : "",
                        strempty(field), field ? "\")" : "", a->code);
        else
                fprintf(stderr, "mcctl: %s: HTTP %ld%s%.200s\n", what, a->code, a->size > 0 ? ": " : "",
                        strempty(a->body));
        return MCCTL_EXIT_ERROR;
}
