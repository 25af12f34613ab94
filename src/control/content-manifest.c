/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "content-manifest.h"

void content_manifest_done(ContentManifest *m) {
        free(m->torrent);
        *m = (ContentManifest) {};
}

/* The part of the manifest a refusal of the parser blames, by its error (manifest.h): the id, when the
 * manifest is sound but of another content; the piece layer, when it is missing or does not hash to
 * the root; the manifest as such for everything else (not bencode, not v2, several files, not
 * canonical, out of bounds). */
static const struct {
        int error;
        const char *field;
} manifest_error_fields[] = {
        { -EKEYREJECTED, "id" },
        { -ENODATA,      "piece layers" },
        { -EILSEQ,       "piece layers" },
};

static const char *manifest_error_field(int error) {
        for (size_t i = 0; i < ELEMENTSOF(manifest_error_fields); i++)
                if (manifest_error_fields[i].error == error)
                        return manifest_error_fields[i].field;
        return "manifest";
}

int content_manifest_check(const void *body, size_t size, const char *id, ContentManifest *ret, CheckError *e) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_free_ uint8_t *torrent = NULL;
        uint8_t expected[TORRENT_ID_SIZE];
        const char *reason = NULL;
        size_t torrent_size;
        int r;

        assert(body || size == 0);
        assert(id && ret && e);

        if (!valid_content_id(id) || torrent_id_from_hex(id, expected) < 0)
                return check_fail(e, "id", "Invalid content id (64 lowercase hex digits).");
        if (size == 0)
                return check_fail(e, "manifest", "The body is empty; the content's .torrent is expected.");

        r = manifest_parse_torrent(body, size, expected, MANIFEST_CANONICAL, &m, &reason);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return check_fail(e, manifest_error_field(r), "Manifest refused: %s.", reason ?: "invalid");

        /* What is stored and served: the same {info, piece layers} whatever else the client's .torrent
         * had (announce, creation date, ...), so that a second PUT of the content from another tool
         * finds the same bytes. */
        r = manifest_to_torrent(m, NULL, &torrent, &torrent_size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return check_fail(e, "manifest", "Manifest refused: it cannot be encoded again.");

        *ret = (ContentManifest) {
                .length = m->geometry.length,
                .piece_length = m->geometry.piece_length,
                .pieces = m->geometry.n_pieces,
                .torrent = TAKE_PTR(torrent),
                .torrent_size = torrent_size,
        };
        torrent_id_to_hex(m->id, ret->id);
        snprintf(ret->name, sizeof(ret->name), "%s", m->name);
        return 0;
}
