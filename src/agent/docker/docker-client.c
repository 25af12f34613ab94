/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-client.h"
#include "json-util.h"
#include "list.h"
#include "log.h"

/* An error answer to a streamed call is collected (it carries the engine's message), up to this. */
#define ERROR_BODY_MAX 65536

struct DockerClient {
        sd_event *event;
        CurlEvent *curl;
        char *socket_path;
        DockerCall *calls;
};

struct DockerCall {
        DockerClient *client;
        CurlRequest *request;
        DockerCallback callback;
        DockerDataHandler on_data;
        void (*destroy)(void *userdata);
        void *userdata;
        char *error_body;               /* a non-2xx answer to a streamed call */
        size_t error_size;
        bool completing;                /* its callback runs: cancelling it now is a no-op */
        LIST_FIELDS(DockerCall);
};

static void call_unlink(DockerCall *call) {
        DockerClient *c = call->client;

        LIST_REMOVE(c->calls, call);
}

static void call_free(DockerCall *call) {
        call_unlink(call);
        if (call->destroy)
                call->destroy(call->userdata);
        free(call->error_body);
        free(call);
}

int docker_client_new(sd_event *e, CurlEvent *curl, const char *socket_path, DockerClient **ret) {
        DockerClient *c;

        c = calloc(1, sizeof(DockerClient));
        if (!c)
                return -ENOMEM;
        c->socket_path = strdup(socket_path ?: DOCKER_SOCKET_DEFAULT);
        if (!c->socket_path) {
                free(c);
                return -ENOMEM;
        }
        c->event = sd_event_ref(e);
        c->curl = curl;
        *ret = c;
        return 0;
}

DockerClient *docker_client_free(DockerClient *c) {
        if (!c)
                return NULL;
        while (c->calls)
                docker_call_cancel(c->calls);
        free(c->socket_path);
        sd_event_unref(c->event);
        free(c);
        return NULL;
}

void docker_call_cancel(DockerCall *call) {
        if (!call || call->completing)
                return;
        curl_request_cancel(call->request);
        call_free(call);
}

void docker_call_set_destroy(DockerCall *call, void (*destroy)(void *userdata)) {
        call->destroy = destroy;
}

char *docker_url_escape(const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        char *out, *p;

        out = p = malloc(strlen(s) * 3 + 1);
        if (!out)
                return NULL;
        for (; *s; s++) {
                unsigned char ch = (unsigned char) *s;
                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    strchr("-._~", ch))
                        *p++ = (char) ch;
                else {
                        *p++ = '%';
                        *p++ = hex[ch >> 4];
                        *p++ = hex[ch & 15];
                }
        }
        *p = 0;
        return out;
}

static int status_to_errno(long code) {
        if (code >= 200 && code < 400)
                return 0;
        switch (code) {
        case 404:
                return -ENOENT;
        case 409:
                return -EBUSY;
        case 400:
                return -EINVAL;
        default:
                return -EIO;
        }
}

static int on_call_data(CurlRequest *req, const void *data, size_t size, void *userdata) {
        DockerCall *call = userdata;
        long code = curl_request_response_code(req);

        if (code >= 200 && code < 300)
                return call->on_data(data, size, call->userdata);

        /* An error answer: keep it for the message. */
        if (call->error_size + size > ERROR_BODY_MAX)
                size = ERROR_BODY_MAX - call->error_size;
        if (size > 0) {
                char *b = realloc(call->error_body, call->error_size + size + 1);
                if (!b)
                        return -ENOMEM;
                memcpy(b + call->error_size, data, size);
                call->error_size += size;
                b[call->error_size] = 0;
                call->error_body = b;
        }
        return 0;
}

static void on_call_done(CurlRequest *req, const CurlResponse *resp, void *userdata) {
        DockerCall *call = userdata;
        _cleanup_json_ json_object *json = NULL;
        _cleanup_free_ char *message = NULL;
        DockerResult result = {
                .error = resp->error,
                .code = resp->code,
                .exit_code = -1,
        };
        const char *body = resp->body;
        size_t size = resp->size;

        call->request = NULL;   /* freed by curl-event once we return */

        if (call->error_body) {
                body = call->error_body;
                size = call->error_size;
        }
        if (size > 0)
                (void) json_parse_strict(body, size, &json, NULL);

        if (resp->error < 0) {
                if (asprintf(&message, "Docker engine at %s: %s", call->client->socket_path,
                             resp->error_message ?: "no answer") < 0)
                        message = NULL;
                result.message = message ?: "no answer from the Docker engine";
        } else {
                result.error = status_to_errno(resp->code);
                result.not_modified = resp->code == 304;
                if (result.error < 0) {
                        const char *m = NULL;

                        if (json && json_get_string(json, "message", &m) >= 0 && !isempty(m))
                                result.message = m;
                        else if (size > 0)
                                result.message = message = strndup(body, MIN(size, (size_t) 512));
                        if (!result.message) {
                                if (asprintf(&message, "Docker engine answered %ld", resp->code) < 0)
                                        message = NULL;
                                result.message = message ?: "error from the Docker engine";
                        }
                }
        }

        result.json = json;
        if (json && result.error >= 0) {
                int64_t v;
                const char *id;

                if (json_get_string(json, "Id", &id) >= 0)
                        result.id = id;
                if (json_get_int64(json, "StatusCode", &v) >= 0)
                        result.exit_code = v;
        }

        /* Unlink first: the callback may free the client's other calls, or start new ones. */
        call_unlink(call);
        call->completing = true;
        if (call->callback)
                call->callback(&result, call->userdata);
        if (call->destroy)
                call->destroy(call->userdata);
        free(call->error_body);
        free(call);
}

int docker_call(DockerClient *c, const DockerCallOptions *o, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *url = NULL;
        const char *body = NULL;
        DockerCall *call;
        int r;

        if (asprintf(&url, "http://localhost/" DOCKER_API_VERSION "%s", o->path) < 0)
                return -ENOMEM;
        if (o->body)
                body = json_to_string(o->body);

        call = calloc(1, sizeof(DockerCall));
        if (!call)
                return -ENOMEM;
        call->client = c;
        call->callback = cb;
        call->on_data = o->on_data;
        call->destroy = o->destroy;
        call->userdata = userdata;

        r = curl_event_request(c->curl, &(CurlRequestOptions) {
                        .method = o->method,
                        .url = url,
                        .unix_socket = c->socket_path,
                        .body = body,
                        .body_size = body ? strlen(body) : 0,
                        .timeout_usec = o->timeout_usec,
                        .connect_timeout_usec = 5 * USEC_PER_SEC,
                        .max_body = 64U * 1024U * 1024U,
                        .on_data = o->on_data ? on_call_data : NULL,
                        .fresh_connect = o->fresh_connect,
                }, on_call_done, call, &call->request);
        if (r < 0) {
                free(call);     /* the caller still owns userdata */
                return r;
        }

        LIST_PREPEND(c->calls, call);
        if (ret)
                *ret = call;
        return 0;
}
