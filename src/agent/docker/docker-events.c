/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-events.h"
#include "json-util.h"

typedef struct EventsCall {
        JsonLines stream;
        DockerEventHandler on_event;
        DockerCallback cb;
        void *userdata;
} EventsCall;

static void events_call_free(void *p) {
        EventsCall *ec = p;
        json_lines_done(&ec->stream);
        free(ec);
}

static int on_events_data(const void *data, size_t size, void *userdata) {
        EventsCall *ec = userdata;
        return json_lines_feed(&ec->stream, data, size, ec->on_event, ec->userdata);
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
