/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "krpc.h"

static const char *const method_names[_KRPC_METHOD_MAX] = {
        [KRPC_UNKNOWN] = "unknown",
        [KRPC_PING] = "ping",
        [KRPC_FIND_NODE] = "find_node",
        [KRPC_GET_PEERS] = "get_peers",
        [KRPC_ANNOUNCE_PEER] = "announce_peer",
        [KRPC_GET] = "get",
        [KRPC_PUT] = "put",
};

const char *krpc_method_to_string(KrpcMethod m) {
        return m >= 0 && m < _KRPC_METHOD_MAX ? method_names[m] : "unknown";
}

static const BeLimits krpc_limits = {
        .max_depth = 32,
        .max_nodes = 1024,
        .max_str = KRPC_PACKET_MAX,
};

static KrpcBytes bytes_of(const BeNode *n) {
        return (KrpcBytes) { .p = n->s, .n = n->count };
}

/* A string of exactly size bytes, copied to out. -ENOENT when absent, -EBADMSG when wrong. */
static int get_fixed(const BeNode *d, const char *key, void *out, size_t size) {
        const BeNode *n = be_dict_get(d, key);
        if (!n)
                return -ENOENT;
        if (n->type != BE_STR || n->count != size)
                return -EBADMSG;
        memcpy(out, n->s, size);
        return 0;
}

static int get_string(const BeNode *d, const char *key, size_t min, size_t max, KrpcBytes *ret) {
        const BeNode *n = be_dict_get(d, key);
        if (!n)
                return -ENOENT;
        if (n->type != BE_STR || n->count < min || n->count > max)
                return -EBADMSG;
        *ret = bytes_of(n);
        return 0;
}

static int get_int(const BeNode *d, const char *key, int64_t min, int64_t max, int64_t *ret) {
        const BeNode *n = be_dict_get(d, key);
        if (!n)
                return -ENOENT;
        if (n->type != BE_INT || n->i < min || n->i > max)
                return -EBADMSG;
        *ret = n->i;
        return 0;
}

#define OPTIONAL(expr)                                  \
        ({                                              \
                int _r = (expr);                        \
                if (_r < 0 && _r != -ENOENT)            \
                        return _r;                      \
                _r >= 0;                                \
        })

/* Fields that may appear both in put arguments and get responses. */
static int decode_item_fields(const uint8_t *base, const BeNode *d, KrpcMsg *m) {
        const BeNode *v;
        int64_t i;

        v = be_dict_get(d, "v");
        if (v)
                m->v = (KrpcBytes) { .p = base + v->offset, .n = v->size };
        m->has_k = OPTIONAL(get_fixed(d, "k", m->k, sizeof(m->k)));
        m->has_sig = OPTIONAL(get_fixed(d, "sig", m->sig, sizeof(m->sig)));
        m->has_seq = OPTIONAL(get_int(d, "seq", INT64_MIN, INT64_MAX, &m->seq));
        m->has_salt = OPTIONAL(get_string(d, "salt", 0, KRPC_PACKET_MAX, &m->salt));
        if (OPTIONAL(get_int(d, "cas", INT64_MIN, INT64_MAX, &i))) {
                m->has_cas = true;
                m->cas = i;
        }
        return 0;
}

static int decode_query_args(const uint8_t *base, const BeNode *a, KrpcMsg *m) {
        const BeNode *want;
        int64_t i;

        if (OPTIONAL(get_fixed(a, "target", m->target, DHT_ID_SIZE)))
                m->has_target = true;
        else if (OPTIONAL(get_fixed(a, "info_hash", m->target, DHT_ID_SIZE)))
                m->has_target = true;
        OPTIONAL(get_string(a, "token", 1, KRPC_TOKEN_MAX, &m->token));
        if (OPTIONAL(get_int(a, "port", 0, 65535, &i))) {
                m->has_port = true;
                m->port = (uint16_t) i;
        }
        if (OPTIONAL(get_int(a, "implied_port", 0, 1, &i)))
                m->implied_port = i == 1;

        want = be_dict_get(a, "want");
        if (want) {
                const BeNode *w = want + 1;
                if (want->type != BE_LIST || want->count > 8)
                        return -EBADMSG;
                for (uint32_t j = 0; j < want->count; j++, w = be_next(w)) {
                        if (w->type != BE_STR)
                                return -EBADMSG;
                        if (be_str_eq(w, "n4"))
                                m->want_n4 = true;
                        else if (be_str_eq(w, "n6"))
                                m->want_n6 = true;
                }
        }
        return decode_item_fields(base, a, m);
}

