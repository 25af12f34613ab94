/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* BEP 10 extension handshakes and BEP 9 ut_metadata messages: round trips, a handshake as libtorrent
 * sends it, and malformed payloads. */

#include "peer-ext.h"
#include "tests.h"

#define S(x) x, sizeof(x) - 1

static void test_handshake_round_trip(void) {
        PeerExtHandshake h = { .metadata_size = 211, .port = 6881, .reqq = 250 }, p;
        uint8_t buf[512];
        size_t len;

        strcpy(h.v, "mc 0.1.0");
        ASSERT_INT_EQ(peer_ext_handshake_add(&h, "ut_metadata", 3), 0);
        ASSERT_INT_EQ(peer_ext_handshake_add(&h, "lt_donthave", 7), 0);
        ASSERT_INT_EQ(peer_ext_handshake_add(&h, "", 1), -EINVAL);
        ASSERT_INT_EQ(peer_ext_handshake_encode(&h, buf, sizeof(buf), &len), 0);
        /* Keys sorted, whatever the order they were added in. */
        ASSERT_TRUE(len == strlen("d1:md11:lt_donthavei7e11:ut_metadatai3ee13:metadata_sizei211e1:pi6881e4:reqqi250e1:v8:mc 0.1.0e"));
        ASSERT_TRUE(memcmp(buf, "d1:md11:lt_donthavei7e11:ut_metadatai3ee13:metadata_sizei211e1:pi6881e4:reqqi250e1:v8:mc 0.1.0e", len) == 0);
        ASSERT_INT_EQ(peer_ext_handshake_parse(buf, len, &p), 0);
        ASSERT_UINT_EQ(peer_ext_handshake_id(&p, "ut_metadata"), 3);
        ASSERT_UINT_EQ(peer_ext_handshake_id(&p, "lt_donthave"), 7);
        ASSERT_UINT_EQ(peer_ext_handshake_id(&p, "ut_pex"), 0);
        ASSERT_UINT_EQ(p.metadata_size, 211);
        ASSERT_UINT_EQ(p.port, 6881);
        ASSERT_UINT_EQ(p.reqq, 250);
        ASSERT_STREQ(p.v, "mc 0.1.0");
        ASSERT_INT_EQ(peer_ext_handshake_encode(&h, buf, 20, &len), -ENOBUFS);
}

static void test_handshake_like_libtorrent(void) {
        static const char lt[] =
                "d12:complete_agoi-1e1:ei0e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e"
                "12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei231e4:reqqi500e"
                "11:upload_onlyi0e1:v18:libtorrent/2.0.8.06:yourip4:\x7f\0\0\x01" "e";
        PeerExtHandshake p;

        ASSERT_INT_EQ(peer_ext_handshake_parse(S(lt), &p), 0);
        ASSERT_UINT_EQ(p.n_m, 6);
        ASSERT_UINT_EQ(peer_ext_handshake_id(&p, "ut_metadata"), 2);
        ASSERT_UINT_EQ(p.metadata_size, 231);
        ASSERT_UINT_EQ(p.reqq, 500);
        ASSERT_UINT_EQ(p.port, 0);
        ASSERT_STREQ(p.v, "libtorrent/2.0.8.0");

        /* A later handshake may disable an extension (id 0), or say nothing of "m". */
        ASSERT_INT_EQ(peer_ext_handshake_parse(S("d1:md11:ut_metadatai0eee"), &p), 0);
        ASSERT_UINT_EQ(p.n_m, 1);
        ASSERT_UINT_EQ(peer_ext_handshake_id(&p, "ut_metadata"), 0);
        ASSERT_INT_EQ(peer_ext_handshake_parse(S("de"), &p), 0);
        ASSERT_UINT_EQ(p.n_m, 0);
        /* A client name that is not UTF-8 is dropped, a long one cut. */
        ASSERT_INT_EQ(peer_ext_handshake_parse(S("d1:v2:\xff\xfe" "e"), &p), 0);
        ASSERT_STREQ(p.v, "");
        ASSERT_INT_EQ(peer_ext_handshake_parse(S("d1:v70:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae"), &p), 0);
        ASSERT_UINT_EQ(strlen(p.v), PEER_EXT_CLIENT_MAX);
        /* A name too long to ask for is skipped. */
        ASSERT_INT_EQ(peer_ext_handshake_parse(S("d1:md33:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaai1eee"), &p), 0);
        ASSERT_UINT_EQ(p.n_m, 0);
}

