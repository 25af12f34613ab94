/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "dht-test.h"
#include "krpc.h"

#define S(x) x, sizeof(x) - 1

/* Messages as BEP 5 shows them: they decode, and encode back to the same bytes. */
static const char *const bep5_examples[] = {
        "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        "d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        "d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        "d1:rd2:id20:0123456789abcdefghij5:nodes26:mnopqrstuvwxyz123456axje.ue1:t2:aa1:y1:re",
        "d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        "d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        "d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        "d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        /* BEP 44 get and put (immutable, mutable) */
        "d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q3:get1:t2:aa1:y1:qe",
        "d1:ad2:id20:abcdefghij01234567895:token8:aoeusnth1:v12:Hello World!e1:q3:put1:t2:aa1:y1:qe",
        /* BEP 43 read-only flag and a client version */
        "d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi1e1:t2:aa1:v4:LT\001\0021:y1:qe",
};

static void test_examples(void) {
        for (size_t i = 0; i < sizeof(bep5_examples) / sizeof(bep5_examples[0]); i++) {
                const char *s = bep5_examples[i];
                uint8_t out[512];
                KrpcMsg m, m2;
                int len;

                if (krpc_decode(s, strlen(s), &m) != 0) {
                        fprintf(stderr, "example %zu does not decode: %s\n", i, s);
                        abort();
                }
                len = krpc_encode(&m, out, sizeof(out));
                ASSERT(len > 0);
                if ((size_t) len != strlen(s) || memcmp(out, s, (size_t) len) != 0) {
                        fprintf(stderr, "example %zu re-encodes as %.*s\n", i, len, out);
                        abort();
                }
                ASSERT_EQ(krpc_decode(out, (size_t) len, &m2), 0);
                ASSERT(krpc_msg_equal(&m, &m2));
        }
}

static void test_fields(void) {
        KrpcMsg m;
        const char *s = bep5_examples[6];

        ASSERT_EQ(krpc_decode(s, strlen(s), &m), 0);
        ASSERT_EQ(m.kind, KRPC_QUERY);
        ASSERT_EQ(m.method, KRPC_ANNOUNCE_PEER);
        ASSERT(m.has_id && memcmp(m.id, "abcdefghij0123456789", 20) == 0);
        ASSERT(m.has_target && memcmp(m.target, "mnopqrstuvwxyz123456", 20) == 0);
        ASSERT(m.has_port && m.port == 6881 && m.implied_port);
        ASSERT(m.token.n == 8 && memcmp(m.token.p, "aoeusnth", 8) == 0);

        s = bep5_examples[5];
        ASSERT_EQ(krpc_decode(s, strlen(s), &m), 0);
        ASSERT_EQ(m.kind, KRPC_RESPONSE);
        ASSERT_EQ(m.n_values, 2U);
        ASSERT(m.values[1].n == 6 && memcmp(m.values[1].p, "idhtnm", 6) == 0);

        s = bep5_examples[7];
        ASSERT_EQ(krpc_decode(s, strlen(s), &m), 0);
        ASSERT_EQ(m.kind, KRPC_ERROR);
        ASSERT_EQ(m.error_code, 201);

        s = bep5_examples[9];
        ASSERT_EQ(krpc_decode(s, strlen(s), &m), 0);
        ASSERT_EQ(m.method, KRPC_PUT);
        ASSERT(m.v.n == 15 && memcmp(m.v.p, "12:Hello World!", 15) == 0);
        ASSERT(!m.has_k);
}

static void test_full_roundtrip(void) {
        uint8_t nodes[2 * 26], nodes6[38], v4[6] = { 1, 2, 3, 4, 0x1a, 0xe1 }, v6[18] = { [15] = 1, [16] = 0x1a, [17] = 0xe1 };
        uint8_t buf[KRPC_PACKET_MAX];
        KrpcMsg m = {
                .kind = KRPC_RESPONSE,
                .tid = { (const uint8_t *) "\x01\x02\x03\x04", 4 },
                .has_id = true,
                .token = { (const uint8_t *) "tok", 3 },
                .nodes = { nodes, sizeof(nodes) },
                .nodes6 = { nodes6, sizeof(nodes6) },
                .v = { (const uint8_t *) "d1:ai1e1:bl0:ee", 15 },
                .has_k = true, .has_sig = true, .has_seq = true, .seq = 1234567890123,
                .n_values = 2,
        }, q = {
                .kind = KRPC_QUERY,
                .method = KRPC_PUT,
                .tid = { (const uint8_t *) "xy", 2 },
                .has_id = true,
                .token = { (const uint8_t *) "tok", 3 },
                .v = { (const uint8_t *) "4:spam", 6 },
                .has_k = true, .has_sig = true, .has_seq = true, .seq = 2,
                .has_salt = true, .salt = { (const uint8_t *) "task/abc", 8 },
                .has_cas = true, .cas = 1,
                .want_n4 = true, .want_n6 = true,
                .read_only = true,
        }, d;
        int len;

        memset(nodes, 'n', sizeof(nodes));
        memset(nodes6, '6', sizeof(nodes6));
        memset(m.id, 'i', 20);
        memset(m.k, 'k', 32);
        memset(m.sig, 's', 64);
        m.values[0] = (KrpcBytes) { v4, 6 };
        m.values[1] = (KrpcBytes) { v6, 18 };
        len = krpc_encode(&m, buf, sizeof(buf));
        ASSERT(len > 0);
        ASSERT_EQ(krpc_decode(buf, (size_t) len, &d), 0);
        ASSERT(krpc_msg_equal(&m, &d));

        memset(q.id, 'q', 20);
        memset(q.k, 'K', 32);
        memset(q.sig, 'S', 64);
        len = krpc_encode(&q, buf, sizeof(buf));
        ASSERT(len > 0);
        ASSERT_EQ(krpc_decode(buf, (size_t) len, &d), 0);
        ASSERT(krpc_msg_equal(&q, &d));
        ASSERT(d.read_only && d.want_n4 && d.want_n6 && d.has_cas && d.cas == 1);

        /* Too small a buffer is an error, not a truncated message. */
        ASSERT_EQ(krpc_encode(&m, buf, 40), -ENOBUFS);
}

