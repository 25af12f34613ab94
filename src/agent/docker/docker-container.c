/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docker-container.h"
#include "json-util.h"

int docker_container_spec_to_json(const DockerContainerSpec *spec, json_object **ret) {
        _cleanup_json_ json_object *o = json_object_new_object(), *cmd = json_object_new_array(),
                                   *env = json_object_new_array(), *labels = json_object_new_object(),
                                   *host = json_object_new_object();
        int r;

        if (!o || !cmd || !env || !labels || !host)
                return -ENOMEM;
        if (!spec->image || !spec->cmd || !spec->cmd[0])
                return -EINVAL;

        for (char *const *a = spec->cmd; *a; a++)
                if (json_object_array_add(cmd, json_object_new_string(*a)) < 0)
                        return -ENOMEM;

        if (spec->env) {
                json_object_object_foreach(spec->env, k, v) {
                        _cleanup_free_ char *kv = NULL;
                        if (!json_object_is_type(v, json_type_string))
                                return -EINVAL;
                        if (asprintf(&kv, "%s=%s", k, json_object_get_string(v)) < 0)
                                return -ENOMEM;
                        if (json_object_array_add(env, json_object_new_string(kv)) < 0)
                                return -ENOMEM;
                }
        }

        for (const char *const *l = spec->labels; l && l[0] && l[1]; l += 2) {
                r = json_add_string(labels, l[0], l[1]);
                if (r < 0)
                        return r;
        }

        /* Memory without swap on top: MemorySwap equal to Memory. */
        if (spec->nano_cpus > 0 && (r = json_add_int64(host, "NanoCpus", spec->nano_cpus)) < 0)
                return r;
        if (spec->memory_bytes > 0) {
                if ((r = json_add_int64(host, "Memory", spec->memory_bytes)) < 0 ||
                    (r = json_add_int64(host, "MemorySwap", spec->memory_bytes)) < 0)
                        return r;
        }
        if (!isempty(spec->runtime) && (r = json_add_string(host, "Runtime", spec->runtime)) < 0)
                return r;
        if (!isempty(spec->network) && (r = json_add_string(host, "NetworkMode", spec->network)) < 0)
                return r;
        if (spec->ro_binds && spec->ro_binds[0]) {
                _cleanup_json_ json_object *mounts = json_object_new_array();

                if (!mounts)
                        return -ENOMEM;
                for (const char *const *b = spec->ro_binds; b[0] && b[1]; b += 2) {
                        json_object *m = json_object_new_object();
                        if (!m || json_object_array_add(mounts, m) < 0)
                                return -ENOMEM;
                        if ((r = json_add_string(m, "Type", "bind")) < 0 || (r = json_add_string(m, "Source", b[0])) < 0 ||
                            (r = json_add_string(m, "Target", b[1])) < 0 ||
                            (r = json_add(m, "ReadOnly", json_object_new_boolean(true))) < 0)
                                return r;
                }
                if ((r = json_add(host, "Mounts", TAKE_PTR(mounts))) < 0)
                        return r;
        }

        if ((r = json_add_string(o, "Image", spec->image)) < 0 ||
            (r = json_add(o, "Cmd", TAKE_PTR(cmd))) < 0 ||
            (r = json_add(o, "Env", TAKE_PTR(env))) < 0 ||
            (r = json_add(o, "Labels", TAKE_PTR(labels))) < 0 ||
            (r = json_add(o, "HostConfig", TAKE_PTR(host))) < 0)
                return r;
        if ((r = json_add(o, "AttachStdout", json_object_new_boolean(false))) < 0 ||
            (r = json_add(o, "AttachStderr", json_object_new_boolean(false))) < 0 ||
            (r = json_add(o, "Tty", json_object_new_boolean(false))) < 0)
                return r;

        *ret = TAKE_PTR(o);
        return 0;
}

static int simple_call(DockerClient *c, const char *method, const char *path, json_object *body,
                       uint64_t timeout_usec, DockerCallback cb, void *userdata, DockerCall **ret) {
        return docker_call(c, &(DockerCallOptions) {
                        .method = method,
                        .path = path,
                        .body = body,
                        .timeout_usec = timeout_usec,
                }, cb, userdata, ret);
}

/* Container ids and names are [a-zA-Z0-9_.-]; escaping anyway keeps a bad one from changing the path. */
static int container_path(char **ret, const char *id, const char *suffix) {
        _cleanup_free_ char *e = docker_url_escape(id);
        if (!e)
                return -ENOMEM;
        if (asprintf(ret, "/containers/%s%s", e, suffix ?: "") < 0)
                return -ENOMEM;
        return 0;
}

#define SHORT_TIMEOUT (60 * USEC_PER_SEC)

