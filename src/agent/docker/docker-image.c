/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-image.h"
#include "json-lines.h"
#include "json-util.h"

int docker_image_inspect(DockerClient *c, const char *image, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL, *e = docker_url_escape(image);

        if (!e || asprintf(&path, "/images/%s/json", e) < 0)
                return -ENOMEM;
        return docker_call(c, &(DockerCallOptions) {
                        .method = "GET",
                        .path = path,
                        .timeout_usec = 60 * USEC_PER_SEC,
                }, cb, userdata, ret);
}

typedef struct PullCall {
        JsonLines stream;
        char *error;            /* the last error the engine reported in its stream */
        DockerCallback cb;
        void *userdata;
} PullCall;

static void pull_call_free(void *p) {
        PullCall *pc = p;
        json_lines_done(&pc->stream);
        free(pc->error);
        free(pc);
}

/* The progress stream: an object per line, one with "error" when the pull failed. */
static void pull_line(json_object *o, void *userdata) {
        PullCall *pc = userdata;
        const char *e;

        if (json_get_string(o, "error", &e) >= 0 && !isempty(e)) {
                free(pc->error);
                pc->error = strdup(e);
        }
}

static int on_pull_data(const void *data, size_t size, void *userdata) {
        PullCall *pc = userdata;
        return json_lines_feed(&pc->stream, data, size, pull_line, pc);
}

static void on_pull_done(const DockerResult *result, void *userdata) {
        PullCall *pc = userdata;
        DockerResult res = *result;

        if (res.error >= 0 && json_lines_end(&pc->stream, pull_line, pc) < 0) {
                res.error = -EBADMSG;
                res.message = "the engine's pull progress is not one JSON object per line";
        }
        if (res.error >= 0 && pc->error) {
                res.error = -EIO;
                res.message = pc->error;
        }
        pc->cb(&res, pc->userdata);
}

int docker_image_pull(DockerClient *c, const char *image, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL, *e = docker_url_escape(image);
        const char *slash, *name_part;
        bool has_tag;
        PullCall *pc;
        int r;

        if (!e)
                return -ENOMEM;
        /* A tag is a ':' after the last '/' (before it, a ':' is a registry's port). */
        slash = strrchr(image, '/');
        name_part = slash ? slash + 1 : image;
        has_tag = strchr(name_part, ':') || strchr(image, '@');
        if (asprintf(&path, "/images/create?fromImage=%s%s", e, has_tag ? "" : "&tag=latest") < 0)
                return -ENOMEM;

        pc = calloc(1, sizeof(PullCall));
        if (!pc)
                return -ENOMEM;
        pc->cb = cb;
        pc->userdata = userdata;
        r = docker_call(c, &(DockerCallOptions) {
                        .method = "POST",
                        .path = path,
                        .timeout_usec = 3600 * USEC_PER_SEC,
                        .on_data = on_pull_data,
                        .destroy = pull_call_free,
                }, on_pull_done, pc, ret);
        if (r < 0)
                pull_call_free(pc);
        return r;
}