static void expect(const char *s, size_t n, int error) {
        KrpcMsg m;
        int r = krpc_decode(s, n, &m);
        if (r != error) {
                fprintf(stderr, "\"%.*s\": got %d, expected %d\n", (int) n, s, r, error);
                abort();
        }
}

static void test_hostile(void) {
        char big[8192];

        expect(S(""), -EBADMSG);
        expect(S("i1e"), -EBADMSG);
        expect(S("le"), -EBADMSG);
        expect(S("de"), -EBADMSG);
        /* transaction ids */
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:ti1e1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t0:1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t17:aaaaaaaaaaaaaaaaa1:y1:re"), -EBADMSG);
        /* y */
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aae"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:xe"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y2:rre"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:yi1ee"), -EBADMSG);
        /* queries: envelope */
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:q0:1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ali1ee1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ade1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ad2:id19:abcdefghij012345678e1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ad2:idi1ee1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        /* queries: arguments (answered with error 203) */
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567896:target19:mnopqrstuvwxyz12345e1:q9:find_node1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567896:targeti1ee1:q9:find_node1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881ee1:q13:announce_peer1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij012345678912:implied_porti2e9:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567895:token8:aoeusnthe1:q3:put1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567891:k32:kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk5:token8:aoeusnth1:v1:xe1:q3:put1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567891:k31:kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk3:seqi1e3:sig64:ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss5:token8:aoeusnth1:v1:xe1:q3:put1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567894:want2:n4e1:q9:find_node1:t2:aa1:y1:qe"), -EPROTO);
        expect(S("d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantli4eee1:q9:find_node1:t2:aa1:y1:qe"), -EPROTO);
        /* unknown methods decode (answered with error 204) */
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:q5:vote!1:t2:aa1:y1:qe"), 0);
        /* ro and ip */
        expect(S("d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi2e1:t2:aa1:y1:qe"), -EBADMSG);
        expect(S("d1:ad2:id20:abcdefghij0123456789e2:ip5:abcde1:q4:ping1:t2:aa1:y1:qe"), -EBADMSG);
        /* responses */
        expect(S("d1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rde1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:0123456789abcdefghij5:nodes25:mnopqrstuvwxyz123456axje.e1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:0123456789abcdefghij6:nodes637:mnopqrstuvwxyz123456axje.uaaaaaaaaaaae1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567896:valuesl5:axje.ee1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567896:values6:axje.ue1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567895:tokeni1ee1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567893:seq1:1e1:t2:aa1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:abcdefghij01234567891:k3:abce1:t2:aa1:y1:re"), -EBADMSG);
        /* errors */
        expect(S("d1:e3:abc1:t2:aa1:y1:ee"), -EBADMSG);
        expect(S("d1:eli201ee1:t2:aa1:y1:ee"), -EBADMSG);
        expect(S("d1:el3:abci201ee1:t2:aa1:y1:ee"), -EBADMSG);
        expect(S("d1:eli201e3:abci1ee1:t2:aa1:y1:ee"), -EBADMSG);
        /* not canonical bencode: unsorted keys, trailing data, truncation */
        expect(S("d1:t2:aa1:rd2:id20:mnopqrstuvwxyz123456e1:y1:re"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:reX"), -EBADMSG);
        expect(S("d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:r"), -EBADMSG);
        expect(S("d1:rd2:id99999:mnopqrstuvwxyz123456e1:t2:aa1:y1:re"), -EBADMSG);
        /* oversize and deep */
        memset(big, 'l', sizeof(big));
        expect(big, sizeof(big), -E2BIG);
        expect(big, 100, -E2BIG);
        /* too many values */
        {
                size_t n = 0;
                n += (size_t) sprintf(big + n, "d1:rd2:id20:abcdefghij01234567896:valuesl");
                for (int i = 0; i < KRPC_MAX_VALUES + 1; i++)
                        n += (size_t) sprintf(big + n, "6:abcdef");
                n += (size_t) sprintf(big + n, "ee1:t2:aa1:y1:re");
                expect(big, n, -EBADMSG);
        }
}

int main(void) {
        test_examples();
        test_fields();
        test_full_roundtrip();
        test_hostile();
        return 0;
}
