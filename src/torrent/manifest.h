/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A content's manifest: the BitTorrent v2 info dictionary of one file plus its piece layer, as a
 * standard .torrent ({info, piece layers}, no announce unless asked), and its content id.
 *
 * The info dictionary we make is
 *
 *     { "file tree": { NAME: { "": { "length": L, "pieces root": ROOT } } },
 *       "meta version": 2, "name": NAME, "piece length": content_piece_length(L) }
 *
 * with NAME the lowercase hex of ROOT (64 zeros for the empty file, which has no root and no
 * "pieces root" key), so that it is a function of the bytes alone. The content id is SHA-256 of that
 * bencoded dictionary, i.e. the v2 info-hash: 64 hex digits in our APIs, its first 20 bytes in peer
 * handshakes and DHT announces (TORRENT_ID_SHORT_SIZE).
 *
 * The parsers take untrusted input (a .torrent, or an info dictionary fetched with ut_metadata) and
 * accept a v2-only, single-file torrent only; each rejection comes with a static string saying why:
 *   -EBADMSG          not canonical bencode, or a key missing or of the wrong type
 *   -E2BIG            beyond the decoder's bounds (values, nesting, size)
 *   -EPROTONOSUPPORT  "meta version" is not 2, v1 keys (a hybrid torrent), or the file is a pad
 *                     file or a symbolic link (BEP 47)
 *   -EISDIR           more than one file, or a directory (our contents are single files)
 *   -EINVAL           a name that is not a plain file name (empty, '.', '..', '/', control
 *                     characters, invalid UTF-8), or, with MANIFEST_CANONICAL, not what
 *                     manifest_from_content() would have made
 *   -EDOM             piece length not a power of two in [16 KiB, 64 MiB], pieces root not 32 bytes
 *   -EFBIG            length beyond TORRENT_LENGTH_MAX
 *   -ENODATA          piece layers missing the file's layer (a .torrent of a file > one piece)
 *   -EILSEQ           a piece layer of the wrong size, or one that does not hash to the pieces root
 *   -EKEYREJECTED     SHA-256(info) differs from the id the caller expected */

#include "content.h"

#define TORRENT_ID_SIZE SHA256_SIZE
#define TORRENT_ID_HEX_SIZE (2 * TORRENT_ID_SIZE + 1)
#define TORRENT_ID_SHORT_SIZE 20
#define TORRENT_NAME_MAX 255

typedef struct Manifest {
        uint8_t id[TORRENT_ID_SIZE];            /* SHA-256 of info */
        char name[TORRENT_NAME_MAX + 1];
        TorrentGeometry geometry;
        bool has_root;                          /* false for the empty file */
        uint8_t root[SHA256_SIZE];
        uint8_t *piece_layer;                   /* geometry.n_pieces hashes, when has_piece_layer and known */
        uint8_t *info;                          /* the bencoded info dictionary, as hashed */
        size_t info_size;
} Manifest;

Manifest *manifest_free(Manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manifest *, manifest_free);

/* The manifest of hashed content (its piece layer is copied). */
int manifest_from_content(const ContentHash *c, Manifest **ret);

/* The .torrent: {announce (when not NULL), info, piece layers}. -ENODATA when the file needs a piece
 * layer that m does not have yet. *ret is malloc()ed. */
int manifest_to_torrent(const Manifest *m, const char *announce, uint8_t **ret, size_t *ret_size);

enum {
        /* Also require the name and piece length manifest_from_content() gives: then the id is a
         * function of the content's bytes, and two manifests of one content cannot differ. */
        MANIFEST_CANONICAL = 1 << 0,
};

/* Parses a .torrent. When expected_id is not NULL, the info dictionary must hash to it. On failure
 * *ret_reason (if not NULL) is set to a static explanation; *ret is untouched. */
int manifest_parse_torrent(const void *buf, size_t size, const uint8_t expected_id[TORRENT_ID_SIZE],
                           unsigned flags, Manifest **ret, const char **ret_reason);
/* Parses a bare info dictionary (from ut_metadata). The piece layer, if the file needs one, is
 * not known yet: add it with manifest_set_piece_layer(). */
int manifest_parse_info(const void *info, size_t size, const uint8_t expected_id[TORRENT_ID_SIZE],
                        unsigned flags, Manifest **ret, const char **ret_reason);
/* Checks that layer (n_hashes hashes) is the file's piece layer, then keeps a copy. -EINVAL when the
 * file has no piece layer, -EILSEQ when the layer does not hash to the pieces root. */
int manifest_set_piece_layer(Manifest *m, const uint8_t *layer, size_t n_hashes);

/* Whether s[0..n) is acceptable as a file name: 1 to 255 bytes of valid UTF-8 without '/', NUL or
 * other control characters, and neither "." nor "..". */
bool torrent_name_valid(const void *s, size_t n);

/* The id as peer handshakes and DHT announces carry it: its first 20 bytes (BEP 52). */
static inline void torrent_id_short(const uint8_t id[TORRENT_ID_SIZE], uint8_t ret[TORRENT_ID_SHORT_SIZE]) {
        memcpy(ret, id, TORRENT_ID_SHORT_SIZE);
}

/* ret: TORRENT_ID_HEX_SIZE bytes. */
void torrent_id_to_hex(const uint8_t id[TORRENT_ID_SIZE], char ret[TORRENT_ID_HEX_SIZE]);
/* Exactly 64 hex digits; -EINVAL otherwise. */
int torrent_id_from_hex(const char *s, uint8_t ret[TORRENT_ID_SIZE]);
