/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for the KRPC decoder. Properties: never crash; an accepted message encodes again
 * and decodes to the same fields; every accepted field is within its bounds; BEP 44 fields go through
 * signature verification (which must simply say no); an answerable bad query yields a valid error. */

#include "bep44.h"
#include "dht-addr.h"
#include "krpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t out[KRPC_PACKET_MAX * 2];
        KrpcMsg m, m2;
        int r, len;

        r = krpc_decode(data, size, &m);
        if (r == -EPROTO) {
                KrpcMsg e = { .kind = KRPC_ERROR, .tid = m.tid, .error_code = KRPC_ERR_PROTOCOL,
                              .error_msg = { (const uint8_t *) "invalid arguments", 17 } };
                if (m.tid.n == 0 || m.tid.n > KRPC_TID_MAX || krpc_encode(&e, out, sizeof(out)) <= 0)
                        abort();
                return 0;
        }
        if (r < 0) {
                if (r != -EBADMSG && r != -E2BIG)
                        abort();
                return 0;
        }

        if (m.tid.n == 0 || m.tid.n > KRPC_TID_MAX || m.n_values > KRPC_MAX_VALUES ||
            (m.nodes.p && m.nodes.n % 26) || (m.nodes6.p && m.nodes6.n % 38) || m.token.n > KRPC_TOKEN_MAX)
                abort();
        for (size_t i = 0; i < m.n_values; i++) {
                DhtAddr a;
                if (m.values[i].n != 6 && m.values[i].n != 18)
                        abort();
                (void) dht_addr_from_compact(m.values[i].p, m.values[i].n, &a);
        }
        if (m.v.p) {
                BeNode nodes[1024];
                if (be_decode(m.v.p, m.v.n, NULL, nodes, 1024, NULL) < 0 && m.v.n <= 4096)
                        abort(); /* v was decoded as part of the message: it must decode alone */
        }
        if (m.has_k && m.has_sig && m.has_seq && m.v.p)
                (void) bep44_verify(m.k, m.sig, m.salt.p, m.salt.n, m.seq, m.v.p, m.v.n);

        if (m.kind == KRPC_QUERY && m.method == KRPC_UNKNOWN)
                return 0; /* no way to re-encode an unknown method; answered with 204 */
        len = krpc_encode(&m, out, sizeof(out));
        if (len <= 0)
                abort();
        if (krpc_decode(out, (size_t) len, &m2) != 0 || !krpc_msg_equal(&m, &m2))
                abort();
        return 0;
}
