/* SPDX-License-Identifier: LGPL-2.1-or-later */


#include "bencode.h"
#include "peer-ext.h"
#include "utf8.h"

/* An extension handshake from libtorrent has ~20 values. */
#define EXT_MAX_NODES 256
static const BeLimits ext_limits = {
        .max_depth = 4,
        .max_nodes = EXT_MAX_NODES,
        .max_str = 1024,
};

static int decode_dict(const void *buf, size_t size, bool prefix, BeNode *nodes, size_t *ret_size) {
        int r;

        if (prefix)
                r = be_decode_prefix(buf, size, &ext_limits, nodes, EXT_MAX_NODES, NULL, ret_size);
        else
                r = be_decode(buf, size, &ext_limits, nodes, EXT_MAX_NODES, NULL);
        if (r < 0)
                return r == -E2BIG ? -E2BIG : -EBADMSG;
        if (nodes[0].type != BE_DICT)
                return -EBADMSG;
        return 0;
}

/* An optional integer in [min, max]: 0 and *ret untouched when absent. */
static int get_int(const BeNode *d, const char *key, int64_t min, int64_t max, bool *ret_found, int64_t *ret) {
        const BeNode *v = be_dict_get(d, key);

        *ret_found = false;
        if (!v)
                return 0;
        if (v->type != BE_INT)
                return -EBADMSG;
        if (v->i < min || v->i > max)
                return -ERANGE;
        *ret_found = true;
        *ret = v->i;
        return 0;
}

int peer_ext_handshake_parse(const void *buf, size_t size, PeerExtHandshake *ret) {
        BeNode nodes[EXT_MAX_NODES];
        PeerExtHandshake h = {};
        const BeNode *m, *v;
        bool found;
        int64_t i;
        int r;

        assert(buf || size == 0);
        assert(ret);
        r = decode_dict(buf, size, false, nodes, NULL);
        if (r < 0)
                return r;

        m = be_dict_get(&nodes[0], "m");
        if (m) {
                const BeNode *k;

                if (m->type != BE_DICT)
                        return -EBADMSG;
                k = m + 1;
                for (uint32_t j = 0; j < m->count; j++, k = be_next(k + 1)) {
                        const BeNode *id = k + 1;

                        if (id->type != BE_INT)
                                return -EBADMSG;
                        if (id->i < 0 || id->i > 255)
                                return -ERANGE;
                        if (k->count == 0 || k->count > PEER_EXT_NAME_MAX || memchr(k->s, 0, k->count))
                                continue; /* not a name we could ask for */
                        if (h.n_m >= PEER_EXT_MAX)
                                return -E2BIG;
                        memcpy(h.m[h.n_m].name, k->s, k->count);
                        h.m[h.n_m].name[k->count] = 0;
                        h.m[h.n_m].id = (uint8_t) id->i;
                        h.n_m++;
                }
        }

        r = get_int(&nodes[0], "metadata_size", 0, UT_METADATA_SIZE_MAX, &found, &i);
        if (r < 0)
                return r;
        if (found)
                h.metadata_size = (uint32_t) i;
        r = get_int(&nodes[0], "p", 1, 65535, &found, &i);
        if (r < 0)
                return r;
        if (found)
                h.port = (uint16_t) i;
        r = get_int(&nodes[0], "reqq", 1, UINT32_MAX, &found, &i);
        if (r < 0)
                return r;
        if (found)
                h.reqq = (uint32_t) i;

        v = be_dict_get(&nodes[0], "v");
        if (v) {
                size_t n;

                if (v->type != BE_STR)
                        return -EBADMSG;
                /* Only for logs: kept when valid UTF-8 without NUL, cut to a character boundary. */
                if (utf8_is_valid(v->s, v->count) && !memchr(v->s, 0, v->count)) {
                        n = utf8_prefix_len((const char *) v->s, v->count, PEER_EXT_CLIENT_MAX);
                        memcpy(h.v, v->s, n);
                        h.v[n] = 0;
                }
        }
        *ret = h;
        return 0;
}

uint8_t peer_ext_handshake_id(const PeerExtHandshake *h, const char *name) {
        assert(h && name);
        for (size_t i = 0; i < h->n_m; i++)
                if (streq(h->m[i].name, name))
                        return h->m[i].id;
        return 0;
}

int peer_ext_handshake_add(PeerExtHandshake *h, const char *name, uint8_t id) {
        size_t l;

        assert(h && name);
        l = strlen(name);
        if (l == 0 || l > PEER_EXT_NAME_MAX)
                return -EINVAL;
        if (h->n_m >= PEER_EXT_MAX)
                return -E2BIG;
        memcpy(h->m[h->n_m].name, name, l + 1);
        h->m[h->n_m].id = id;
        h->n_m++;
        return 0;
}

