/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A test helper (not installed): src/torrent's functions from the command line, for the interop
 * tests against libtorrent (test-libtorrent-v2.py) and for measuring the hashing speed.
 *
 *   mc-torrent-tool hash [-p PIECE_LENGTH] FILE          hashes: "key value" lines
 *   mc-torrent-tool torrent [-p N] [-a URL] FILE OUT     writes FILE's .torrent to OUT
 *   mc-torrent-tool parse [-c] [-i ID] TORRENT           parses a .torrent (-c: canonical), prints it
 *   mc-torrent-tool magnet ID [HOST:PORT...]             a magnet link; magnet-parse URI prints one
 *   mc-torrent-tool hashes FILE BASE INDEX LENGTH PROOF  our answer to a hash request (hex lines),
 *                                                        from the piece layer and, below it, the file's blocks
 *   mc-torrent-tool encode MSG ARGS [, MSG ARGS...]      peer wire bytes, in hex, on stdout
 *   mc-torrent-tool decode [-s] [-t TORRENT]             stdin's peer wire bytes (-s: starting with a
 *                                                        handshake) as lines; hashes are verified against TORRENT
 *   mc-torrent-tool bench FILE                           hashing throughput
 *
 * Errors: "error ERRNONAME: reason" on stderr, exit status 1. */

#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <time.h>

#include "content.h"
#include "hex.h"
#include "magnet.h"
#include "manifest.h"
#include "merkle-proof.h"
#include "peer-ext.h"
#include "peer-wire.h"

static int die(int r, const char *what) {
        fprintf(stderr, "error %s: %s\n", strerrorname_np(-r) ?: "?", what);
        return 1;
}

static void print_hex(const char *key, const uint8_t *p, size_t n) {
        printf("%s ", key);
        for (size_t i = 0; i < n; i++)
                printf("%02x", p[i]);
        if (n == 0)
                printf("-");
        printf("\n");
}

static void print_manifest(const Manifest *m) {
        char hex[TORRENT_ID_HEX_SIZE];

        printf("length %" PRIu64 "\n", m->geometry.length);
        printf("piece_length %" PRIu32 "\n", m->geometry.piece_length);
        printf("pieces %" PRIu32 "\n", m->geometry.n_pieces);
        print_hex("root", m->root, m->has_root ? SHA256_SIZE : 0);
        torrent_id_to_hex(m->id, hex);
        printf("id %s\n", hex);
        printf("name %s\n", m->name);
        print_hex("info", m->info, m->info_size);
        print_hex("piece_layer", m->piece_layer, m->piece_layer ? (size_t) m->geometry.n_pieces * SHA256_SIZE : 0);
}

static int hash_file(const char *path, uint32_t piece_length, ContentHash *ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        return content_hash_fd(fd, piece_length, ret);
}

static int manifest_of_file(const char *path, uint32_t piece_length, Manifest **ret) {
        ContentHash c;
        int r;

        r = hash_file(path, piece_length, &c);
        if (r < 0)
                return r;
        r = manifest_from_content(&c, ret);
        content_hash_done(&c);
        return r;
}

static int cmd_hash(int argc, char **argv, uint32_t piece_length) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        int r;

        if (argc != 1)
                return die(-EINVAL, "usage: hash [-p N] FILE");
        r = manifest_of_file(argv[0], piece_length, &m);
        if (r < 0)
                return die(r, "hashing failed");
        print_manifest(m);
        return 0;
}

static int cmd_torrent(int argc, char **argv, uint32_t piece_length, const char *announce) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        _cleanup_free_ uint8_t *t = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t size;
        int r;

        if (argc != 2)
                return die(-EINVAL, "usage: torrent [-p N] [-a URL] FILE OUT");
        r = manifest_of_file(argv[0], piece_length, &m);
        if (r < 0)
                return die(r, "hashing failed");
        r = manifest_to_torrent(m, announce, &t, &size);
        if (r < 0)
                return die(r, "encoding failed");
        f = fopen(argv[1], "we");
        if (!f || fwrite(t, 1, size, f) != size || fflush(f) != 0)
                return die(-EIO, "writing failed");
        return 0;
}