static void test_handshake_malformed(void) {
        static const struct {
                const char *s;
                size_t n;
                int error;
        } bad[] = {
                { S(""), -EBADMSG },
                { S("le"), -EBADMSG },
                { S("d1:mi1ee"), -EBADMSG },                            /* m not a dict */
                { S("d1:md1:a1:xee"), -EBADMSG },                       /* id not an integer */
                { S("d1:md1:ai256eee"), -ERANGE },
                { S("d1:md1:ai-1eee"), -ERANGE },
                { S("d1:pi0ee"), -ERANGE },
                { S("d1:pi65536ee"), -ERANGE },
                { S("d1:p4:6881e"), -EBADMSG },
                { S("d13:metadata_sizei-1ee"), -ERANGE },
                { S("d13:metadata_sizei99999999ee"), -ERANGE },
                { S("d4:reqqi0ee"), -ERANGE },
                { S("d1:vi1ee"), -EBADMSG },
                { S("d1:pi1e1:ai1ee"), -EBADMSG },                      /* unsorted */
                { S("d1:pi1eexx"), -EBADMSG },                          /* trailing bytes */
                { S("d1:xllllllleeeeeeee"), -E2BIG },                   /* nesting */
        };
        PeerExtHandshake p = { .reqq = 42 };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = peer_ext_handshake_parse(bad[i].s, bad[i].n, &p);
                if (r != bad[i].error)
                        fprintf(stderr, "%zu: %d\n", i, r);
                ASSERT_INT_EQ(r, bad[i].error);
        }
        ASSERT_UINT_EQ(p.reqq, 42);

        /* More extensions than we keep. */
        char many[4096];
        size_t o = (size_t) sprintf(many, "d1:md");
        for (int i = 0; i < PEER_EXT_MAX + 1; i++)
                o += (size_t) sprintf(many + o, "3:x%02di1e", i);
        o += (size_t) sprintf(many + o, "ee");
        ASSERT_INT_EQ(peer_ext_handshake_parse(many, o, &p), -E2BIG);
}

static void test_metadata_round_trip(void) {
        static uint8_t info[40000];
        uint8_t buf[20000];
        UtMetadataMsg m, p;
        size_t len;

        for (size_t i = 0; i < sizeof(info); i++)
                info[i] = (uint8_t) (i * 31);

        m = (UtMetadataMsg) { .type = UT_METADATA_REQUEST, .piece = 2 };
        ASSERT_INT_EQ(ut_metadata_encode(&m, buf, sizeof(buf), &len), 0);
        ASSERT_TRUE(len == strlen("d8:msg_typei0e5:piecei2ee") && memcmp(buf, "d8:msg_typei0e5:piecei2ee", len) == 0);
        ASSERT_INT_EQ(ut_metadata_parse(buf, len, &p), 0);
        ASSERT_TRUE(p.type == UT_METADATA_REQUEST && p.piece == 2 && p.size == 0);

        m = (UtMetadataMsg) { .type = UT_METADATA_REJECT, .piece = 1 };
        ASSERT_INT_EQ(ut_metadata_encode(&m, buf, sizeof(buf), &len), 0);
        ASSERT_INT_EQ(ut_metadata_parse(buf, len, &p), 0);
        ASSERT_TRUE(p.type == UT_METADATA_REJECT && p.piece == 1);

        for (uint32_t piece = 0; piece < 3; piece++) {
                uint32_t size = piece < 2 ? 16384 : sizeof(info) - 2 * 16384;

                m = (UtMetadataMsg) { .type = UT_METADATA_DATA, .piece = piece, .total_size = sizeof(info),
                                      .data = info + piece * 16384, .size = size };
                ASSERT_INT_EQ(ut_metadata_encode(&m, buf, sizeof(buf), &len), 0);
                ASSERT_INT_EQ(ut_metadata_parse(buf, len, &p), 0);
                ASSERT_TRUE(p.type == UT_METADATA_DATA && p.piece == piece && p.total_size == sizeof(info));
                ASSERT_UINT_EQ(p.size, size);
                ASSERT_TRUE(memcmp(p.data, info + piece * 16384, size) == 0);
                ASSERT_INT_EQ(ut_metadata_encode(&m, buf, len - 1, &len), -ENOBUFS);
        }

        /* The encoder refuses pieces of the wrong size. */
        m = (UtMetadataMsg) { .type = UT_METADATA_DATA, .piece = 2, .total_size = sizeof(info), .data = info, .size = 16384 };
        ASSERT_INT_EQ(ut_metadata_encode(&m, buf, sizeof(buf), &len), -EINVAL);
        m = (UtMetadataMsg) { .type = 3 };
        ASSERT_INT_EQ(ut_metadata_encode(&m, buf, sizeof(buf), &len), -EINVAL);
}

