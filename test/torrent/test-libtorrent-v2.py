#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""src/torrent against an independent implementation, libtorrent-rasterbar 2.0 (python3-libtorrent),
through the mc-torrent-tool test helper:

- for files of many sizes, libtorrent's v2-only torrent of the same file (same name, same piece
  length) has byte for byte our info dictionary (so our content id), pieces root and piece layer;
- libtorrent reads our .torrent files and magnet links, and checks the file's data against our
  piece layer (a full recheck that ends seeding);
- on a TCP connection to libtorrent seeding a v2 torrent, our encoded handshake, extension
  handshake, ut_metadata request, hash requests and block request are understood, and everything
  libtorrent answers decodes with our peer wire decoder: the info dictionary it sends is ours, the
  hashes it sends verify against the root and equal the answer we compute ourselves."""

import hashlib
import os
import socket

import mctest
from mctest import binary, check, run, tmpdir, wait_until

try:
    import libtorrent as lt
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")

TIMEOUT = 60
KIB = 1024
MIB = 1024 * KIB


def tool(*args, check_rc=True):
    return run([binary("mc-torrent-tool"), *[str(a) for a in args]], check=check_rc, timeout=300)


def ours(path, piece_length=None):
    args = ["hash"] + (["-p", piece_length] if piece_length else []) + [path]
    return dict(line.split(" ", 1) for line in tool(*args).stdout.splitlines())


def make_file(size, seed):
    """A file of pseudo-random bytes named after our pieces root, as our manifests name it."""
    d = tmpdir("lt")
    path = os.path.join(d, "data")
    with open(path, "wb") as f:
        chunk = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB, differing per seed
        left = size
        i = 0
        while left > 0:
            block = hashlib.sha256(b"%d-%d" % (seed, i)).digest() + chunk[32:]
            f.write(block[:left])
            left -= len(block[:left])
            i += 1
    return d, path


def lt_torrent(d, name, piece_length):
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(d, name))
    check(fs.num_files() == 1 and fs.file_path(0) == name, f"libtorrent sees {fs.file_path(0)}")
    ct = lt.create_torrent(fs, piece_length, lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, d)
    return ct.generate()


SIZES = [
    # (size, piece length or None for our rule)
    (1, None), (1000, None), (16 * KIB - 1, None), (16 * KIB, None), (16 * KIB + 1, None),
    (32 * KIB, None), (100000, None), (MIB + 1, None), (32 * MIB, None), (32 * MIB + 1, None),
    (70 * MIB + 12345, None),
    # Other geometries: a file smaller than one large piece (leaves padded to a power of two), one
    # piece exactly, one piece + 1 byte, 3 pieces and a bit, 4 MiB pieces over 2.5 pieces.
    (3 * 16 * KIB - 5, 64 * KIB), (MIB, MIB), (MIB + 1, MIB), (3 * 64 * KIB + 1, 64 * KIB),
    (10 * MIB + 3, 4 * MIB), (5 * 16 * KIB + 7, 32 * KIB),
]


def test_same_hashes_as_libtorrent():
    for i, (size, piece_length) in enumerate(SIZES):
        d, path = make_file(size, i)
        o = ours(path, piece_length)
        check(int(o["length"]) == size, f"{size}: length {o['length']}")
        name = o["name"]
        check(name == o["root"], f"{size}: name {name} is not the root {o['root']}")
        os.rename(path, os.path.join(d, name))
        e = lt_torrent(d, name, int(o["piece_length"]))
        info = lt.bencode(e[b"info"])
        check(info.hex() == o["info"], f"{size}: info differs:\n lt:   {info!r}\n ours: {bytes.fromhex(o['info'])!r}")
        check(hashlib.sha256(info).hexdigest() == o["id"], f"{size}: id differs")
        ti = lt.torrent_info(lt.bencode(e))
        check(str(ti.info_hashes().v2) == o["id"], f"{size}: libtorrent's info-hash {ti.info_hashes().v2}")
        root = e[b"info"][b"file tree"][name.encode()][b""][b"pieces root"]
        check(root.hex() == o["root"], f"{size}: pieces root differs")
        layers = e.get(b"piece layers", {})
        if o["piece_layer"] == "-":
            check(not layers, f"{size}: libtorrent has a piece layer, we have none")
        else:
            check(list(layers.keys()) == [root], f"{size}: libtorrent's piece layers {list(layers.keys())}")
            check(layers[root].hex() == o["piece_layer"], f"{size}: piece layer differs")
        # Our parser takes libtorrent's .torrent (with its creation date) as canonical.
        t = os.path.join(d, "lt.torrent")
        with open(t, "wb") as f:
            f.write(lt.bencode(e))
        flags = ["-c"] if piece_length is None else []
        p = dict(line.split(" ", 1) for line in tool("parse", *flags, "-i", o["id"], t).stdout.splitlines())
        check(p["id"] == o["id"] and p["piece_layer"] == o["piece_layer"], f"{size}: our parse of libtorrent's torrent")


class Session:
    def __init__(self):
        self.s = lt.session({
            "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False,
            "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
        })
        mctest.defer(self.close)

    def close(self):
        self.s.pause()
        del self.s

    def seed(self, torrent_bytes, save_path):
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent_bytes)
        atp.save_path = save_path
        h = self.s.add_torrent(atp)
        wait_until(lambda: h.status().is_seeding, TIMEOUT,
                   msg=f"libtorrent checking the data against our torrent (state {h.status().state}, errors {h.status().errc.message()})")
        return h


def test_libtorrent_reads_ours():
    sess = Session()
    for i, (size, piece_length) in enumerate([(100000, None), (3 * MIB + 7, None), (MIB + 1, 256 * KIB), (5000, None)]):
        d, path = make_file(size, 100 + i)
        o = ours(path, piece_length)
        os.rename(path, os.path.join(d, o["name"]))
        t = os.path.join(d, "ours.torrent")
        args = ["torrent"] + (["-p", piece_length] if piece_length else []) + ["-a", "http://tracker.invalid/announce"]
        tool(*args, os.path.join(d, o["name"]), t)
        with open(t, "rb") as f:
            data = f.read()
        ti = lt.torrent_info(data)
        check(str(ti.info_hashes().v2) == o["id"], f"{size}: libtorrent's id {ti.info_hashes().v2} for ours {o['id']}")
        check(not ti.info_hashes().has_v1(), f"{size}: libtorrent sees a v1 hash")
        check(ti.info_section().hex() == o["info"], f"{size}: libtorrent's info section differs")
        check(ti.piece_length() == int(o["piece_length"]) and ti.num_pieces() == int(o["pieces"]),
              f"{size}: libtorrent's geometry {ti.piece_length()} x {ti.num_pieces()}")
        check(ti.files().file_size(0) == size and ti.files().file_path(0) == o["name"], f"{size}: libtorrent's file")
        # libtorrent hashes the data and checks each piece against our piece layer.
        sess.seed(data, d)


def test_magnet_links():
    d, path = make_file(200000, 7)
    o = ours(path)
    uri = tool("magnet", o["id"], "127.0.0.1:6881", "[::1]:7000").stdout.strip()
    check(uri == f"magnet:?xt=urn:btmh:1220{o['id']}&x.pe=127.0.0.1:6881&x.pe=[::1]:7000", f"our link {uri}")
    atp = lt.parse_magnet_uri(uri)
    check(str(atp.info_hashes.v2) == o["id"] and not atp.info_hashes.has_v1(), f"libtorrent's id {atp.info_hashes.v2}")
    peers = sorted((str(p[0]), p[1]) for p in atp.peers)
    check(peers == [("127.0.0.1", 6881), ("::1", 7000)], f"libtorrent's peers {peers}")

    # The other way: libtorrent's link for a torrent of the same file.
    os.rename(path, os.path.join(d, o["name"]))
    e = lt_torrent(d, o["name"], int(o["piece_length"]))
    lt_uri = lt.make_magnet_uri(lt.torrent_info(lt.bencode(e)))
    out = tool("magnet-parse", lt_uri).stdout.splitlines()
    check(out[0] == f"id {o['id']}", f"our parse of {lt_uri}: {out}")


class Peer:
    """A TCP connection to libtorrent speaking with our encoder; what arrives is kept and decoded by
    our decoder (the whole stream again on each look, chunked by the tool)."""

    def __init__(self, port, torrent):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setblocking(False)
        self.torrent = torrent
        self.received = b""
        mctest.defer(self.sock.close)

    def send(self, *args):
        msg = tool("encode", *args).stdout.strip()
        self.sock.setblocking(True)
        self.sock.sendall(bytes.fromhex(msg))
        self.sock.setblocking(False)

    def decoded(self):
        try:
            while True:
                b = self.sock.recv(65536)
                if not b:
                    break
                self.received += b
        except BlockingIOError:
            pass
        p = run([binary("mc-torrent-tool"), "decode", "-s", "-t", self.torrent], input=self.received, check=False)
        if p.returncode != 0:
            raise AssertionError(f"our decoder refused libtorrent's stream: {p.stderr}")
        return p.stdout.splitlines()


def fields(line):
    return dict(f.split("=", 1) for f in line.split() if "=" in f)


def test_peer_wire_with_libtorrent():
    # 22 pieces of 64 KiB (the piece layer at level 2), 128 leaves.
    size = 21 * 64 * KIB + 1000
    d, path = make_file(size, 42)
    o = ours(path, 64 * KIB)
    os.rename(path, os.path.join(d, o["name"]))
    file = os.path.join(d, o["name"])
    t = os.path.join(d, "ours.torrent")
    tool("torrent", "-p", 64 * KIB, file, t)
    sess = Session()
    with open(t, "rb") as f:
        sess.seed(f.read(), d)

    peer = Peer(sess.s.listen_port(), t)
    peer_id = "2d4d43303130302d" + "00" * 12
    peer.send("handshake", o["id"], peer_id, ",", "ext-handshake", ",", "have-none", ",", "interested")
    lines = wait_until(lambda: (l := peer.decoded()) and any(x.startswith("extended ext_id=0") for x in l) and l,
                       TIMEOUT, msg="libtorrent's handshake and extension handshake")
    hs = lines[0].split()
    check(hs[0] == "handshake" and fields(lines[0])["info_hash"] == o["id"][:40], f"libtorrent's handshake: {lines[0]}")
    reserved = bytes.fromhex(fields(lines[0])["reserved"])
    check(reserved[5] & 0x10 and reserved[7] & 0x04, f"libtorrent's reserved bits {reserved.hex()}")
    ext = fields(next(x for x in lines if x.startswith("extended ext_id=0")))
    check(int(ext["metadata_size"]) == len(bytes.fromhex(o["info"])), f"libtorrent's metadata_size {ext}")
    ut_metadata = int(ext["ut_metadata"])
    check(ut_metadata > 0, "libtorrent offers no ut_metadata")

    requests = [
        # base, index, length, proof layers: the whole piece layer (padded to 32) up to the root;
        # 8 piece hashes with 2 uncles; the 4 blocks of piece 0 with 5 uncles (libtorrent may not
        # keep block hashes: a hash reject is a fine answer then).
        (2, 0, 32, 4), (2, 8, 8, 4), (0, 0, 4, 6),
    ]
    args = ["metadata-request", ut_metadata, 0]
    for r in requests:
        args += [",", "hash-request", o["root"], *r]
    args += [",", "request", 0, 0, 16384]
    peer.send(*args)

    def answered():
        lines = peer.decoded()
        got = [x for x in lines if x.split()[0] in ("hashes", "hash") or x.startswith("piece ")
               or "ut_metadata_type=1" in x]
        return len(got) >= len(requests) + 2 and lines
    lines = wait_until(answered, TIMEOUT, msg="libtorrent's answers")
    text = "\n".join(lines)
    print("\n".join(x[:160] for x in lines))

    meta = [x for x in lines if "ut_metadata_type=1" in x]
    check(len(meta) == 1 and "matches_info=yes" in meta[0], f"metadata from libtorrent: {meta}")
    piece = [x for x in lines if x.startswith("piece ")]
    check(len(piece) == 1 and fields(piece[0]) == {"index": "0", "begin": "0", "length": "16384"}, f"piece: {piece}")
    for base, index, length, proof in requests:
        mine = [x.split()[1] for x in tool("hashes", "-p", 64 * KIB, file, base, index, length, proof).stdout.splitlines()]
        key = f"base={base} index={index} length={length} proof_layers={proof}"
        answers = [x for x in lines if key in x]
        check(len(answers) == 1, f"one answer to {key} expected:\n{text}")
        a = answers[0]
        if a.startswith("hash reject") and base == 0:
            continue
        f = fields(a)
        check(a.startswith("hashes") and f["verified"] == "yes", f"libtorrent's answer to {key} does not verify: {a}")
        check(f["hashes"] == "".join(mine), f"libtorrent's answer to {key} differs from ours")
    check(not any(x.endswith(" reject") for x in lines), f"a message flagged reject:\n{text}")


mctest.main()
