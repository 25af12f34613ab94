/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <limits.h>

#include "peer-wire.h"

struct PeerDecoder {
        size_t max_message;
        bool want_handshake;
        bool has_geometry;
        TorrentGeometry g;
        uint8_t root[SHA256_SIZE];
        int error;
        const char *detail;
        uint8_t *buf;                   /* the unit (handshake, or length prefix and message) being gathered */
        size_t have;                    /* bytes of it in buf */
};

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

const char *peer_msg_type_to_string(PeerMsgType t) {
        switch (t) {
        case PEER_MSG_CHOKE:            return "choke";
        case PEER_MSG_UNCHOKE:          return "unchoke";
        case PEER_MSG_INTERESTED:       return "interested";
        case PEER_MSG_NOT_INTERESTED:   return "not interested";
        case PEER_MSG_HAVE:             return "have";
        case PEER_MSG_BITFIELD:         return "bitfield";
        case PEER_MSG_REQUEST:          return "request";
        case PEER_MSG_PIECE:            return "piece";
        case PEER_MSG_CANCEL:           return "cancel";
        case PEER_MSG_PORT:             return "port";
        case PEER_MSG_SUGGEST:          return "suggest piece";
        case PEER_MSG_HAVE_ALL:         return "have all";
        case PEER_MSG_HAVE_NONE:        return "have none";
        case PEER_MSG_REJECT:           return "reject request";
        case PEER_MSG_ALLOWED_FAST:     return "allowed fast";
        case PEER_MSG_EXTENDED:         return "extended";
        case PEER_MSG_HASH_REQUEST:     return "hash request";
        case PEER_MSG_HASHES:           return "hashes";
        case PEER_MSG_HASH_REJECT:      return "hash reject";
        case PEER_MSG_KEEPALIVE:        return "keep-alive";
        case PEER_MSG_HANDSHAKE:        return "handshake";
        }
        return "unknown";
}

int peer_handshake_encode(const PeerHandshake *h, void *buf, size_t size) {
        uint8_t *p = buf;

        assert(h && buf);
        if (size < PEER_HANDSHAKE_SIZE)
                return -ENOBUFS;
        p[0] = (uint8_t) strlen(PEER_PROTOCOL);
        memcpy(p + 1, PEER_PROTOCOL, 19);
        memcpy(p + 20, h->reserved, 8);
        memcpy(p + 28, h->info_hash, PEER_INFO_HASH_SIZE);
        memcpy(p + 48, h->peer_id, PEER_ID_SIZE);
        return PEER_HANDSHAKE_SIZE;
}

int peer_handshake_parse(const void *buf, size_t size, PeerHandshake *ret) {
        const uint8_t *p = buf;

        assert(buf && ret);
        if (size != PEER_HANDSHAKE_SIZE || p[0] != 19 || memcmp(p + 1, PEER_PROTOCOL, 19) != 0)
                return -EPROTO;
        memcpy(ret->reserved, p + 20, 8);
        memcpy(ret->info_hash, p + 28, PEER_INFO_HASH_SIZE);
        memcpy(ret->peer_id, p + 48, PEER_ID_SIZE);
        return 0;
}

/* The payload size (after the id) of m, or SIZE_MAX when m cannot be encoded. */
static size_t payload_size(const PeerMsg *m) {
        size_t count;

        switch (m->type) {
        case PEER_MSG_CHOKE:
        case PEER_MSG_UNCHOKE:
        case PEER_MSG_INTERESTED:
        case PEER_MSG_NOT_INTERESTED:
        case PEER_MSG_HAVE_ALL:
        case PEER_MSG_HAVE_NONE:
                return 0;
        case PEER_MSG_HAVE:
        case PEER_MSG_SUGGEST:
        case PEER_MSG_ALLOWED_FAST:
                return 4;
        case PEER_MSG_REQUEST:
        case PEER_MSG_CANCEL:
        case PEER_MSG_REJECT:
                return 12;
        case PEER_MSG_PORT:
                return 2;
        case PEER_MSG_BITFIELD:
                return m->size;
        case PEER_MSG_PIECE:
                return 8 + m->size;
        case PEER_MSG_EXTENDED:
                return 1 + m->size;
        case PEER_MSG_HASH_REQUEST:
        case PEER_MSG_HASH_REJECT:
                return PEER_HASH_HEADER_SIZE;
        case PEER_MSG_HASHES:
                if (merkle_hashes_count(m->hash.length, m->hash.proof_layers, &count) < 0 || count != m->n_hashes)
                        return SIZE_MAX;
                return PEER_HASH_HEADER_SIZE + m->n_hashes * SHA256_SIZE;
        default:
                return SIZE_MAX;
        }
}