static int check_query_args(KrpcMsg *m) {
        switch (m->method) {
        case KRPC_FIND_NODE:
        case KRPC_GET_PEERS:
        case KRPC_GET:
                return m->has_target ? 0 : -EPROTO;
        case KRPC_ANNOUNCE_PEER:
                if (!m->has_target || !m->token.p)
                        return -EPROTO;
                if (!m->implied_port && (!m->has_port || m->port == 0))
                        return -EPROTO;
                return 0;
        case KRPC_PUT:
                if (!m->v.p || !m->token.p)
                        return -EPROTO;
                /* Mutable puts carry k, sig and seq together. */
                if ((m->has_k || m->has_sig || m->has_seq) && !(m->has_k && m->has_sig && m->has_seq))
                        return -EPROTO;
                if ((m->has_salt || m->has_cas) && !m->has_k)
                        return -EPROTO;
                return 0;
        default:
                return 0;
        }
}

static int decode_response(const uint8_t *base, const BeNode *r, KrpcMsg *m) {
        const BeNode *values;

        if (get_fixed(r, "id", m->id, DHT_ID_SIZE) < 0)
                return -EBADMSG;
        m->has_id = true;
        OPTIONAL(get_string(r, "nodes", 0, KRPC_PACKET_MAX, &m->nodes));
        if (m->nodes.p && m->nodes.n % 26 != 0)
                return -EBADMSG;
        OPTIONAL(get_string(r, "nodes6", 0, KRPC_PACKET_MAX, &m->nodes6));
        if (m->nodes6.p && m->nodes6.n % 38 != 0)
                return -EBADMSG;
        OPTIONAL(get_string(r, "token", 1, KRPC_TOKEN_MAX, &m->token));

        values = be_dict_get(r, "values");
        if (values) {
                const BeNode *v = values + 1;
                if (values->type != BE_LIST || values->count > KRPC_MAX_VALUES)
                        return -EBADMSG;
                for (uint32_t j = 0; j < values->count; j++, v = be_next(v)) {
                        if (v->type != BE_STR || (v->count != 6 && v->count != 18))
                                return -EBADMSG;
                        m->values[m->n_values++] = bytes_of(v);
                }
        }
        return decode_item_fields(base, r, m);
}

int krpc_decode(const void *buf, size_t size, KrpcMsg *ret) {
        BeNode nodes[1024];
        const BeNode *root, *y, *n;
        KrpcMsg m = {};
        size_t n_nodes;
        int r;

        if (size > KRPC_PACKET_MAX)
                return -E2BIG;
        r = be_decode(buf, size, &krpc_limits, nodes, ELEMENTSOF(nodes), &n_nodes);
        if (r < 0)
                return r;
        root = &nodes[0];
        if (root->type != BE_DICT)
                return -EBADMSG;

        if (get_string(root, "t", 1, KRPC_TID_MAX, &m.tid) < 0)
                return -EBADMSG;
        y = be_dict_get_type(root, "y", BE_STR);
        if (!y || y->count != 1)
                return -EBADMSG;
        if (OPTIONAL(get_string(root, "v", 0, KRPC_VERSION_MAX, &m.version)) && m.version.n == 0)
                m.version = (KrpcBytes) {};
        n = be_dict_get(root, "ro");
        if (n) {
                if (n->type != BE_INT || (n->i != 0 && n->i != 1))
                        return -EBADMSG;
                m.read_only = n->i == 1;
        }
        n = be_dict_get(root, "ip");
        if (n && (n->type != BE_STR || (n->count != 6 && n->count != 18)))
                return -EBADMSG;

        switch (y->s[0]) {
        case 'q': {
                const BeNode *q = be_dict_get_type(root, "q", BE_STR), *a;

                if (!q || q->count == 0 || q->count > 32)
                        return -EBADMSG;
                m.kind = KRPC_QUERY;
                m.method = KRPC_UNKNOWN;
                for (KrpcMethod i = KRPC_PING; i < _KRPC_METHOD_MAX; i++)
                        if (be_str_eq(q, method_names[i]))
                                m.method = i;
                a = be_dict_get_type(root, "a", BE_DICT);
                if (!a)
                        return -EBADMSG;
                if (get_fixed(a, "id", m.id, DHT_ID_SIZE) < 0)
                        return -EBADMSG;
                m.has_id = true;
                r = decode_query_args(buf, a, &m);
                if (r == -EBADMSG)
                        r = -EPROTO; /* sound envelope, bad arguments: worth an error 203 */
                if (r >= 0)
                        r = check_query_args(&m);
                if (r == -EPROTO) {
                        /* Only what is needed to answer with an error. */
                        *ret = (KrpcMsg) { .kind = KRPC_QUERY, .tid = m.tid, .method = m.method };
                        return r;
                }
                if (r < 0)
                        return r;
                break;
        }
        case 'r': {
                const BeNode *rd = be_dict_get_type(root, "r", BE_DICT);
                if (!rd)
                        return -EBADMSG;
                m.kind = KRPC_RESPONSE;
                r = decode_response(buf, rd, &m);
                if (r < 0)
                        return -EBADMSG;
                break;
        }
        case 'e': {
                const BeNode *e = be_dict_get_type(root, "e", BE_LIST);
                if (!e || e->count != 2 || e[1].type != BE_INT || be_next(&e[1])->type != BE_STR)
                        return -EBADMSG;
                m.kind = KRPC_ERROR;
                m.error_code = e[1].i;
                m.error_msg = bytes_of(be_next(&e[1]));
                break;
        }
        default:
                return -EBADMSG;
        }

        *ret = m;
        return 0;
}

