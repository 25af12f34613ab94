/* SPDX-License-Identifier: LGPL-2.1-or-later */


#include "bencode.h"
#include "hex.h"
#include "manifest.h"
#include "utf8.h"

/* A .torrent of ours has ~20 values; a stock client adds a few (creation date, url-list, ...). */
#define MANIFEST_MAX_NODES 4096
#define MANIFEST_MAX_DEPTH 32

Manifest *manifest_free(Manifest *m) {
        if (!m)
                return NULL;
        free(m->piece_layer);
        free(m->info);
        free(m);
        return NULL;
}

bool torrent_name_valid(const void *s, size_t n) {
        const uint8_t *p = s;

        if (n == 0 || n > TORRENT_NAME_MAX)
                return false;
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
                return false;
        for (size_t i = 0; i < n; i++)
                if (p[i] == '/' || p[i] < 0x20 || p[i] == 0x7f)
                        return false;
        return utf8_is_valid(s, n);
}

void torrent_id_to_hex(const uint8_t id[TORRENT_ID_SIZE], char ret[TORRENT_ID_HEX_SIZE]) {
        hex_encode(id, TORRENT_ID_SIZE, ret);
}

int torrent_id_from_hex(const char *s, uint8_t ret[TORRENT_ID_SIZE]) {
        assert(s);
        return hex_decode(s, ret, TORRENT_ID_SIZE);
}

/* The canonical name: hex of the root, or of 32 zero bytes for the empty file. */
static void canonical_name(bool has_root, const uint8_t root[SHA256_SIZE], char ret[TORRENT_ID_HEX_SIZE]) {
        static const uint8_t zero[SHA256_SIZE];
        hex_encode(has_root ? root : zero, SHA256_SIZE, ret);
}

static int encode_info(const Manifest *m, uint8_t *buf, size_t size, size_t *ret_len) {
        BeWriter w;

        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        be_put_cstr(&w, "file tree");
        be_put_dict(&w);
        be_put_cstr(&w, m->name);
        be_put_dict(&w);
        be_put_cstr(&w, "");
        be_put_dict(&w);
        be_put_cstr(&w, "length");
        be_put_int(&w, (int64_t) m->geometry.length);
        if (m->has_root) {
                be_put_cstr(&w, "pieces root");
                be_put_str(&w, m->root, SHA256_SIZE);
        }
        be_put_end(&w);
        be_put_end(&w);
        be_put_end(&w);
        be_put_cstr(&w, "meta version");
        be_put_int(&w, 2);
        be_put_cstr(&w, "name");
        be_put_cstr(&w, m->name);
        be_put_cstr(&w, "piece length");
        be_put_int(&w, m->geometry.piece_length);
        be_put_end(&w);
        return be_writer_finish(&w, ret_len);
}

int manifest_from_content(const ContentHash *c, Manifest **ret) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        uint8_t buf[512];
        size_t len;
        int r;

        assert(c && ret);
        assert(!c->geometry.has_piece_layer || c->piece_layer);

        m = calloc(1, sizeof(Manifest));
        if (!m)
                return -ENOMEM;
        m->geometry = c->geometry;
        m->has_root = c->has_root;
        memcpy(m->root, c->root, SHA256_SIZE);
        canonical_name(c->has_root, c->root, m->name);
        if (c->geometry.has_piece_layer) {
                m->piece_layer = malloc((size_t) c->geometry.n_pieces * SHA256_SIZE);
                if (!m->piece_layer)
                        return -ENOMEM;
                memcpy(m->piece_layer, c->piece_layer, (size_t) c->geometry.n_pieces * SHA256_SIZE);
        }

        r = encode_info(m, buf, sizeof(buf), &len);
        if (r < 0)
                return r;
        m->info = malloc(len);
        if (!m->info)
                return -ENOMEM;
        memcpy(m->info, buf, len);
        m->info_size = len;
        r = sha256(m->info, len, m->id);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(m);
        return 0;
}

int manifest_to_torrent(const Manifest *m, const char *announce, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t layer = m->geometry.has_piece_layer ? (size_t) m->geometry.n_pieces * SHA256_SIZE : 0;
        size_t size, len;
        BeWriter w;
        int r;

        assert(m && ret && ret_size);
        if (m->geometry.has_piece_layer && !m->piece_layer)
                return -ENODATA;

        /* The keys, the lengths' digits and the dictionaries' delimiters fit in 128 bytes. */
        size = 128 + m->info_size + layer + (announce ? strlen(announce) : 0);
        buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        if (announce) {
                be_put_cstr(&w, "announce");
                be_put_cstr(&w, announce);
        }
        be_put_cstr(&w, "info");
        be_put_raw(&w, m->info, m->info_size);
        be_put_cstr(&w, "piece layers");
        be_put_dict(&w);
        if (layer > 0) {
                be_put_str(&w, m->root, SHA256_SIZE);
                be_put_str(&w, m->piece_layer, layer);
        }
        be_put_end(&w);
        be_put_end(&w);
        r = be_writer_finish(&w, &len);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_size = len;
        return 0;
}

