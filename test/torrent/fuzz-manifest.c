/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for what arrives as a manifest: .torrent files, bare info dictionaries (from
 * ut_metadata) and magnet links. Properties: never crash; fail only with the documented errors, each
 * with a reason; whatever is accepted is written back out and read again to the same id, geometry
 * and piece layer; a canonical manifest re-encodes to exactly its info dictionary. Built as a
 * libFuzzer binary with -Dfuzz=true, and always as fuzz-manifest-replay, which runs the committed
 * corpus. */

#include "magnet.h"
#include "manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(int r, const char *reason) {
        if (!reason)
                abort();
        switch (r) {
        case -EBADMSG: case -E2BIG: case -EPROTONOSUPPORT: case -EISDIR: case -EINVAL: case -EDOM:
        case -EFBIG: case -ENODATA: case -EILSEQ: case -EKEYREJECTED: case -ENOMEM:
                return;
        default:
                abort();
        }
}

static void same(const Manifest *a, const Manifest *b) {
        if (memcmp(a->id, b->id, TORRENT_ID_SIZE) != 0 || strcmp(a->name, b->name) != 0 ||
            a->geometry.length != b->geometry.length || a->geometry.piece_length != b->geometry.piece_length ||
            a->has_root != b->has_root || memcmp(a->root, b->root, SHA256_SIZE) != 0 ||
            a->info_size != b->info_size || memcmp(a->info, b->info, a->info_size) != 0 ||
            !a->piece_layer != !b->piece_layer ||
            (a->piece_layer && memcmp(a->piece_layer, b->piece_layer, (size_t) a->geometry.n_pieces * SHA256_SIZE) != 0))
                abort();
}

static void torrent(const uint8_t *data, size_t size) {
        _cleanup_(manifest_freep) Manifest *m = NULL, *again = NULL, *canon = NULL;
        _cleanup_free_ uint8_t *out = NULL;
        const char *reason = NULL;
        size_t len;
        int r;

        r = manifest_parse_torrent(data, size, NULL, 0, &m, &reason);
        if (r < 0) {
                check_error(r, reason);
                if (manifest_parse_torrent(data, size, NULL, MANIFEST_CANONICAL, &canon, &reason) >= 0)
                        abort(); /* canonical is stricter */
                return;
        }
        if (manifest_to_torrent(m, NULL, &out, &len) < 0)
                abort();
        if (manifest_parse_torrent(out, len, m->id, 0, &again, &reason) < 0)
                abort();
        same(m, again);

        r = manifest_parse_torrent(data, size, m->id, MANIFEST_CANONICAL, &canon, &reason);
        if (r < 0)
                check_error(r, reason);
        else {
                /* The same as if we had hashed the content: name, piece length, keys. */
                ContentHash c = { .geometry = canon->geometry, .has_root = canon->has_root, .piece_layer = canon->piece_layer };
                _cleanup_(manifest_freep) Manifest *made = NULL;

                memcpy(c.root, canon->root, SHA256_SIZE);
                if (manifest_from_content(&c, &made) < 0)
                        abort();
                same(canon, made);
        }
}

static void info(const uint8_t *data, size_t size) {
        _cleanup_(manifest_freep) Manifest *m = NULL, *again = NULL;
        const char *reason = NULL;
        int r;

        r = manifest_parse_info(data, size, NULL, 0, &m, &reason);
        if (r < 0) {
                check_error(r, reason);
                return;
        }
        if (m->piece_layer || manifest_parse_info(m->info, m->info_size, m->id, 0, &again, &reason) < 0)
                abort();
        same(m, again);
}

static void magnet(const uint8_t *data, size_t size) {
        _cleanup_free_ char *s = malloc(size + 1), *out = NULL;
        MagnetLink l, l2;

        if (!s)
                return;
        memcpy(s, data, size);
        s[size] = 0;
        if (magnet_parse(s, &l) < 0)
                return;
        if (l.n_peers > MAGNET_PEERS_MAX || magnet_format(&l, &out) < 0 || magnet_parse(out, &l2) < 0 ||
            memcmp(&l, &l2, sizeof(l)) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        torrent(data, size);
        info(data, size);
        magnet(data, size);
        return 0;
}
