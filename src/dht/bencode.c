/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Hand-written on purpose: Debian has no C bencode library that is strict (canonical-only) and bounded,
 * and the format is small enough that a careful iterative decoder is simpler to audit than an adapter.
 * It never recurses, so a hostile nesting depth cannot exhaust the stack. */

#include "bencode.h"

const BeLimits be_limits_default = {
        .max_depth = 32,
        .max_nodes = 4096,
        .max_str = 65536,
};

static bool is_digit(uint8_t c) {
        return c >= '0' && c <= '9';
}

/* Parses a non-negative decimal without leading zeros ending at terminator. */
static int parse_decimal(const uint8_t *p, size_t size, size_t *pos, uint8_t terminator, uint64_t max, uint64_t *ret) {
        size_t i = *pos, start = *pos;
        uint64_t v = 0;

        if (i >= size || !is_digit(p[i]))
                return -EBADMSG;
        if (p[i] == '0' && i + 1 < size && p[i + 1] != terminator)
                return -EBADMSG; /* leading zero */
        for (; i < size && is_digit(p[i]); i++) {
                if (i - start >= 19)
                        return -EBADMSG;
                v = v * 10 + (uint64_t) (p[i] - '0');
        }
        if (i >= size || p[i] != terminator)
                return -EBADMSG;
        if (v > max)
                return -EBADMSG;
        *pos = i + 1;
        *ret = v;
        return 0;
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
        int c = memcmp(a, b, MIN(al, bl));
        if (c != 0)
                return c;
        return al < bl ? -1 : al > bl;
}

/* With prefix, the value may be followed by other bytes, and *ret_end says where it ends. */
static int decode(const void *buf, size_t size, const BeLimits *limits, BeNode *nodes, size_t n_nodes,
                  bool prefix, size_t *ret_n, size_t *ret_end) {
        const uint8_t *p = buf;
        struct {
                uint32_t idx;
                uint32_t children;
                int32_t prev_key;       /* node index of the previous key, -1 if none */
        } stack[BE_DEPTH_MAX];
        unsigned depth = 0, max_depth;
        size_t pos = 0, n = 0, max_nodes;
        int r;

        if (!limits)
                limits = &be_limits_default;
        max_depth = MIN(limits->max_depth, BE_DEPTH_MAX);
        max_nodes = MIN(limits->max_nodes, n_nodes);
        if (size > UINT32_MAX / 2)
                return -E2BIG;
        if (size == 0)
                return -EBADMSG;

        for (;;) {
                BeNode *node;
                size_t idx;

                if (pos >= size)
                        return -EBADMSG; /* truncated */

                if (p[pos] == 'e') {
                        if (depth == 0)
                                return -EBADMSG;
                        node = &nodes[stack[depth - 1].idx];
                        if (node->type == BE_DICT && stack[depth - 1].children % 2 != 0)
                                return -EBADMSG; /* a key without a value */
                        pos++;
                        node->size = (uint32_t) (pos - node->offset);
                        node->span = (uint32_t) (n - stack[depth - 1].idx);
                        node->count = node->type == BE_DICT ? stack[depth - 1].children / 2 : stack[depth - 1].children;
                        depth--;
                } else {
                        bool key = depth > 0 && nodes[stack[depth - 1].idx].type == BE_DICT &&
                                   stack[depth - 1].children % 2 == 0;

                        if (key && !is_digit(p[pos]))
                                return -EBADMSG; /* keys are strings */
                        if (n >= max_nodes)
                                return -E2BIG;
                        idx = n++;
                        node = &nodes[idx];
                        *node = (BeNode) { .offset = (uint32_t) pos, .span = 1 };

                        if (p[pos] == 'i') {
                                bool neg = false;
                                uint64_t v;

                                pos++;
                                if (pos < size && p[pos] == '-') {
                                        neg = true;
                                        pos++;
                                        if (pos < size && p[pos] == '0')
                                                return -EBADMSG; /* "-0" and "-01" */
                                }
                                r = parse_decimal(p, size, &pos, 'e', neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX, &v);
                                if (r < 0)
                                        return r;
                                node->type = BE_INT;
                                node->i = neg ? (int64_t) (0 - v) : (int64_t) v;
                        } else if (is_digit(p[pos])) {
                                uint64_t len;

                                r = parse_decimal(p, size, &pos, ':', UINT32_MAX, &len);
                                if (r < 0)
                                        return r;
                                if (len > size - pos)
                                        return -EBADMSG; /* truncated */
                                if (len > limits->max_str)
                                        return -E2BIG;
                                node->type = BE_STR;
                                node->s = p + pos;
                                node->count = (uint32_t) len;
                                pos += len;
                                if (key) {
                                        int32_t prev = stack[depth - 1].prev_key;
                                        if (prev >= 0 && key_cmp(nodes[prev].s, nodes[prev].count, node->s, node->count) >= 0)
                                                return -EBADMSG; /* unsorted or duplicate key */
                                        stack[depth - 1].prev_key = (int32_t) idx;
                                }
                        } else if (p[pos] == 'l' || p[pos] == 'd') {
                                if (depth >= max_depth)
                                        return -E2BIG;
                                node->type = p[pos] == 'l' ? BE_LIST : BE_DICT;
                                pos++;
                                stack[depth].idx = (uint32_t) idx;
                                stack[depth].children = 0;
                                stack[depth].prev_key = -1;
                                depth++;
                                continue;
                        } else
                                return -EBADMSG;

                        node->size = (uint32_t) (pos - node->offset);
                }

                /* A value is complete: it is either the root or one more child of the open container. */
                if (depth == 0)
                        break;
                stack[depth - 1].children++;
        }

        if (!prefix && pos != size)
                return -EBADMSG; /* trailing bytes */
        if (ret_n)
                *ret_n = n;
        if (ret_end)
                *ret_end = pos;
        return 0;
}

