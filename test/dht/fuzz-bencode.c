/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the bencode decoder (and the task record reader built on it). Properties:
 * never crash; reject with -EBADMSG or -E2BIG only; whatever is accepted re-encodes to exactly the
 * input (the decoder takes canonical bencode only). Built as a libFuzzer binary with -Dfuzz=true, and
 * always as fuzz-bencode-replay, which runs the committed corpus. */

#include "bencode.h"
#include "task-record.h"
#include "task-status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const BeLimits limits = { .max_depth = 32, .max_nodes = 512, .max_str = 65536 };
        BeNode nodes[512];
        size_t n;
        int r;

        r = be_decode(data, size, &limits, nodes, 512, &n);
        if (r < 0) {
                if (r != -EBADMSG && r != -E2BIG)
                        abort();
        } else {
                uint8_t *out = malloc(size + 1);
                BeWriter w;
                size_t len;

                if (!out)
                        return 0;
                if (n == 0 || nodes[0].span != n || nodes[0].size != size)
                        abort();
                be_writer_init(&w, out, size + 1);
                be_put_node(&w, &nodes[0]);
                if (be_writer_finish(&w, &len) < 0 || len != size || memcmp(out, data, size) != 0)
                        abort();
                free(out);
                if (nodes[0].type == BE_DICT) {
                        (void) be_dict_get(&nodes[0], "a");
                        (void) be_dict_get(&nodes[0], "zzz");
                }
        }

        TaskRecordData rec;
        if (task_record_decode(data, size, &rec) >= 0 && (!rec.id[0] || task_status_from_string(rec.status) < 0))
                abort();
        return 0;
}