#define FAIL(err, why)                          \
        do {                                    \
                *reason = (why);                \
                return (err);                   \
        } while (0)

static int decode(const void *buf, size_t size, BeNode **ret_nodes, const char **reason) {
        const BeLimits limits = {
                .max_depth = MANIFEST_MAX_DEPTH,
                .max_nodes = MANIFEST_MAX_NODES,
                .max_str = size,
        };
        _cleanup_free_ BeNode *nodes = NULL;
        int r;

        nodes = malloc(MANIFEST_MAX_NODES * sizeof(BeNode));
        if (!nodes)
                FAIL(-ENOMEM, "out of memory");
        r = be_decode(buf, size, &limits, nodes, MANIFEST_MAX_NODES, NULL);
        if (r == -E2BIG)
                FAIL(r, "too large, too many values or too deeply nested");
        if (r < 0)
                FAIL(-EBADMSG, "not canonical bencode");
        if (nodes[0].type != BE_DICT)
                FAIL(-EBADMSG, "not a dictionary");
        *ret_nodes = TAKE_PTR(nodes);
        return 0;
}

/* Checks the info dictionary node `info` (whose bytes are raw[0..raw_size)) and fills a new manifest. */
static int parse_info_node(const BeNode *info, const uint8_t *raw, size_t raw_size, const uint8_t *expected_id,
                           unsigned flags, Manifest **ret, const char **reason) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        const BeNode *v, *tree, *entry, *file, *len, *root;
        TorrentGeometry g;
        int r;

        v = be_dict_get(info, "meta version");
        if (!v || v->type != BE_INT || v->i != 2)
                FAIL(-EPROTONOSUPPORT, "meta version is not 2 (not a BitTorrent v2 torrent)");
        if (be_dict_get(info, "pieces") || be_dict_get(info, "files") || be_dict_get(info, "length"))
                FAIL(-EPROTONOSUPPORT, "hybrid torrent (v1 keys in info): only v2-only torrents are supported");

        v = be_dict_get_type(info, "piece length", BE_INT);
        if (!v)
                FAIL(-EBADMSG, "piece length missing or not an integer");
        if (v->i < TORRENT_PIECE_LENGTH_MIN || v->i > TORRENT_PIECE_LENGTH_MAX || !is_pow2_u64((uint64_t) v->i))
                FAIL(-EDOM, "piece length is not a power of two between 16 KiB and 64 MiB");
        uint32_t piece_length = (uint32_t) v->i;

        v = be_dict_get_type(info, "name", BE_STR);
        if (!v)
                FAIL(-EBADMSG, "name missing or not a string");
        if (!torrent_name_valid(v->s, v->count))
                FAIL(-EINVAL, "name is not a plain file name (empty, '.', '..', '/', control characters or invalid UTF-8)");
        const BeNode *name = v;

        tree = be_dict_get_type(info, "file tree", BE_DICT);
        if (!tree)
                FAIL(-EBADMSG, "file tree missing or not a dictionary");
        if (tree->count == 0)
                FAIL(-EBADMSG, "file tree is empty");
        if (tree->count > 1)
                FAIL(-EISDIR, "file tree has several entries: multi-file torrents are not supported");
        entry = tree + 1; /* the key; its value follows */
        if (entry->count != name->count || memcmp(entry->s, name->s, name->count) != 0)
                FAIL(-EINVAL, "the file's name in file tree differs from name");
        v = entry + 1;
        if (v->type != BE_DICT)
                FAIL(-EBADMSG, "file tree entry is not a dictionary");
        file = be_dict_get(v, "");
        if (v->count != 1 || !file)
                FAIL(-EISDIR, "file tree entry is a directory: multi-file torrents are not supported");
        if (file->type != BE_DICT)
                FAIL(-EBADMSG, "file entry is not a dictionary");

        /* BEP 47's attributes: a pad file or a symbolic link is not content we could fetch. */
        v = be_dict_get(file, "attr");
        if ((v && v->type == BE_STR && (memchr(v->s, 'p', v->count) || memchr(v->s, 'l', v->count))) ||
            be_dict_get(file, "symlink path"))
                FAIL(-EPROTONOSUPPORT, "the file is a pad file or a symbolic link");

        len = be_dict_get_type(file, "length", BE_INT);
        if (!len || len->i < 0)
                FAIL(-EBADMSG, "file length missing, negative or not an integer");
        r = torrent_geometry_init(&g, (uint64_t) len->i, piece_length);
        if (r == -EFBIG)
                FAIL(r, "file length exceeds the supported maximum");
        if (r < 0)
                FAIL(r, "invalid geometry");

        root = be_dict_get(file, "pieces root");
        if (g.length > 0 && !root)
                FAIL(-EBADMSG, "pieces root missing");
        if (g.length == 0 && root)
                FAIL(-EBADMSG, "pieces root given for an empty file");
        if (root && (root->type != BE_STR || root->count != SHA256_SIZE))
                FAIL(-EDOM, "pieces root is not a 32-byte string");

        m = calloc(1, sizeof(Manifest));
        if (!m)
                FAIL(-ENOMEM, "out of memory");
        m->geometry = g;
        memcpy(m->name, name->s, name->count);
        m->name[name->count] = 0;
        if (root) {
                m->has_root = true;
                memcpy(m->root, root->s, SHA256_SIZE);
        }

        if (flags & MANIFEST_CANONICAL) {
                char hex[TORRENT_ID_HEX_SIZE];

                canonical_name(m->has_root, m->root, hex);
                if (!streq(hex, m->name))
                        FAIL(-EINVAL, "name is not the hex of the pieces root (not a canonical manifest)");
                if (piece_length != content_piece_length(g.length))
                        FAIL(-EINVAL, "piece length is not the one the size implies (not a canonical manifest)");

                /* Nothing else either: extra keys would change the id without changing the content. */
                uint8_t canon[512];
                size_t canon_len;
                if (encode_info(m, canon, sizeof(canon), &canon_len) < 0 || canon_len != raw_size ||
                    memcmp(canon, raw, raw_size) != 0)
                        FAIL(-EINVAL, "info has keys a canonical manifest does not have");
        }

        r = sha256(raw, raw_size, m->id);
        if (r < 0)
                FAIL(r, "hashing failed");
        if (expected_id && memcmp(expected_id, m->id, TORRENT_ID_SIZE) != 0)
                FAIL(-EKEYREJECTED, "SHA-256 of info differs from the expected id");

        m->info = malloc(raw_size);
        if (!m->info)
                FAIL(-ENOMEM, "out of memory");
        memcpy(m->info, raw, raw_size);
        m->info_size = raw_size;
        *ret = TAKE_PTR(m);
        return 0;
}