static int read_all(FILE *f, uint8_t **ret, size_t *ret_size) {
        size_t size = 0, alloc = 0;
        uint8_t *buf = NULL;

        for (;;) {
                if (alloc - size < 65536) {
                        uint8_t *n = realloc(buf, alloc = alloc * 2 + 65536);
                        if (!n) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = n;
                }
                size_t k = fread(buf + size, 1, alloc - size, f);
                size += k;
                if (k == 0)
                        break;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

static int load_torrent(const char *path, const uint8_t *id, unsigned flags, Manifest **ret, const char **reason) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size;
        int r;

        *reason = "cannot read";
        if (!f)
                return -errno;
        r = read_all(f, &buf, &size);
        if (r < 0)
                return r;
        return manifest_parse_torrent(buf, size, id, flags, ret, reason);
}

static int cmd_parse(int argc, char **argv, unsigned flags, const char *id_hex) {
        _cleanup_(manifest_freep) Manifest *m = NULL;
        uint8_t id[TORRENT_ID_SIZE];
        const char *reason = NULL;
        int r;

        if (argc != 1)
                return die(-EINVAL, "usage: parse [-c] [-i ID] TORRENT");
        if (id_hex && torrent_id_from_hex(id_hex, id) < 0)
                return die(-EINVAL, "bad id");
        r = load_torrent(argv[0], id_hex ? id : NULL, flags, &m, &reason);
        if (r < 0)
                return die(r, reason);
        print_manifest(m);
        return 0;
}

static int cmd_magnet(int argc, char **argv) {
        _cleanup_free_ char *s = NULL;
        MagnetLink l = {};
        int r;

        if (argc < 1 || argc - 1 > MAGNET_PEERS_MAX || torrent_id_from_hex(argv[0], l.id) < 0)
                return die(-EINVAL, "usage: magnet ID [HOST:PORT...]");
        for (int i = 1; i < argc; i++) {
                /* Parsed through a link, so that the peer syntax is the parser's. */
                _cleanup_free_ char *tmp = NULL;
                MagnetLink one;
                if (asprintf(&tmp, "magnet:?xt=urn:btmh:1220%s&x.pe=%s", argv[0], argv[i]) < 0)
                        return die(-ENOMEM, "out of memory");
                if (magnet_parse(tmp, &one) < 0 || one.n_peers != 1)
                        return die(-EINVAL, "bad peer");
                l.peers[l.n_peers++] = one.peers[0];
        }
        r = magnet_format(&l, &s);
        if (r < 0)
                return die(r, "formatting failed");
        printf("%s\n", s);
        return 0;
}

static int cmd_magnet_parse(int argc, char **argv) {
        char hex[TORRENT_ID_HEX_SIZE];
        MagnetLink l;
        int r;

        if (argc != 1)
                return die(-EINVAL, "usage: magnet-parse URI");
        r = magnet_parse(argv[0], &l);
        if (r < 0)
                return die(r, "not a v2 magnet link");
        torrent_id_to_hex(l.id, hex);
        printf("id %s\n", hex);
        for (size_t i = 0; i < l.n_peers; i++)
                printf("peer %s %u\n", l.peers[i].host, l.peers[i].port);
        return 0;
}

static int parse_u32(const char *s, uint32_t *ret) {
        char *end;
        unsigned long v;

        errno = 0;
        v = strtoul(s, &end, 0);
        if (errno != 0 || *end || end == s || v > UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t) v;
        return 0;
}

/* Hashes of the blocks of pieces [first, first + n) of the file. */
static int piece_block_hashes(int fd, const TorrentGeometry *g, uint32_t first, uint32_t n, uint8_t **ret,
                              uint64_t *ret_first, uint64_t *ret_n) {
        _cleanup_free_ uint8_t *data = malloc(g->piece_length), *hashes = NULL;
        uint64_t b0 = (uint64_t) first * g->blocks_per_piece, nb = 0;

        if (!data)
                return -ENOMEM;
        hashes = malloc((size_t) n * g->blocks_per_piece * SHA256_SIZE);
        if (!hashes)
                return -ENOMEM;
        for (uint32_t p = first; p < first + n; p++) {
                uint32_t size = torrent_piece_size(g, p);
                if (pread(fd, data, size, (off_t) p * g->piece_length) != (ssize_t) size)
                        return -EIO;
                for (uint32_t off = 0; off < size; off += TORRENT_BLOCK_SIZE, nb++) {
                        int r = sha256(data + off, MIN(TORRENT_BLOCK_SIZE, size - off), hashes + nb * SHA256_SIZE);
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(hashes);
        *ret_first = b0;
        *ret_n = nb;
        return 0;
}

static int cmd_hashes(int argc, char **argv, uint32_t piece_length) {
        _cleanup_(merkle_tree_freep) MerkleTree *t = NULL;
        _cleanup_free_ uint8_t *blocks = NULL, *out = NULL;
        _cleanup_close_ int fd = -EBADF;
        TorrentHashRequest req = {};
        uint64_t first_block = 0, n_blocks = 0;
        uint32_t first, n;
        ContentHash c;
        size_t count;
        int r;

        if (argc != 5 || parse_u32(argv[1], &req.base) < 0 || parse_u32(argv[2], &req.index) < 0 ||
            parse_u32(argv[3], &req.length) < 0 || parse_u32(argv[4], &req.proof_layers) < 0)
                return die(-EINVAL, "usage: hashes FILE BASE INDEX LENGTH PROOF");
        fd = open(argv[0], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return die(-errno, "cannot open");
        r = content_hash_fd(fd, piece_length, &c);
        if (r < 0)
                return die(r, "hashing failed");
        memcpy(req.root, c.root, SHA256_SIZE);
        /* Like a seeder: the tree from the piece layer, and blocks read for requests below it. */
        if (c.geometry.has_piece_layer)
                r = merkle_tree_new(&c.geometry, c.geometry.piece_level, c.piece_layer, c.geometry.n_pieces, &t);
        else
                r = merkle_tree_new(&c.geometry, c.geometry.height, c.root, 1, &t);
        if (r < 0) {
                content_hash_done(&c);
                return die(r, "tree failed");
        }
        merkle_request_pieces(&c.geometry, &req, &first, &n);
        if (n > 0) {
                r = piece_block_hashes(fd, &c.geometry, first, n, &blocks, &first_block, &n_blocks);
                if (r < 0) {
                        content_hash_done(&c);
                        return die(r, "reading blocks failed");
                }
        }
        out = malloc((TORRENT_HASHES_MAX + 64) * SHA256_SIZE);
        if (!out)
                return die(-ENOMEM, "out of memory");
        r = merkle_tree_get_hashes(t, &req, blocks, first_block, n_blocks, out, TORRENT_HASHES_MAX + 64, &count);
        if (r >= 0) {
                /* Our own answer must verify (when its proof reaches the root). */
                r = merkle_hashes_verify(&c.geometry, &req, out, count);
                if (r == -EDOM)
                        r = 0;
        }
        content_hash_done(&c);
        if (r < 0)
                return die(r, "no answer");
        for (size_t i = 0; i < count; i++)
                print_hex("hash", out + i * SHA256_SIZE, SHA256_SIZE);
        return 0;
}

/* Encodes one message from args[0..n) into stdout. */
static int encode_one(char **a, int n) {
        uint8_t buf[PEER_HASH_HEADER_SIZE + 256], payload[512];
        PeerMsg m = {};
        int r;

        if (n < 1)
                return -EINVAL;
        if (streq(a[0], "handshake") && n == 3) {
                PeerHandshake h = {};
                uint8_t ih[TORRENT_ID_SIZE];

                /* A v2 info-hash is given whole and truncated, as peers do. */
                if (hex_decode(a[1], ih, TORRENT_ID_SIZE) < 0 ||
                    hex_decode(a[2], h.peer_id, PEER_ID_SIZE) < 0)
                        return -EINVAL;
                memcpy(h.info_hash, ih, PEER_INFO_HASH_SIZE);
                peer_reserved_set(h.reserved, PEER_RESERVED_EXTENSION);
                peer_reserved_set(h.reserved, PEER_RESERVED_FAST);
                r = peer_handshake_encode(&h, buf, sizeof(buf));
        } else if (streq(a[0], "ext-handshake") && n == 1) {
                PeerExtHandshake h = { .reqq = 250 };
                size_t len;

                strcpy(h.v, "mc-torrent-tool");
                r = peer_ext_handshake_add(&h, "ut_metadata", 3);
                if (r < 0)
                        return r;
                r = peer_ext_handshake_encode(&h, payload, sizeof(payload), &len);
                if (r < 0)
                        return r;
                m = (PeerMsg) { .type = PEER_MSG_EXTENDED, .ext_id = 0, .data = payload, .size = len };
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else if (streq(a[0], "metadata-request") && n == 3) {
                UtMetadataMsg u = { .type = UT_METADATA_REQUEST };
                uint32_t ext;
                size_t len;

                if (parse_u32(a[1], &ext) < 0 || ext > 255 || parse_u32(a[2], &u.piece) < 0)
                        return -EINVAL;
                r = ut_metadata_encode(&u, payload, sizeof(payload), &len);
                if (r < 0)
                        return r;
                m = (PeerMsg) { .type = PEER_MSG_EXTENDED, .ext_id = (uint8_t) ext, .data = payload, .size = len };
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else if (streq(a[0], "interested") && n == 1) {
                m.type = PEER_MSG_INTERESTED;
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else if (streq(a[0], "have-none") && n == 1) {
                m.type = PEER_MSG_HAVE_NONE;
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else if (streq(a[0], "request") && n == 4) {
                m.type = PEER_MSG_REQUEST;
                if (parse_u32(a[1], &m.index) < 0 || parse_u32(a[2], &m.begin) < 0 || parse_u32(a[3], &m.length) < 0)
                        return -EINVAL;
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else if (streq(a[0], "hash-request") && n == 6) {
                m.type = PEER_MSG_HASH_REQUEST;
                if (hex_decode(a[1], m.hash.root, SHA256_SIZE) < 0 ||
                    parse_u32(a[2], &m.hash.base) < 0 || parse_u32(a[3], &m.hash.index) < 0 ||
                    parse_u32(a[4], &m.hash.length) < 0 || parse_u32(a[5], &m.hash.proof_layers) < 0)
                        return -EINVAL;
                r = peer_msg_encode(&m, buf, sizeof(buf));
        } else
                return -EINVAL;
        if (r < 0)
                return r;
        for (int i = 0; i < r; i++)
                printf("%02x", buf[i]);
        return 0;
}

static int cmd_encode(int argc, char **argv) {
        int start = 0;

        for (int i = 0; i <= argc; i++)
                if (i == argc || streq(argv[i], ",")) {
                        int r = encode_one(argv + start, i - start);
                        if (r < 0)
                                return die(r, "cannot encode that");
                        start = i + 1;
                }
        printf("\n");
        return fflush(stdout) == 0 ? 0 : die(-EIO, "write failed");
}

static void print_msg(const PeerMsg *m, const Manifest *t) {
        printf("%s", peer_msg_type_to_string(m->type));
        switch (m->type) {
        case PEER_MSG_HANDSHAKE:
                printf(" reserved=");
                for (int i = 0; i < 8; i++)
                        printf("%02x", m->handshake.reserved[i]);
                printf(" info_hash=");
                for (int i = 0; i < PEER_INFO_HASH_SIZE; i++)
                        printf("%02x", m->handshake.info_hash[i]);
                break;
        case PEER_MSG_HAVE:
        case PEER_MSG_SUGGEST:
        case PEER_MSG_ALLOWED_FAST:
                printf(" index=%" PRIu32, m->index);
                break;
        case PEER_MSG_REQUEST:
        case PEER_MSG_CANCEL:
        case PEER_MSG_REJECT:
        case PEER_MSG_PIECE:
                printf(" index=%" PRIu32 " begin=%" PRIu32 " length=%" PRIu32, m->index, m->begin, m->length);
                break;
        case PEER_MSG_BITFIELD:
                printf(" size=%zu", m->size);
                break;
        case PEER_MSG_PORT:
                printf(" port=%u", m->port);
                break;
        case PEER_MSG_EXTENDED:
                printf(" ext_id=%u", m->ext_id);
                if (m->ext_id == 0) {
                        PeerExtHandshake h;
                        int r = peer_ext_handshake_parse(m->data, m->size, &h);
                        if (r < 0)
                                printf(" handshake_error=%s", strerrorname_np(-r));
                        else {
                                printf(" ut_metadata=%u metadata_size=%" PRIu32 " reqq=%" PRIu32,
                                       peer_ext_handshake_id(&h, "ut_metadata"), h.metadata_size, h.reqq);
                        }
                } else {
                        UtMetadataMsg u;
                        int r = ut_metadata_parse(m->data, m->size, &u);
                        if (r < 0)
                                printf(" ut_metadata_error=%s", strerrorname_np(-r));
                        else {
                                printf(" ut_metadata_type=%d piece=%" PRIu32 " total_size=%" PRIu32, u.type, u.piece, u.total_size);
                                if (u.type == UT_METADATA_DATA && t)
                                        printf(" matches_info=%s", u.size == t->info_size && u.piece == 0 &&
                                               memcmp(u.data, t->info, u.size) == 0 ? "yes" : "no");
                        }
                }
                break;
        case PEER_MSG_HASH_REQUEST:
        case PEER_MSG_HASH_REJECT:
        case PEER_MSG_HASHES:
                printf(" base=%" PRIu32 " index=%" PRIu32 " length=%" PRIu32 " proof_layers=%" PRIu32,
                       m->hash.base, m->hash.index, m->hash.length, m->hash.proof_layers);
                if (m->type == PEER_MSG_HASHES) {
                        printf(" n=%zu", m->n_hashes);
                        if (t) {
                                int r = merkle_hashes_verify(&t->geometry, &m->hash, m->hashes, m->n_hashes);
                                printf(" verified=%s", r >= 0 ? "yes" : strerrorname_np(-r));
                        }
                        printf(" hashes=");
                        for (size_t i = 0; i < m->n_hashes * SHA256_SIZE; i++)
                                printf("%02x", m->hashes[i]);
                }
                break;
        default:
                break;
        }
        if (m->reject)
                printf(" reject");
        printf("\n");
}

static int cmd_decode(int argc, char **argv, bool handshake, const char *torrent) {
        _cleanup_(peer_decoder_freep) PeerDecoder *d = NULL;
        _cleanup_(manifest_freep) Manifest *t = NULL;
        _cleanup_free_ uint8_t *buf = NULL;
        const PeerDecoderConfig c = { .handshake = handshake, .max_message = 1 << 20 };
        const char *reason;
        size_t size, off = 0;
        int r;

        if (argc != 0)
                return die(-EINVAL, "usage: decode [-s] [-t TORRENT] < BYTES");
        if (torrent) {
                r = load_torrent(torrent, NULL, 0, &t, &reason);
                if (r < 0)
                        return die(r, reason);
        }
        r = peer_decoder_new(&c, &d);
        if (r < 0)
                return die(r, "decoder");
        if (t)
                peer_decoder_set_geometry(d, &t->geometry, t->root);
        r = read_all(stdin, &buf, &size);
        if (r < 0)
                return die(r, "reading stdin");
        /* Fed in odd-sized chunks, to exercise the reassembly. */
        while (off < size) {
                size_t chunk = MIN(size - off, (size_t) 1000), used;
                PeerMsg m;

                r = peer_decoder_feed(d, buf + off, chunk, &used, &m);
                off += used;
                if (r < 0)
                        return die(r, peer_decoder_error(d));
                if (r > 0)
                        print_msg(&m, t);
        }
        return 0;
}

static int cmd_bench(int argc, char **argv) {
        struct timespec a, b;
        struct stat st;
        ContentHash c;
        double secs;
        int r;

        if (argc != 1 || stat(argv[0], &st) < 0)
                return die(-EINVAL, "usage: bench FILE");
        clock_gettime(CLOCK_MONOTONIC, &a);
        r = hash_file(argv[0], 0, &c);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (r < 0)
                return die(r, "hashing failed");
        content_hash_done(&c);
        secs = (double) (b.tv_sec - a.tv_sec) + (double) (b.tv_nsec - a.tv_nsec) / 1e9;
        printf("%" PRIu64 " bytes in %.3f s: %.0f MiB/s\n", (uint64_t) st.st_size, secs,
               (double) st.st_size / secs / 1048576.0);
        return 0;
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "piece-length", required_argument, NULL, 'p' },
                { "announce", required_argument, NULL, 'a' },
                { "canonical", no_argument, NULL, 'c' },
                { "id", required_argument, NULL, 'i' },
                { "handshake", no_argument, NULL, 's' },
                { "torrent", required_argument, NULL, 't' },
                {}
        };
        const char *announce = NULL, *id = NULL, *torrent = NULL, *cmd;
        uint32_t piece_length = 0;
        unsigned flags = 0;
        bool handshake = false;
        int c;

        if (argc < 2)
                return die(-EINVAL, "usage: mc-torrent-tool COMMAND ... (see the source)");
        cmd = argv[1];
        argv++;
        argc--;
        while ((c = getopt_long(argc, argv, "+p:a:ci:st:", options, NULL)) >= 0)
                switch (c) {
                case 'p':
                        if (parse_u32(optarg, &piece_length) < 0)
                                return die(-EINVAL, "bad piece length");
                        break;
                case 'a':
                        announce = optarg;
                        break;
                case 'c':
                        flags |= MANIFEST_CANONICAL;
                        break;
                case 'i':
                        id = optarg;
                        break;
                case 's':
                        handshake = true;
                        break;
                case 't':
                        torrent = optarg;
                        break;
                default:
                        return 1;
                }
        argc -= optind;
        argv += optind;

        if (streq(cmd, "hash"))
                return cmd_hash(argc, argv, piece_length);
        if (streq(cmd, "torrent"))
                return cmd_torrent(argc, argv, piece_length, announce);
        if (streq(cmd, "parse"))
                return cmd_parse(argc, argv, flags, id);
        if (streq(cmd, "magnet"))
                return cmd_magnet(argc, argv);
        if (streq(cmd, "magnet-parse"))
                return cmd_magnet_parse(argc, argv);
        if (streq(cmd, "hashes"))
                return cmd_hashes(argc, argv, piece_length);
        if (streq(cmd, "encode"))
                return cmd_encode(argc, argv);
        if (streq(cmd, "decode"))
                return cmd_decode(argc, argv, handshake, torrent);
        if (streq(cmd, "bench"))
                return cmd_bench(argc, argv);
        return die(-EINVAL, "unknown command");
}
