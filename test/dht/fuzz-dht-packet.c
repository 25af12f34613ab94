/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer target for a whole node's packet path: decoding, then answering queries (storage,
 * tokens, BEP 44 checks) or matching replies. One node lives across inputs, so state built by earlier
 * inputs (stored peers and items) is exercised by later ones. The first byte picks the source
 * address. Answers go to ports on 127.0.0.1 where nobody listens. A write carrying a token of the
 * right length gets the valid token patched in, so that the fuzzer gets past the token check into
 * signature, seq, cas and storage handling (it could never guess a SHA-1). */

#include "dht-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static sd_event *e;
        static Dht *d;
        DhtAddr from = { .family = AF_INET, .ip = { 127, 0, 0, 1 } };

        if (!d) {
                static const DhtTuning t = { .query_rate = 1000000, .query_burst = 1000000, .no_initial_refresh = true };
                if (sd_event_new(&e) < 0 ||
                    dht_new(e, &(DhtConfig) { .bind_address = "127.0.0.1", .family = AF_INET, .tuning = &t }, &d) < 0)
                        abort();
        }
        if (size < 1)
                return 0;
        from.ip[3] = (uint8_t) (1 + data[0] % 4);
        from.port = 9; /* discard */

        uint8_t *buf = malloc(size);
        KrpcMsg m;
        if (!buf)
                return 0;
        memcpy(buf, data + 1, size - 1);
        if (krpc_decode(buf, size - 1, &m) == 0 && m.kind == KRPC_QUERY && m.token.n == TOKEN_SIZE &&
            (m.method == KRPC_ANNOUNCE_PEER || m.method == KRPC_PUT)) {
                uint8_t target[DHT_ID_SIZE];
                if (m.method == KRPC_ANNOUNCE_PEER)
                        memcpy(target, m.target, DHT_ID_SIZE);
                else if (m.has_k)
                        bep44_mutable_target(m.k, m.salt.p, m.has_salt ? m.salt.n : 0, target);
                else
                        bep44_immutable_target(m.v.p, m.v.n, target);
                token_make(&d->tokens, &from, target, buf + (m.token.p - buf));
        }
        dht_inject_packet(d, buf, size - 1, &from);
        free(buf);
        /* Let timers and the kick run now and then without blocking. */
        (void) sd_event_run(e, 0);
        return 0;
}
