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
        docker_event_stream_done(&ec->stream);
        free(ec);
}

static int event_line(const char *line, size_t n, DockerEventHandler on_event, void *userdata) {
        _cleanup_json_ json_object *o = NULL;

        /* Blank lines (and a "\r" before the "\n") are nothing; anything else must be one object. */
        while (n > 0 && strchr(" \t\r", line[n - 1]) && line[n - 1] != 0)
                n--;
        while (n > 0 && strchr(" \t\r", line[0]) && line[0] != 0) {
                line++;
                n--;
        }
        if (n == 0)
                return 0;
        if (json_parse_strict(line, n, &o, NULL) < 0 || !json_object_is_type(o, json_type_object))
                return -EBADMSG;
        on_event(o, userdata);
        return 0;
}

int docker_event_stream_feed(DockerEventStream *s, const void *data, size_t size, DockerEventHandler on_event,
                             void *userdata) {
        const char *p = data;
        int r;

        /* One JSON object per line (the engine's encoder ends each with "\n"). Each line is parsed
         * whole and strictly, like every other input: json-c's tokener, fed the pieces curl happens to
         * deliver, ends top-level values and even malformed numbers differently depending on where
         * the pieces are cut, and lets invalid UTF-8 through. */
        while (size > 0) {
                const char *nl = memchr(p, '\n', size);
                size_t n = nl ? (size_t) (nl - p) : size;

                if (s->line_size + n > EVENT_LINE_MAX)
                        return -EBADMSG;
                if (nl && s->line_size == 0)
                        r = event_line(p, n, on_event, userdata);       /* the whole line is here */
                else {
                        char *b = realloc(s->line, s->line_size + n + 1);
                        if (!b)
                                return -ENOMEM;
                        memcpy(b + s->line_size, p, n);
                        s->line = b;
                        s->line_size += n;
                        r = 0;
                        if (nl) {
                                r = event_line(s->line, s->line_size, on_event, userdata);
                                s->line_size = 0;
                        }
                }
                if (r < 0)
                        return r;
                if (nl)
                        n++;
                p += n;
                size -= n;
        }
        return 0;
}

void docker_event_stream_done(DockerEventStream *s) {
        free(s->line);
        *s = (DockerEventStream) {};
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
