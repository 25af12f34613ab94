/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Container calls of the Docker Engine API (see docker-client.h for how results and errors look). */

#include "docker-client.h"

typedef struct DockerContainerSpec {
        const char *image;
        char *const *cmd;               /* NULL-terminated */
        json_object *env;               /* {"KEY": "value"} or NULL */
        const char *const *labels;      /* key, value, key, value, ..., NULL */
        int64_t nano_cpus;              /* 0: no limit */
        int64_t memory_bytes;           /* 0: no limit */
        const char *runtime;            /* NULL: the engine's default */
        const char *network;            /* HostConfig.NetworkMode; NULL: the engine's default */
        /* HostConfig.Mounts: bind mounts, read-only, of source (a host file) at target. Mounts rather
         * than Binds: a path may hold ':' (Binds' separator), and a missing source fails the create
         * instead of being made a directory. The engine creates the target's parent directories. */
        const char *const *ro_binds;    /* source, target, source, target, ..., NULL */
} DockerContainerSpec;

/* The JSON body of POST /containers/create. */
int docker_container_spec_to_json(const DockerContainerSpec *spec, json_object **ret);

/* name may be NULL (the engine picks one). The result's id is the new container. */
int docker_container_create(DockerClient *c, const char *name, json_object *spec,
                            DockerCallback cb, void *userdata, DockerCall **ret);
int docker_container_start(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret);
/* Answers once the container is not running (at once if it is not): result exit_code. */
int docker_container_wait(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret);
int docker_container_inspect(DockerClient *c, const char *id, DockerCallback cb, void *userdata, DockerCall **ret);
/* The same on a new connection: fails (no answer) when the engine is shutting down, which still answers
 * on the connections it has. */
int docker_container_inspect_fresh(DockerClient *c, const char *id, DockerCallback cb, void *userdata,
                                   DockerCall **ret);
/* SIGTERM (or the image's stop signal), SIGKILL after grace_sec. Answers when it has stopped. */
int docker_container_stop(DockerClient *c, const char *id, unsigned grace_sec,
                          DockerCallback cb, void *userdata, DockerCall **ret);
int docker_container_kill(DockerClient *c, const char *id, const char *signal,
                          DockerCallback cb, void *userdata, DockerCall **ret);
/* force: kill it first if it runs. Also removes its anonymous volumes. */
int docker_container_remove(DockerClient *c, const char *id, bool force,
                            DockerCallback cb, void *userdata, DockerCall **ret);
/* Containers (running or not) carrying every label given ("key=value" or "key"); result json is the
 * engine's array. */
int docker_container_list(DockerClient *c, const char *const *labels,
                          DockerCallback cb, void *userdata, DockerCall **ret);

/* Typed access to an inspect answer. */
const char *docker_inspect_state(json_object *inspect);        /* "created", "running", "exited", ... */
const char *docker_inspect_label(json_object *inspect, const char *key);
/* Field under HostConfig, e.g. "NanoCpus". */
int docker_inspect_host_config_int(json_object *inspect, const char *key, int64_t *ret);
/* From the list answer: a container's label. */
const char *docker_list_label(json_object *container, const char *key);
