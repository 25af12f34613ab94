/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <time.h>

#include "hex.h"
#include "json-util.h"
#include "random-util.h"
#include "task-spec.h"

#define CMD_MAX_ARGS 256
#define CMD_MAX_ARG_BYTES (64 * 1024)
#define CMD_MAX_TOTAL_BYTES (256 * 1024)
#define ENV_MAX_ENTRIES 128
#define ENV_MAX_VALUE_BYTES (32 * 1024)
#define ENV_MAX_TOTAL_BYTES (256 * 1024)
#define LABELS_MAX 64
#define LABEL_VALUE_MAX 256
#define INPUTS_MAX 64
#define INPUT_PATH_MAX 1024
#define INPUT_PATH_DEPTH_MAX 32
#define INPUT_NAME_MAX 255

void task_spec_done(TaskSpec *t) {
        json_object_put(t->spec);
        free(t->id);
        *t = (TaskSpec) {};
}

static int check_cmd(json_object *cmd, const char *field, CheckError *e) {
        size_t n, total = 0;

        if (!json_object_is_type(cmd, json_type_array))
                return check_fail(e, field, "Field \"%s\" must be an array of strings, e.g. [\"sh\", \"-c\", \"echo hi\"].", field);
        n = json_object_array_length(cmd);
        if (n == 0 || n > CMD_MAX_ARGS)
                return check_fail(e, field, "Field \"%s\" must have 1 to %d elements.", field, CMD_MAX_ARGS);
        for (size_t i = 0; i < n; i++) {
                json_object *a = json_object_array_get_idx(cmd, i);
                if (!json_object_is_type(a, json_type_string))
                        return check_fail(e, field, "Element %zu of \"%s\" must be a string.", i, field);
                if (!check_string_value(a, CMD_MAX_ARG_BYTES))
                        return check_fail(e, field, "Element %zu of \"%s\" is longer than %d bytes or contains NUL.",
                                          i, field, CMD_MAX_ARG_BYTES);
                total += (size_t) json_object_get_string_len(a);
        }
        if (total > CMD_MAX_TOTAL_BYTES)
                return check_fail(e, field, "Field \"%s\" is longer than %d bytes in all.", field, CMD_MAX_TOTAL_BYTES);
        if (json_object_get_string_len(json_object_array_get_idx(cmd, 0)) == 0)
                return check_fail(e, field, "The program (first element of \"%s\") must not be empty.", field);
        return 0;
}

static int check_env(json_object *env, CheckError *e) {
        size_t total = 0;

        if (!json_object_is_type(env, json_type_object))
                return check_fail(e, "env", "Field \"env\" must be an object of string values.");
        if (json_object_object_length(env) > ENV_MAX_ENTRIES)
                return check_fail(e, "env", "Field \"env\" has more than %d entries.", ENV_MAX_ENTRIES);
        json_object_object_foreach(env, k, v) {
                if (!valid_env_name(k))
                        return check_fail(e, "env", "Environment variable name \"%.64s\" is invalid ([A-Za-z_][A-Za-z0-9_]*).", k);
                if (!v || !json_object_is_type(v, json_type_string))
                        return check_fail(e, "env", "Environment variable \"%.64s\" must have a string value.", k);
                if (!check_string_value(v, ENV_MAX_VALUE_BYTES))
                        return check_fail(e, "env", "Environment variable \"%.64s\" is longer than %d bytes or contains NUL.",
                                          k, ENV_MAX_VALUE_BYTES);
                total += strlen(k) + (size_t) json_object_get_string_len(v);
        }
        if (total > ENV_MAX_TOTAL_BYTES)
                return check_fail(e, "env", "Field \"env\" is larger than %d bytes in all.", ENV_MAX_TOTAL_BYTES);
        return 0;
}

