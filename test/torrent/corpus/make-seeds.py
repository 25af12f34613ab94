#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the seed corpus of the peer-wire and manifest fuzz targets: streams of every message, one
captured from libtorrent 2.0 seeding a v2 torrent, .torrent files libtorrent makes (v2, v1, hybrid,
multi-file), info dictionaries, magnet links, and hostile variants of each (truncated, wrong sizes,
huge lengths). Run once; the output is committed, together with what the fuzzers found.
Usage: make-seeds.py CORPUS_DIR   (needs python3-libtorrent)"""

import hashlib, os, socket, struct, sys, tempfile, time

import libtorrent as lt

out = sys.argv[1]
for d in ("peer-wire", "manifest"):
    os.makedirs(f"{out}/{d}", exist_ok=True)


def save(kind, name, data):
    with open(f"{out}/{kind}/seed-{name}", "wb") as f:
        f.write(data)


def msg(mid, payload=b""):
    return struct.pack(">IB", len(payload) + 1, mid) + payload


def hash_hdr(root, base, index, length, proof):
    return root + struct.pack(">IIII", base, index, length, proof)


ROOT = hashlib.sha256(b"root").digest()
HS = b"\x13BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0x10, 0, 0x05]) + b"I" * 20 + b"P" * 20
EXT_HS = b"d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei267e1:pi6881e4:reqqi500e1:v10:mc 0.1.0 e"
UT_DATA = b"d8:msg_typei1e5:piecei0e10:total_sizei5ee" + b"hello"
every = [
    struct.pack(">I", 0), msg(0), msg(1), msg(2), msg(3), msg(4, struct.pack(">I", 3)), msg(5, b"\xff\xc0"),
    msg(6, struct.pack(">III", 1, 0, 16384)), msg(7, struct.pack(">II", 1, 0) + b"x" * 100),
    msg(8, struct.pack(">III", 1, 0, 16384)), msg(9, struct.pack(">H", 6881)), msg(13, struct.pack(">I", 2)),
    msg(14), msg(15), msg(16, struct.pack(">III", 1, 0, 16384)), msg(17, struct.pack(">I", 4)),
    msg(20, b"\0" + EXT_HS), msg(20, b"\3d8:msg_typei0e5:piecei0ee"), msg(20, b"\3" + UT_DATA),
    msg(21, hash_hdr(ROOT, 0, 0, 4, 2)), msg(22, hash_hdr(ROOT, 1, 4, 4, 3) + b"h" * 32 * 6),
    msg(23, hash_hdr(ROOT, 0, 8, 8, 0)),
]
stream = b"".join(every)
for setup in (0, 2, 0x40, 0x42):
    save("peer-wire", f"every-{setup:02x}", bytes([setup]) + stream)
    save("peer-wire", f"every-hs-{setup:02x}", bytes([setup | 1]) + HS + stream)
for i, m in enumerate(every):
    save("peer-wire", f"one-{i:02d}", b"\x02" + m)
    save("peer-wire", f"cut-{i:02d}", b"\x02" + m[:-1])
hostile = [
    struct.pack(">I", 0xffffffff) + b"\x07", msg(10), msg(255), msg(0, b"x"), msg(4, b"abc"), msg(5, b"\xff\xff\xff"),
    msg(6, b"\0" * 11), msg(7, b"\0" * 8), msg(7, b"\0" * 8 + b"x" * 16385), msg(9, b"\0"), msg(20),
    msg(21, b"\0" * 47), msg(22, hash_hdr(ROOT, 0, 0, 4, 0) + b"h" * 96), msg(22, hash_hdr(ROOT, 0, 2, 4, 0)),
    msg(22, hash_hdr(ROOT, 0, 0, 3, 0) + b"h" * 96), msg(23, hash_hdr(ROOT, 0, 0, 0, 0)),
    msg(4, struct.pack(">I", 10)), msg(7, struct.pack(">II", 9, 16384) + b"x" * 16384),
    msg(20, b"\0d1:md1:ai999eee"), msg(20, b"\3d8:msg_typei1e5:piecei0e10:total_sizei9eeabc"),
]
for i, m in enumerate(hostile):
    save("peer-wire", f"hostile-{i:02d}", b"\x02" + m)
save("peer-wire", "bad-handshake", b"\x01" + b"\x12" + HS[1:])


# A real exchange with libtorrent seeding a v2 torrent: everything it sends after our requests.
def capture():
    d = tempfile.mkdtemp()
    data = os.urandom(5 * 65536 + 1000)
    name = "data"
    with open(f"{d}/{name}", "wb") as f:
        f.write(data)
    fs = lt.file_storage()
    lt.add_files(fs, f"{d}/{name}")
    ct = lt.create_torrent(fs, 65536, lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, d)
    e = ct.generate()
    ti = lt.torrent_info(lt.bencode(e))
    s = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                    "enable_upnp": False, "enable_natpmp": False})
    atp = lt.add_torrent_params()
    atp.ti = ti
    atp.save_path = d
    h = s.add_torrent(atp)
    for _ in range(200):
        if h.status().is_seeding:
            break
        time.sleep(0.05)
    ih = bytes.fromhex(str(ti.info_hashes().v2))
    root = e[b"info"][b"file tree"][name.encode()][b""][b"pieces root"]
    c = socket.create_connection(("127.0.0.1", s.listen_port()))
    c.sendall(HS[:28] + ih[:20] + b"-MC0100-" + b"0" * 12 + msg(20, b"\0d1:md11:ut_metadatai3eee") + msg(15) + msg(2)
              + msg(20, b"\2d8:msg_typei0e5:piecei0ee") + msg(21, hash_hdr(root, 2, 0, 8, 2))
              + msg(21, hash_hdr(root, 0, 0, 4, 4)) + msg(6, struct.pack(">III", 0, 0, 16384)))
    c.settimeout(0.5)
    got = b""
    end = time.time() + 3
    while time.time() < end:
        try:
            b = c.recv(65536)
            if not b:
                break
            got += b
        except socket.timeout:
            pass
    c.close()
    return got, lt.bencode(e), lt.bencode(e[b"info"])


got, torrent, info = capture()
save("peer-wire", "libtorrent-stream", b"\x01" + got)
save("peer-wire", "libtorrent-stream-chunked", b"\x11" + got)


# Manifests.
def lt_make(sizes, flags, piece=16384):
    d = tempfile.mkdtemp()
    for i, size in enumerate(sizes):
        with open(f"{d}/f{i}" if len(sizes) > 1 else f"{d}/file", "wb") as f:
            f.write(os.urandom(size))
    fs = lt.file_storage()
    lt.add_files(fs, d if len(sizes) > 1 else f"{d}/file")
    ct = lt.create_torrent(fs, piece, flags)
    lt.set_piece_hashes(ct, os.path.dirname(d) if len(sizes) > 1 else d)
    return ct.generate()


save("manifest", "libtorrent-v2", torrent)
save("manifest", "libtorrent-v2-info", info)
for size in (1, 16384, 16385, 100000):
    e = lt_make([size], lt.create_torrent.v2_only)
    save("manifest", f"v2-{size}", lt.bencode(e))
    save("manifest", f"v2-{size}-info", lt.bencode(e[b"info"]))
save("manifest", "v1", lt.bencode(lt_make([50000], lt.create_torrent.v1_only)))
save("manifest", "hybrid", lt.bencode(lt_make([50000], 0)))
save("manifest", "multi-file", lt.bencode(lt_make([20000, 30000], lt.create_torrent.v2_only)))
t = lt.bencode(lt_make([70000], lt.create_torrent.v2_only))
for cut in (1, 10, len(t) // 2, len(t) - 1):
    save("manifest", f"cut-{cut}", t[:cut])
save("manifest", "layer-flipped", t[:-5] + bytes([t[-5] ^ 1]) + t[-4:])
save("manifest", "magnet", b"magnet:?xt=urn:btmh:1220" + hashlib.sha256(b"x").hexdigest().encode()
     + b"&x.pe=127.0.0.1:6881&x.pe=[::1]:80&dn=name&tr=http%3A%2F%2Ft")
save("manifest", "magnet-v1", b"magnet:?xt=urn:btih:" + b"a" * 40)
