/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Manifests: made from content, written as .torrent and read back; and hostile .torrent files, each
 * refused with the error (and the reason) its defect calls for. */

#include "bencode.h"
#include "hex.h"
#include "manifest.h"
#include "torrent-test.h"

/* A .torrent put together field by field, to break one thing at a time. */
typedef struct Spec {
        const char *name;               /* NULL: no "name" */
        const char *tree_name;          /* the key in "file tree"; NULL: same as name */
        int64_t length;
        int64_t piece_length;           /* -1: absent */
        int64_t meta_version;           /* -1: absent */
        const uint8_t *root;            /* NULL: no "pieces root" */
        size_t root_len;
        bool second_file, directory, v1_pieces, extra_key, tree_not_dict;
        const uint8_t *layer;           /* NULL: no entry in "piece layers" */
        size_t layer_len;
        const uint8_t *layer_key;       /* NULL: the root */
        bool no_layers, layers_not_dict, extra_layer;
        const char *attr;               /* BEP 47 attributes of the file */
} Spec;

static size_t build(const Spec *s, uint8_t *buf, size_t size) {
        BeWriter w;
        size_t len;

        be_writer_init(&w, buf, size);
        be_put_dict(&w);
        be_put_cstr(&w, "info");
        be_put_dict(&w);
        be_put_cstr(&w, "file tree");
        if (s->tree_not_dict)
                be_put_cstr(&w, "x");
        else {
                be_put_dict(&w);
                be_put_cstr(&w, s->tree_name ?: s->name ?: "file");
                be_put_dict(&w);
                if (s->directory) {
                        be_put_cstr(&w, "sub");
                        be_put_dict(&w);
                }
                be_put_cstr(&w, "");
                be_put_dict(&w);
                if (s->attr) {
                        be_put_cstr(&w, "attr");
                        be_put_cstr(&w, s->attr);
                }
                be_put_cstr(&w, "length");
                be_put_int(&w, s->length);
                if (s->root) {
                        be_put_cstr(&w, "pieces root");
                        be_put_str(&w, s->root, s->root_len);
                }
                be_put_end(&w);
                if (s->directory)
                        be_put_end(&w);
                be_put_end(&w);
                if (s->second_file) {
                        be_put_cstr(&w, "zzz");
                        be_put_dict(&w);
                        be_put_cstr(&w, "");
                        be_put_dict(&w);
                        be_put_cstr(&w, "length");
                        be_put_int(&w, 1);
                        be_put_end(&w);
                        be_put_end(&w);
                }
                be_put_end(&w);
        }
        if (s->meta_version >= 0) {
                be_put_cstr(&w, "meta version");
                be_put_int(&w, s->meta_version);
        }
        if (s->name) {
                be_put_cstr(&w, "name");
                be_put_cstr(&w, s->name);
        }
        if (s->piece_length >= 0) {
                be_put_cstr(&w, "piece length");
                be_put_int(&w, s->piece_length);
        }
        if (s->v1_pieces) {
                be_put_cstr(&w, "pieces");
                be_put_str(&w, "01234567890123456789", 20);
        }
        if (s->extra_key) {
                be_put_cstr(&w, "x-extra");
                be_put_int(&w, 1);
        }
        be_put_end(&w);
        if (!s->no_layers) {
                be_put_cstr(&w, "piece layers");
                if (s->layers_not_dict)
                        be_put_int(&w, 0);
                else {
                        be_put_dict(&w);
                        if (s->layer) {
                                be_put_str(&w, s->layer_key ?: s->root, 32);
                                be_put_str(&w, s->layer, s->layer_len);
                        }
                        if (s->extra_layer) {
                                be_put_str(&w, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                                               "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 32);
                                be_put_str(&w, s->layer, s->layer_len);
                        }
                        be_put_end(&w);
                }
        }
        be_put_end(&w);
        if (be_writer_finish(&w, &len) < 0)
                abort();
        return len;
}

#define PIECES 5
#define SIZE (PIECES * 16384 - 1000)
static uint8_t *data;
static ContentHash content;
static char hexname[TORRENT_ID_HEX_SIZE];

static Spec good(void) {
        return (Spec) {
                .name = hexname,
                .length = SIZE,
                .piece_length = 16384,
                .meta_version = 2,
                .root = content.root,
                .root_len = 32,
                .layer = content.piece_layer,
                .layer_len = PIECES * 32,
        };
}

static void expect(const Spec *s, unsigned flags, int error, const char *reason_part) {
        uint8_t buf[4096];
        size_t len = build(s, buf, sizeof(buf));
        Manifest *m = NULL;
        const char *reason = NULL;
        int r;

        r = manifest_parse_torrent(buf, len, NULL, flags, &m, &reason);
        if (r != error || (reason_part && (!reason || !strstr(reason, reason_part))))
                fprintf(stderr, "got %d (%s), expected %d (%s)\n", r, strna(reason), error, reason_part);
        ASSERT_INT_EQ(r, error);
        if (error < 0) {
                ASSERT_NULL(m);
                ASSERT_TRUE(reason != NULL);
        }
        manifest_free(m);
}

static void test_hostile(void) {
        Spec s;
        uint8_t short_root[31] = {}, bad_layer[PIECES * 32];

        s = good();
        expect(&s, 0, 0, NULL);
        expect(&s, MANIFEST_CANONICAL, 0, NULL);

        s = good(), s.meta_version = 1;
        expect(&s, 0, -EPROTONOSUPPORT, "meta version");
        s = good(), s.meta_version = -1;
        expect(&s, 0, -EPROTONOSUPPORT, "meta version");
        s = good(), s.v1_pieces = true;
        expect(&s, 0, -EPROTONOSUPPORT, "hybrid");

        s = good(), s.piece_length = 1000;
        expect(&s, 0, -EDOM, "piece length");
        s = good(), s.piece_length = 8192;
        expect(&s, 0, -EDOM, "piece length");
        s = good(), s.piece_length = INT64_C(1) << 40;
        expect(&s, 0, -EDOM, "piece length");
        s = good(), s.piece_length = -1;
        expect(&s, 0, -EBADMSG, "piece length");

        s = good(), s.name = NULL, s.tree_name = "file";
        expect(&s, 0, -EBADMSG, "name");
        static const char *const bad_names[] = { "", ".", "..", "a/b", "/etc", "a\nb", "\x7f", "\xc3\x28", "\xed\xa0\x80" };
        for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
                s = good(), s.name = bad_names[i];
                expect(&s, 0, -EINVAL, "name");
        }
        s = good(), s.tree_name = "other";
        expect(&s, 0, -EINVAL, "differs");

        s = good(), s.second_file = true;
        expect(&s, 0, -EISDIR, "multi-file");
        s = good(), s.directory = true;
        expect(&s, 0, -EISDIR, "directory");
        s = good(), s.attr = "p";
        expect(&s, 0, -EPROTONOSUPPORT, "pad file");
        s = good(), s.attr = "xl";
        expect(&s, 0, -EPROTONOSUPPORT, "symbolic link");
        s = good(), s.attr = "x";
        expect(&s, 0, 0, NULL);
        expect(&s, MANIFEST_CANONICAL, -EINVAL, "canonical");
        s = good(), s.tree_not_dict = true;
        expect(&s, 0, -EBADMSG, "file tree");

        s = good(), s.root = NULL, s.layer_key = content.root;
        expect(&s, 0, -EBADMSG, "pieces root missing");
        s = good(), s.root = short_root, s.root_len = sizeof(short_root), s.layer_key = content.root;
        expect(&s, 0, -EDOM, "32-byte");
        s = good(), s.length = -1;
        expect(&s, 0, -EBADMSG, "length");
        s = good(), s.length = INT64_C(1) << 50;
        expect(&s, 0, -EFBIG, "length");
        s = good(), s.length = 0, s.layer = NULL;
        expect(&s, 0, -EBADMSG, "empty file");

        s = good(), s.no_layers = true;
        expect(&s, 0, -ENODATA, "piece layer");
        s = good(), s.layer = NULL;
        expect(&s, 0, -ENODATA, "piece layer");
        s = good(), s.layers_not_dict = true;
        expect(&s, 0, -EBADMSG, "piece layers");
        s = good(), s.layer_len -= 32;
        expect(&s, 0, -EILSEQ, "size");
        memcpy(bad_layer, content.piece_layer, sizeof(bad_layer));
        bad_layer[77] ^= 1;
        s = good(), s.layer = bad_layer;
        expect(&s, 0, -EILSEQ, "does not hash");
        s = good(), s.layer_key = bad_layer;
        expect(&s, 0, -EBADMSG, "another file");
        s = good(), s.extra_layer = true;
        expect(&s, 0, -EBADMSG, "another file");
        /* A file of one piece has no layer. */
        s = good(), s.piece_length = 256 * 1024;
        expect(&s, 0, -EBADMSG, "one piece");

        /* Canonical manifests: the hex name, the size's piece length, nothing else. */
        s = good(), s.name = "a-name";
        expect(&s, 0, 0, NULL);
        expect(&s, MANIFEST_CANONICAL, -EINVAL, "canonical");
        s = good(), s.extra_key = true;
        expect(&s, 0, 0, NULL);
        expect(&s, MANIFEST_CANONICAL, -EINVAL, "canonical");
}

