/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-events.h"
#include "json-util.h"

#define EVENT_LINE_MAX (256U * 1024U)

typedef struct EventsCall {
        DockerEventStream stream;
        DockerEventHandler on_event;
        DockerCallback cb;
        void *userdata;
} EventsCall;

static void events_call_free(void *p) {
        EventsCall *ec = p;
        if (ec->stream.tok)
                json_tokener_free(ec->stream.tok);
        free(ec);
}

int docker_event_stream_feed(DockerEventStream *s, const void *data, size_t size, DockerEventHandler on_event,
                             void *userdata) {
        const char *p = data;

        /* A stream of JSON objects (newline-separated, but a tokener does not need to know). */
        while (size > 0) {
                _cleanup_json_ json_object *o = NULL;
                enum json_tokener_error err;
                size_t used, n = MIN(size, (size_t) INT32_MAX);

                /* Skip whitespace between objects, which the tokener would not consume on its own. */
                if (!s->in_object && strchr(" \t\r\n", *p)) {
                        p++;
                        size--;
                        continue;
                }
                o = json_tokener_parse_ex(s->tok, p, (int) n);
                err = json_tokener_get_error(s->tok);
                if (err == json_tokener_continue) {
                        s->in_object = true;
                        return 0;
                }
                if (err != json_tokener_success)
                        return -EBADMSG;
                used = json_tokener_get_parse_end(s->tok);
                json_tokener_reset(s->tok);
                s->in_object = false;
                if (used == 0)
                        used = n;
                p += used;
                size -= used;
                if (o)
                        on_event(o, userdata);
        }
        return 0;
}

static int on_events_data(const void *data, size_t size, void *userdata) {
        EventsCall *ec = userdata;
        return docker_event_stream_feed(&ec->stream, data, size, ec->on_event, ec->userdata);
}

static void on_events_done(const DockerResult *result, void *userdata) {
        EventsCall *ec = userdata;
        ec->cb(result, ec->userdata);
}

int docker_events_follow(DockerClient *c, json_object *filters, uint64_t since_usec,
                         DockerEventHandler on_event, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL, *e = NULL;
        char since[64] = "";
        EventsCall *ec;
        int r;

        if (since_usec > 0)
                snprintf(since, sizeof(since), "&since=%" PRIu64 ".%09" PRIu64,
                         since_usec / USEC_PER_SEC, (since_usec % USEC_PER_SEC) * 1000);
        if (filters) {
                e = docker_url_escape(json_to_string(filters));
                if (!e)
                        return -ENOMEM;
        }
        if (asprintf(&path, "/events?%s%s%s", e ? "filters=" : "", e ?: "", since) < 0)
                return -ENOMEM;

        ec = calloc(1, sizeof(EventsCall));
        if (!ec)
                return -ENOMEM;
        ec->stream.tok = json_tokener_new_ex(32);
        if (!ec->stream.tok) {
                free(ec);
                return -ENOMEM;
        }
        ec->on_event = on_event;
        ec->cb = cb;
        ec->userdata = userdata;
        r = docker_call(c, &(DockerCallOptions) {
                        .method = "GET",
                        .path = path,
                        .on_data = on_events_data,
                        .destroy = events_call_free,
                }, on_events_done, ec, ret);
        if (r < 0)
                events_call_free(ec);
        return r;
}