static int check_labels(json_object *labels, const char **ret_target, CheckError *e) {
        if (!json_object_is_type(labels, json_type_object))
                return check_fail(e, "labels", "Field \"labels\" must be an object of string values.");
        if (json_object_object_length(labels) > LABELS_MAX)
                return check_fail(e, "labels", "Field \"labels\" has more than %d entries.", LABELS_MAX);
        json_object_object_foreach(labels, k, v) {
                if (!valid_label_key(k))
                        return check_fail(e, "labels", "Label key \"%.64s\" is invalid ([A-Za-z0-9][A-Za-z0-9._/-]{0,62}).", k);
                if (!v || !json_object_is_type(v, json_type_string))
                        return check_fail(e, "labels", "Label \"%.64s\" must have a string value.", k);
                if (!check_string_value(v, LABEL_VALUE_MAX))
                        return check_fail(e, "labels", "Label \"%.64s\" is longer than %d bytes or contains NUL.",
                                          k, LABEL_VALUE_MAX);
                if (streq(k, "target_node")) {
                        if (!id_is_valid(json_object_get_string(v)))
                                return check_fail(e, "labels.target_node", "Label \"target_node\" is not a valid node id.");
                        *ret_target = json_object_get_string(v);
                }
        }
        return 0;
}

static int check_resources(json_object *res, int64_t *ret_cpus, int64_t *ret_memory, CheckError *e) {
        static const char *const allowed[] = { "nano_cpus", "memory_bytes", NULL };
        int64_t v;
        int r;

        if (!json_object_is_type(res, json_type_object))
                return check_fail(e, "resources", "Field \"resources\" must be an object.");
        r = check_known_keys(res, allowed, "resources.", e);
        if (r < 0)
                return r;
        r = check_int(res, "nano_cpus", false, TASK_MIN_NANO_CPUS, TASK_MAX_NANO_CPUS, &v, e);
        if (r == -EINVAL) {
                snprintf(e->field, sizeof(e->field), "resources.nano_cpus");
                return r;
        }
        if (r == 0)
                *ret_cpus = v;
        r = check_int(res, "memory_bytes", false, TASK_MIN_MEMORY_BYTES, TASK_MAX_MEMORY_BYTES, &v, e);
        if (r == -EINVAL) {
                snprintf(e->field, sizeof(e->field), "resources.memory_bytes");
                return r;
        }
        if (r == 0)
                *ret_memory = v;
        return 0;
}

/* Where an input may not be put: the kernel's file systems, which the container runtime mounts over
 * whatever is there (and a file under /dev or /proc is not data); the files Docker bind-mounts into
 * every container itself; and /run/mc, kept for what the agent mounts into a task of its own. An
 * input "onto or under" one of these is refused: /dev and /dev/shm/x alike. */
static const char *const input_reserved[] = {
        "/proc", "/sys", "/dev", "/run/mc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
};

/* Whether path is dir or inside it ("/data/x" is inside "/data", "/data2" is not). */
static bool path_is_under(const char *path, const char *dir) {
        const char *rest = startswith(path, dir);
        return rest && (*rest == 0 || *rest == '/');
}

/* Why path (len bytes, from a JSON string, which may hold NUL) cannot be an input's path, or NULL. An
 * input's path is where the file appears in the task's file system, so it must be one plain absolute
 * path: spelled one way only, so that comparing two paths as strings tells whether they overlap. */
