/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for what the agent reads from a control's answer body: the JSON (and its "error"
 * message), and a claim answer turned into a lease on a task. Properties: never crash or leak; an
 * accepted claim answer has a task record and id, an attempt, and resources that are not negative. */

#include "control-client.h"
#include "json-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_json_ json_object *o = NULL;
        ControlClaimAnswer c;
        const char *e;

        if (json_parse_strict((const char *) data, size, &o, NULL) < 0)
                return 0;
        int64_t ttl_ms;

        (void) json_get_string(o, "error", &e);
        /* A TTL in milliseconds becomes a deadline in microseconds: it must not overflow. */
        if (control_answer_lease_ttl_ms(o, &ttl_ms) >= 0 && (ttl_ms < 1 || ttl_ms > INT64_MAX / 1000 / 1000))
                abort();
        if (control_claim_answer_parse(o, &c) < 0)
                return 0;
        if (!c.record || !c.task_id || c.nano_cpus < 0 || c.memory_bytes < 0 || c.lease_ttl_ms < 0 ||
            c.lease_ttl_ms > INT64_MAX / 1000 / 1000 ||
            c.lease_token < 1 || c.timeout_sec < 1 || c.timeout_sec > INT64_MAX / 1000 / 1000)
                abort();
        /* The id names files and containers: no path separators, nothing hidden, nothing empty. */
        if (isempty(c.task_id) || strchr(c.task_id, '/') || c.task_id[0] == '.' || strlen(c.task_id) > 128)
                abort();
        return 0;
}
