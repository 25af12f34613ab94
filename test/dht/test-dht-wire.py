#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Our node on the wire, seen from a raw UDP socket: what it answers, what it refuses, and what it
ignores. Hostile packets (the whole fuzz corpus, and more) never get it to crash or to answer out of
proportion; per-address rate limits hold; writes need a valid token; BEP 44 rules (signature, seq,
cas, sizes) are enforced with their error codes."""

import glob
import hashlib
import os
import socket
import time

import mctest
from mctest import Daemon, check, source_dir

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ID = b"abcdefghij0123456789"


def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    raise TypeError(x)


def bdec(b):
    def dec(i):
        c = b[i:i + 1]
        if c == b"i":
            j = b.index(b"e", i)
            return int(b[i + 1:j]), j + 1
        if c == b"l":
            i, out = i + 1, []
            while b[i:i + 1] != b"e":
                v, i = dec(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            i, out = i + 1, {}
            while b[i:i + 1] != b"e":
                k, i = dec(i)
                v, i = dec(i)
                out[k] = v
            return out, i + 1
        j = b.index(b":", i)
        n = int(b[i:j])
        return b[j + 1:j + 1 + n], j + 1 + n
    v, i = dec(0)
    assert i == len(b)
    return v


class Client:
    def __init__(self, port, src="127.0.0.1"):
        self.port = port
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((src, 0))
        self.s.settimeout(1.0)
        mctest.defer(self.s.close)

    def send(self, data):
        self.s.sendto(data, ("127.0.0.1", self.port))

    def recv(self, timeout=1.0):
        """The next answer; the node's own queries (it pings newcomers, to add them to its table)
        are not answers and are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                return None
            if not data.endswith(b"1:y1:qe"):
                return data

    def query(self, q, a, t=b"tt"):
        self.send(benc({"t": t, "y": "q", "q": q, "a": dict(a, id=ID)}))
        r = self.recv()
        check(r is not None, f"no answer to {q}")
        return bdec(r)


def node():
    d = Daemon("mc-dhtget", ["serve", "--bind", "127.0.0.1"], name="dht").start()
    st = d.wait_ready(30)
    return d, int(st["STATUS"].split("port ")[1].split(",")[0])


def test_basic_queries():
    d, port = node()
    c = Client(port)
    r = c.query("ping", {})
    check(r[b"y"] == b"r" and r[b"t"] == b"tt" and len(r[b"r"][b"id"]) == 20, f"ping: {r}")
    r = c.query("find_node", {"target": ID})
    check(b"nodes" in r[b"r"] and b"nodes6" not in r[b"r"], f"find_node: {r}")
    r = c.query("get_peers", {"info_hash": ID})
    check(len(r[b"r"][b"token"]) > 0 and b"values" not in r[b"r"], f"get_peers: {r}")
    # unknown method: 204; bad arguments: 203
    r = c.query("vote", {"target": ID})
    check(r[b"y"] == b"e" and r[b"e"][0] == 204, f"unknown method: {r}")
    r = c.query("find_node", {"target": b"short"})
    check(r[b"y"] == b"e" and r[b"e"][0] == 203, f"bad target: {r}")


def test_announce_needs_token():
    d, port = node()
    c = Client(port)
    ih = hashlib.sha1(b"x").digest()
    r = c.query("announce_peer", {"info_hash": ih, "port": 1234, "token": b"forged"})
    check(r[b"y"] == b"e" and r[b"e"][0] == 203, f"forged token: {r}")
    tok = c.query("get_peers", {"info_hash": ih})[b"r"][b"token"]
    # a token is bound to the info-hash it was given for...
    r = c.query("announce_peer", {"info_hash": hashlib.sha1(b"y").digest(), "port": 1234, "token": tok})
    check(r[b"y"] == b"e", f"token for another info-hash accepted: {r}")
    # ...and to the address it was given to
    other = Client(port, src="127.0.0.2")
    r = other.query("announce_peer", {"info_hash": ih, "port": 1234, "token": tok})
    check(r[b"y"] == b"e", f"token from another address accepted: {r}")
    r = c.query("announce_peer", {"info_hash": ih, "port": 1234, "token": tok})
    check(r[b"y"] == b"r", f"announce: {r}")
    r = c.query("get_peers", {"info_hash": ih})
    check(r[b"r"][b"values"] == [b"\x7f\x00\x00\x01\x04\xd2"], f"values: {r}")
    tok = c.query("get_peers", {"info_hash": ih})[b"r"][b"token"]
    c.query("announce_peer", {"info_hash": ih, "port": 9, "implied_port": 1, "token": tok})
    vals = c.query("get_peers", {"info_hash": ih})[b"r"][b"values"]
    check(len(vals) == 2 and socket.inet_aton("127.0.0.1") + c.s.getsockname()[1].to_bytes(2, "big") in vals,
          f"implied_port: {vals}")


