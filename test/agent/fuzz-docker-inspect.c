/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the agent's typed access to Docker Engine answers: inspect (state, labels,
 * HostConfig) and the container list. Properties: never crash; what is returned is what the answer
 * holds, as a string. */

#include "docker-container.h"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(json_object *o) {
        const char *s;
        int64_t v;
        int r;

        s = docker_inspect_state(o);
        (void) s;
        s = docker_inspect_label(o, "mc.task");
        (void) s;
        r = docker_inspect_host_config_int(o, "NanoCpus", &v);
        if (r != 0 && r != -ENOENT && r != -EINVAL && r != -ERANGE)
                abort();
        s = docker_list_label(o, "mc.lease");
        (void) s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ json_object *o = NULL;

        if (json_parse_strict((const char *) data, size, &o, NULL) < 0)
                return 0;
        check(o);
        if (json_object_is_type(o, json_type_array))
                for (size_t i = 0; i < json_object_array_length(o); i++)
                        check(json_object_array_get_idx(o, i));
        return 0;
}
