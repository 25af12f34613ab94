/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the peer wire decoder and the extension payload parsers. The first byte picks
 * the decoder's setup (handshake first or not, geometry known or not, a chunk size), the rest is the
 * stream. Properties: never crash; fail only with the documented errors; every message decoded
 * re-encodes to exactly its bytes; feeding the stream in chunks gives the same messages and the same
 * error as feeding it whole; extension payloads that parse re-encode to something that parses the
 * same. Built as a libFuzzer binary with -Dfuzz=true, and always as fuzz-peer-wire-replay, which runs
 * the committed corpus. */

#include "peer-ext.h"
#include "peer-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSGS 4096

typedef struct Trace {
        int types[MAX_MSGS];
        size_t n;
        int error;
} Trace;

static void check_error(int r) {
        switch (r) {
        case -EPROTO: case -EMSGSIZE: case -EOPNOTSUPP: case -EBADMSG: case -EILSEQ: case -ERANGE: case -EDOM:
                return;
        default:
                abort();
        }
}

static void check_ext(const PeerMsg *m) {
        uint8_t buf[20000];
        size_t len;
        int r;

        if (m->ext_id == 0) {
                PeerExtHandshake h, h2;

                r = peer_ext_handshake_parse(m->data, m->size, &h);
                if (r < 0) {
                        if (r != -EBADMSG && r != -E2BIG && r != -ERANGE)
                                abort();
                        return;
                }
                if (peer_ext_handshake_encode(&h, buf, sizeof(buf), &len) < 0 ||
                    peer_ext_handshake_parse(buf, len, &h2) < 0 ||
                    h2.n_m != h.n_m || h2.metadata_size != h.metadata_size || h2.port != h.port ||
                    h2.reqq != h.reqq || strcmp(h2.v, h.v) != 0)
                        abort();
                for (size_t i = 0; i < h.n_m; i++)
                        if (peer_ext_handshake_id(&h2, h.m[i].name) != peer_ext_handshake_id(&h, h.m[i].name))
                                abort();
        } else {
                UtMetadataMsg u, u2;

                r = ut_metadata_parse(m->data, m->size, &u);
                if (r < 0) {
                        if (r != -EBADMSG && r != -E2BIG && r != -ERANGE)
                                abort();
                        return;
                }
                if (ut_metadata_encode(&u, buf, sizeof(buf), &len) < 0 || ut_metadata_parse(buf, len, &u2) < 0 ||
                    u2.type != u.type || u2.piece != u.piece || u2.total_size != u.total_size || u2.size != u.size ||
                    (u.size > 0 && memcmp(u2.data, u.data, u.size) != 0))
                        abort();
        }
}

static PeerDecoder *new_decoder(uint8_t setup) {
        static TorrentGeometry g;
        static const uint8_t root[32] = { 1 };
        PeerDecoderConfig c = { .handshake = setup & 1, .max_message = 20000 };
        PeerDecoder *d;

        if (peer_decoder_new(&c, &d) < 0)
                abort();
        if (setup & 2) {
                if (g.n_pieces == 0 && torrent_geometry_init(&g, 10 * 32768 - 100, 32768) < 0)
                        abort();
                peer_decoder_set_geometry(d, &g, root);
        }
        return d;
}

/* The whole stream at once: messages complete in it are decoded in place. */
static void run_whole(uint8_t setup, const uint8_t *p, size_t n, Trace *t) {
        PeerDecoder *d = new_decoder(setup);
        size_t off = 0;

        t->n = 0;
        t->error = 0;
        while (off < n) {
                uint8_t enc[20100];
                size_t used;
                PeerMsg m;
                int r = peer_decoder_feed(d, p + off, n - off, &used, &m);

                if (used > n - off)
                        abort();
                if (r < 0) {
                        check_error(r);
                        if (!peer_decoder_error(d))
                                abort();
                        t->error = r;
                        break;
                }
                if (r == 0) {
                        if (used != n - off)
                                abort();
                        break;
                }
                if (t->n < MAX_MSGS)
                        t->types[t->n++] = m.type;

                /* Re-encoding gives the bytes back. */
                if (m.type == PEER_MSG_HANDSHAKE)
                        r = peer_handshake_encode(&m.handshake, enc, sizeof(enc));
                else
                        r = peer_msg_encode(&m, enc, sizeof(enc));
                if (r < 0 || (size_t) r != used || memcmp(enc, p + off, used) != 0)
                        abort();
                if (m.type == PEER_MSG_EXTENDED)
                        check_ext(&m);
                off += used;
        }
        peer_decoder_free(d);
}

static void run_chunked(uint8_t setup, const uint8_t *p, size_t n, size_t chunk, Trace *t) {
        PeerDecoder *d = new_decoder(setup);
        size_t off = 0;

        t->n = 0;
        t->error = 0;
        while (off < n && !t->error) {
                size_t left = MIN(chunk, n - off);

                while (left > 0) {
                        size_t used;
                        PeerMsg m;
                        int r = peer_decoder_feed(d, p + off, left, &used, &m);

                        off += used;
                        left -= used;
                        if (r < 0) {
                                t->error = r;
                                break;
                        }
                        if (r > 0 && t->n < MAX_MSGS)
                                t->types[t->n++] = m.type;
                }
        }
        peer_decoder_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static Trace a, b;
        uint8_t setup;
        size_t chunk;

        if (size < 1)
                return 0;
        setup = data[0];
        chunk = 1 + (size_t) (setup >> 2) * 37;
        run_whole(setup, data + 1, size - 1, &a);
        run_chunked(setup, data + 1, size - 1, chunk, &b);
        if (a.error != b.error || a.n != b.n || memcmp(a.types, b.types, a.n * sizeof(int)) != 0)
                abort();
        return 0;
}
