/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>

#include "agent-body.h"
#include "json-util.h"
#include "strv.h"
#include "task-status.h"

const char *const agent_release_codes[] = { "inputs_unavailable", "disk_full", "engine_lost", NULL };

void agent_body_done(AgentBody *b) {
        json_object_put(b->json);
        *b = (AgentBody) {};
}

int agent_body_parse(AgentBodyKind kind, const char *body, size_t size, AgentBody *ret, CheckError *e) {
        static const char *const allowed_register[] = { "node_id", "capacity", "labels", "runtime", "driver", "version", NULL };
        static const char *const allowed_claim[] = { "node_id", "wait_ms", NULL };
        static const char *const allowed_heartbeat[] = { "node_id", "leases", "draining", NULL };
        static const char *const allowed_started[] = {
                "node_id", "lease_token", "container_id", "inputs_ready_usec", "inputs_bytes", "inputs_bytes_seeders",
                "inputs_bytes_agents", "inputs_bytes_cache", NULL,
        };
        static const char *const allowed_release[] = { "node_id", "lease_token", "code", "reason", NULL };
        static const char *const allowed_output[] = { "node_id", "lease_token", "offset", "data", NULL };
        static const char *const allowed_finish[] = {
                "node_id", "lease_token", "status", "exit_code", "reason", "stdout_tail", "stderr_tail",
                "truncated", "output", NULL,
        };
        static const char *const *const allowed[] = {
                [AGENT_BODY_REGISTER] = allowed_register,
                [AGENT_BODY_CLAIM] = allowed_claim,
                [AGENT_BODY_HEARTBEAT] = allowed_heartbeat,
                [AGENT_BODY_STARTED] = allowed_started,
                [AGENT_BODY_FINISH] = allowed_finish,
                [AGENT_BODY_RELEASE] = allowed_release,
                [AGENT_BODY_OUTPUT] = allowed_output,
        };
        _cleanup_json_ json_object *o = NULL;
        const char *node;
        int r;

        assert((size_t) kind < ELEMENTSOF(allowed));
        r = check_parse_object(body, size, &o, e);
        if (r < 0)
                return r;
        r = check_known_keys(o, allowed[kind], NULL, e);
        if (r < 0)
                return r;
        r = check_string(o, "node_id", true, 128, id_is_valid, "node id ([A-Za-z0-9][A-Za-z0-9._-]{0,127})", &node, e);
        if (r < 0)
                return r;
        *ret = (AgentBody) { .kind = kind, .json = TAKE_PTR(o), .node_id = node };
        return 0;
}

static int check_register(AgentBody *b, CheckError *e) {
        static const char *const cap_allowed[] = { "nano_cpus", "memory_bytes", NULL };
        json_object *o = b->json, *cap, *labels = NULL;

        if (!json_object_object_get_ex(o, "capacity", &cap) || !json_object_is_type(cap, json_type_object))
                return check_fail(e, "capacity", "Field \"capacity\" must be an object {\"nano_cpus\", \"memory_bytes\"}.");
        if (check_known_keys(cap, cap_allowed, "capacity.", e) < 0 ||
            check_int(cap, "nano_cpus", true, 0, INT64_C(1) << 50, &b->nano_cpus, e) < 0 ||
            check_int(cap, "memory_bytes", true, 0, INT64_C(1) << 56, &b->memory_bytes, e) < 0 ||
            check_string(o, "runtime", false, 64, valid_runtime, "runtime name", &b->runtime, e) == -EINVAL ||
            check_string(o, "driver", false, 16, NULL, NULL, &b->driver, e) == -EINVAL ||
            check_string(o, "version", false, 64, NULL, NULL, &b->version, e) == -EINVAL)
                return -EINVAL;
        if (b->driver && !streq(b->driver, "docker") && !streq(b->driver, "exec"))
                return check_fail(e, "driver", "Field \"driver\" must be \"docker\" or \"exec\".");
        if (json_object_object_get_ex(o, "labels", &labels) && labels) {
                if (!json_object_is_type(labels, json_type_object) || json_object_object_length(labels) > 64)
                        return check_fail(e, "labels", "Field \"labels\" must be an object of at most 64 strings.");
                json_object_object_foreach(labels, k, v)
                        if (!valid_label_key(k) || !v || !json_object_is_type(v, json_type_string) || !check_string_value(v, 256))
                                return check_fail(e, "labels", "Label \"%.64s\" is invalid.", k);
                b->labels = labels;
        }
        return 0;
}