static void test_metadata_malformed(void) {
        static const struct {
                const char *s;
                size_t n;
                int error;
        } bad[] = {
                { S(""), -EBADMSG },
                { S("d5:piecei0ee"), -EBADMSG },                                        /* no msg_type */
                { S("d8:msg_typei0ee"), -EBADMSG },                                     /* no piece */
                { S("d8:msg_typei3e5:piecei0ee"), -EBADMSG },                           /* unknown type */
                { S("d8:msg_typei-1e5:piecei0ee"), -EBADMSG },
                { S("d8:msg_type1:05:piecei0ee"), -EBADMSG },
                { S("d8:msg_typei0e5:piecei-1ee"), -ERANGE },
                { S("d8:msg_typei0e5:piecei999ee"), -ERANGE },                          /* past any metadata */
                { S("d8:msg_typei0e5:piecei0eexyz"), -EBADMSG },                        /* bytes after a request */
                { S("d8:msg_typei2e5:piecei0eex"), -EBADMSG },                          /* after a reject */
                { S("d8:msg_typei1e5:piecei0eeabc"), -EBADMSG },                        /* data without total_size */
                { S("d8:msg_typei1e5:piecei0e10:total_sizei0eeabc"), -ERANGE },
                { S("d8:msg_typei1e5:piecei0e10:total_sizei99999999eeabc"), -ERANGE },
                { S("d8:msg_typei1e5:piecei1e10:total_sizei3eeabc"), -ERANGE },         /* piece past the end */
                { S("d8:msg_typei1e5:piecei0e10:total_sizei3eeab"), -ERANGE },          /* short */
                { S("d8:msg_typei1e5:piecei0e10:total_sizei3eeabcd"), -ERANGE },        /* long */
                { S("d8:msg_typei1e5:piecei0e10:total_sizei3ee"), -ERANGE },            /* no data */
                { S("l8:msg_typei1ee"), -EBADMSG },
                { S("d8:msg_typei1e5:piecei0e10:total_sizei3e"), -EBADMSG },            /* truncated dict */
        };
        UtMetadataMsg p = { .piece = 42 };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = ut_metadata_parse(bad[i].s, bad[i].n, &p);
                if (r != bad[i].error)
                        fprintf(stderr, "%zu: %d\n", i, r);
                ASSERT_INT_EQ(r, bad[i].error);
        }
        ASSERT_UINT_EQ(p.piece, 42);
        /* The good one of that family. */
        ASSERT_INT_EQ(ut_metadata_parse(S("d8:msg_typei1e5:piecei0e10:total_sizei3eeabc"), &p), 0);
        ASSERT_TRUE(p.size == 3 && memcmp(p.data, "abc", 3) == 0);
}

int main(void) {
        RUN_TEST(test_handshake_round_trip);
        RUN_TEST(test_handshake_like_libtorrent);
        RUN_TEST(test_handshake_malformed);
        RUN_TEST(test_metadata_round_trip);
        RUN_TEST(test_metadata_malformed);
        return TESTS_DONE();
}
