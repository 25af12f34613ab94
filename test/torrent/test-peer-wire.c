/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The peer wire codec: every message round-trips whatever the chunking, and malformed streams fail
 * with the error that names their defect. */

#include "peer-wire.h"
#include "tests.h"

static TorrentGeometry geometry;       /* 10 pieces of 32 KiB, the last 32668 bytes */
static const uint8_t root[32] = { 0xaa, 0xbb };

static size_t frame(uint8_t *out, uint32_t prefix, int id, const void *payload, size_t n) {
        out[0] = (uint8_t) (prefix >> 24);
        out[1] = (uint8_t) (prefix >> 16);
        out[2] = (uint8_t) (prefix >> 8);
        out[3] = (uint8_t) prefix;
        if (id < 0)
                return 4;
        out[4] = (uint8_t) id;
        if (n > 0)
                memcpy(out + 5, payload, n);
        return 5 + n;
}

/* A message with a correct length prefix. */
static size_t msg(uint8_t *out, int id, const void *payload, size_t n) {
        return frame(out, (uint32_t) n + 1, id, payload, n);
}

static void u32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static size_t hash_payload(uint8_t *p, uint32_t base, uint32_t index, uint32_t length, uint32_t proof, size_t n_hashes) {
        memcpy(p, root, 32);
        u32(p + 32, base);
        u32(p + 36, index);
        u32(p + 40, length);
        u32(p + 44, proof);
        memset(p + 48, 0x5a, n_hashes * 32);
        return 48 + n_hashes * 32;
}

typedef struct Result {
        int r;
        PeerMsg msgs[64];
        size_t n;
        const char *detail;
} Result;

/* Decodes buf in chunks of `chunk` bytes (0: all at once). Payload pointers are only valid during
 * the call, so the messages keep their scalar fields. */
static void decode(const uint8_t *buf, size_t size, size_t chunk, bool handshake, bool with_geometry, Result *res) {
        PeerDecoderConfig c = { .handshake = handshake, .max_message = 64 * 1024 };
        PeerDecoder *d;
        size_t off = 0;

        memset(res, 0, sizeof(*res));
        if (peer_decoder_new(&c, &d) < 0)
                abort();
        if (with_geometry)
                peer_decoder_set_geometry(d, &geometry, root);
        while (off < size) {
                size_t n = chunk ? MIN(chunk, size - off) : size - off, used;
                const uint8_t *end = buf + off + n;

                while (n > 0) {
                        PeerMsg m;
                        int r = peer_decoder_feed(d, end - n, n, &used, &m);
                        if (used > n)
                                abort();
                        n -= used;
                        if (r < 0) {
                                res->r = r;
                                res->detail = peer_decoder_error(d);
                                /* Sticky. */
                                if (peer_decoder_feed(d, buf, size, &used, &m) != r || used != 0)
                                        abort();
                                peer_decoder_free(d);
                                return;
                        }
                        if (r > 0 && res->n < ELEMENTSOF(res->msgs)) {
                                m.data = m.hashes = NULL;
                                res->msgs[res->n++] = m;
                        }
                        if (r == 0 && n > 0)
                                abort(); /* 0 means everything was taken */
                }
                off += chunk ? MIN(chunk, size - off) : size - off;
        }
        peer_decoder_free(d);
}

static void test_handshake(void) {
        PeerHandshake h = {}, p;
        uint8_t buf[100];

        memset(h.info_hash, 0x11, 20);
        memset(h.peer_id, 0x22, 20);
        peer_reserved_set(h.reserved, PEER_RESERVED_EXTENSION);
        peer_reserved_set(h.reserved, PEER_RESERVED_FAST);
        peer_reserved_set(h.reserved, PEER_RESERVED_DHT);
        ASSERT_INT_EQ(peer_handshake_encode(&h, buf, 67), -ENOBUFS);
        ASSERT_INT_EQ(peer_handshake_encode(&h, buf, sizeof(buf)), 68);
        ASSERT_TRUE(memcmp(buf, "\x13" "BitTorrent protocol\0\0\0\0\0\x10\0\x05", 28) == 0);
        ASSERT_INT_EQ(peer_handshake_parse(buf, 68, &p), 0);
        ASSERT_TRUE(memcmp(&p, &h, sizeof(h)) == 0);
        ASSERT_TRUE(peer_reserved_get(p.reserved, PEER_RESERVED_FAST));
        ASSERT_TRUE(!peer_reserved_get(p.reserved, PEER_RESERVED_V2));
        ASSERT_INT_EQ(peer_handshake_parse(buf, 67, &p), -EPROTO);

        /* Through the decoder, then messages follow; in one chunk and byte by byte. */
        buf[68] = 0, buf[69] = 0, buf[70] = 0, buf[71] = 1, buf[72] = PEER_MSG_INTERESTED;
        for (size_t chunk = 0; chunk < 3; chunk++) {
                Result res;
                decode(buf, 73, chunk, true, false, &res);
                ASSERT_INT_EQ(res.r, 0);
                ASSERT_UINT_EQ(res.n, 2);
                ASSERT_INT_EQ(res.msgs[0].type, PEER_MSG_HANDSHAKE);
                ASSERT_TRUE(memcmp(res.msgs[0].handshake.peer_id, h.peer_id, 20) == 0);
                ASSERT_INT_EQ(res.msgs[1].type, PEER_MSG_INTERESTED);
        }
}