size_t peer_msg_encoded_size(const PeerMsg *m) {
        size_t n;

        assert(m);
        if (m->type == PEER_MSG_KEEPALIVE)
                return 4;
        n = payload_size(m);
        if (n == SIZE_MAX || n >= UINT32_MAX - 1)
                return 0;
        return 5 + n;
}

static void put_hash_header(uint8_t *p, const TorrentHashRequest *h) {
        memcpy(p, h->root, SHA256_SIZE);
        put32(p + 32, h->base);
        put32(p + 36, h->index);
        put32(p + 40, h->length);
        put32(p + 44, h->proof_layers);
}

int peer_msg_encode(const PeerMsg *m, void *buf, size_t size) {
        size_t total = peer_msg_encoded_size(m);
        uint8_t *p = buf;

        assert(buf);
        if (total == 0)
                return -EINVAL;
        if (total > size)
                return -ENOBUFS;
        if (total > INT_MAX)
                return -EINVAL;
        put32(p, (uint32_t) (total - 4));
        if (m->type == PEER_MSG_KEEPALIVE)
                return 4;
        p[4] = (uint8_t) m->type;
        p += 5;

        switch (m->type) {
        case PEER_MSG_HAVE:
        case PEER_MSG_SUGGEST:
        case PEER_MSG_ALLOWED_FAST:
                put32(p, m->index);
                break;
        case PEER_MSG_REQUEST:
        case PEER_MSG_CANCEL:
        case PEER_MSG_REJECT:
                put32(p, m->index);
                put32(p + 4, m->begin);
                put32(p + 8, m->length);
                break;
        case PEER_MSG_PORT:
                p[0] = (uint8_t) (m->port >> 8);
                p[1] = (uint8_t) m->port;
                break;
        case PEER_MSG_BITFIELD:
                if (m->size > 0)
                        memcpy(p, m->data, m->size);
                break;
        case PEER_MSG_PIECE:
                put32(p, m->index);
                put32(p + 4, m->begin);
                if (m->size > 0)
                        memcpy(p + 8, m->data, m->size);
                break;
        case PEER_MSG_EXTENDED:
                p[0] = m->ext_id;
                if (m->size > 0)
                        memcpy(p + 1, m->data, m->size);
                break;
        case PEER_MSG_HASH_REQUEST:
        case PEER_MSG_HASH_REJECT:
                put_hash_header(p, &m->hash);
                break;
        case PEER_MSG_HASHES:
                put_hash_header(p, &m->hash);
                memcpy(p + PEER_HASH_HEADER_SIZE, m->hashes, m->n_hashes * SHA256_SIZE);
                break;
        default:
                break;
        }
        return (int) total;
}

int peer_piece_header_encode(uint32_t index, uint32_t begin, uint32_t length, void *buf, size_t size) {
        uint8_t *p = buf;

        assert(buf);
        if (size < PEER_PIECE_HEADER_SIZE)
                return -ENOBUFS;
        if (length > UINT32_MAX - 9)
                return -EINVAL;
        put32(p, 9 + length);
        p[4] = PEER_MSG_PIECE;
        put32(p + 5, index);
        put32(p + 9, begin);
        return PEER_PIECE_HEADER_SIZE;
}

int peer_decoder_new(const PeerDecoderConfig *c, PeerDecoder **ret) {
        _cleanup_(peer_decoder_freep) PeerDecoder *d = NULL;
        size_t max = c && c->max_message > 0 ? c->max_message : PEER_MESSAGE_MAX_DEFAULT;

        assert(ret);
        if (max > UINT32_MAX - 4)
                return -EINVAL;
        d = calloc(1, sizeof(PeerDecoder));
        if (!d)
                return -ENOMEM;
        d->max_message = max;
        d->want_handshake = c && c->handshake;
        d->buf = malloc(MAX((size_t) PEER_HANDSHAKE_SIZE, 4 + max));
        if (!d->buf)
                return -ENOMEM;
        *ret = TAKE_PTR(d);
        return 0;
}

PeerDecoder *peer_decoder_free(PeerDecoder *d) {
        if (!d)
                return NULL;
        free(d->buf);
        free(d);
        return NULL;
}

void peer_decoder_set_geometry(PeerDecoder *d, const TorrentGeometry *g, const uint8_t root[SHA256_SIZE]) {
        assert(d && g && root);
        d->g = *g;
        memcpy(d->root, root, SHA256_SIZE);
        d->has_geometry = true;
}

const char *peer_decoder_error(const PeerDecoder *d) {
        return d->detail;
}

