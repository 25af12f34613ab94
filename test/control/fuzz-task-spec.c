/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the push body: task_spec_parse() turns a request body into a validated task or
 * a {"error", "field"} answer. Properties: never crash; a refusal is -EINVAL with a message; what is
 * accepted has a valid id and target node, builds its push row, and its normalised specification (what
 * is stored and compared for idempotent pushes) is accepted again unchanged. Built as a libFuzzer
 * binary with -Dfuzz=true, and always as fuzz-task-spec-replay, which runs the committed corpus. */

#include "json-check.h"
#include "json-util.h"
#include "task-spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ json_object *row = NULL;
        TaskSpec t = {}, again = {};
        CheckError e = {};
        const char *text;
        int r;

        r = task_spec_parse((const char *) data, size, &t, &e);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EINVAL || isempty(e.message))
                        abort();
                return 0;
        }
        if (!t.spec || (t.id && !id_is_valid(t.id)) || (t.target_node && !id_is_valid(t.target_node)) ||
            t.max_attempts < 1 || t.nano_cpus < 0 || t.memory_bytes < 0)
                abort();
        row = task_spec_to_push_row(&t, t.id ?: "0123456789abcdef0123456789abcdef");
        if (!row || !json_to_string(row))
                abort();

        text = json_to_string(t.spec);
        r = task_spec_parse(text, strlen(text), &again, &e);
        if (r == -ENOMEM) {
                task_spec_done(&t);
                return 0;
        }
        if (r < 0) {
                fprintf(stderr, "normalised spec refused: %s (%s): %s\n", e.message, e.field, text);
                abort();
        }
        if (!json_object_equal(t.spec, again.spec) || again.nano_cpus != t.nano_cpus ||
            again.memory_bytes != t.memory_bytes || again.max_attempts != t.max_attempts ||
            !streq_ptr(again.target_node, t.target_node))
                abort();
        task_spec_done(&again);
        task_spec_done(&t);
        return 0;
}
