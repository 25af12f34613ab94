/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-logs.h"

typedef struct LogsCall {
        DockerLogDemux demux;
        OutputCapture *capture;
        DockerCallback cb;
        void *userdata;
} LogsCall;

static int on_logs_data(const void *data, size_t size, void *userdata) {
        LogsCall *l = userdata;
        return docker_log_demux_feed(&l->demux, l->capture, data, size);
}

static void on_logs_done(const DockerResult *result, void *userdata) {
        LogsCall *l = userdata;
        DockerResult res = *result;

        if (res.error >= 0 && !docker_log_demux_complete(&l->demux)) {
                res.error = -EBADMSG;
                res.message = "the Docker engine's log stream ended inside a frame";
        }
        l->cb(&res, l->userdata);
}

int docker_container_logs(DockerClient *c, const char *id, bool follow, OutputCapture *capture,
                          DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *e = docker_url_escape(id), *path = NULL;
        LogsCall *l;
        int r;

        if (!e || asprintf(&path, "/containers/%s/logs?stdout=1&stderr=1%s", e, follow ? "&follow=1" : "") < 0)
                return -ENOMEM;
        l = calloc(1, sizeof(LogsCall));
        if (!l)
                return -ENOMEM;
        *l = (LogsCall) { .capture = capture, .cb = cb, .userdata = userdata };
        r = docker_call(c, &(DockerCallOptions) {
                        .method = "GET",
                        .path = path,
                        .on_data = on_logs_data,
                        .destroy = free,
                }, on_logs_done, l, ret);
        if (r < 0)
                free(l);
        return r;
}
