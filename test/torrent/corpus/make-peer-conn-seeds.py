#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the seed corpus of fuzz-peer-conn: the first byte is the harness's setup (bit 0: it sends
a valid handshake first; bit 1: no fast extension; bit 2: no extension protocol; bit 3: the
one-piece content; bit 4: ours is the downloading side), the rest is what a peer sends after that. Run once; the output is committed,
together with what the fuzzer found. Usage: make-peer-conn-seeds.py CORPUS_DIR/peer-conn"""

import struct, sys

out = sys.argv[1]


def msg(mid, payload=b""):
    return struct.pack(">IB", len(payload) + 1, mid) + payload


def req(mid, i, b, l):
    return msg(mid, struct.pack(">III", i, b, l))


def hreq(base, index, length, proof, root=b"\0" * 32):
    return msg(21, root + struct.pack(">IIII", base, index, length, proof))


EXT = msg(20, b"\0d1:md11:ut_metadatai3ee4:reqqi250ee")
seeds = {
    "interested-requests": msg(2) + req(6, 0, 0, 16384) + req(6, 6, 0, 1696) + req(6, 6, 0, 16384) + req(6, 1, 0, 16385),
    "cancel": msg(2) + req(6, 0, 0, 16384) + req(8, 0, 0, 16384) + req(6, 2, 0, 16384),
    "bitfield-have": msg(5, b"\xfe") + msg(4, struct.pack(">I", 3)),
    "have-all": msg(14) + msg(2),
    "have-none": msg(15) + msg(4, struct.pack(">I", 0)),
    "ext-metadata": EXT + msg(20, b"\x01d8:msg_typei0e5:piecei0ee") + msg(20, b"\x01d8:msg_typei0e5:piecei9ee"),
    "hash-requests": hreq(0, 0, 8, 0) + hreq(0, 0, 2, 3) + hreq(1, 0, 4, 2) + hreq(0, 0, 3, 0),
    "keepalive-choke": struct.pack(">I", 0) + msg(0) + msg(1) + msg(3) + msg(9, b"\x1a\xe1"),
    "reject-unsolicited": req(16, 0, 0, 16384),
    "piece-unsolicited": msg(7, struct.pack(">II", 0, 0) + b"x" * 64),
    "flood": msg(2) + b"".join(req(6, i % 6, 0, 16384) for i in range(120)),
    "hashes-unsolicited": msg(22, b"\0" * 32 + struct.pack(">IIII", 0, 0, 2, 0) + b"h" * 64),
    "garbage": b"\xff" * 16,
}
for name, data in seeds.items():
    for setup in (0x01, 0x03, 0x05, 0x09, 0x11, 0x13):
        with open(f"{out}/seed-{name}-{setup:02x}", "wb") as f:
            f.write(bytes([setup]) + data)
# Ours downloading (bit 4): the peer announces pieces, unchokes, sends blocks and rejects.
BLOCK0 = msg(7, struct.pack(">II", 0, 0) + b"b" * 16384)
download = {
    "download-have-all": msg(14) + msg(1) + BLOCK0 + req(16, 1, 0, 16384) + msg(0) + msg(1) + BLOCK0,
    "download-bitfield": msg(5, b"\xc0") + msg(1) + BLOCK0 + msg(7, struct.pack(">II", 1, 0) + b"c" * 16384),
    "download-have": msg(15) + msg(4, struct.pack(">I", 6)) + msg(1) + msg(7, struct.pack(">II", 6, 0) + b"d" * 1696),
    "download-choke-no-fast": msg(14) + msg(1) + msg(0) + BLOCK0,
}
for name, data in download.items():
    for setup in (0x11, 0x13):
        with open(f"{out}/seed-{name}-{setup:02x}", "wb") as f:
            f.write(bytes([setup]) + data)
# Without the harness's handshake: a raw stream from the first byte.
for name, data in {"raw-http": b"GET / HTTP/1.0\r\n\r\n", "raw-handshake-unknown":
                   b"\x13BitTorrent protocol" + b"\0" * 8 + b"\x11" * 20 + b"P" * 20}.items():
    with open(f"{out}/seed-{name}", "wb") as f:
        f.write(b"\x00" + data)
