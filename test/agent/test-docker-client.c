/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The Docker Engine API client against the real dockerd (tools/ensure-docker starts it, with the
 * image mc-test/busybox:latest and the second runtime name mc-runc2): the whole container life
 * cycle, limits and runtime as the engine records them, log demultiplexing, stop and kill, listing
 * by label, the event stream, and the errors a task can meet (no image, failed pull, unknown
 * runtime).
 *
 * Usage: test-docker-client ENSURE-DOCKER-SCRIPT */

#include <sys/wait.h>

#include "agent-test.h"
#include "docker-container.h"
#include "docker-events.h"
#include "docker-image.h"
#include "docker-logs.h"
#include "json-util.h"
#include "log.h"

#define IMAGE "mc-test/busybox:latest"

static sd_event *event;
static CurlEvent *curl;
static DockerClient *docker;
static char label[64];          /* mc.test=<unique>, on everything this run creates */

typedef struct Res {
        bool done;
        int error;
        long code;
        char *message;
        char *id;
        int64_t exit_code;
        bool not_modified;
        json_object *json;
} Res;

static void res_clear(Res *r) {
        free(r->message);
        free(r->id);
        json_object_put(r->json);
        *r = (Res) {};
}

static void on_result(const DockerResult *result, void *userdata) {
        Res *r = userdata;

        ASSERT(!r->done);
        r->done = true;
        r->error = result->error;
        r->code = result->code;
        r->message = result->message ? strdup(result->message) : NULL;
        r->id = result->id ? strdup(result->id) : NULL;
        r->exit_code = result->exit_code;
        r->not_modified = result->not_modified;
        r->json = result->json ? json_object_get(result->json) : NULL;
}

static void wait_for(Res *r) {
        uint64_t deadline = now_usec() + 120 * USEC_PER_SEC;

        while (!r->done) {
                ASSERT(now_usec() < deadline);
                ASSERT(sd_event_run(event, 100 * USEC_PER_MSEC) >= 0);
        }
}

static const char *const *test_labels(void) {
        static const char *l[2];
        l[0] = label;
        l[1] = NULL;
        return l;
}

static char *create(const char *const *cmd, int64_t nano_cpus, int64_t memory, const char *runtime) {
        _cleanup_json_ json_object *spec = NULL;
        const char *eq = strchr(label, '=');
        _cleanup_free_ char *key = strndup(label, (size_t) (eq - label));
        Res r = {};
        char *id;

        ASSERT(docker_container_spec_to_json(&(DockerContainerSpec) {
                        .image = IMAGE,
                        .cmd = (char *const *) cmd,
                        .labels = (const char *[]) { key, eq + 1, "mc.task_id", "t1", NULL },
                        .nano_cpus = nano_cpus,
                        .memory_bytes = memory,
                        .runtime = runtime,
                }, &spec) >= 0);
        ASSERT(docker_container_create(docker, NULL, spec, on_result, &r, NULL) >= 0);
        wait_for(&r);
        if (r.error < 0)
                fprintf(stderr, "create: %s\n", r.message);
        ASSERT(r.error == 0 && r.code == 201 && r.id);
        id = TAKE_PTR(r.id);
        res_clear(&r);
        return id;
}