/* The BEP 44 fields are interleaved with the others in key order: k, then (port, nodes...), then
 * salt, seq, sig, then (target, token), then v. */
static void put_k(BeWriter *w, const KrpcMsg *m) {
        if (m->has_k) {
                be_put_cstr(w, "k");
                be_put_str(w, m->k, sizeof(m->k));
        }
}

static void put_salt_seq_sig(BeWriter *w, const KrpcMsg *m) {
        if (m->has_salt && m->salt.p) {
                be_put_cstr(w, "salt");
                be_put_str(w, m->salt.p, m->salt.n);
        }
        if (m->has_seq) {
                be_put_cstr(w, "seq");
                be_put_int(w, m->seq);
        }
        if (m->has_sig) {
                be_put_cstr(w, "sig");
                be_put_str(w, m->sig, sizeof(m->sig));
        }
}

static void put_value(BeWriter *w, const KrpcMsg *m) {
        if (m->v.p) {
                be_put_cstr(w, "v");
                be_put_raw(w, m->v.p, m->v.n);
        }
}

static void encode_query_args(BeWriter *w, const KrpcMsg *m) {
        bool info_hash = m->method == KRPC_GET_PEERS || m->method == KRPC_ANNOUNCE_PEER;

        be_put_dict(w);
        if (m->has_cas) {
                be_put_cstr(w, "cas");
                be_put_int(w, m->cas);
        }
        be_put_cstr(w, "id");
        be_put_str(w, m->id, DHT_ID_SIZE);
        if (m->implied_port) {
                be_put_cstr(w, "implied_port");
                be_put_int(w, 1);
        }
        if (m->has_target && info_hash) {
                be_put_cstr(w, "info_hash");
                be_put_str(w, m->target, DHT_ID_SIZE);
        }
        put_k(w, m);
        if (m->has_port) {
                be_put_cstr(w, "port");
                be_put_int(w, m->port);
        }
        put_salt_seq_sig(w, m);
        if (m->has_target && !info_hash) {
                be_put_cstr(w, "target");
                be_put_str(w, m->target, DHT_ID_SIZE);
        }
        if (m->token.p) {
                be_put_cstr(w, "token");
                be_put_str(w, m->token.p, m->token.n);
        }
        put_value(w, m);
        if (m->want_n4 || m->want_n6) {
                be_put_cstr(w, "want");
                be_put_list(w);
                if (m->want_n4)
                        be_put_cstr(w, "n4");
                if (m->want_n6)
                        be_put_cstr(w, "n6");
                be_put_end(w);
        }
        be_put_end(w);
}