static void test_not_bencode(void) {
        static const char *const inputs[] = {
                "", "d", "i1e", "le", "d4:infoi1ee", "d4:infod", "d4:infodee4:infodee", "d4:infodeex",
                "d12:piece layersde4:infodee", /* keys out of order */
        };
        Manifest *m = NULL;
        const char *reason;

        for (size_t i = 0; i < ELEMENTSOF(inputs); i++)
                ASSERT_INT_EQ(manifest_parse_torrent(inputs[i], strlen(inputs[i]), NULL, 0, &m, &reason), -EBADMSG);
        /* An empty info dictionary: no meta version. */
        ASSERT_INT_EQ(manifest_parse_torrent("d4:infodee", 10, NULL, 0, &m, &reason), -EPROTONOSUPPORT);

        /* Deep nesting and many values are bounded. */
        char deep[200];
        memset(deep, 'l', 100);
        memset(deep + 100, 'e', 100);
        ASSERT_INT_EQ(manifest_parse_torrent(deep, sizeof(deep), NULL, 0, &m, &reason), -E2BIG);
        size_t n = 3 * 5000 + 20;
        _cleanup_free_ char *many = malloc(n);
        size_t o = (size_t) sprintf(many, "d1:xl");
        for (int i = 0; i < 5000; i++)
                o += (size_t) sprintf(many + o, "i1e");
        o += (size_t) sprintf(many + o, "ee");
        ASSERT_INT_EQ(manifest_parse_torrent(many, o, NULL, 0, &m, &reason), -E2BIG);
        ASSERT_NULL(m);
}