static const char *input_path_problem(const char *path, size_t len) {
        size_t depth = 0;

        if (strlen(path) != len)
                return "contains a NUL byte";
        if (len > INPUT_PATH_MAX)
                return "is longer than " STRINGIFY(INPUT_PATH_MAX) " bytes";
        if (path[0] != '/')
                return "is not an absolute path";
        if (streq(path, "/"))
                return "is the root directory";
        if (path[len - 1] == '/')
                return "ends with '/' (an input is a file)";
        for (const char *p = path; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        return "contains a control character";
        for (const char *p = path + 1;; p++) {
                size_t n = strcspn(p, "/");

                if (n == 0)
                        return "has an empty component ('//')";
                if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                        return "has a '.' or '..' component";
                if (n > INPUT_NAME_MAX)
                        return "has a component longer than " STRINGIFY(INPUT_NAME_MAX) " bytes";
                if (++depth > INPUT_PATH_DEPTH_MAX)
                        return "has more than " STRINGIFY(INPUT_PATH_DEPTH_MAX) " components";
                p += n;
                if (*p == 0)
                        break;
        }
        for (size_t i = 0; i < ELEMENTSOF(input_reserved); i++)
                if (path_is_under(path, input_reserved[i]))
                        return "is on or under a path the system or the agent mounts itself "
                               "(/proc, /sys, /dev, /run/mc, /etc/hosts, /etc/hostname, /etc/resolv.conf)";
        return NULL;
}

static const char *input_path(json_object *in) {
        json_object *v;

        return json_object_object_get_ex(in, "path", &v) ? json_object_get_string(v) : NULL;
}

/* Errors name the element by its index, "inputs[2].path", as a client needs to find it. Whether each
 * content is registered is checked by the database in the push's transaction (mc_push()). */
static int check_inputs(json_object *inputs, CheckError *e) {
        static const char *const allowed[] = { "content", "path", NULL };
        size_t n;
        int r;

        if (!json_object_is_type(inputs, json_type_array))
                return check_fail(e, "inputs", "Field \"inputs\" must be an array of {\"content\", \"path\"}.");
        n = json_object_array_length(inputs);
        if (n > INPUTS_MAX)
                return check_fail(e, "inputs", "Field \"inputs\" has more than %d entries.", INPUTS_MAX);
        for (size_t i = 0; i < n; i++) {
                json_object *in = json_object_array_get_idx(inputs, i), *v;
                char prefix[32], field[48];
                const char *path, *why;

                snprintf(prefix, sizeof(prefix), "inputs[%zu]", i);
                if (!json_object_is_type(in, json_type_object))
                        return check_fail(e, prefix, "%s must be an object {\"content\", \"path\"}.", prefix);
                snprintf(prefix, sizeof(prefix), "inputs[%zu].", i);
                r = check_known_keys(in, allowed, prefix, e);
                if (r < 0)
                        return r;

                snprintf(field, sizeof(field), "inputs[%zu].content", i);
                if (!json_object_object_get_ex(in, "content", &v) || !v)
                        return check_fail(e, field, "%s is required.", field);
                if (!json_object_is_type(v, json_type_string) || !check_string_value(v, 64) ||
                    !valid_content_id(json_object_get_string(v)))
                        return check_fail(e, field, "%s must be a content id (64 lowercase hex digits).", field);

                snprintf(field, sizeof(field), "inputs[%zu].path", i);
                if (!json_object_object_get_ex(in, "path", &v) || !v)
                        return check_fail(e, field, "%s is required.", field);
                if (!json_object_is_type(v, json_type_string))
                        return check_fail(e, field, "%s must be a string.", field);
                path = json_object_get_string(v);
                why = input_path_problem(path, (size_t) json_object_get_string_len(v));
                if (why)
                        return check_fail(e, field, "%s %s.", field, why);

                /* Two inputs at one path would shadow each other, and one inside another would put a file
                 * where the other needs a directory. Paths are normalised, so prefixes tell. */
                for (size_t j = 0; j < i; j++) {
                        const char *other = input_path(json_object_array_get_idx(inputs, j));

                        if (streq(other, path))
                                return check_fail(e, field, "%s is the path of inputs[%zu] too.", field, j);
                        if (path_is_under(path, other) || path_is_under(other, path))
                                return check_fail(e, field, "%s and inputs[%zu].path overlap: one is inside the other.",
                                                  field, j);
                }
        }
        return 0;
}

int task_spec_from_json(json_object *o, TaskSpec *ret, CheckError *e) {
        static const char *const allowed[] = {
                "id", "image", "cmd", "command", "env", "timeout_sec", "labels", "resources",
                "inputs", "max_attempts", "runtime", NULL,
        };
        _cleanup_json_ json_object *spec = NULL;
        _cleanup_free_ char *id = NULL;
        TaskSpec t = { .max_attempts = TASK_MAX_ATTEMPTS_DEFAULT };
        json_object *cmd = NULL, *command = NULL, *v;
        const char *s, *target = NULL;
        int64_t timeout = TASK_TIMEOUT_DEFAULT_SEC;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return check_fail(e, NULL, "A task must be a JSON object.");
        r = check_known_keys(o, allowed, NULL, e);
        if (r < 0)
                return r;

        spec = json_object_new_object();
        if (!spec)
                return -ENOMEM;

        r = check_string(o, "id", false, 128, id_is_valid, "task id ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", &s, e);
        if (r == -EINVAL)
                return r;
        if (r == 0) {
                id = strdup(s);
                if (!id)
                        return -ENOMEM;
        }

        r = check_string(o, "image", true, 255, valid_image, "image reference", &s, e);
        if (r < 0)
                return r;
        json_object_object_add(spec, "image", json_object_new_string(s));

        json_object_object_get_ex(o, "cmd", &cmd);
        json_object_object_get_ex(o, "command", &command);
        if (cmd && command)
                return check_fail(e, "command", "Give \"cmd\" or \"command\", not both.");
        if (!cmd && !command)
                return check_fail(e, "cmd", "Field \"cmd\" is required.");
        r = check_cmd(cmd ?: command, cmd ? "cmd" : "command", e);
        if (r < 0)
                return r;
        json_object_object_add(spec, "cmd", json_object_get(cmd ?: command));

        if (json_object_object_get_ex(o, "env", &v) && v) {
                r = check_env(v, e);
                if (r < 0)
                        return r;
                json_object_object_add(spec, "env", json_object_get(v));
        } else
                json_object_object_add(spec, "env", json_object_new_object());

        r = check_int(o, "timeout_sec", false, 1, TASK_TIMEOUT_MAX_SEC, &timeout, e);
        if (r == -EINVAL)
                return r;
        json_object_object_add(spec, "timeout_sec", json_object_new_int64(timeout));

        if (json_object_object_get_ex(o, "labels", &v) && v) {
                r = check_labels(v, &target, e);
                if (r < 0)
                        return r;
                json_object_object_add(spec, "labels", json_object_get(v));
        } else
                json_object_object_add(spec, "labels", json_object_new_object());

        if (json_object_object_get_ex(o, "resources", &v) && v) {
                r = check_resources(v, &t.nano_cpus, &t.memory_bytes, e);
                if (r < 0)
                        return r;
                json_object_object_add(spec, "resources", json_object_get(v));
        } else
                json_object_object_add(spec, "resources", json_object_new_object());

        if (json_object_object_get_ex(o, "inputs", &v) && v) {
                r = check_inputs(v, e);
                if (r < 0)
                        return r;
                json_object_object_add(spec, "inputs", json_object_get(v));
        } else
                json_object_object_add(spec, "inputs", json_object_new_array());

        r = check_int(o, "max_attempts", false, 1, TASK_MAX_ATTEMPTS_MAX, &t.max_attempts, e);
        if (r == -EINVAL)
                return r;
        json_object_object_add(spec, "max_attempts", json_object_new_int64(t.max_attempts));

        r = check_string(o, "runtime", false, 64, valid_runtime, "runtime name", &s, e);
        if (r == -EINVAL)
                return r;
        if (r == 0)
                json_object_object_add(spec, "runtime", json_object_new_string(s));

        /* target_node points into the labels object, which spec now references. */
        t.target_node = target;
        t.spec = TAKE_PTR(spec);
        t.id = TAKE_PTR(id);
        *ret = t;
        return 0;
}

int task_spec_parse(const char *body, size_t size, TaskSpec *ret, CheckError *e) {
        _cleanup_json_ json_object *o = NULL;
        int r;

        r = check_parse_object(body, size, &o, e);
        if (r < 0)
                return r;
        return task_spec_from_json(o, ret, e);
}

json_object *task_spec_to_push_row(const TaskSpec *t, const char *id) {
        json_object *row = json_object_new_object(), *labels = NULL;

        if (!row)
                return NULL;
        json_object_object_get_ex(t->spec, "labels", &labels);
        if (json_add_string(row, "id", id) < 0 ||
            json_add(row, "spec", json_object_get(t->spec)) < 0 ||
            json_add_string(row, "target_node", t->target_node) < 0 ||
            json_add_int64(row, "nano_cpus", t->nano_cpus) < 0 ||
            json_add_int64(row, "memory_bytes", t->memory_bytes) < 0 ||
            json_add(row, "labels", labels ? json_object_get(labels) : json_object_new_object()) < 0 ||
            json_add_int64(row, "max_attempts", t->max_attempts) < 0) {
                json_object_put(row);
                return NULL;
        }
        return row;
}

int task_id_generate(char ret[static 33]) {
        uint8_t b[16];
        struct timespec ts;
        uint64_t ms;

        random_bytes(b + 6, sizeof(b) - 6);
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
        for (int i = 0; i < 6; i++)
                b[i] = (uint8_t) (ms >> (40 - 8 * i));
        b[6] = (uint8_t) (0x70 | (b[6] & 0x0f)); /* version 7 */
        b[8] = (uint8_t) (0x80 | (b[8] & 0x3f)); /* variant */
        hex_encode(b, sizeof(b), ret);
        return 0;
}