static void test_round_trip(void) {
        static uint8_t block[16384], hashes[6 * 32], bits[2] = { 0xff, 0xc0 }, ext[] = "d1:md11:ut_metadatai3eee";
        PeerMsg in[] = {
                { .type = PEER_MSG_KEEPALIVE },
                { .type = PEER_MSG_CHOKE },
                { .type = PEER_MSG_UNCHOKE },
                { .type = PEER_MSG_INTERESTED },
                { .type = PEER_MSG_NOT_INTERESTED },
                { .type = PEER_MSG_HAVE, .index = 9 },
                { .type = PEER_MSG_BITFIELD, .data = bits, .size = 2 },
                { .type = PEER_MSG_REQUEST, .index = 3, .begin = 16384, .length = 16384 },
                { .type = PEER_MSG_PIECE, .index = 9, .begin = 16384, .data = block, .size = 32668 - 16384 },
                { .type = PEER_MSG_PIECE, .index = 0, .begin = 0, .data = block, .size = 16384 },
                { .type = PEER_MSG_CANCEL, .index = 3, .begin = 16384, .length = 16384 },
                { .type = PEER_MSG_PORT, .port = 6881 },
                { .type = PEER_MSG_SUGGEST, .index = 1 },
                { .type = PEER_MSG_HAVE_ALL },
                { .type = PEER_MSG_HAVE_NONE },
                { .type = PEER_MSG_REJECT, .index = 2, .begin = 0, .length = 16384 },
                { .type = PEER_MSG_ALLOWED_FAST, .index = 4 },
                { .type = PEER_MSG_EXTENDED, .ext_id = 0, .data = ext, .size = sizeof(ext) - 1 },
                { .type = PEER_MSG_EXTENDED, .ext_id = 3, .data = NULL, .size = 0 },
                { .type = PEER_MSG_HASH_REQUEST, .hash = { .base = 0, .index = 4, .length = 4, .proof_layers = 2 } },
                { .type = PEER_MSG_HASHES, .hash = { .base = 1, .index = 4, .length = 4, .proof_layers = 3 },
                  .hashes = hashes, .n_hashes = 6 },
                { .type = PEER_MSG_HASH_REJECT, .hash = { .base = 0, .index = 8, .length = 8, .proof_layers = 0 } },
        };
        _cleanup_free_ uint8_t *stream = malloc(200000);
        size_t len = 0;

        for (size_t i = 0; i < sizeof(block); i++)
                block[i] = (uint8_t) i;
        for (size_t i = 0; i < sizeof(hashes); i++)
                hashes[i] = (uint8_t) (i * 7);
        for (size_t i = 0; i < ELEMENTSOF(in); i++) {
                int r;

                memcpy(in[i].hash.root, root, 32);
                ASSERT_INT_EQ(peer_msg_encode(&in[i], stream + len, peer_msg_encoded_size(&in[i]) - 1), -ENOBUFS);
                r = peer_msg_encode(&in[i], stream + len, 200000 - len);
                ASSERT_TRUE(r > 0);
                ASSERT_UINT_EQ((size_t) r, peer_msg_encoded_size(&in[i]));
                len += (size_t) r;
        }

        /* The same messages back, in one chunk, byte by byte, and in chunks of awkward sizes. */
        static const size_t chunks[] = { 0, 1, 3, 4, 5, 13, 999, 16397 };
        for (size_t k = 0; k < ELEMENTSOF(chunks); k++)
                for (int geo = 0; geo < 2; geo++) {
                        Result res;
                        decode(stream, len, chunks[k], false, geo, &res);
                        if (res.r < 0)
                                fprintf(stderr, "chunk %zu: %s\n", chunks[k], res.detail);
                        ASSERT_INT_EQ(res.r, 0);
                        ASSERT_UINT_EQ(res.n, ELEMENTSOF(in));
                        for (size_t i = 0; i < res.n; i++) {
                                const PeerMsg *a = &in[i], *b = &res.msgs[i];
                                ASSERT_INT_EQ(b->type, a->type);
                                ASSERT_TRUE(!b->reject);
                                ASSERT_UINT_EQ(b->index, a->index);
                                ASSERT_UINT_EQ(b->begin, a->begin);
                                ASSERT_UINT_EQ(b->length, a->type == PEER_MSG_PIECE ? a->size : a->length);
                                ASSERT_UINT_EQ(b->port, a->port);
                                ASSERT_UINT_EQ(b->ext_id, a->ext_id);
                                ASSERT_UINT_EQ(b->size, a->size);
                                ASSERT_UINT_EQ(b->n_hashes, a->n_hashes);
                                if (a->type >= PEER_MSG_HASH_REQUEST && a->type <= PEER_MSG_HASH_REJECT)
                                        ASSERT_TRUE(memcmp(&b->hash, &a->hash, sizeof(a->hash)) == 0);
                        }
                }

        /* Payloads are delivered intact (checked here, where the pointers are valid). */
        PeerDecoder *d;
        PeerMsg m;
        size_t used, off = 0;
        int n = 0;
        ASSERT_INT_EQ(peer_decoder_new(NULL, &d), 0);
        while (off < len) {
                size_t chunk = MIN((size_t) 777, len - off);
                int r = peer_decoder_feed(d, stream + off, chunk, &used, &m);
                off += used;
                ASSERT_TRUE(r >= 0);
                if (r == 0)
                        continue;
                if (m.type == PEER_MSG_PIECE)
                        ASSERT_TRUE(memcmp(m.data, block, m.size) == 0);
                if (m.type == PEER_MSG_HASHES)
                        ASSERT_TRUE(memcmp(m.hashes, hashes, sizeof(hashes)) == 0);
                if (m.type == PEER_MSG_EXTENDED && m.ext_id == 0)
                        ASSERT_TRUE(m.size == sizeof(ext) - 1 && memcmp(m.data, ext, m.size) == 0);
                if (m.type == PEER_MSG_BITFIELD)
                        ASSERT_TRUE(m.size == 2 && memcmp(m.data, bits, 2) == 0);
                n++;
        }
        peer_decoder_free(d);
        ASSERT_INT_EQ(n, (int) ELEMENTSOF(in));

        /* Messages the encoder refuses. */
        PeerMsg bad = { .type = PEER_MSG_HASHES, .hash = { .length = 4, .proof_layers = 0 }, .hashes = hashes, .n_hashes = 5 };
        ASSERT_INT_EQ(peer_msg_encode(&bad, stream, 200000), -EINVAL);
        bad = (PeerMsg) { .type = PEER_MSG_HANDSHAKE };
        ASSERT_INT_EQ(peer_msg_encode(&bad, stream, 200000), -EINVAL);
        bad = (PeerMsg) { .type = 12 };
        ASSERT_INT_EQ(peer_msg_encode(&bad, stream, 200000), -EINVAL);

        uint8_t hdr[13];
        ASSERT_INT_EQ(peer_piece_header_encode(1, 2, 16384, hdr, sizeof(hdr)), 13);
        ASSERT_TRUE(memcmp(hdr, "\0\0\x40\x09\x07\0\0\0\x01\0\0\0\x02", 13) == 0);
}

