/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A strict bencode codec (BEP 3).
 *
 * The decoder accepts only the canonical form: integers without leading zeros or "-0", string lengths
 * without leading zeros, dictionary keys that are strings in strictly ascending byte order, and exactly
 * one value with nothing after it. Depth, number of values and string length are bounded. The result
 * is a flat array of nodes pointing into the input (no copies): a container's children follow it, and
 * node + node->span is its next sibling. Anything malformed is rejected as a whole (-EBADMSG), and an
 * input beyond a bound is rejected too (-E2BIG), so a caller never sees half a message.
 *
 * Because only canonical input is accepted, decoding and re-encoding give back the same bytes; that is
 * what BEP 44 signatures over values rely on, and what the fuzz target checks. */

#include "macro.h"

typedef enum BeType {
        BE_INT = 1,
        BE_STR,
        BE_LIST,
        BE_DICT,
} BeType;

typedef struct BeNode {
        BeType type;
        uint32_t offset;        /* of the value's first byte in the input */
        uint32_t size;          /* length of the value's encoding */
        uint32_t span;          /* this node plus all its descendants */
        uint32_t count;         /* list: items; dict: key/value pairs; string: length */
        int64_t i;              /* BE_INT */
        const uint8_t *s;       /* BE_STR: the bytes (not NUL-terminated) */
} BeNode;

typedef struct BeLimits {
        unsigned max_depth;     /* nesting of lists and dicts; at most BE_DEPTH_MAX */
        size_t max_nodes;       /* values in total (a dict pair counts as two) */
        size_t max_str;         /* bytes in one string */
} BeLimits;

#define BE_DEPTH_MAX 64U

/* Decodes buf into nodes[0..n_nodes). Returns 0 and the number of nodes used, -EBADMSG when the input
 * is not canonical bencode, -E2BIG when it exceeds limits or n_nodes. ret_n may be NULL. */
int be_decode(const void *buf, size_t size, const BeLimits *limits, BeNode *nodes, size_t n_nodes, size_t *ret_n);

/* Like be_decode(), but the value may be followed by other bytes, which are not looked at: *ret_size
 * (may be NULL) is the length of the value. For messages that carry raw bytes after a bencoded
 * dictionary, such as BEP 9's metadata pieces. */
int be_decode_prefix(const void *buf, size_t size, const BeLimits *limits, BeNode *nodes, size_t n_nodes,
                     size_t *ret_n, size_t *ret_size);

static inline const BeNode *be_next(const BeNode *n) {
        return n + n->span;
}
/* The value stored under key in dict d, or NULL (also when d is not a dict). */
const BeNode *be_dict_get(const BeNode *d, const char *key);
/* Same, but NULL unless the value has the given type. */
const BeNode *be_dict_get_type(const BeNode *d, const char *key, BeType type);
/* Whether string node n equals the NUL-terminated s. */
bool be_str_eq(const BeNode *n, const char *s);

/* The writer appends to a caller-provided buffer. Errors are sticky and reported by be_writer_finish():
 * overflow (-ENOBUFS), unbalanced containers, a non-string or out-of-order dictionary key (-EINVAL), so
 * the writer only ever produces canonical bencode. */
typedef struct BeWriter {
        uint8_t *buf;
        size_t size, len;
        int error;
        unsigned depth;
        struct {
                bool is_dict;
                uint32_t n;             /* values written at this level */
                uint32_t key_off, key_len;
        } stack[BE_DEPTH_MAX];
} BeWriter;

void be_writer_init(BeWriter *w, void *buf, size_t size);
void be_put_int(BeWriter *w, int64_t v);
void be_put_str(BeWriter *w, const void *s, size_t n);
void be_put_cstr(BeWriter *w, const char *s);
void be_put_list(BeWriter *w);
void be_put_dict(BeWriter *w);
void be_put_end(BeWriter *w);
/* Appends an already encoded value (checked to be canonical bencode). */
void be_put_raw(BeWriter *w, const void *v, size_t n);
/* Re-encodes a decoded node. */
void be_put_node(BeWriter *w, const BeNode *n);
/* Returns the length written, or the first error. */
int be_writer_finish(BeWriter *w, size_t *ret_len);

/* Limits suitable for values nested in DHT items and messages. */
extern const BeLimits be_limits_default;