static void remove_container(const char *id) {
        Res r = {};

        ASSERT(docker_container_remove(docker, id, true, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0);
        res_clear(&r);

        ASSERT(docker_container_inspect(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -ENOENT && r.code == 404);
        res_clear(&r);
}

static void test_lifecycle(void) {
        _cleanup_free_ char *id = NULL, *out = NULL, *o = NULL, *e = NULL;
        OutputCapture cap;
        Res r = {};
        int64_t v;

        id = create((const char *[]) { "sh", "-c", "echo out; echo err >&2; echo more; exit 3", NULL },
                    500000000, 64 * 1024 * 1024, "mc-runc2");

        /* What the engine recorded is what we asked for. */
        ASSERT(docker_container_inspect(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && r.json);
        ASSERT(streq(docker_inspect_state(r.json), "created"));
        ASSERT(docker_inspect_host_config_int(r.json, "NanoCpus", &v) >= 0 && v == 500000000);
        ASSERT(docker_inspect_host_config_int(r.json, "Memory", &v) >= 0 && v == 64 * 1024 * 1024);
        {
                json_object *host;
                const char *rt;
                ASSERT(json_object_object_get_ex(r.json, "HostConfig", &host));
                ASSERT(json_get_string(host, "Runtime", &rt) >= 0 && streq(rt, "mc-runc2"));
        }
        ASSERT(streq_ptr(docker_inspect_label(r.json, "mc.task_id"), "t1"));
        res_clear(&r);

        ASSERT(docker_container_start(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && r.code == 204);
        res_clear(&r);

        ASSERT(docker_container_wait(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && r.exit_code == 3);
        res_clear(&r);

        /* Starting it again is "not modified"... no: an exited container starts again. Inspect instead. */
        ASSERT(docker_container_inspect(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(streq(docker_inspect_state(r.json), "exited"));
        res_clear(&r);

        ASSERT(output_capture_init(&cap, 1024, 100) >= 0);
        ASSERT(docker_container_logs(docker, id, false, &cap, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0);
        out = output_capture_output(&cap);
        o = output_capture_tail(&cap, OUTPUT_STDOUT);
        e = output_capture_tail(&cap, OUTPUT_STDERR);
        ASSERT(streq(o, "out\nmore\n"));
        ASSERT(streq(e, "err\n"));
        ASSERT(strlen(out) == strlen("out\nerr\nmore\n"));
        ASSERT(!cap.truncated);
        output_capture_done(&cap);
        res_clear(&r);

        remove_container(id);
}

static void test_big_output(void) {
        _cleanup_free_ char *id = NULL, *o = NULL;
        OutputCapture cap;
        Res r = {};

        /* 20000 lines of "line N" (about 200 KB), cap 64 KiB. */
        id = create((const char *[]) { "sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done", NULL },
                    0, 0, NULL);
        ASSERT(docker_container_start(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        res_clear(&r);
        ASSERT(docker_container_wait(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.exit_code == 0);
        res_clear(&r);

        ASSERT(output_capture_init(&cap, 64 * 1024, 24) >= 0);
        ASSERT(docker_container_logs(docker, id, false, &cap, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0);
        ASSERT(cap.truncated && cap.output_size == 64 * 1024);
        ASSERT(strncmp(cap.output, "line 0\nline 1\n", 14) == 0);
        o = output_capture_tail(&cap, OUTPUT_STDOUT);
        ASSERT(streq(o, "line 19998\nline 19999\n") || strstr(o, "line 19999\n"));
        output_capture_done(&cap);
        res_clear(&r);
        remove_container(id);
}

static void test_stop_and_kill(void) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        Res r = {}, w = {};
        uint64_t t;

        /* sh as PID 1 ignores SIGTERM: stop has to escalate to SIGKILL after the grace. */
        a = create((const char *[]) { "sleep", "1000", NULL }, 0, 0, NULL);
        ASSERT(docker_container_start(docker, a, on_result, &r, NULL) >= 0);
        wait_for(&r);
        res_clear(&r);
        ASSERT(docker_container_wait(docker, a, on_result, &w, NULL) >= 0);
        t = now_usec();
        ASSERT(docker_container_stop(docker, a, 1, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0);
        ASSERT(now_usec() - t >= 900 * USEC_PER_MSEC);  /* it did wait for the grace */
        res_clear(&r);
        wait_for(&w);
        ASSERT(w.error == 0 && w.exit_code == 137);
        res_clear(&w);
        /* Stopping a stopped container: 304. */
        ASSERT(docker_container_stop(docker, a, 1, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && r.not_modified);
        res_clear(&r);

        b = create((const char *[]) { "sleep", "1000", NULL }, 0, 0, NULL);
        ASSERT(docker_container_start(docker, b, on_result, &r, NULL) >= 0);
        wait_for(&r);
        res_clear(&r);
        ASSERT(docker_container_wait(docker, b, on_result, &w, NULL) >= 0);
        ASSERT(docker_container_kill(docker, b, "SIGKILL", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0);
        res_clear(&r);
        wait_for(&w);
        ASSERT(w.exit_code == 137);
        res_clear(&w);
        /* Killing a stopped container: 409 from the engine. */
        ASSERT(docker_container_kill(docker, b, "SIGKILL", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -EBUSY);
        res_clear(&r);

        remove_container(a);
        remove_container(b);
}

static void test_list(void) {
        _cleanup_free_ char *a = NULL, *b = NULL;
        Res r = {};
        size_t n;
        bool seen_a = false, seen_b = false;

        a = create((const char *[]) { "true", NULL }, 0, 0, NULL);
        b = create((const char *[]) { "true", NULL }, 0, 0, NULL);
        ASSERT(docker_container_list(docker, test_labels(), on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && json_object_is_type(r.json, json_type_array));
        n = json_object_array_length(r.json);
        ASSERT(n == 2);
        for (size_t i = 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(r.json, i);
                const char *id;
                ASSERT(json_get_string(c, "Id", &id) >= 0);
                seen_a = seen_a || streq(id, a);
                seen_b = seen_b || streq(id, b);
                ASSERT(streq_ptr(docker_list_label(c, "mc.task_id"), "t1"));
        }
        ASSERT(seen_a && seen_b);
        res_clear(&r);

        /* A label nobody has. */
        ASSERT(docker_container_list(docker, (const char *[]) { "mc.test=nobody-has-this", NULL }, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && json_object_array_length(r.json) == 0);
        res_clear(&r);

        remove_container(a);
        remove_container(b);
}

static void test_errors(void) {
        _cleanup_json_ json_object *spec = NULL;
        Res r = {};

        /* An unknown runtime: refused at create, with the engine's words. */
        ASSERT(docker_container_spec_to_json(&(DockerContainerSpec) {
                        .image = IMAGE, .cmd = (char *[]) { "true", NULL },
                        .labels = (const char *[]) { "mc.test", "x", NULL },
                        .runtime = "kata-runtime",
                }, &spec) >= 0);
        ASSERT(docker_container_create(docker, NULL, spec, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -EINVAL && r.code == 400);
        ASSERT(r.message && strstr(r.message, "kata-runtime"));
        res_clear(&r);
        json_object_put(TAKE_PTR(spec));

        /* An image the engine does not have. */
        ASSERT(docker_container_spec_to_json(&(DockerContainerSpec) {
                        .image = "mc-test/does-not-exist:1", .cmd = (char *[]) { "true", NULL },
                }, &spec) >= 0);
        ASSERT(docker_container_create(docker, NULL, spec, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -ENOENT && r.message && strstr(r.message, "No such image"));
        res_clear(&r);

        ASSERT(docker_image_inspect(docker, "mc-test/does-not-exist:1", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -ENOENT);
        res_clear(&r);
        ASSERT(docker_image_inspect(docker, IMAGE, on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == 0 && r.json);
        res_clear(&r);

        /* No registry is reachable here: a pull fails, with a reason. */
        ASSERT(docker_image_pull(docker, "mc-test/does-not-exist:1", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error < 0 && !isempty(r.message));
        fprintf(stderr, "pull failed as expected: %s\n", r.message);
        res_clear(&r);

        /* Calls on a container that is not there. */
        ASSERT(docker_container_start(docker, "0123456789ab-nope", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error == -ENOENT);
        res_clear(&r);
}

static void test_no_engine(void) {
        _cleanup_(docker_client_freep) DockerClient *d = NULL;
        Res r = {};

        ASSERT(docker_client_new(event, curl, "/nonexistent/docker.sock", &d) >= 0);
        ASSERT(docker_container_inspect(d, "x", on_result, &r, NULL) >= 0);
        wait_for(&r);
        ASSERT(r.error < 0 && r.code == 0 && r.message && strstr(r.message, "/nonexistent/docker.sock"));
        res_clear(&r);

        /* Freeing the client with calls running cancels them. */
        ASSERT(docker_container_inspect(d, "x", on_result, &r, NULL) >= 0);
        d = docker_client_free(d);
        ASSERT(!r.done);
}

typedef struct Events {
        Res end;                /* first: the same userdata goes to on_result() when the stream ends */
        char *id;               /* learnt from the first event: it comes before create() returns */
        unsigned create, start, die, destroy;
} Events;

static void on_event(json_object *ev, void *userdata) {
        Events *e = userdata;
        json_object *actor;
        const char *action, *id;

        if (getenv("TEST_DEBUG"))
                fprintf(stderr, "event: %s\n", json_to_string(ev));
        if (json_get_string(ev, "Action", &action) < 0 || !json_object_object_get_ex(ev, "Actor", &actor) ||
            json_get_string(actor, "ID", &id) < 0)
                return;
        if (!e->id)
                e->id = strdup(id);
        ASSERT(streq(id, e->id));
        if (streq(action, "create"))
                e->create++;
        else if (streq(action, "start"))
                e->start++;
        else if (streq(action, "die"))
                e->die++;
        else if (streq(action, "destroy"))
                e->destroy++;
}

static void test_events(void) {
        _cleanup_json_ json_object *filters = NULL;
        Events ev = {};
        Res r = {};
        DockerCall *call = NULL;
        uint64_t since = realtime_usec();
        uint64_t deadline;
        _cleanup_free_ char *id = NULL;

        /* A label of its own: the events of the containers of the tests before must not count. */
        snprintf(label, sizeof(label), "mc.test=docker-events-%d-%" PRIu64, (int) getpid(), now_usec());
        ASSERT(json_parse_strict("{\"type\": [\"container\"]}", strlen("{\"type\": [\"container\"]}"), &filters, NULL) >= 0);
        {
                json_object *l = json_object_new_array();
                json_object_array_add(l, json_object_new_string(label));
                json_object_object_add(filters, "label", l);
        }
        /* Since a moment ago: the create below cannot be missed even if the stream connects late. */
        ASSERT(docker_events_follow(docker, filters, since - USEC_PER_SEC, on_event, on_result, &ev, &call) >= 0);

        id = create((const char *[]) { "true", NULL }, 0, 0, NULL);
        ASSERT(docker_container_start(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        res_clear(&r);
        ASSERT(docker_container_wait(docker, id, on_result, &r, NULL) >= 0);
        wait_for(&r);
        res_clear(&r);
        remove_container(id);

        deadline = now_usec() + 30 * USEC_PER_SEC;
        while (!(ev.create && ev.start && ev.die && ev.destroy)) {
                ASSERT(now_usec() < deadline);
                ASSERT(sd_event_run(event, 100 * USEC_PER_MSEC) >= 0);
        }
        ASSERT(ev.create == 1 && ev.start == 1 && ev.die == 1 && ev.destroy == 1);
        ASSERT(streq(ev.id, id));
        ASSERT(!ev.end.done);
        docker_call_cancel(call);
        free(ev.id);
}

/* Several containers at once, all on the loop: nothing waits for anything else. */
static void test_concurrent(void) {
        char *ids[6];
        Res w[6] = {}, r = {};

        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                char cmd[64];
                snprintf(cmd, sizeof(cmd), "sleep 1; exit %zu", i);
                ids[i] = create((const char *[]) { "sh", "-c", cmd, NULL }, 0, 0, NULL);
        }
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                ASSERT(docker_container_start(docker, ids[i], on_result, &r, NULL) >= 0);
                wait_for(&r);
                res_clear(&r);
                ASSERT(docker_container_wait(docker, ids[i], on_result, w + i, NULL) >= 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(ids); i++) {
                wait_for(w + i);
                ASSERT(w[i].error == 0 && w[i].exit_code == (int64_t) i);
                res_clear(w + i);
                remove_container(ids[i]);
                free(ids[i]);
        }
}

int main(int argc, char *argv[]) {
        int k;

        log_setup("test-docker-client");
        if (argc != 2) {
                fprintf(stderr, "Usage: %s ENSURE-DOCKER-SCRIPT\n", argv[0]);
                return 2;
        }
        k = system(argv[1]);
        if (k != 0) {
                fprintf(stderr, "%s failed (%d): no Docker engine to test against\n", argv[1], k);
                return 1;
        }

        snprintf(label, sizeof(label), "mc.test=docker-client-%d-%" PRIu64, (int) getpid(), now_usec());
        ASSERT(sd_event_new(&event) >= 0);
        ASSERT(curl_event_new(event, &curl) >= 0);
        ASSERT(docker_client_new(event, curl, NULL, &docker) >= 0);

        RUN_TEST(test_lifecycle);
        RUN_TEST(test_big_output);
        RUN_TEST(test_stop_and_kill);
        RUN_TEST(test_list);
        RUN_TEST(test_errors);
        RUN_TEST(test_no_engine);
        RUN_TEST(test_events);
        RUN_TEST(test_concurrent);

        docker = docker_client_free(docker);
        curl = curl_event_free(curl);
        sd_event_unref(event);
        return 0;
}
