/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the bodies of the agent endpoints (agent_body_parse, agent_body_check). The
 * first byte chooses the endpoint. Properties: never crash or leak; a refusal is -EINVAL with a
 * message (or -ENOMEM); what is accepted has a valid node id and, per endpoint, what docs/api.md
 * requires (a positive lease token, a final status, bounded wait, leases as an array). */

#include "agent-body.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(agent_body_done) AgentBody b = {};
        AgentBodyKind kind;
        CheckError e = {};
        int r;

        if (size < 1)
                return 0;
        kind = (AgentBodyKind) (data[0] % _AGENT_BODY_MAX);
        r = agent_body_parse(kind, (const char *) data + 1, size - 1, &b, &e);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EINVAL || isempty(e.message) || b.json)
                        abort();
                return 0;
        }
        if (!b.json || b.kind != kind || !id_is_valid(b.node_id))
                abort();
        r = agent_body_check(&b, 30000, &e);
        if (r < 0) {
                if (r != -EINVAL || isempty(e.message))
                        abort();
                return 0;
        }
        switch (kind) {
        case AGENT_BODY_REGISTER:
                if (b.nano_cpus < 0 || b.memory_bytes < 0 ||
                    (b.driver && !streq(b.driver, "docker") && !streq(b.driver, "exec")))
                        abort();
                break;
        case AGENT_BODY_CLAIM:
                if (b.wait_ms < 0 || b.wait_ms > 30000)
                        abort();
                break;
        case AGENT_BODY_HEARTBEAT:
                if (b.leases && !json_object_is_type(b.leases, json_type_array))
                        abort();
                break;
        case AGENT_BODY_STARTED:
                if (b.lease_token < 1 || (b.container_id && !id_is_valid(b.container_id)))
                        abort();
                break;
        case AGENT_BODY_FINISH:
                if (b.lease_token < 1 || !b.status || (b.have_exit_code && (b.exit_code < -1 || b.exit_code > 255)))
                        abort();
                break;
        case AGENT_BODY_OUTPUT:
                if (b.lease_token < 1 || b.offset < 0 || !b.data || strlen(b.data) > AGENT_CHUNK_MAX_BYTES)
                        abort();
                break;
        case AGENT_BODY_RELEASE:
                if (b.lease_token < 1 || !b.code || !strv_contains((char *const *) agent_release_codes, b.code))
                        abort();
                break;
        case _AGENT_BODY_MAX:
                abort();
        }
        return 0;
}