int be_decode(const void *buf, size_t size, const BeLimits *limits, BeNode *nodes, size_t n_nodes, size_t *ret_n) {
        return decode(buf, size, limits, nodes, n_nodes, false, ret_n, NULL);
}

int be_decode_prefix(const void *buf, size_t size, const BeLimits *limits, BeNode *nodes, size_t n_nodes,
                     size_t *ret_n, size_t *ret_size) {
        return decode(buf, size, limits, nodes, n_nodes, true, ret_n, ret_size);
}

const BeNode *be_dict_get(const BeNode *d, const char *key) {
        const BeNode *k;
        size_t kl = strlen(key);

        if (!d || d->type != BE_DICT)
                return NULL;
        k = d + 1;
        for (uint32_t i = 0; i < d->count; i++) {
                const BeNode *v = k + 1;
                int c = key_cmp(k->s, k->count, (const uint8_t *) key, kl);
                if (c == 0)
                        return v;
                if (c > 0)
                        return NULL; /* keys are sorted */
                k = be_next(v);
        }
        return NULL;
}

const BeNode *be_dict_get_type(const BeNode *d, const char *key, BeType type) {
        const BeNode *v = be_dict_get(d, key);
        return v && v->type == type ? v : NULL;
}

bool be_str_eq(const BeNode *n, const char *s) {
        size_t l = strlen(s);
        return n && n->type == BE_STR && n->count == l && memcmp(n->s, s, l) == 0;
}

void be_writer_init(BeWriter *w, void *buf, size_t size) {
        w->buf = buf;
        w->size = size;
        w->len = 0;
        w->error = 0;
        w->depth = 0;
        w->stack[0].n = 0;
        w->stack[0].is_dict = false;
}

static void append(BeWriter *w, const void *p, size_t n) {
        if (w->error)
                return;
        if (n > w->size - w->len) {
                w->error = -ENOBUFS;
                return;
        }
        memcpy(w->buf + w->len, p, n);
        w->len += n;
}

