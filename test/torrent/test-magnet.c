/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Magnet links: ours round-trip; libtorrent's form and variants parse; broken ones are refused. */

#include "magnet.h"
#include "tests.h"

#define HEX "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc"

static void test_round_trip(void) {
        _cleanup_free_ char *s = NULL;
        MagnetLink m = {}, p;

        ASSERT_INT_EQ(torrent_id_from_hex(HEX, m.id), 0);
        ASSERT_INT_EQ(magnet_format(&m, &s), 0);
        ASSERT_STREQ(s, "magnet:?xt=urn:btmh:1220" HEX);
        free(s);

        strcpy(m.peers[0].host, "10.0.0.1");
        m.peers[0].port = 6881;
        strcpy(m.peers[1].host, "::1");
        m.peers[1].port = 7000;
        strcpy(m.peers[2].host, "seeder.example");
        m.peers[2].port = 1;
        m.n_peers = 3;
        ASSERT_INT_EQ(magnet_format(&m, &s), 0);
        ASSERT_STREQ(s, "magnet:?xt=urn:btmh:1220" HEX "&x.pe=10.0.0.1:6881&x.pe=[::1]:7000&x.pe=seeder.example:1");
        ASSERT_INT_EQ(magnet_parse(s, &p), 0);
        ASSERT_TRUE(memcmp(p.id, m.id, 32) == 0);
        ASSERT_UINT_EQ(p.n_peers, 3);
        for (size_t i = 0; i < 3; i++) {
                ASSERT_STREQ(p.peers[i].host, m.peers[i].host);
                ASSERT_UINT_EQ(p.peers[i].port, m.peers[i].port);
        }

        strcpy(m.peers[0].host, "bad host");
        ASSERT_INT_EQ(magnet_format(&m, &s), -EINVAL);
}

static void test_variants(void) {
        MagnetLink m;

        /* Uppercase, other parameters first, a v1 xt alongside, escapes. */
        ASSERT_INT_EQ(magnet_parse("MAGNET:?dn=x&tr=http%3A%2F%2Ft&xt=urn:btih:0123456789abcdef0123456789abcdef01234567"
                                   "&xt=urn:btmh:1220C0FFEE00112233445566778899AABBCCDDEEFF00112233445566778899AABBCC", &m), 0);
        ASSERT_UINT_EQ(m.id[0], 0xc0);
        ASSERT_UINT_EQ(m.n_peers, 0);
        ASSERT_INT_EQ(magnet_parse("magnet:?xt=urn%3Abtmh%3A1220" HEX "&x.pe=%5B::1%5D%3A80", &m), 0);
        ASSERT_UINT_EQ(m.n_peers, 1);
        ASSERT_STREQ(m.peers[0].host, "::1");
        /* Peers that are not HOST:PORT are skipped, and at most MAGNET_PEERS_MAX are kept. */
        ASSERT_INT_EQ(magnet_parse("magnet:?xt=urn:btmh:1220" HEX "&x.pe=nope&x.pe=h:0&x.pe=h:65536&x.pe=::1:80"
                                   "&x.pe=[::1]80&x.pe=a b:1&x.pe=h:1x&x.pe=ok:2", &m), 0);
        ASSERT_UINT_EQ(m.n_peers, 1);
        ASSERT_STREQ(m.peers[0].host, "ok");
        ASSERT_INT_EQ(magnet_parse("magnet:?xt=urn:btmh:1220" HEX "&x.pe=a:1&x.pe=a:2&x.pe=a:3&x.pe=a:4&x.pe=a:5"
                                   "&x.pe=a:6&x.pe=a:7&x.pe=a:8&x.pe=a:9", &m), 0);
        ASSERT_UINT_EQ(m.n_peers, MAGNET_PEERS_MAX);
        ASSERT_UINT_EQ(m.peers[7].port, 8);
}

static void test_refused(void) {
        static const char *const bad[] = {
                "",
                "magnet:",
                "magnet:?",
                "http://x/?xt=urn:btmh:1220" HEX,
                "magnet:?dn=only-a-name",
                "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567",     /* v1 only */
                "magnet:?xt=urn:btmh:1114" HEX,                                     /* not SHA-256 */
                "magnet:?xt=urn:btmh:1220" HEX "00",                                /* too long */
                "magnet:?xt=urn:btmh:1220c0ffee",                                   /* too short */
                "magnet:?xt=urn:btmh:1220g0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc",
                "magnet:?xt=urn:btmh:1220" HEX "&xt=urn:btmh:1220" HEX,             /* two ids */
                "magnet:?xt=urn:btmh:1220" HEX "&noequals",
                "magnet:?xt=urn:btmh:1220" HEX "&=value",
                "magnet:?xt=urn:btmh:1220" HEX "&dn=%zz",
                "magnet:?xt=urn:btmh:1220" HEX "&dn=%0",
                "magnet:?xt=urn:btmh:1220" HEX "&dn=%00",
        };
        MagnetLink m = { .n_peers = 42 };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (magnet_parse(bad[i], &m) != -EINVAL)
                        fprintf(stderr, "accepted: %s\n", bad[i]);
                ASSERT_INT_EQ(magnet_parse(bad[i], &m), -EINVAL);
        }
        ASSERT_UINT_EQ(m.n_peers, 42);

        char *huge = malloc(MAGNET_URI_MAX + 100);
        ASSERT_TRUE(huge != NULL);
        sprintf(huge, "magnet:?xt=urn:btmh:1220" HEX "&dn=");
        memset(huge + strlen(huge), 'a', MAGNET_URI_MAX);
        huge[MAGNET_URI_MAX + 50] = 0;
        ASSERT_INT_EQ(magnet_parse(huge, &m), -EINVAL);
        free(huge);
}

int main(void) {
        RUN_TEST(test_round_trip);
        RUN_TEST(test_variants);
        RUN_TEST(test_refused);
        return TESTS_DONE();
}