static void expect(const char *what, const uint8_t *buf, size_t len, bool handshake, bool geo, int error, size_t n_before) {
        static const size_t chunks[] = { 0, 1, 7 };

        for (size_t k = 0; k < ELEMENTSOF(chunks); k++) {
                Result res;
                decode(buf, len, chunks[k], handshake, geo, &res);
                if (res.r != error || res.n != n_before)
                        fprintf(stderr, "%s (chunk %zu): got %d after %zu messages (%s), expected %d\n",
                                what, chunks[k], res.r, res.n, strna(res.detail), error);
                ASSERT_INT_EQ(res.r, error);
                ASSERT_UINT_EQ(res.n, n_before);
                ASSERT_TRUE(res.detail != NULL);
        }
}

#define EXPECT(what, handshake, geo, error) expect(what, b, n, handshake, geo, error, 0)

static void test_malformed(void) {
        uint8_t b[70000], p[70000] = {}, hs[68];
        PeerHandshake h = {};
        size_t n;

        /* Handshakes. */
        peer_handshake_encode(&h, hs, sizeof(hs));
        memcpy(b, hs, 68), b[0] = 18, n = 68;
        EXPECT("handshake length byte", true, false, -EPROTO);
        memcpy(b, hs, 68), b[19] = 'X', n = 68;
        EXPECT("handshake protocol string", true, false, -EPROTO);
        n = frame(b, 1, PEER_MSG_INTERESTED, NULL, 0);
        EXPECT("message instead of handshake", true, false, -EPROTO);

        /* Framing. */
        n = frame(b, 64 * 1024 + 1, PEER_MSG_PIECE, NULL, 0);
        EXPECT("length over the limit", false, false, -EMSGSIZE);
        n = frame(b, UINT32_MAX, PEER_MSG_PIECE, NULL, 0);
        EXPECT("length 2^32-1", false, false, -EMSGSIZE);
        n = msg(b, 10, NULL, 0);
        EXPECT("id 10", false, false, -EOPNOTSUPP);
        n = msg(b, 24, NULL, 0);
        EXPECT("id 24", false, false, -EOPNOTSUPP);
        n = msg(b, 255, p, 3);
        EXPECT("id 255", false, false, -EOPNOTSUPP);

        /* Sizes. */
        n = msg(b, PEER_MSG_CHOKE, p, 1);
        EXPECT("choke with payload", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HAVE_ALL, p, 4);
        EXPECT("have all with payload", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HAVE, p, 3);
        EXPECT("have of 3 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HAVE, p, 5);
        EXPECT("have of 5 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_REQUEST, p, 11);
        EXPECT("request of 11 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_CANCEL, p, 13);
        EXPECT("cancel of 13 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_REJECT, p, 4);
        EXPECT("reject of 4 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_PIECE, p, 8);
        EXPECT("piece without block", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_PIECE, p, 3);
        EXPECT("piece of 3 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_PIECE, p, 8 + 16385);
        EXPECT("piece block over 16 KiB", false, false, -EMSGSIZE);
        n = msg(b, PEER_MSG_PORT, p, 1);
        EXPECT("port of 1 byte", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_PORT, p, 3);
        EXPECT("port of 3 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_EXTENDED, p, 0);
        EXPECT("extended without id", false, false, -EBADMSG);

        /* Indices, once the geometry is known. */
        u32(p, 10);
        n = msg(b, PEER_MSG_HAVE, p, 4);
        EXPECT("have past the last piece", false, true, -ERANGE);
        u32(p, UINT32_MAX);
        n = msg(b, PEER_MSG_SUGGEST, p, 4);
        EXPECT("suggest past the last piece", false, true, -ERANGE);
        u32(p, 10);
        n = msg(b, PEER_MSG_ALLOWED_FAST, p, 4);
        EXPECT("allowed fast past the last piece", false, true, -ERANGE);
        u32(p, 10), u32(p + 4, 0), u32(p + 8, 16384);
        n = msg(b, PEER_MSG_REJECT, p, 12);
        EXPECT("reject past the last piece", false, true, -ERANGE);
        u32(p, 10), u32(p + 4, 0);
        n = msg(b, PEER_MSG_PIECE, p, 8 + 100);
        EXPECT("piece past the last piece", false, true, -ERANGE);
        u32(p, 0), u32(p + 4, 32768 - 10);
        n = msg(b, PEER_MSG_PIECE, p, 8 + 16);
        EXPECT("block past its piece", false, true, -ERANGE);
        u32(p, 9), u32(p + 4, 16384);
        n = msg(b, PEER_MSG_PIECE, p, 8 + 16384);
        EXPECT("block past the short last piece", false, true, -ERANGE);
        u32(p, 0), u32(p + 4, UINT32_MAX);
        n = msg(b, PEER_MSG_PIECE, p, 8 + 16);
        EXPECT("block offset overflowing", false, true, -ERANGE);

        /* Bitfields: 10 pieces take 2 bytes, the last 6 bits zero. */
        n = msg(b, PEER_MSG_BITFIELD, "\xff", 1);
        EXPECT("bitfield too short", false, true, -EILSEQ);
        n = msg(b, PEER_MSG_BITFIELD, "\xff\xc0\x00", 3);
        EXPECT("bitfield too long", false, true, -EILSEQ);
        n = msg(b, PEER_MSG_BITFIELD, "\xff\xc1", 2);
        EXPECT("bitfield spare bit", false, true, -EILSEQ);
        n = msg(b, PEER_MSG_BITFIELD, "\xff\xe0", 2);
        EXPECT("bitfield 11th piece", false, true, -EILSEQ);
        n = msg(b, PEER_MSG_BITFIELD, NULL, 0);
        EXPECT("bitfield empty", false, true, -EILSEQ);

        /* Hash messages. */
        n = msg(b, PEER_MSG_HASH_REQUEST, p, hash_payload(p, 0, 0, 2, 0, 0) - 1);
        EXPECT("hash request of 47 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASH_REQUEST, p, hash_payload(p, 0, 0, 2, 0, 0) + 1);
        EXPECT("hash request of 49 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASH_REJECT, p, 47);
        EXPECT("hash reject of 47 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASH_REJECT, p, hash_payload(p, 0, 0, 3, 0, 0));
        EXPECT("hash reject of length 3", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, 47);
        EXPECT("hashes of 47 bytes", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 1, 0, 1) - 1);
        EXPECT("hashes with a partial hash", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 0, 0, 0));
        EXPECT("hashes of length 0", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 6, 0, 6));
        EXPECT("hashes of length 6", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 2, 4, 0, 4));
        EXPECT("hashes at index 2 of length 4", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 16384, 0, 0));
        EXPECT("hashes of length 16384", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 2, 64, 0));
        EXPECT("hashes with 64 proof layers", false, false, -EDOM);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 4, 0, 3));
        EXPECT("hashes one short", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 2, 0, 3));
        EXPECT("hashes one too many", false, false, -EBADMSG);
        n = msg(b, PEER_MSG_HASHES, p, hash_payload(p, 0, 0, 4, 3, 5));
        EXPECT("hashes without their uncles", false, false, -EBADMSG);

        /* What came before the error is delivered. */
        n = frame(b, 0, -1, NULL, 0);
        n += msg(b + n, PEER_MSG_UNCHOKE, NULL, 0);
        n += msg(b + n, 99, NULL, 0);
        expect("after two good messages", b, n, false, false, -EOPNOTSUPP, 2);
}

static void test_rejects(void) {
        uint8_t b[200], p[100];
        Result res;
        size_t n;
        static const struct {
                uint32_t index, begin, length;
                bool geo, reject;
        } requests[] = {
                { 0, 0, 16384, false, false },
                { 0, 0, 16384, true, false },
                { 0, 0, 0, false, true },               /* nothing */
                { 0, 0, 16385, false, true },           /* more than a block */
                { 0, 0, UINT32_MAX, false, true },
                { 10, 0, 16384, false, false },         /* no geometry yet: cannot tell */
                { 10, 0, 16384, true, true },           /* past the last piece */
                { 9, 16384, 16384, true, true },        /* past the short last piece */
                { 9, 16384, 32668 - 16384, true, false },
                { 0, UINT32_MAX, 16, true, true },
                { 1, 100, 16384, true, false },         /* unaligned but within the piece */
        };

        for (size_t i = 0; i < ELEMENTSOF(requests); i++) {
                u32(p, requests[i].index), u32(p + 4, requests[i].begin), u32(p + 8, requests[i].length);
                n = msg(b, PEER_MSG_REQUEST, p, 12);
                decode(b, n, 0, false, requests[i].geo, &res);
                ASSERT_INT_EQ(res.r, 0);
                ASSERT_UINT_EQ(res.n, 1);
                if (res.msgs[0].reject != requests[i].reject)
                        fprintf(stderr, "request %zu: reject %d\n", i, res.msgs[0].reject);
                ASSERT_TRUE(res.msgs[0].reject == requests[i].reject);
        }

        /* Hash requests: implausible ones always, and against the file once it is known. The file
         * has 20 blocks (32 leaves, height 5), its piece layer 10 nodes at level 1. */
        static const struct {
                uint32_t base, index, length, proof;
                bool geo, reject;
        } hreq[] = {
                { 1, 0, 8, 3, false, false },
                { 1, 0, 8, 3, true, false },
                { 1, 0, 3, 0, false, true },
                { 1, 4, 8, 0, false, true },
                { 1, 16, 8, 0, false, false },  /* no geometry: plausible */
                { 1, 16, 8, 0, true, true },    /* past level 1's 16 nodes */
                { 5, 0, 1, 0, true, true },     /* the root's level */
                { 1, 0, 8, 4, true, true },     /* proof to the root itself */
        };
        for (size_t i = 0; i < ELEMENTSOF(hreq); i++) {
                n = msg(b, PEER_MSG_HASH_REQUEST, p, hash_payload(p, hreq[i].base, hreq[i].index, hreq[i].length, hreq[i].proof, 0));
                decode(b, n, 0, false, hreq[i].geo, &res);
                ASSERT_INT_EQ(res.r, 0);
                if (res.msgs[0].reject != hreq[i].reject)
                        fprintf(stderr, "hash request %zu: reject %d\n", i, res.msgs[0].reject);
                ASSERT_TRUE(res.msgs[0].reject == hreq[i].reject);
        }
        /* Another file's root. */
        n = msg(b, PEER_MSG_HASH_REQUEST, p, hash_payload(p, 1, 0, 8, 3, 0));
        b[5] ^= 1;
        decode(b, n, 0, false, true, &res);
        ASSERT_TRUE(res.r == 0 && res.msgs[0].reject);
}

static void test_keepalive_and_limits(void) {
        uint8_t b[16];
        PeerDecoder *d;
        PeerDecoderConfig c = { .max_message = 8 };
        PeerMsg m;
        size_t used;

        ASSERT_INT_EQ(peer_decoder_new(&c, &d), 0);
        memset(b, 0, 8);
        ASSERT_INT_EQ(peer_decoder_feed(d, b, 8, &used, &m), 1);
        ASSERT_UINT_EQ(used, 4);
        ASSERT_INT_EQ(m.type, PEER_MSG_KEEPALIVE);
        ASSERT_INT_EQ(peer_decoder_feed(d, b, 3, &used, &m), 0);
        ASSERT_UINT_EQ(used, 3);
        ASSERT_INT_EQ(peer_decoder_feed(d, b, 1, &used, &m), 1);
        ASSERT_INT_EQ(m.type, PEER_MSG_KEEPALIVE);
        ASSERT_NULL(peer_decoder_error(d));
        /* max_message 8: a 9-byte message is refused as soon as its prefix is in. */
        ASSERT_INT_EQ(peer_decoder_feed(d, "\0\0\0\x09", 4, &used, &m), -EMSGSIZE);
        ASSERT_STREQ(peer_decoder_error(d), "message longer than the limit");
        ASSERT_INT_EQ(peer_decoder_feed(d, b, 4, &used, &m), -EMSGSIZE);
        ASSERT_UINT_EQ(used, 0);
        peer_decoder_free(d);

        /* A message that fails leaves *ret_msg alone. */
        ASSERT_INT_EQ(peer_decoder_new(NULL, &d), 0);
        m = (PeerMsg) { .type = PEER_MSG_PORT, .port = 4242 };
        ASSERT_INT_EQ(peer_decoder_feed(d, "\0\0\0\x02\x00x", 6, &used, &m), -EBADMSG);
        ASSERT_UINT_EQ(used, 6);
        ASSERT_TRUE(m.type == PEER_MSG_PORT && m.port == 4242);
        ASSERT_STREQ(peer_decoder_error(d), "message without payload has a payload");
        peer_decoder_free(d);

        ASSERT_STREQ(peer_msg_type_to_string(PEER_MSG_HASH_REJECT), "hash reject");
        ASSERT_STREQ(peer_msg_type_to_string(77), "unknown");
}

int main(void) {
        if (torrent_geometry_init(&geometry, 10 * 32768 - 100, 32768) < 0)
                return 1;
        RUN_TEST(test_handshake);
        RUN_TEST(test_round_trip);
        RUN_TEST(test_malformed);
        RUN_TEST(test_rejects);
        RUN_TEST(test_keepalive_and_limits);
        return TESTS_DONE();
}