int docker_container_create(DockerClient *c, const char *name, json_object *spec,
                            DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL, *e = NULL;

        if (name) {
                e = docker_url_escape(name);
                if (!e || asprintf(&path, "/containers/create?name=%s", e) < 0)
                        return -ENOMEM;
        }
        return simple_call(c, "POST", path ?: "/containers/create", spec, SHORT_TIMEOUT, cb, userdata, ret);
}

int docker_container_start(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        int r = container_path(&path, id, "/start");
        if (r < 0)
                return r;
        return simple_call(c, "POST", path, NULL, SHORT_TIMEOUT, cb, userdata, ret);
}

int docker_container_wait(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        int r = container_path(&path, id, "/wait?condition=not-running");
        if (r < 0)
                return r;
        return simple_call(c, "POST", path, NULL, 0, cb, userdata, ret);
}

int docker_container_inspect(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        int r = container_path(&path, id, "/json");
        if (r < 0)
                return r;
        return simple_call(c, "GET", path, NULL, SHORT_TIMEOUT, cb, userdata, ret);
}

int docker_container_inspect_fresh(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        int r = container_path(&path, id, "/json");
        if (r < 0)
                return r;
        return docker_call(c, &(DockerCallOptions) {
                        .method = "GET",
                        .path = path,
                        .timeout_usec = SHORT_TIMEOUT,
                        .fresh_connect = true,
                }, cb, userdata, ret);
}

int docker_container_stop(DockerClient *c, const char *id, unsigned grace_sec,
                          DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        char suffix[32];
        int r;

        snprintf(suffix, sizeof(suffix), "/stop?t=%u", grace_sec);
        r = container_path(&path, id, suffix);
        if (r < 0)
                return r;
        return simple_call(c, "POST", path, NULL, (grace_sec + 60) * USEC_PER_SEC, cb, userdata, ret);
}

int docker_container_kill(DockerClient *c, const char *id, const char *signal,
                          DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL, *sig = docker_url_escape(signal ?: "SIGKILL"), *suffix = NULL;
        int r;

        if (!sig || asprintf(&suffix, "/kill?signal=%s", sig) < 0)
                return -ENOMEM;
        r = container_path(&path, id, suffix);
        if (r < 0)
                return r;
        return simple_call(c, "POST", path, NULL, SHORT_TIMEOUT, cb, userdata, ret);
}

int docker_container_remove(DockerClient *c, const char *id, bool force,
                            DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_free_ char *path = NULL;
        int r = container_path(&path, id, force ? "?force=1&v=1" : "?v=1");
        if (r < 0)
                return r;
        return simple_call(c, "DELETE", path, NULL, SHORT_TIMEOUT, cb, userdata, ret);
}

int docker_container_list(DockerClient *c, const char *const *labels,
                          DockerCallback cb, void *userdata, DockerCall **ret) {
        _cleanup_json_ json_object *filters = json_object_new_object(), *l = json_object_new_array();
        _cleanup_free_ char *path = NULL, *e = NULL;
        int r;

        if (!filters || !l)
                return -ENOMEM;
        for (const char *const *i = labels; i && *i; i++)
                if (json_object_array_add(l, json_object_new_string(*i)) < 0)
                        return -ENOMEM;
        r = json_add(filters, "label", TAKE_PTR(l));
        if (r < 0)
                return r;
        e = docker_url_escape(json_to_string(filters));
        if (!e || asprintf(&path, "/containers/json?all=1&filters=%s", e) < 0)
                return -ENOMEM;
        return simple_call(c, "GET", path, NULL, SHORT_TIMEOUT, cb, userdata, ret);
}

const char *docker_inspect_state(json_object *inspect) {
        json_object *state;
        const char *s;

        if (!json_object_object_get_ex(inspect, "State", &state) || json_get_string(state, "Status", &s) < 0)
                return NULL;
        return s;
}

static const char *labels_get(json_object *labels, const char *key) {
        const char *v;

        if (!labels || json_get_string(labels, key, &v) < 0)
                return NULL;
        return v;
}

const char *docker_inspect_label(json_object *inspect, const char *key) {
        json_object *config, *labels;

        if (!json_object_object_get_ex(inspect, "Config", &config) ||
            !json_object_object_get_ex(config, "Labels", &labels))
                return NULL;
        return labels_get(labels, key);
}

int docker_inspect_host_config_int(json_object *inspect, const char *key, int64_t *ret) {
        json_object *host;

        if (!json_object_object_get_ex(inspect, "HostConfig", &host))
                return -ENOENT;
        return json_get_int64(host, key, ret);
}

const char *docker_list_label(json_object *container, const char *key) {
        json_object *labels;

        if (!json_object_object_get_ex(container, "Labels", &labels))
                return NULL;
        return labels_get(labels, key);
}