static void test_round_trip(void) {
        _cleanup_(manifest_freep) Manifest *m = NULL, *p = NULL, *q = NULL, *i = NULL;
        _cleanup_free_ uint8_t *t = NULL, *t2 = NULL;
        size_t size, size2;
        uint8_t other[32] = {};
        const char *reason;
        char hex[TORRENT_ID_HEX_SIZE];

        ASSERT_INT_EQ(manifest_from_content(&content, &m), 0);
        ASSERT_STREQ(m->name, hexname);
        ASSERT_UINT_EQ(m->geometry.piece_length, 16384);
        ASSERT_INT_EQ(manifest_to_torrent(m, NULL, &t, &size), 0);
        ASSERT_INT_EQ(manifest_parse_torrent(t, size, m->id, MANIFEST_CANONICAL, &p, &reason), 0);
        ASSERT_TRUE(memcmp(p->id, m->id, 32) == 0);
        ASSERT_TRUE(memcmp(p->root, m->root, 32) == 0);
        ASSERT_UINT_EQ(p->info_size, m->info_size);
        ASSERT_TRUE(memcmp(p->info, m->info, m->info_size) == 0);
        ASSERT_TRUE(memcmp(p->piece_layer, content.piece_layer, PIECES * 32) == 0);
        ASSERT_UINT_EQ(p->geometry.length, SIZE);

        /* The id is SHA-256 of the info dictionary exactly. */
        uint8_t h[32];
        ASSERT_INT_EQ(sha256(m->info, m->info_size, h), 0);
        ASSERT_TRUE(memcmp(h, m->id, 32) == 0);
        torrent_id_to_hex(m->id, hex);
        ASSERT_INT_EQ(torrent_id_from_hex(hex, h), 0);
        ASSERT_TRUE(memcmp(h, m->id, 32) == 0);

        /* An announce URL does not change the id; another expected id is refused. */
        ASSERT_INT_EQ(manifest_to_torrent(m, "http://tracker.invalid/announce", &t2, &size2), 0);
        ASSERT_TRUE(size2 > size);
        ASSERT_INT_EQ(manifest_parse_torrent(t2, size2, m->id, MANIFEST_CANONICAL, &q, &reason), 0);
        ASSERT_INT_EQ(manifest_parse_torrent(t2, size2, other, 0, &i, &reason), -EKEYREJECTED);
        ASSERT_TRUE(strstr(reason, "expected id") != NULL);

        /* A bare info dictionary, then its piece layer. */
        ASSERT_INT_EQ(manifest_parse_info(m->info, m->info_size, m->id, MANIFEST_CANONICAL, &i, &reason), 0);
        ASSERT_NULL(i->piece_layer);
        ASSERT_INT_EQ(manifest_to_torrent(i, NULL, &t2, &size2), -ENODATA);
        ASSERT_INT_EQ(manifest_set_piece_layer(i, content.piece_layer, PIECES - 1), -EILSEQ);
        content.piece_layer[3] ^= 1;
        ASSERT_INT_EQ(manifest_set_piece_layer(i, content.piece_layer, PIECES), -EILSEQ);
        content.piece_layer[3] ^= 1;
        ASSERT_NULL(i->piece_layer);
        ASSERT_INT_EQ(manifest_set_piece_layer(i, content.piece_layer, PIECES), 0);
        ASSERT_TRUE(i->piece_layer != NULL);
}

