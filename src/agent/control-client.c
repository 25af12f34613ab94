/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "config.h"
#include "control-client.h"
#include "daemon-util.h"
#include "json-util.h"
#include "log.h"

#define CONNECT_TIMEOUT_USEC (2 * USEC_PER_SEC)

struct ControlClient {
        CurlEvent *curl;
        char **urls;
        size_t n_urls;
        size_t current;         /* the replica that answered last */
        char *token;
        ControlCall *calls;
};

struct ControlCall {
        ControlClient *client;
        CurlRequest *request;
        char *path;
        char *body;
        uint64_t timeout_usec;
        size_t first, tries;    /* which replica the call started with, how many were tried */
        size_t url;             /* the one being tried */
        uint64_t sent_usec;
        ControlCallback cb;
        void *userdata;
        ControlCall *prev, *next;
};

int control_client_new(CurlEvent *curl, char *const *urls, const char *token, ControlClient **ret) {
        ControlClient *c;

        if (strv_length(urls) == 0)
                return -EINVAL;
        c = calloc(1, sizeof(ControlClient));
        if (!c)
                return -ENOMEM;
        c->curl = curl;
        for (char *const *u = urls; *u; u++) {
                /* "http://host:port/" and "http://host:port" are the same base. */
                _cleanup_free_ char *s = strdup(*u);
                if (!s || strv_extend(&c->urls, s) < 0) {
                        control_client_free(c);
                        return -ENOMEM;
                }
                size_t l = strlen(c->urls[c->n_urls]);
                while (l > 0 && c->urls[c->n_urls][l - 1] == '/')
                        c->urls[c->n_urls][--l] = 0;
                c->n_urls++;
        }
        if (token) {
                c->token = strdup(token);
                if (!c->token) {
                        control_client_free(c);
                        return -ENOMEM;
                }
        }
        *ret = c;
        return 0;
}

static void call_free(ControlCall *call) {
        ControlClient *c = call->client;

        if (call->prev)
                call->prev->next = call->next;
        else
                c->calls = call->next;
        if (call->next)
                call->next->prev = call->prev;
        free(call->path);
        free(call->body);
        free(call);
}

ControlClient *control_client_free(ControlClient *c) {
        if (!c)
                return NULL;
        while (c->calls)
                control_call_cancel(c->calls);
        strv_free(c->urls);
        if (c->token) {
                explicit_bzero(c->token, strlen(c->token));
                free(c->token);
        }
        free(c);
        return NULL;
}

const char *control_client_current_url(ControlClient *c) {
        return c->urls[c->current];
}

void control_call_cancel(ControlCall *call) {
        if (!call)
                return;
        curl_request_cancel(call->request);
        call_free(call);
}

static int call_send(ControlCall *call);

static void on_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        ControlCall *call = userdata;
        ControlClient *c = call->client;
        _cleanup_json_ json_object *json = NULL;
        _cleanup_free_ char *message = NULL;
        ControlReply reply = {
                .error = resp->error,
                .code = resp->code,
                .url = c->urls[call->url],
                .sent_usec = call->sent_usec,
        };

        call->request = NULL;
        /* No answer, or a replica that cannot serve (database unreachable, stopping): try the next. */
        if ((resp->error < 0 || resp->code >= 500) && call->tries < c->n_urls) {
                log_debug("Control %s: %s; trying the next replica.", c->urls[call->url],
                          resp->error < 0 ? resp->error_message : "5xx");
                call->url = (call->url + 1) % c->n_urls;
                if (call_send(call) >= 0)
                        return;
        }

        if (resp->size > 0)
                (void) json_parse_strict(resp->body, resp->size, &json, NULL);
        reply.json = json;
        if (resp->error < 0) {
                if (asprintf(&message, "%s: %s", c->urls[call->url], resp->error_message ?: "no answer") < 0)
                        message = NULL;
                reply.message = message ?: "no answer";
        } else {
                const char *e = NULL;
                if (json && json_get_string(json, "error", &e) >= 0)
                        reply.message = e;
                if (resp->code < 500)
                        c->current = call->url;
        }

        /* Unlinked before the callback, which may free the client's other calls. */
        ControlCallback cb = call->cb;
        void *ud = call->userdata;
        call_free(call);
        cb(&reply, ud);
}

static int call_send(ControlCall *call) {
        ControlClient *c = call->client;
        _cleanup_free_ char *url = NULL;

        call->tries++;
        if (asprintf(&url, "%s%s", c->urls[call->url], call->path) < 0)
                return -ENOMEM;
        call->sent_usec = now_usec();
        return curl_event_request(c->curl, &(CurlRequestOptions) {
                        .method = "POST",
                        .url = url,
                        .body = call->body,
                        .body_size = strlen(call->body),
                        .bearer_token = c->token,
                        .timeout_usec = call->timeout_usec,
                        .connect_timeout_usec = MIN(call->timeout_usec, CONNECT_TIMEOUT_USEC),
                        .max_body = 8U * 1024U * 1024U,
                }, on_done, call, &call->request);
}

int control_post(ControlClient *c, const char *path, json_object *body, uint64_t timeout_usec,
                 ControlCallback cb, void *userdata, ControlCall **ret) {
        ControlCall *call;
        int r;

        call = calloc(1, sizeof(ControlCall));
        if (!call)
                return -ENOMEM;
        call->client = c;
        call->cb = cb;
        call->userdata = userdata;
        call->timeout_usec = timeout_usec;
        call->first = call->url = c->current;
        call->path = strdup(path);
        call->body = strdup(body ? json_to_string(body) : "{}");
        call->next = c->calls;
        if (c->calls)
                c->calls->prev = call;
        c->calls = call;
        if (!call->path || !call->body) {
                call_free(call);
                return -ENOMEM;
        }
        r = call_send(call);
        if (r < 0) {
                call_free(call);
                return r;
        }
        if (ret)
                *ret = call;
        return 0;
}
