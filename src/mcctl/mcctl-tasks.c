/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Tasks: push, run, get, list, cancel, watch, logs. */

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "id-util.h"
#include "json-util.h"
#include "mcctl-table.h"
#include "mcctl.h"
#include "strv.h"
#include "task-status.h"

#define TASK_FILE_MAX (1024 * 1024)     /* the control's limit of one task */

/* ---------------------------------------------------------------------------------------------- */
/* Helpers */


static int read_task_file(const char *path, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        FILE *f = streq(path, "-") ? stdin : fopen(path, "re");
        size_t n;

        if (!f) {
                fprintf(stderr, "mcctl push: cannot open %s: %s\n", path, strerror(errno));
                return MCCTL_EXIT_ERROR;
        }
        buf = malloc(TASK_FILE_MAX + 2);
        if (!buf) {
                if (f != stdin)
                        fclose(f);
                return MCCTL_EXIT_ERROR;
        }
        n = fread(buf, 1, TASK_FILE_MAX + 1, f);
        if (ferror(f)) {
                fprintf(stderr, "mcctl push: cannot read %s: %s\n", path, strerror(errno));
                if (f != stdin)
                        fclose(f);
                return MCCTL_EXIT_ERROR;
        }
        if (f != stdin)
                fclose(f);
        if (n > TASK_FILE_MAX) {
                fprintf(stderr, "mcctl push: %s is larger than a task may be (1 MiB).\n", path);
                return MCCTL_EXIT_ERROR;
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static const char *record_string(json_object *o, const char *key) {
        const char *s = NULL;
        (void) json_get_string(o, key, &s);
        return s;
}

static const char *lease_node(json_object *record) {
        json_object *lease;

        if (!json_object_object_get_ex(record, "lease", &lease) || !json_object_is_type(lease, json_type_object))
                return NULL;
        return record_string(lease, "node_id");
}

/* Pushes body; prints the id; follows it when wait. */
static int push(Mcctl *m, json_object *body, bool wait) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        const char *id;
        int r;

        r = mcctl_call(m, "POST", "/api/tasks", body, 0, &a);
        if (r != 0)
                return r;
        if ((a.code != 201 && a.code != 200) || !a.json || !(id = record_string(a.json, "id")))
                return mcctl_answer_failed(&a, "push refused");
        printf("%s\n", id);
        fflush(stdout);
        return wait ? mcctl_follow_task(m, id) : 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* push, run */

int cmd_push(Mcctl *m, int argc, char *argv[]) {
        static const struct option longopts[] = {
                { "file", required_argument, NULL, 'f' },
                { "wait", no_argument, NULL, 'w' },
                {}
        };
        _cleanup_json_ json_object *body = NULL;
        _cleanup_free_ char *text = NULL;
        const char *file = NULL, *error = NULL;
        bool wait = false;
        size_t size;
        int c, r;

        while ((c = getopt_long(argc, argv, "f:w", longopts, NULL)) >= 0)
                switch (c) {
                case 'f': file = optarg; break;
                case 'w': wait = true; break;
                default: return MCCTL_EXIT_USAGE;
                }
        if (!file && optind < argc)
                file = argv[optind++];
        if (!file)
                return mcctl_usage_error(argv[0], "which task? give -f FILE (- for standard input)");
        if (optind < argc)
                return mcctl_usage_error(argv[0], "one task file only");
        r = read_task_file(file, &text, &size);
        if (r != 0)
                return r;
        if (json_parse_strict(text, size, &body, &error) < 0 || !json_object_is_type(body, json_type_object)) {
                fprintf(stderr, "mcctl push: %s is not a JSON object: %s\n", file, error ?: "not an object");
                return MCCTL_EXIT_ERROR;
        }
        return push(m, body, wait);
}

/* "KEY=VALUE" into o[KEY] = VALUE. */
static int add_pair(json_object *o, const char *command, const char *flag, const char *arg) {
        const char *eq = strchr(arg, '=');
        _cleanup_free_ char *key = NULL;

        if (!eq || eq == arg) {
                fprintf(stderr, "mcctl %s: --%s wants KEY=VALUE, not \"%s\".\n", command, flag, arg);
                return MCCTL_EXIT_USAGE;
        }
        key = strndup(arg, eq - arg);
        if (!key || json_add_string(o, key, eq + 1) < 0)
                return MCCTL_EXIT_ERROR;
        return 0;
}

static int add_input(json_object *inputs, const char *arg) {
        const char *colon = strchr(arg, ':');
        _cleanup_json_ json_object *i = json_object_new_object();
        _cleanup_free_ char *content = NULL;

        if (!colon || colon == arg || colon[1] != '/') {
                fprintf(stderr, "mcctl run: --input wants CONTENT-ID:/ABSOLUTE/PATH, not \"%s\".\n", arg);
                return MCCTL_EXIT_USAGE;
        }
        content = strndup(arg, colon - arg);
        if (!i || !content || json_add_string(i, "content", content) < 0 || json_add_string(i, "path", colon + 1) < 0)
                return MCCTL_EXIT_ERROR;
        json_object_array_add(inputs, TAKE_PTR(i));
        return 0;
}

int cmd_run(Mcctl *m, int argc, char *argv[]) {
        enum { ARG_ID = 0x100, ARG_MAX_ATTEMPTS, ARG_RUNTIME };
        static const struct option longopts[] = {
                { "image", required_argument, NULL, 'i' },
                { "node", required_argument, NULL, 'n' },
                { "cpus", required_argument, NULL, 'c' },
                { "memory", required_argument, NULL, 'm' },
                { "timeout", required_argument, NULL, 't' },
                { "input", required_argument, NULL, 'I' },
                { "env", required_argument, NULL, 'e' },
                { "label", required_argument, NULL, 'l' },
                { "id", required_argument, NULL, ARG_ID },
                { "max-attempts", required_argument, NULL, ARG_MAX_ATTEMPTS },
                { "runtime", required_argument, NULL, ARG_RUNTIME },
                { "wait", no_argument, NULL, 'w' },
                {}
        };
        _cleanup_json_ json_object *body = json_object_new_object(), *env = json_object_new_object(),
                                   *labels = json_object_new_object(), *resources = json_object_new_object(),
                                   *inputs = json_object_new_array(), *cmd = json_object_new_array();
        const char *image = NULL;
        bool wait = false;
        int64_t v;
        int c, r;

        if (!body || !env || !labels || !resources || !inputs || !cmd)
                return MCCTL_EXIT_ERROR;
        /* "+": the command's own options (after IMAGE's flags) are not ours. */
        while ((c = getopt_long(argc, argv, "+i:n:c:m:t:I:e:l:w", longopts, NULL)) >= 0) {
                r = 0;
                switch (c) {
                case 'i': image = optarg; break;
                case 'n':
                        if (!id_is_valid(optarg))
                                return mcctl_usage_error(argv[0], "--node wants a node id");
                        r = json_add_string(labels, "target_node", optarg) < 0 ? MCCTL_EXIT_ERROR : 0;
                        break;
                case 'c':
                        if (parse_cpus(optarg, &v) < 0)
                                return mcctl_usage_error(argv[0], "--cpus wants a positive number of CPUs, e.g. 0.5");
                        r = json_add_int64(resources, "nano_cpus", v) < 0 ? MCCTL_EXIT_ERROR : 0;
                        break;
                case 'm':
                        if (parse_bytes(optarg, &v) < 0)
                                return mcctl_usage_error(argv[0], "--memory wants a size, e.g. 256M or 1G");
                        r = json_add_int64(resources, "memory_bytes", v) < 0 ? MCCTL_EXIT_ERROR : 0;
                        break;
                case 't':
                        if (parse_bytes(optarg, &v) < 0 || strpbrk(optarg, "KkMmGgTt"))
                                return mcctl_usage_error(argv[0], "--timeout wants whole seconds");
                        r = json_add_int64(body, "timeout_sec", v) < 0 ? MCCTL_EXIT_ERROR : 0;
                        break;
                case 'I': r = add_input(inputs, optarg); break;
                case 'e': r = add_pair(env, argv[0], "env", optarg); break;
                case 'l': r = add_pair(labels, argv[0], "label", optarg); break;
                case ARG_ID: r = json_add_string(body, "id", optarg) < 0 ? MCCTL_EXIT_ERROR : 0; break;
                case ARG_MAX_ATTEMPTS:
                        if (parse_bytes(optarg, &v) < 0 || strpbrk(optarg, "KkMmGgTt"))
                                return mcctl_usage_error(argv[0], "--max-attempts wants a number");
                        r = json_add_int64(body, "max_attempts", v) < 0 ? MCCTL_EXIT_ERROR : 0;
                        break;
                case ARG_RUNTIME: r = json_add_string(body, "runtime", optarg) < 0 ? MCCTL_EXIT_ERROR : 0; break;
                case 'w': wait = true; break;
                default: return MCCTL_EXIT_USAGE;
                }
                if (r != 0)
                        return r;
        }
        if (!image)
                return mcctl_usage_error(argv[0], "--image is required");
        if (optind >= argc)
                return mcctl_usage_error(argv[0], "no command given: put it after the options (and a --)");
        for (int i = optind; i < argc; i++)
                json_object_array_add(cmd, json_object_new_string(argv[i]));
        if (json_add_string(body, "image", image) < 0 || json_add(body, "cmd", TAKE_PTR(cmd)) < 0)
                return MCCTL_EXIT_ERROR;
        if (json_object_object_length(env) > 0 && json_add(body, "env", TAKE_PTR(env)) < 0)
                return MCCTL_EXIT_ERROR;
        if (json_object_object_length(labels) > 0 && json_add(body, "labels", TAKE_PTR(labels)) < 0)
                return MCCTL_EXIT_ERROR;
        if (json_object_object_length(resources) > 0 && json_add(body, "resources", TAKE_PTR(resources)) < 0)
                return MCCTL_EXIT_ERROR;
        if (json_object_array_length(inputs) > 0 && json_add(body, "inputs", TAKE_PTR(inputs)) < 0)
                return MCCTL_EXIT_ERROR;
        return push(m, body, wait);
}

/* ---------------------------------------------------------------------------------------------- */
/* get, list, cancel */

static int get_task(Mcctl *m, const char *id, McctlAnswer *a) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (asprintf(&path, "/api/tasks/%s", id) < 0)
                return MCCTL_EXIT_ERROR;
        r = mcctl_call(m, "GET", path, NULL, 0, a);
        if (r != 0)
                return r;
        if (a->code != 200 || !a->json)
                return mcctl_answer_failed(a, a->code == 404 ? "no such task" : "cannot get the task");
        return 0;
}

static void print_json(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void print_task(json_object *t) {
        json_object *result = NULL, *v;
        int64_t attempt = 0;

        (void) json_get_int64(t, "attempt", &attempt);
        printf("id:        %s\nstatus:    %s\nimage:     %s\n", strna(record_string(t, "id")),
               strna(record_string(t, "status")), strna(record_string(t, "image")));
        if (json_object_object_get_ex(t, "cmd", &v))
                printf("cmd:       %s\n", json_object_to_json_string_ext(v, JSON_C_TO_STRING_NOSLASHESCAPE));
        printf("attempt:   %" PRIi64 "\n", attempt);
        if (lease_node(t))
                printf("node:      %s\n", lease_node(t));
        if (record_string(t, "pending_reason"))
                printf("pending:   %s\n", record_string(t, "pending_reason"));
        printf("created:   %s\n", strna(record_string(t, "created_at")));
        if (record_string(t, "finished_at"))
                printf("finished:  %s\n", record_string(t, "finished_at"));
        if (json_object_object_get_ex(t, "result", &result) && json_object_is_type(result, json_type_object)) {
                int64_t code;
                if (json_get_int64(result, "exit_code", &code) >= 0)
                        printf("exit code: %" PRIi64 "\n", code);
                if (record_string(result, "reason"))
                        printf("reason:    %s\n", record_string(result, "reason"));
        }
}

int cmd_get(Mcctl *m, int argc, char *argv[]) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        const char *id;
        bool json;
        int r;

        r = mcctl_output_option(argc, argv, &json);
        if (r != 0)
                return r;
        r = mcctl_id_argument(argc, argv, "task", &id);
        if (r != 0)
                return r;
        r = get_task(m, id, &a);
        if (r != 0)
                return r;
        if (json)
                print_json(a.json);
        else
                print_task(a.json);
        return 0;
}

static int add_task_row(Table *t, json_object *task) {
        char attempt[32];
        int64_t n = 0;

        (void) json_get_int64(task, "attempt", &n);
        snprintf(attempt, sizeof(attempt), "%" PRIi64, n);
        return table_add(t, (const char *[]) { record_string(task, "id"), record_string(task, "status"),
                                               lease_node(task), attempt, record_string(task, "image"),
                                               record_string(task, "created_at") });
}

int cmd_list(Mcctl *m, int argc, char *argv[]) {
        static const struct option longopts[] = {
                { "status", required_argument, NULL, 's' },
                { "label", required_argument, NULL, 'l' },
                { "limit", required_argument, NULL, 'n' },
                { "all", no_argument, NULL, 'a' },
                { "output", required_argument, NULL, 'o' },
                {}
        };
        _cleanup_(table_freep) Table *table = NULL;
        _cleanup_json_ json_object *all = json_object_new_array();
        _cleanup_free_ char *query = NULL, *cursor = NULL;
        bool every_page = false, json = false;
        int64_t limit = 100;
        int c, r = 0;

        if (!all)
                return MCCTL_EXIT_ERROR;
        while ((c = getopt_long(argc, argv, "s:l:n:ao:", longopts, NULL)) >= 0) {
                char *e, *q;
                switch (c) {
                case 's':
                        if (task_status_from_string(optarg) < 0)
                                return mcctl_usage_error(argv[0], "--status wants queued, leased, running, succeeded, failed, timed_out or cancelled");
                        /* fall through */
                case 'l':
                        e = curl_easy_escape(NULL, optarg, 0);
                        if (!e || asprintf(&q, "%s&%s=%s", strempty(query), c == 's' ? "status" : "label", e) < 0) {
                                curl_free(e);
                                return MCCTL_EXIT_ERROR;
                        }
                        curl_free(e);
                        free(query);
                        query = q;
                        break;
                case 'n':
                        if (parse_bytes(optarg, &limit) < 0 || limit < 1 || limit > 1000 || strpbrk(optarg, "KkMmGgTt"))
                                return mcctl_usage_error(argv[0], "--limit wants 1..1000");
                        break;
                case 'a': every_page = true; break;
                case 'o':
                        r = mcctl_parse_output(argv[0], optarg, &json);
                        if (r != 0)
                                return r;
                        break;
                default: return MCCTL_EXIT_USAGE;
                }
        }
        if (optind < argc)
                return mcctl_usage_error(argv[0], "unexpected argument");
        table = table_new((const char *[]) { "ID", "STATUS", "NODE", "ATTEMPT", "IMAGE", "CREATED" }, 6);
        if (!table)
                return MCCTL_EXIT_ERROR;

        do {
                _cleanup_(mcctl_answer_done) McctlAnswer a = {};
                _cleanup_free_ char *path = NULL;
                json_object *tasks;
                const char *next = NULL;

                if (asprintf(&path, "/api/tasks?limit=%" PRIi64 "%s%s%s", limit, strempty(query),
                             cursor ? "&after=" : "", strempty(cursor)) < 0)
                        return MCCTL_EXIT_ERROR;
                r = mcctl_call(m, "GET", path, NULL, 0, &a);
                if (r != 0)
                        return r;
                if (a.code != 200 || !a.json || !json_object_object_get_ex(a.json, "tasks", &tasks) ||
                    !json_object_is_type(tasks, json_type_array))
                        return mcctl_answer_failed(&a, "cannot list tasks");
                for (size_t i = 0; i < json_object_array_length(tasks); i++) {
                        json_object *t = json_object_array_get_idx(tasks, i);
                        if (json)
                                json_object_array_add(all, json_object_get(t));
                        else if (add_task_row(table, t) < 0)
                                return MCCTL_EXIT_ERROR;
                }
                (void) json_get_string(a.json, "next", &next);
                free(cursor);
                cursor = next ? strdup(next) : NULL;
        } while (every_page && cursor);

        if (json)
                print_json(all);
        else
                table_print(table);
        return 0;
}

int cmd_cancel(Mcctl *m, int argc, char *argv[]) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        _cleanup_free_ char *path = NULL;
        const char *id;
        int r;

        r = mcctl_only_id(argc, argv, "task", &id);
        if (r != 0)
                return r;
        if (asprintf(&path, "/api/tasks/%s/cancel", id) < 0)
                return MCCTL_EXIT_ERROR;
        r = mcctl_call(m, "POST", path, NULL, 0, &a);
        if (r != 0)
                return r;
        if (a.code != 200 || !a.json)
                return mcctl_answer_failed(&a, a.code == 404 ? "no such task" :
                                               a.code == 409 ? "cannot cancel it, it has ended" : "cancel refused");
        printf("%s %s\n", id, strna(record_string(a.json, "status")));
        return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* watch, logs */

static bool status_final(const char *s) {
        TaskStatus st = s ? task_status_from_string(s) : _TASK_STATUS_INVALID;
        return st >= 0 && task_status_is_final(st);
}

/* The exit status that stands for a task that ended: its exit code, or 1 when it has none. */
static int task_exit_status(json_object *t) {
        json_object *result;
        int64_t code;

        if (json_object_object_get_ex(t, "result", &result) && json_get_int64(result, "exit_code", &code) >= 0)
                return (int) (code & 0xff);
        return streq_ptr(record_string(t, "status"), "succeeded") ? 0 : MCCTL_EXIT_ERROR;
}

static void say_transition(json_object *t) {
        json_object *result;
        const char *status = record_string(t, "status"), *reason = NULL;
        int64_t attempt = 0, code;

        (void) json_get_int64(t, "attempt", &attempt);
        fprintf(stderr, "%s: %s", strna(record_string(t, "id")), strna(status));
        if (lease_node(t))
                fprintf(stderr, " on %s (attempt %" PRIi64 ")", lease_node(t), attempt);
        else if (record_string(t, "pending_reason"))
                fprintf(stderr, " (%s)", record_string(t, "pending_reason"));
        if (json_object_object_get_ex(t, "result", &result) && json_object_is_type(result, json_type_object)) {
                if (json_get_int64(result, "exit_code", &code) >= 0)
                        fprintf(stderr, ", exit code %" PRIi64, code);
                if (json_get_string(result, "reason", &reason) >= 0)
                        fprintf(stderr, ": %s", reason);
        }
        fputc('\n', stderr);
}

/* Long polls of the record (?wait), each answered when the task changed from the version we saw, or at
 * the deadline: no polling loop, and a change on any replica counts. */
#define WATCH_WAIT_SEC 60

int mcctl_follow_task(Mcctl *m, const char *id) {
        _cleanup_free_ char *seen = NULL, *since = NULL;

        for (;;) {
                _cleanup_(mcctl_answer_done) McctlAnswer a = {};
                _cleanup_free_ char *now = NULL, *path = NULL;
                const char *status, *updated;
                int r;

                if (since) {
                        char *e = curl_easy_escape(NULL, since, 0);
                        if (!e)
                                return MCCTL_EXIT_ERROR;
                        r = asprintf(&path, "/api/tasks/%s?wait=%d&since=%s", id, WATCH_WAIT_SEC, e);
                        curl_free(e);
                } else
                        r = asprintf(&path, "/api/tasks/%s", id);
                if (r < 0)
                        return MCCTL_EXIT_ERROR;
                r = mcctl_call(m, "GET", path, NULL, (WATCH_WAIT_SEC + 30) * USEC_PER_SEC, &a);
                if (r != 0)
                        return r;
                if (a.code != 200 || !a.json)
                        return mcctl_answer_failed(&a, a.code == 404 ? "no such task" : "cannot get the task");
                status = record_string(a.json, "status");
                if (asprintf(&now, "%s %s %s", strna(status), strna(lease_node(a.json)),
                             strna(record_string(a.json, "pending_reason"))) < 0)
                        return MCCTL_EXIT_ERROR;
                if (!streq_ptr(now, seen)) {
                        say_transition(a.json);
                        free(seen);
                        seen = TAKE_PTR(now);
                }
                if (status_final(status))
                        return task_exit_status(a.json);
                updated = record_string(a.json, "updated_at");
                if (!updated) {
                        fprintf(stderr, "mcctl: the control's task record has no updated_at.\n");
                        return MCCTL_EXIT_ERROR;
                }
                free(since);
                since = strdup(updated);
                if (!since)
                        return MCCTL_EXIT_ERROR;
        }
}

int cmd_watch(Mcctl *m, int argc, char *argv[]) {
        const char *id;
        int r;

        r = mcctl_only_id(argc, argv, "task", &id);
        if (r != 0)
                return r;
        return mcctl_follow_task(m, id);
}

static int on_output(CurlRequest *req, const void *data, size_t size, void *userdata) {
        if (fwrite(data, 1, size, stdout) != size || fflush(stdout) != 0)
                return -errno;          /* a closed pipe (| head): stop */
        return 0;
}

int cmd_logs(Mcctl *m, int argc, char *argv[]) {
        _cleanup_(mcctl_answer_done) McctlAnswer a = {};
        _cleanup_free_ char *path = NULL;
        const char *id;
        bool follow = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "f", (const struct option[]) {
                                { "follow", no_argument, NULL, 'f' }, {} }, NULL)) >= 0)
                if (c == 'f')
                        follow = true;
                else
                        return MCCTL_EXIT_USAGE;
        r = mcctl_id_argument(argc, argv, "task", &id);
        if (r != 0)
                return r;
        /* The output so far (while it runs) or all of it; with follow=1 streamed until the task ends. */
        if (asprintf(&path, "/api/tasks/%s/logs%s", id, follow ? "?follow=1" : "") < 0)
                return MCCTL_EXIT_ERROR;
        r = mcctl_stream(m, path, on_output, NULL, &a);
        if (r != 0)
                return r;
        if (a.code != 200)
                return mcctl_answer_failed(&a, a.code == 404 ? "no such task" : "cannot get the output");
        return 0;
}