static void encode_response(BeWriter *w, const KrpcMsg *m) {
        be_put_dict(w);
        be_put_cstr(w, "id");
        be_put_str(w, m->id, DHT_ID_SIZE);
        put_k(w, m);
        if (m->nodes.p) {
                be_put_cstr(w, "nodes");
                be_put_str(w, m->nodes.p, m->nodes.n);
        }
        if (m->nodes6.p) {
                be_put_cstr(w, "nodes6");
                be_put_str(w, m->nodes6.p, m->nodes6.n);
        }
        put_salt_seq_sig(w, m);
        if (m->token.p) {
                be_put_cstr(w, "token");
                be_put_str(w, m->token.p, m->token.n);
        }
        put_value(w, m);
        if (m->n_values > 0) {
                be_put_cstr(w, "values");
                be_put_list(w);
                for (size_t i = 0; i < m->n_values; i++)
                        be_put_str(w, m->values[i].p, m->values[i].n);
                be_put_end(w);
        }
        be_put_end(w);
}

int krpc_encode(const KrpcMsg *m, void *buf, size_t size) {
        BeWriter w;
        size_t len;
        int r;

        if (m->tid.n == 0 || m->tid.n > KRPC_TID_MAX)
                return -EINVAL;

        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        switch (m->kind) {
        case KRPC_QUERY:
                if (m->method <= KRPC_UNKNOWN || m->method >= _KRPC_METHOD_MAX)
                        return -EINVAL;
                be_put_cstr(&w, "a");
                encode_query_args(&w, m);
                be_put_cstr(&w, "q");
                be_put_cstr(&w, method_names[m->method]);
                break;
        case KRPC_RESPONSE:
                be_put_cstr(&w, "r");
                encode_response(&w, m);
                break;
        case KRPC_ERROR:
                be_put_cstr(&w, "e");
                be_put_list(&w);
                be_put_int(&w, m->error_code);
                be_put_str(&w, m->error_msg.p ?: (const uint8_t *) "", m->error_msg.n);
                be_put_end(&w);
                break;
        default:
                return -EINVAL;
        }
        if (m->read_only) {
                be_put_cstr(&w, "ro");
                be_put_int(&w, 1);
        }
        be_put_cstr(&w, "t");
        be_put_str(&w, m->tid.p, m->tid.n);
        if (m->version.p && m->version.n > 0) {
                be_put_cstr(&w, "v");
                be_put_str(&w, m->version.p, m->version.n);
        }
        be_put_cstr(&w, "y");
        be_put_cstr(&w, m->kind == KRPC_QUERY ? "q" : m->kind == KRPC_RESPONSE ? "r" : "e");
        be_put_end(&w);

        r = be_writer_finish(&w, &len);
        if (r < 0)
                return r;
        return (int) len;
}

static bool bytes_eq(KrpcBytes a, KrpcBytes b) {
        if (!a.p || !b.p)
                return !a.p == !b.p;
        return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

bool krpc_msg_equal(const KrpcMsg *a, const KrpcMsg *b) {
        if (a->kind != b->kind || !bytes_eq(a->tid, b->tid) || !bytes_eq(a->version, b->version) ||
            a->read_only != b->read_only)
                return false;
        switch (a->kind) {
        case KRPC_ERROR:
                return a->error_code == b->error_code && bytes_eq(a->error_msg, b->error_msg);
        case KRPC_QUERY:
                if (a->method != b->method || a->has_port != b->has_port || a->port != b->port ||
                    a->implied_port != b->implied_port || a->want_n4 != b->want_n4 || a->want_n6 != b->want_n6 ||
                    a->has_target != b->has_target || (a->has_target && !dht_id_eq(a->target, b->target)))
                        return false;
                break;
        case KRPC_RESPONSE:
                if (!bytes_eq(a->nodes, b->nodes) || !bytes_eq(a->nodes6, b->nodes6) || a->n_values != b->n_values)
                        return false;
                for (size_t i = 0; i < a->n_values; i++)
                        if (!bytes_eq(a->values[i], b->values[i]))
                                return false;
                break;
        default:
                return false;
        }
        return a->has_id == b->has_id && dht_id_eq(a->id, b->id) && bytes_eq(a->token, b->token) &&
               bytes_eq(a->v, b->v) && a->has_k == b->has_k && (!a->has_k || memcmp(a->k, b->k, sizeof(a->k)) == 0) &&
               a->has_sig == b->has_sig && (!a->has_sig || memcmp(a->sig, b->sig, sizeof(a->sig)) == 0) &&
               a->has_seq == b->has_seq && a->seq == b->seq && a->has_cas == b->has_cas && a->cas == b->cas &&
               a->has_salt == b->has_salt && bytes_eq(a->salt, b->salt);
}
