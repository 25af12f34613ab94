#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the seed corpus of the bencode and KRPC fuzz targets: canonical messages, real packets
captured from libtorrent (queries it sends and answers it gives), and hostile variants (truncated,
huge lengths, deep nesting, wrong types, bad signatures). Run once; the output is committed, together
with what the fuzzers found. Usage: make-seeds.py CORPUS_DIR"""

import hashlib, os, socket, sys, time

out = sys.argv[1]
os.makedirs(f"{out}/bencode", exist_ok=True)
os.makedirs(f"{out}/krpc", exist_ok=True)
os.makedirs(f"{out}/dht-packet", exist_ok=True)

def save(kind, name, data):
    with open(f"{out}/{kind}/seed-{name}", "wb") as f:
        f.write(data)

def benc(x):
    if isinstance(x, int): return b"i%de" % x
    if isinstance(x, str): x = x.encode()
    if isinstance(x, bytes): return b"%d:%s" % (len(x), x)
    if isinstance(x, list): return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    raise TypeError(x)

ID = b"abcdefghij0123456789"
T = b"mnopqrstuvwxyz123456"
msgs = {
    "ping": {"t": "aa", "y": "q", "q": "ping", "a": {"id": ID}},
    "ping-r": {"t": "aa", "y": "r", "r": {"id": T}},
    "find_node": {"t": "aa", "y": "q", "q": "find_node", "a": {"id": ID, "target": T, "want": ["n4", "n6"]}},
    "find_node-r": {"t": "aa", "y": "r", "r": {"id": T, "nodes": (ID + b"\x7f\0\0\1\x1a\xe1") * 8, "nodes6": (ID + b"\0" * 15 + b"\1\x1a\xe1") * 2}},
    "get_peers": {"t": "aa", "y": "q", "q": "get_peers", "a": {"id": ID, "info_hash": T}},
    "get_peers-r": {"t": "aa", "y": "r", "r": {"id": T, "token": "aoeusnth", "values": ["axje.u", "idhtnm", b"\0" * 15 + b"\1\x1a\xe1"]}},
    "announce": {"t": "aa", "y": "q", "q": "announce_peer", "a": {"id": ID, "implied_port": 1, "info_hash": T, "port": 6881, "token": "aoeusnth"}},
    "error": {"t": "aa", "y": "e", "e": [201, "A Generic Error Ocurred"]},
    "get": {"t": "aa", "y": "q", "q": "get", "a": {"id": ID, "target": T, "seq": 3}},
    "put-imm": {"t": "aa", "y": "q", "q": "put", "a": {"id": ID, "token": "tok", "v": "Hello World!"}},
    "unknown": {"t": "aa", "y": "q", "q": "sample_infohashes", "a": {"id": ID, "target": T}},
    "ro": {"t": "aa", "y": "q", "q": "ping", "ro": 1, "v": "LT\1\2", "a": {"id": ID}},
}
# BEP 44 test vector 1: a valid signature, and the same with a flipped bit.
k = bytes.fromhex("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548")
sig = bytes.fromhex("305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01")
msgs["put-mut"] = {"t": "aa", "y": "q", "q": "put", "a": {"id": ID, "token": "tok", "k": k, "seq": 1, "sig": sig, "v": "Hello World!"}}
msgs["put-mut-badsig"] = {"t": "aa", "y": "q", "q": "put", "a": {"id": ID, "token": "tok", "k": k, "seq": 1, "sig": sig[:10] + b"\0" + sig[11:], "v": "Hello World!"}}
msgs["put-mut-salt-cas"] = {"t": "aa", "y": "q", "q": "put", "a": {"id": ID, "token": "tok", "k": k, "seq": 2, "cas": 1, "salt": "task/abc", "sig": sig, "v": {"a": [1, 2]}}}
msgs["get-r-mut"] = {"t": "aa", "y": "r", "r": {"id": T, "k": k, "seq": 1, "sig": sig, "token": "tok", "v": "Hello World!", "nodes": ID + b"\x7f\0\0\1\x1a\xe1"}}
msgs["get-r-mut-badsig"] = {"t": "aa", "y": "r", "r": {"id": T, "k": k, "seq": 1, "sig": b"\xff" * 64, "token": "tok", "v": "Hello World!"}}

for name, m in msgs.items():
    b = benc(m)
    save("krpc", name, b)
    save("bencode", name, b)
    save("krpc", name + "-trunc", b[: len(b) // 2])

hostile = {
    "empty": b"", "int": b"i1e", "neg0": b"i-0e", "lead0": b"i01e", "overflow": b"i9223372036854775808e",
    "hugelen": b"4294967296:a", "hugelen2": b"99999999999999999999:a", "lenlead0": b"01:a",
    "deep": b"l" * 5000 + b"e" * 5000, "deep-open": b"l" * 5000, "deep-dict": b"d1:a" * 200 + b"i1e" + b"e" * 200,
    "unsorted": b"d1:bi1e1:ai2ee", "dupkey": b"d1:ai1e1:ai2ee", "intkey": b"di1ei2ee", "trailing": b"i1ei2e",
    "t-int": b"d1:rd2:id20:" + T + b"e1:ti1e1:y1:re", "t-long": b"d1:rd2:id20:" + T + b"e1:t17:" + b"a" * 17 + b"1:y1:re",
    "id-short": b"d1:ad2:id19:" + ID[:19] + b"e1:q4:ping1:t2:aa1:y1:qe",
    "nodes-odd": b"d1:rd2:id20:" + T + b"5:nodes25:" + b"x" * 25 + b"e1:t2:aa1:y1:re",
    "values-bad": b"d1:rd2:id20:" + T + b"6:valuesl5:abcdeee1:t2:aa1:y1:re",
    "values-many": b"d1:rd2:id20:" + T + b"6:valuesl" + b"6:abcdef" * 300 + b"ee1:t2:aa1:y1:re",
    "err-short": b"d1:eli201ee1:t2:aa1:y1:ee", "err-types": b"d1:el3:abci201ee1:t2:aa1:y1:ee",
    "port-big": b"d1:ad2:id20:" + ID + b"9:info_hash20:" + T + b"4:porti70000e5:token3:toke1:q13:announce_peer1:t2:aa1:y1:qe",
    "big": b"d1:v" + b"99999:" + b"x" * 5000 + b"e",
    "nul": b"\0" * 64, "y-list": b"d1:t2:aa1:yl1:qee",
}
for name, b in hostile.items():
    save("krpc", "hostile-" + name, b)
    save("bencode", "hostile-" + name, b)

# Whole-node target (fuzz-dht-packet): a first byte choosing the source address, then a packet.
# Writes carry an 8-byte token that the harness replaces with the valid one.
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
priv = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
pk = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

def put(seq, v, salt=b"", cas=None, badsig=False):
    sig = priv.sign((b"4:salt%d:%s" % (len(salt), salt) if salt else b"") + b"3:seqi%de1:v%s" % (seq, benc(v)))
    a = {"id": ID, "k": pk, "seq": seq, "sig": bytes(64) if badsig else sig, "token": b"T" * 8, "v": v}
    if salt:
        a["salt"] = salt
    if cas is not None:
        a["cas"] = cas
    return benc({"t": "aa", "y": "q", "q": "put", "a": a})

ihx = hashlib.sha1(b"x").digest()
packets = {
    "announce": benc({"t": "aa", "y": "q", "q": "announce_peer", "a": {"id": ID, "info_hash": ihx, "port": 6881, "token": b"T" * 8}}),
    "announce-implied": benc({"t": "aa", "y": "q", "q": "announce_peer", "a": {"id": ID, "implied_port": 1, "info_hash": ihx, "port": 1, "token": b"T" * 8}}),
    "get_peers-x": benc({"t": "aa", "y": "q", "q": "get_peers", "a": {"id": ID, "info_hash": ihx, "want": ["n4", "n6"]}}),
    "put-imm": benc({"t": "aa", "y": "q", "q": "put", "a": {"id": ID, "token": b"T" * 8, "v": {"a": [1, "b"]}}}),
    "put-mut-1": put(1, "one", b"task/a"),
    "put-mut-2": put(2, "two", b"task/a", cas=1),
    "put-mut-0": put(0, "zero", b"task/a"),
    "put-mut-badsig": put(3, "x", b"task/a", badsig=True),
    "put-mut-nosalt": put(5, ["list", 1]),
    "get-mut": benc({"t": "aa", "y": "q", "q": "get", "a": {"id": ID, "target": hashlib.sha1(pk + b"task/a").digest()}}),
    "get-mut-seq": benc({"t": "aa", "y": "q", "q": "get", "a": {"id": ID, "seq": 1, "target": hashlib.sha1(pk + b"task/a").digest()}}),
}
for name, b in packets.items():
    for src in (0, 1):
        save("dht-packet", f"{name}-{src}", bytes([src]) + b)
for name, m in msgs.items():
    save("dht-packet", name + "-0", b"\0" + benc(m))

# Real packets: what libtorrent sends to a node it bootstraps from, and what it answers.
try:
    import libtorrent as lt
except ImportError:
    sys.exit(0)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.settimeout(0.5)
s = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": True, "enable_lsd": False, "enable_upnp": False,
                "enable_natpmp": False, "dht_bootstrap_nodes": "", "dht_restrict_routing_ips": False,
                "dht_restrict_search_ips": False, "dht_enforce_node_id": False, "dht_ignore_dark_internet": False})
s.add_dht_node(("127.0.0.1", sock.getsockname()[1]))
s.dht_get_peers(lt.sha1_hash(hashlib.sha1(b"x").digest()))
s.dht_get_immutable_item(lt.sha1_hash(hashlib.sha1(b"y").digest()))
n = 0
end = time.time() + 5
while time.time() < end and n < 12:
    try:
        data, addr = sock.recvfrom(4096)
    except socket.timeout:
        continue
    save("krpc", f"lt-query-{n}", data)
    n += 1
lport = s.listen_port()
for i, q in enumerate([msgs["ping"], msgs["find_node"], msgs["get_peers"], msgs["get"], msgs["unknown"], msgs["put-mut-badsig"]]):
    sock.sendto(benc(q), ("127.0.0.1", lport))
    try:
        data, addr = sock.recvfrom(4096)
        save("krpc", f"lt-answer-{i}", data)
    except socket.timeout:
        pass
