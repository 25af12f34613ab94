/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The body of PUT /api/contents/{id}: a content's manifest, a BitTorrent v2 .torrent, checked with
 * src/torrent's parser (canonical, SHA-256 of info = id, piece layer hashing to the pieces root) and
 * re-encoded in the one form that is stored and served, without a request or a database, so that the
 * fuzzer can call it. */

#include "json-check.h"
#include "manifest.h"

/* Larger bodies get 413. The .torrent of a file of 4 GiB is 64 KiB (2048 piece hashes); 2 MiB holds
 * the piece layer of 65 000 pieces of 4 MiB, a file of some 255 GiB. */
#define CONTENT_MANIFEST_MAX (2 * 1024 * 1024)

typedef struct ContentManifest {
        char id[TORRENT_ID_HEX_SIZE];
        char name[TORRENT_NAME_MAX + 1];
        uint64_t length;
        uint32_t piece_length;
        uint32_t pieces;
        uint8_t *torrent;               /* the canonical .torrent: {info, piece layers}, nothing else */
        size_t torrent_size;
} ContentManifest;

void content_manifest_done(ContentManifest *m);

/* Checks body as the manifest of content id (64 lowercase hex digits). Returns 0, -EINVAL with e
 * naming the field ("id": the manifest of another content; "piece layers": the piece layer is
 * missing or wrong; "manifest": anything else) and the library's reason, or -ENOMEM. */
int content_manifest_check(const void *body, size_t size, const char *id, ContentManifest *ret, CheckError *e);