static int name_cmp(const void *a, const void *b) {
        const char *x = a, *y = b;
        return strcmp(x, y);
}

int peer_ext_handshake_encode(const PeerExtHandshake *h, void *buf, size_t size, size_t *ret_len) {
        PeerExtName sorted[PEER_EXT_MAX];
        BeWriter w;

        assert(h && buf && ret_len);
        if (h->n_m > PEER_EXT_MAX)
                return -EINVAL;
        /* Dictionary keys go in byte order; names are NUL-free, so strcmp() is that order. */
        memcpy(sorted, h->m, h->n_m * sizeof(sorted[0]));
        qsort(sorted, h->n_m, sizeof(sorted[0]), name_cmp);

        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        be_put_cstr(&w, "m");
        be_put_dict(&w);
        for (size_t i = 0; i < h->n_m; i++) {
                be_put_cstr(&w, sorted[i].name);
                be_put_int(&w, sorted[i].id);
        }
        be_put_end(&w);
        if (h->metadata_size > 0) {
                be_put_cstr(&w, "metadata_size");
                be_put_int(&w, h->metadata_size);
        }
        if (h->port > 0) {
                be_put_cstr(&w, "p");
                be_put_int(&w, h->port);
        }
        if (h->reqq > 0) {
                be_put_cstr(&w, "reqq");
                be_put_int(&w, h->reqq);
        }
        if (h->v[0]) {
                be_put_cstr(&w, "v");
                be_put_cstr(&w, h->v);
        }
        be_put_end(&w);
        return be_writer_finish(&w, ret_len);
}

int ut_metadata_parse(const void *buf, size_t size, UtMetadataMsg *ret) {
        BeNode nodes[EXT_MAX_NODES];
        UtMetadataMsg m = {};
        size_t dict_size;
        bool found;
        int64_t i;
        int r;

        assert(buf || size == 0);
        assert(ret);
        r = decode_dict(buf, size, true, nodes, &dict_size);
        if (r < 0)
                return r;

        r = get_int(&nodes[0], "msg_type", 0, INT64_MAX, &found, &i);
        if (r < 0)
                return r == -ERANGE ? -EBADMSG : r;
        if (!found || i > UT_METADATA_REJECT)
                return -EBADMSG;
        m.type = (UtMetadataType) i;
        r = get_int(&nodes[0], "piece", 0, ut_metadata_pieces(UT_METADATA_SIZE_MAX) - 1, &found, &i);
        if (r < 0)
                return r;
        if (!found)
                return -EBADMSG;
        m.piece = (uint32_t) i;

        if (m.type != UT_METADATA_DATA) {
                if (dict_size != size)
                        return -EBADMSG; /* only data messages carry bytes */
                *ret = m;
                return 0;
        }

        r = get_int(&nodes[0], "total_size", 1, UT_METADATA_SIZE_MAX, &found, &i);
        if (r < 0)
                return r;
        if (!found)
                return -EBADMSG;
        m.total_size = (uint32_t) i;
        if (m.piece >= ut_metadata_pieces(m.total_size))
                return -ERANGE;
        m.data = (const uint8_t *) buf + dict_size;
        m.size = size - dict_size;
        if (m.size != MIN(UT_METADATA_PIECE_SIZE, m.total_size - m.piece * UT_METADATA_PIECE_SIZE))
                return -ERANGE;
        *ret = m;
        return 0;
}

int ut_metadata_encode(const UtMetadataMsg *m, void *buf, size_t size, size_t *ret_len) {
        BeWriter w;
        size_t len;
        int r;

        assert(m && buf && ret_len);
        if (m->type > UT_METADATA_REJECT)
                return -EINVAL;
        if (m->type == UT_METADATA_DATA &&
            (m->total_size == 0 || m->total_size > UT_METADATA_SIZE_MAX || m->piece >= ut_metadata_pieces(m->total_size) ||
             m->size != MIN(UT_METADATA_PIECE_SIZE, m->total_size - m->piece * UT_METADATA_PIECE_SIZE)))
                return -EINVAL;

        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        be_put_cstr(&w, "msg_type");
        be_put_int(&w, m->type);
        be_put_cstr(&w, "piece");
        be_put_int(&w, m->piece);
        if (m->type == UT_METADATA_DATA) {
                be_put_cstr(&w, "total_size");
                be_put_int(&w, m->total_size);
        }
        be_put_end(&w);
        r = be_writer_finish(&w, &len);
        if (r < 0)
                return r;
        if (m->type == UT_METADATA_DATA) {
                if (m->size > size - len)
                        return -ENOBUFS;
                memcpy((uint8_t *) buf + len, m->data, m->size);
                len += m->size;
        }
        *ret_len = len;
        return 0;
}