def test_bep44_rules():
    d, port = node()
    c = Client(port)
    priv = Ed25519PrivateKey.generate()
    k = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    salt = b"task/x"
    target = hashlib.sha1(k + salt).digest()

    def signed(seq, v):
        return priv.sign(b"4:salt%d:%s3:seqi%de1:v%s" % (len(salt), salt, seq, benc(v)))

    def put(seq, v, sig=None, **extra):
        tok = c.query("get", {"target": target})[b"r"][b"token"]
        a = {"k": k, "salt": salt, "seq": seq, "sig": sig or signed(seq, v), "token": tok, "v": v}
        a.update(extra)
        return c.query("put", a)

    check(put(5, "five")[b"y"] == b"r", "put seq 5")
    r = c.query("get", {"target": target})[b"r"]
    check(r[b"v"] == b"five" and r[b"seq"] == 5 and r[b"k"] == k, f"get: {r}")
    # seq given and not older: only the seq comes back
    r = c.query("get", {"target": target, "seq": 5})[b"r"]
    check(b"v" not in r and r[b"seq"] == 5, f"get with seq: {r}")
    r = put(6, "six", sig=b"\0" * 64)
    check(r[b"y"] == b"e" and r[b"e"][0] == 206, f"bad signature: {r}")
    r = put(4, "four")
    check(r[b"y"] == b"e" and r[b"e"][0] == 302, f"older seq: {r}")
    r = put(7, "seven", cas=4)
    check(r[b"y"] == b"e" and r[b"e"][0] == 301, f"cas mismatch: {r}")
    check(put(7, "seven", cas=5)[b"y"] == b"r", "cas match")
    r = put(8, "x" * 1000)
    check(r[b"y"] == b"e" and r[b"e"][0] == 205, f"value too big: {r}")
    # salt over 64 bytes
    tok = c.query("get", {"target": target})[b"r"][b"token"]
    r = c.query("put", {"k": k, "salt": b"s" * 65, "seq": 1, "sig": b"\0" * 64, "token": tok, "v": "v"})
    check(r[b"y"] == b"e" and r[b"e"][0] == 207, f"salt too big: {r}")
    # immutable: stored under the hash of its bencoding
    v = {"a": [1, 2], "b": "c"}
    t = hashlib.sha1(benc(v)).digest()
    tok = c.query("get", {"target": t})[b"r"][b"token"]
    check(c.query("put", {"token": tok, "v": v})[b"y"] == b"r", "immutable put")
    check(c.query("get", {"target": t})[b"r"][b"v"] == {b"a": [1, 2], b"b": b"c"}, "immutable get")


def test_hostile_packets():
    d, port = node()
    c = Client(port)
    files = sorted(glob.glob(os.path.join(source_dir(), "test/dht/corpus/*/*")))
    check(len(files) > 100, f"corpus: {len(files)} files")
    sent = answered = largest = 0
    for i, f in enumerate(files):
        with open(f, "rb") as fh:
            data = fh.read()
        if len(data) > 60000:
            continue
        c.send(data)
        sent += len(data)
        while True:
            r = c.recv(0.002 if i % 50 else 0.2)
            if r is None:
                break
            answered += len(r)
            largest = max(largest, len(r))
        if i % 40 == 0:
            time.sleep(1)  # stay under the rate limit: this tests parsing, not the limiter
    check(d.running, "node died on hostile input")
    check(c.query("ping", {})[b"y"] == b"r", "node still answers")
    # No answer is larger than an MTU, and in total we got back less than we sent.
    check(largest <= 1500, f"largest answer {largest} bytes")
    check(answered < sent, f"answered {answered} bytes to {sent}")
    # oversize datagram: dropped
    c.send(b"d1:ad2:id20:" + ID + b"e1:q4:ping1:t2:aa1:y1:q" + b"x" * 8000 + b"e")
    check(c.recv(0.3) is None, "answered an oversize datagram")


def test_rate_limit_and_size():
    d, port = node()
    c = Client(port, src="127.0.0.3")
    for i in range(600):
        c.send(benc({"t": b"%04d" % i, "y": "q", "q": "ping", "a": {"id": ID}}))
    answers = 0
    while c.recv(0.3) is not None:
        answers += 1
    # burst 200 plus 50/s refill over the (short) sending time
    check(200 <= answers <= 300, f"{answers} answers to 600 pings from one address")
    # another address is not affected
    check(Client(port, src="127.0.0.4").query("ping", {})[b"y"] == b"r", "other address limited too")

    # get_peers with many stored peers: the answer stays within an MTU.
    ih = hashlib.sha1(b"many").digest()
    for i in range(150):
        a = Client(port, src=f"127.0.{1 + i // 200}.{10 + i % 200}")
        tok = a.query("get_peers", {"info_hash": ih})[b"r"][b"token"]
        check(a.query("announce_peer", {"info_hash": ih, "port": 1000 + i, "token": tok})[b"y"] == b"r", "announce")
    q = Client(port, src="127.0.0.5")
    q.send(benc({"t": "aa", "y": "q", "q": "get_peers", "a": {"id": ID, "info_hash": ih, "want": ["n4", "n6"]}}))
    raw = q.recv()
    r = bdec(raw)
    check(len(raw) <= 1500 and 50 <= len(r[b"r"][b"values"]) <= 100, f"{len(raw)} bytes, {len(r[b'r'][b'values'])} values")


mctest.main()