int manifest_parse_info(const void *info, size_t size, const uint8_t expected_id[TORRENT_ID_SIZE],
                        unsigned flags, Manifest **ret, const char **ret_reason) {
        _cleanup_free_ BeNode *nodes = NULL;
        const char *dummy, **reason = ret_reason ?: &dummy;
        int r;

        assert(info || size == 0);
        assert(ret);
        r = decode(info, size, &nodes, reason);
        if (r < 0)
                return r;
        return parse_info_node(&nodes[0], info, size, expected_id, flags, ret, reason);
}

int manifest_set_piece_layer(Manifest *m, const uint8_t *layer, size_t n_hashes) {
        uint8_t *copy;
        int r;

        assert(m);
        assert(layer || n_hashes == 0);
        r = merkle_piece_layer_verify(&m->geometry, layer, n_hashes, m->root);
        if (r < 0)
                return r;
        copy = malloc(n_hashes * SHA256_SIZE);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, layer, n_hashes * SHA256_SIZE);
        free(m->piece_layer);
        m->piece_layer = copy;
        return 0;
}

int manifest_parse_torrent(const void *buf, size_t size, const uint8_t expected_id[TORRENT_ID_SIZE],
                           unsigned flags, Manifest **ret, const char **ret_reason) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_free_ BeNode *nodes = NULL;
        const char *dummy, **reason = ret_reason ?: &dummy;
        const BeNode *info, *layers, *layer = NULL;
        int r;

        assert(buf || size == 0);
        assert(ret);
        r = decode(buf, size, &nodes, reason);
        if (r < 0)
                return r;
        info = be_dict_get_type(&nodes[0], "info", BE_DICT);
        if (!info)
                FAIL(-EBADMSG, "info missing or not a dictionary");
        r = parse_info_node(info, (const uint8_t *) buf + info->offset, info->size, expected_id, flags, &m, reason);
        if (r < 0)
                return r;

        layers = be_dict_get(&nodes[0], "piece layers");
        if (layers && layers->type != BE_DICT)
                FAIL(-EBADMSG, "piece layers is not a dictionary");
        if (layers && layers->count > 0) {
                const BeNode *key = layers + 1;

                if (layers->count > 1 || !m->has_root || key->count != SHA256_SIZE ||
                    memcmp(key->s, m->root, SHA256_SIZE) != 0)
                        FAIL(-EBADMSG, "piece layers has an entry for another file");
                layer = key + 1;
                if (!m->geometry.has_piece_layer)
                        FAIL(-EBADMSG, "piece layers has an entry for a file of one piece");
                if (layer->type != BE_STR)
                        FAIL(-EBADMSG, "piece layer is not a string");
        }
        if (m->geometry.has_piece_layer) {
                if (!layer)
                        FAIL(-ENODATA, "piece layers lack the file's piece layer");
                if (layer->count != (uint64_t) m->geometry.n_pieces * SHA256_SIZE)
                        FAIL(-EILSEQ, "piece layer size does not match the number of pieces");
                r = manifest_set_piece_layer(m, layer->s, m->geometry.n_pieces);
                if (r == -EILSEQ)
                        FAIL(r, "piece layer does not hash to the pieces root");
                if (r < 0)
                        FAIL(r, "piece layer check failed");
        }
        *ret = TAKE_PTR(m);
        return 0;
}
