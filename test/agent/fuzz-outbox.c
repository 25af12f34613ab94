/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for an outbox entry read back from disk after a crash (outbox_entry_parse).
 * Properties: never crash or leak; a refusal is -EBADMSG; an entry has a task id that is safe as a
 * file name and a finish object. */

#include "outbox.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        OutboxEntry e = {};
        int r;

        r = outbox_entry_parse((const char *) data, size, &e);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EBADMSG || e.task_id || e.finish)
                        abort();
                return 0;
        }
        if (!e.task_id || !json_object_is_type(e.finish, json_type_object))
                abort();
        /* The id names the entry's file: no path separators, nothing hidden, nothing empty. */
        if (!e.task_id[0] || strchr(e.task_id, '/') || e.task_id[0] == '.' || strlen(e.task_id) > 128)
                abort();
        free(e.task_id);
        json_object_put(e.finish);
        return 0;
}