static int check_heartbeat(AgentBody *b, CheckError *e) {
        static const char *const lease_allowed[] = { "task_id", "lease_token", NULL };
        json_object *leases = NULL;

        if (check_bool(b->json, "draining", false, &b->draining, e) == -EINVAL)
                return -EINVAL;
        if (json_object_object_get_ex(b->json, "leases", &leases) && leases) {
                if (!json_object_is_type(leases, json_type_array) || json_object_array_length(leases) > AGENT_HEARTBEAT_MAX_LEASES)
                        return check_fail(e, "leases", "Field \"leases\" must be an array of at most %d "
                                          "{\"task_id\", \"lease_token\"}.", AGENT_HEARTBEAT_MAX_LEASES);
                for (size_t i = 0; i < json_object_array_length(leases); i++) {
                        json_object *l = json_object_array_get_idx(leases, i);
                        const char *tid;
                        int64_t tok;

                        if (!json_object_is_type(l, json_type_object) ||
                            check_known_keys(l, lease_allowed, "leases.", e) < 0 ||
                            check_string(l, "task_id", true, 128, id_is_valid, "task id", &tid, e) < 0 ||
                            check_int(l, "lease_token", true, 1, INT64_MAX - 1, &tok, e) < 0) {
                                if (isempty(e->message))
                                        check_fail(e, "leases", "Element %zu of \"leases\" must be an object.", i);
                                snprintf(e->field, sizeof(e->field), "leases");
                                return -EINVAL;
                        }
                }
                b->leases = leases;
        }
        return 0;
}

static int check_finish(AgentBody *b, CheckError *e) {
        json_object *o = b->json;
        int r;

        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &b->lease_token, e) < 0 ||
            check_string(o, "status", true, 16, NULL, NULL, &b->status, e) < 0 ||
            check_string(o, "reason", false, AGENT_REASON_MAX_BYTES, NULL, NULL, &b->reason, e) == -EINVAL ||
            check_string(o, "stdout_tail", false, AGENT_TAIL_MAX_BYTES, NULL, NULL, &b->stdout_tail, e) == -EINVAL ||
            check_string(o, "stderr_tail", false, AGENT_TAIL_MAX_BYTES, NULL, NULL, &b->stderr_tail, e) == -EINVAL ||
            check_bool(o, "truncated", false, &b->truncated, e) == -EINVAL)
                return -EINVAL;
        if (!task_status_is_final(task_status_from_string(b->status)))
                return check_fail(e, "status", "Field \"status\" must be succeeded, failed, timed_out or cancelled.");
        r = check_int(o, "exit_code", false, -1, 255, &b->exit_code, e);
        if (r == -EINVAL)
                return r;
        b->have_exit_code = r == 0;
        r = check_string(o, "output", false, SIZE_MAX, NULL, NULL, &b->output, e);
        if (r == -EINVAL)
                return r;
        return 0;
}

static bool valid_release_code(const char *s) {
        return strv_contains((char *const *) agent_release_codes, s);
}

static int check_release(AgentBody *b, CheckError *e) {
        json_object *o = b->json;

        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &b->lease_token, e) < 0 ||
            check_string(o, "code", true, 32, valid_release_code, "release code (inputs_unavailable, disk_full or engine_lost)",
                         &b->code, e) < 0 ||
            check_string(o, "reason", false, AGENT_REASON_MAX_BYTES, NULL, NULL, &b->reason, e) == -EINVAL)
                return -EINVAL;
        return 0;
}

static int check_started(AgentBody *b, CheckError *e) {
        json_object *o = b->json;

        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &b->lease_token, e) < 0 ||
            check_string(o, "container_id", false, 128, id_is_valid, "container id", &b->container_id, e) == -EINVAL ||
            check_int(o, "inputs_ready_usec", false, 1, INT64_MAX - 1, &b->inputs_ready_usec, e) == -EINVAL ||
            check_int(o, "inputs_bytes", false, 0, INT64_MAX - 1, &b->inputs_bytes, e) == -EINVAL ||
            check_int(o, "inputs_bytes_seeders", false, 0, INT64_MAX - 1, &b->inputs_bytes_by_source[0], e) == -EINVAL ||
            check_int(o, "inputs_bytes_agents", false, 0, INT64_MAX - 1, &b->inputs_bytes_by_source[1], e) == -EINVAL ||
            check_int(o, "inputs_bytes_cache", false, 0, INT64_MAX - 1, &b->inputs_bytes_by_source[2], e) == -EINVAL)
                return -EINVAL;
        return 0;
}

static int check_output(AgentBody *b, CheckError *e) {
        json_object *o = b->json;

        if (check_int(o, "lease_token", true, 1, INT64_MAX - 1, &b->lease_token, e) < 0 ||
            check_int(o, "offset", true, 0, INT64_C(1) << 40, &b->offset, e) < 0 ||
            check_string(o, "data", true, AGENT_CHUNK_MAX_BYTES, NULL, NULL, &b->data, e) < 0)
                return -EINVAL;
        return 0;
}

int agent_body_check(AgentBody *b, int64_t claim_wait_max_ms, CheckError *e) {
        switch (b->kind) {
        case AGENT_BODY_REGISTER:
                return check_register(b, e);
        case AGENT_BODY_CLAIM:
                if (check_int(b->json, "wait_ms", false, 0, claim_wait_max_ms, &b->wait_ms, e) == -EINVAL)
                        return -EINVAL;
                return 0;
        case AGENT_BODY_HEARTBEAT:
                return check_heartbeat(b, e);
        case AGENT_BODY_STARTED:
                return check_started(b, e);
        case AGENT_BODY_FINISH:
                return check_finish(b, e);
        case AGENT_BODY_RELEASE:
                return check_release(b, e);
        case AGENT_BODY_OUTPUT:
                return check_output(b, e);
        case _AGENT_BODY_MAX:
                break;
        }
        return check_fail(e, NULL, "Unknown agent call.");
}