static int fail(PeerDecoder *d, int error, const char *detail) {
        d->error = error;
        d->detail = detail;
        return error;
}

static void get_hash_header(const uint8_t *p, TorrentHashRequest *h) {
        memcpy(h->root, p, SHA256_SIZE);
        h->base = get32(p + 32);
        h->index = get32(p + 36);
        h->length = get32(p + 40);
        h->proof_layers = get32(p + 44);
}

/* Fields any request could have, whatever the file: what a hashes or hash reject must echo. */
static bool hash_fields_plausible(const TorrentHashRequest *h) {
        size_t count;
        return merkle_hashes_count(h->length, h->proof_layers, &count) >= 0 && h->index % h->length == 0;
}

static bool index_ok(const PeerDecoder *d, uint32_t index) {
        return !d->has_geometry || index < d->g.n_pieces;
}

/* p[0..n): the id and payload of one message. */
static int parse_message(PeerDecoder *d, const uint8_t *p, size_t n, PeerMsg *m) {
        const uint8_t *q = p + 1;
        size_t len = n - 1;     /* payload */
        size_t count;

        *m = (PeerMsg) { .type = p[0] };
        switch (p[0]) {
        case PEER_MSG_CHOKE:
        case PEER_MSG_UNCHOKE:
        case PEER_MSG_INTERESTED:
        case PEER_MSG_NOT_INTERESTED:
        case PEER_MSG_HAVE_ALL:
        case PEER_MSG_HAVE_NONE:
                if (len != 0)
                        return fail(d, -EBADMSG, "message without payload has a payload");
                return 1;

        case PEER_MSG_HAVE:
        case PEER_MSG_SUGGEST:
        case PEER_MSG_ALLOWED_FAST:
                if (len != 4)
                        return fail(d, -EBADMSG, "have, suggest or allowed fast payload is not 4 bytes");
                m->index = get32(q);
                if (!index_ok(d, m->index))
                        return fail(d, -ERANGE, "piece index past the last piece");
                return 1;

        case PEER_MSG_BITFIELD:
                if (d->has_geometry) {
                        uint32_t bits = d->g.n_pieces;
                        if (len != (bits + 7) / 8)
                                return fail(d, -EILSEQ, "bitfield length does not match the piece count");
                        if (bits % 8 != 0 && (q[len - 1] & (0xff >> (bits % 8))) != 0)
                                return fail(d, -EILSEQ, "bitfield has spare bits set");
                }
                m->data = q;
                m->size = len;
                return 1;

        case PEER_MSG_REQUEST:
        case PEER_MSG_CANCEL:
        case PEER_MSG_REJECT:
                if (len != 12)
                        return fail(d, -EBADMSG, "request, cancel or reject payload is not 12 bytes");
                m->index = get32(q);
                m->begin = get32(q + 4);
                m->length = get32(q + 8);
                if (p[0] == PEER_MSG_REJECT && !index_ok(d, m->index))
                        return fail(d, -ERANGE, "rejected piece index past the last piece");
                if (p[0] == PEER_MSG_REQUEST)
                        m->reject = m->length == 0 || m->length > PEER_BLOCK_MAX ||
                                    (d->has_geometry && (m->index >= d->g.n_pieces ||
                                     (uint64_t) m->begin + m->length > torrent_piece_size(&d->g, m->index)));
                return 1;

        case PEER_MSG_PIECE:
                if (len < 9)
                        return fail(d, -EBADMSG, "piece message without a block");
                m->index = get32(q);
                m->begin = get32(q + 4);
                m->data = q + 8;
                m->size = len - 8;
                m->length = (uint32_t) m->size;
                if (m->size > PEER_BLOCK_MAX)
                        return fail(d, -EMSGSIZE, "piece block larger than 16 KiB");
                if (!index_ok(d, m->index))
                        return fail(d, -ERANGE, "piece index past the last piece");
                if (d->has_geometry && (uint64_t) m->begin + m->size > torrent_piece_size(&d->g, m->index))
                        return fail(d, -ERANGE, "piece block past the end of its piece");
                return 1;

        case PEER_MSG_PORT:
                if (len != 2)
                        return fail(d, -EBADMSG, "port payload is not 2 bytes");
                m->port = (uint16_t) (q[0] << 8 | q[1]);
                return 1;

        case PEER_MSG_EXTENDED:
                if (len < 1)
                        return fail(d, -EBADMSG, "extended message without extension id");
                m->ext_id = q[0];
                m->data = q + 1;
                m->size = len - 1;
                return 1;

        case PEER_MSG_HASH_REQUEST:
                if (len != PEER_HASH_HEADER_SIZE)
                        return fail(d, -EBADMSG, "hash request payload is not 48 bytes");
                get_hash_header(q, &m->hash);
                if (d->has_geometry)
                        m->reject = memcmp(m->hash.root, d->root, SHA256_SIZE) != 0 ||
                                    merkle_request_check(&d->g, &m->hash) < 0;
                else
                        m->reject = !hash_fields_plausible(&m->hash);
                return 1;

        case PEER_MSG_HASH_REJECT:
                if (len != PEER_HASH_HEADER_SIZE)
                        return fail(d, -EBADMSG, "hash reject payload is not 48 bytes");
                get_hash_header(q, &m->hash);
                if (!hash_fields_plausible(&m->hash))
                        return fail(d, -EDOM, "hash reject of a request nobody could make");
                return 1;

        case PEER_MSG_HASHES:
                if (len < PEER_HASH_HEADER_SIZE || (len - PEER_HASH_HEADER_SIZE) % SHA256_SIZE != 0)
                        return fail(d, -EBADMSG, "hashes payload is not a header and whole hashes");
                get_hash_header(q, &m->hash);
                if (!hash_fields_plausible(&m->hash))
                        return fail(d, -EDOM, "hashes answer a request nobody could make");
                (void) merkle_hashes_count(m->hash.length, m->hash.proof_layers, &count);
                m->hashes = q + PEER_HASH_HEADER_SIZE;
                m->n_hashes = (len - PEER_HASH_HEADER_SIZE) / SHA256_SIZE;
                if (m->n_hashes != count)
                        return fail(d, -EBADMSG, "hashes count does not match the request's length and proof layers");
                return 1;

        default:
                return fail(d, -EOPNOTSUPP, "unknown message id");
        }
}