static void test_small_and_empty(void) {
        static const size_t sizes[] = { 0, 1, 16384, 16385 };

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                _cleanup_(manifest_freep) Manifest *m = NULL, *p = NULL;
                _cleanup_free_ uint8_t *t = NULL, *d = test_data(sizes[k], k);
                const char *reason;
                ContentHash c;
                size_t size;

                ASSERT_INT_EQ(content_hash_buffer(d, sizes[k], 0, &c), 0);
                ASSERT_INT_EQ(manifest_from_content(&c, &m), 0);
                content_hash_done(&c);
                ASSERT_INT_EQ(manifest_to_torrent(m, NULL, &t, &size), 0);
                ASSERT_INT_EQ(manifest_parse_torrent(t, size, m->id, MANIFEST_CANONICAL, &p, &reason), 0);
                ASSERT_UINT_EQ(p->geometry.length, sizes[k]);
                ASSERT_TRUE(p->has_root == (sizes[k] > 0));
                ASSERT_TRUE((p->piece_layer != NULL) == (sizes[k] > 16384));
                if (sizes[k] == 0) {
                        /* No pieces root key, and the name is 64 zeros. */
                        ASSERT_STREQ(m->name, "0000000000000000000000000000000000000000000000000000000000000000");
                        ASSERT_TRUE(memmem(m->info, m->info_size, "pieces root", 11) == NULL);
                        ASSERT_TRUE(memmem(t, size, "12:piece layersdee", 18) != NULL);
                }
        }
}

static void test_names(void) {
        ASSERT_TRUE(torrent_name_valid("a", 1));
        ASSERT_TRUE(torrent_name_valid("...", 3));
        ASSERT_TRUE(torrent_name_valid(".hidden", 7));
        ASSERT_TRUE(torrent_name_valid("caf\xc3\xa9", 5));
        ASSERT_TRUE(!torrent_name_valid("a\0b", 3));
        ASSERT_TRUE(torrent_name_valid("a\\b", 3));   /* only '/' separates */
        char longname[300];
        memset(longname, 'a', sizeof(longname));
        ASSERT_TRUE(torrent_name_valid(longname, 255));
        ASSERT_TRUE(!torrent_name_valid(longname, 256));
        uint8_t id[32];
        ASSERT_INT_EQ(torrent_id_from_hex("00", id), -EINVAL);
        ASSERT_INT_EQ(torrent_id_from_hex("zz00000000000000000000000000000000000000000000000000000000000000", id), -EINVAL);
}

int main(void) {
        data = test_data(SIZE, 5);
        if (content_hash_buffer(data, SIZE, 0, &content) < 0)
                return 1;
        hex_encode(content.root, 32, hexname);

        RUN_TEST(test_hostile);
        RUN_TEST(test_not_bencode);
        RUN_TEST(test_round_trip);
        RUN_TEST(test_small_and_empty);
        RUN_TEST(test_names);
        content_hash_done(&content);
        free(data);
        return TESTS_DONE();
}