/* Called before every value; is_str tells whether it may be a key. Returns true when it is a key. */
static bool begin_value(BeWriter *w, bool is_str) {
        if (w->error)
                return false;
        if (w->depth == 0) {
                if (w->stack[0].n > 0)
                        w->error = -EINVAL; /* a second root value */
                w->stack[0].n++;
                return false;
        }
        if (w->stack[w->depth].is_dict && w->stack[w->depth].n % 2 == 0) {
                if (!is_str)
                        w->error = -EINVAL;
                w->stack[w->depth].n++;
                return true;
        }
        w->stack[w->depth].n++;
        return false;
}

void be_put_int(BeWriter *w, int64_t v) {
        char b[32];
        int l;

        begin_value(w, false);
        l = snprintf(b, sizeof(b), "i%" PRIi64 "e", v);
        append(w, b, (size_t) l);
}

void be_put_str(BeWriter *w, const void *s, size_t n) {
        char b[24];
        bool key;
        int l;

        key = begin_value(w, true);
        l = snprintf(b, sizeof(b), "%zu:", n);
        append(w, b, (size_t) l);
        if (key && !w->error) {
                typeof(w->stack[0]) *f = &w->stack[w->depth];
                if (f->n > 1 && key_cmp(w->buf + f->key_off, f->key_len, s, n) >= 0) {
                        w->error = -EINVAL; /* keys must be written in ascending order */
                        return;
                }
                f->key_off = (uint32_t) w->len;
                f->key_len = (uint32_t) n;
        }
        append(w, s, n);
}

void be_put_cstr(BeWriter *w, const char *s) {
        be_put_str(w, s, strlen(s));
}

static void put_container(BeWriter *w, bool dict) {
        begin_value(w, false);
        if (w->error)
                return;
        if (w->depth + 1 >= BE_DEPTH_MAX) {
                w->error = -E2BIG;
                return;
        }
        append(w, dict ? "d" : "l", 1);
        w->depth++;
        w->stack[w->depth].is_dict = dict;
        w->stack[w->depth].n = 0;
}

void be_put_list(BeWriter *w) {
        put_container(w, false);
}

void be_put_dict(BeWriter *w) {
        put_container(w, true);
}

void be_put_end(BeWriter *w) {
        if (w->error)
                return;
        if (w->depth == 0 || (w->stack[w->depth].is_dict && w->stack[w->depth].n % 2 != 0)) {
                w->error = -EINVAL;
                return;
        }
        append(w, "e", 1);
        w->depth--;
}

void be_put_raw(BeWriter *w, const void *v, size_t n) {
        BeNode scratch[1024];

        if (w->error)
                return;
        if (be_decode(v, n, &be_limits_default, scratch, ELEMENTSOF(scratch), NULL) < 0) {
                w->error = -EINVAL;
                return;
        }
        if (begin_value(w, false)) {
                w->error = -EINVAL; /* raw values cannot be keys */
                return;
        }
        append(w, v, n);
}

void be_put_node(BeWriter *w, const BeNode *n) {
        switch (n->type) {
        case BE_INT:
                be_put_int(w, n->i);
                break;
        case BE_STR:
                be_put_str(w, n->s, n->count);
                break;
        case BE_LIST:
        case BE_DICT: {
                const BeNode *c = n + 1;
                uint32_t items = n->type == BE_DICT ? n->count * 2 : n->count;

                if (n->type == BE_DICT)
                        be_put_dict(w);
                else
                        be_put_list(w);
                for (uint32_t i = 0; i < items; i++) {
                        be_put_node(w, c);
                        c = be_next(c);
                }
                be_put_end(w);
                break;
        }
        default:
                w->error = -EINVAL;
        }
}

int be_writer_finish(BeWriter *w, size_t *ret_len) {
        if (w->error)
                return w->error;
        if (w->depth != 0 || w->stack[0].n != 1)
                return -EINVAL;
        if (ret_len)
                *ret_len = w->len;
        return 0;
}