/* A whole unit in p[0..n): the handshake, or a length prefix and its message. *ret is written only
 * when it is valid. */
static int parse_unit(PeerDecoder *d, const uint8_t *p, size_t n, PeerMsg *ret) {
        PeerMsg m = {};
        int r;

        if (d->want_handshake) {
                m.type = PEER_MSG_HANDSHAKE;
                if (peer_handshake_parse(p, n, &m.handshake) < 0)
                        return fail(d, -EPROTO, "not a BitTorrent handshake");
                d->want_handshake = false;
        } else if (n == 4)
                m.type = PEER_MSG_KEEPALIVE;
        else {
                r = parse_message(d, p + 4, n - 4, &m);
                if (r < 0)
                        return r;
        }
        *ret = m;
        return 1;
}

/* The size of the unit starting with p[0..n), or 0 when n is too short to tell; -EMSGSIZE. */
static int unit_size(PeerDecoder *d, const uint8_t *p, size_t n, size_t *ret) {
        uint32_t len;

        if (d->want_handshake) {
                /* Fail early on what cannot be a handshake, rather than wait for 68 bytes. */
                if (n >= 1 && p[0] != 19)
                        return fail(d, -EPROTO, "not a BitTorrent handshake");
                *ret = PEER_HANDSHAKE_SIZE;
                return 0;
        }
        if (n < 4) {
                *ret = 0;
                return 0;
        }
        len = get32(p);
        if (len > d->max_message)
                return fail(d, -EMSGSIZE, "message longer than the limit");
        *ret = 4 + (size_t) len;
        return 0;
}

int peer_decoder_feed(PeerDecoder *d, const void *data, size_t size, size_t *ret_used, PeerMsg *ret_msg) {
        const uint8_t *p = data;
        size_t used = 0, need;
        int r;

        assert(d && ret_used && ret_msg);
        assert(data || size == 0);
        *ret_used = 0;
        if (d->error)
                return d->error;

        if (d->have == 0) {
                /* The whole unit may be in data: decode it where it lies. */
                r = unit_size(d, p, size, &need);
                if (r < 0)
                        return r;
                if (need > 0 && size >= need) {
                        *ret_used = need;
                        return parse_unit(d, p, need, ret_msg);
                }
        }

        for (;;) {
                size_t n;

                r = unit_size(d, d->buf, d->have, &need);
                if (r < 0) {
                        *ret_used = used;
                        return r;
                }
                if (need == 0)
                        need = 4; /* the length prefix first */
                else if (d->have == need)
                        break;
                if (used == size) {
                        *ret_used = used;
                        return 0;
                }
                n = MIN(need - d->have, size - used);
                memcpy(d->buf + d->have, p + used, n);
                d->have += n;
                used += n;
        }

        *ret_used = used;
        r = parse_unit(d, d->buf, d->have, ret_msg);
        d->have = 0;
        return r;
}
