/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the body of PUT /api/contents/{id}: content_manifest_check(), which checks a
 * .torrent with src/torrent's parser and re-encodes it in the form that is stored. Properties: never
 * crash; a refusal is -EINVAL with a message and one of the documented fields ("id", "piece layers",
 * "manifest"); what is accepted under its own id is refused under any other, naming "id"; the stored
 * form is a fixed point (accepted again to the same bytes and summary). Built as a libFuzzer binary
 * with -Dfuzz=true, and always as fuzz-content-manifest-replay, which runs its committed corpus and
 * that of src/torrent's manifest fuzzer. */

#include "content-manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(int r, const CheckError *e) {
        if (r == -ENOMEM)
                return;
        if (r != -EINVAL || isempty(e->message) ||
            !(streq(e->field, "id") || streq(e->field, "piece layers") || streq(e->field, "manifest")))
                abort();
}

static bool same(const ContentManifest *a, const ContentManifest *b) {
        return streq(a->id, b->id) && streq(a->name, b->name) && a->length == b->length &&
               a->piece_length == b->piece_length && a->pieces == b->pieces && a->torrent_size == b->torrent_size &&
               memcmp(a->torrent, b->torrent, a->torrent_size) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_(content_manifest_done) ContentManifest a = {}, b = {}, c = {};
        char id[TORRENT_ID_HEX_SIZE], other[TORRENT_ID_HEX_SIZE];
        CheckError e = {};
        int r;

        /* The id a client would PUT the body under: its own, when it is a manifest at all. */
        if (manifest_parse_torrent(data, size, NULL, 0, &m, NULL) < 0)
                memset(id, '0', sizeof(id) - 1);
        else
                torrent_id_to_hex(m->id, id);
        id[sizeof(id) - 1] = 0;

        r = content_manifest_check(data, size, id, &a, &e);
        if (r < 0) {
                check_refusal(r, &e);
                return 0;
        }
        if (!m || !streq(a.id, id) || a.length != m->geometry.length || a.pieces != m->geometry.n_pieces ||
            a.torrent_size == 0 || a.torrent_size > size + 64)
                abort();

        e = (CheckError) {};
        r = content_manifest_check(a.torrent, a.torrent_size, id, &b, &e);
        if (r == -ENOMEM)
                return 0;
        if (r < 0 || !same(&a, &b))
                abort();

        memcpy(other, id, sizeof(other));
        other[0] = other[0] == '0' ? '1' : '0';
        e = (CheckError) {};
        r = content_manifest_check(data, size, other, &c, &e);
        if (r != -ENOMEM && (r != -EINVAL || !streq(e.field, "id")))
                abort();
        return 0;
}
