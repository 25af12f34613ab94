# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers of the swarm tests: mc-swarm-tool seeding in the background, fetches, test files, and a raw
peer-wire client for hostile input."""

import os
import random
import re
import socket
import struct

import mctest
from mctest import Daemon, binary, check, run, tmpdir, wait_until

KIB = 1024
MIB = 1024 * KIB
TIMEOUT = 60


def make_file(size, seed, d=None):
    d = d or tmpdir("data")
    path = os.path.join(d, f"file-{size}-{seed}")
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MIB)
            f.write(rng.randbytes(n))
            left -= n
    return path


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def fields(line):
    """KEY=VALUE words after the first; a reason= is the rest of the line (it has spaces)."""
    line, _, reason = line.partition(" reason=")
    d = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    if reason:
        d["reason"] = reason
    return d


class Seeder:
    """mc-swarm-tool seed FILE: serving on 127.0.0.1."""

    def __init__(self, path, *args):
        self.path = path
        self.torrent = os.path.join(tmpdir("torrent"), "t.torrent")
        self.d = Daemon("mc-swarm-tool", ["seed", path, "--torrent", self.torrent, *args], notify=False,
                        name="seeder").start()
        wait_until(lambda: "ready port=" in self.d.log_text(), TIMEOUT, msg="the seeder ready",
                   abort=lambda: not self.d.running and f"exited with {self.d.proc.returncode}:\n{self.d.log_tail()}")
        text = self.d.log_text()
        self.port = int(re.search(r"ready port=(\d+)", text).group(1))
        c = fields(next(x for x in text.splitlines() if x.startswith("content ")))
        self.id, self.root = c["id"], c["root"]
        self.pieces, self.piece_length = int(c["pieces"]), int(c["piece_length"])
        self.addr = f"127.0.0.1:{self.port}"

    def lines(self, prefix):
        return [fields(x) for x in self.d.log_text().splitlines() if x.startswith(prefix + " ")]

    def closed(self):
        return self.lines("closed")

    def stats(self):
        s = self.lines("stats")
        return {k: int(v) for k, v in s[-1].items()} if s else {}

    def stop(self):
        self.d.stop()


class Fetch:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr
        self.peers = [fields(x) for x in p.stdout.splitlines() if x.startswith("peer ")]
        d = [fields(x) for x in p.stdout.splitlines() if x.startswith("done ")]
        e = [x for x in p.stdout.splitlines() if x.startswith("error ")]
        self.done = d[0] if d else None
        self.error = e[0] if e else None

    def __repr__(self):
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err[-3000:]}"


def fetch(content_id, torrent, peers, out, *args, timeout=300, check_rc=True):
    cmd = [binary("mc-swarm-tool"), "fetch", content_id, "--manifest", torrent, "--out", out]
    for p in peers:
        cmd += ["--peer", p]
    cmd += [str(a) for a in args]
    f = Fetch(run(cmd, check=False, timeout=timeout))
    if check_rc:
        check(f.rc == 0 and f.done, f"fetch failed: {f}")
    return f


# The peer wire, by hand.

RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04 | 0x10])     # extension protocol, fast, v2
RESERVED_NO_FAST = bytes([0, 0, 0, 0, 0, 0x10, 0, 0])
RESERVED_NO_EXT = bytes([0, 0, 0, 0, 0, 0, 0, 0x04])


def handshake(info_hash, reserved=RESERVED, peer_id=b"-PY0001-000000000000"):
    return b"\x13BitTorrent protocol" + reserved + info_hash + peer_id


def msg(mid, payload=b""):
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def request(mid, index, begin, length):
    return msg(mid, struct.pack(">III", index, begin, length))


class Wire:
    """A raw TCP client: what it receives is parsed as a handshake then messages."""

    def __init__(self, port, source="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.buf = b""
        self.closed = False
        mctest.defer(self.sock.close)

    def send(self, data):
        self.sock.sendall(data)

    def pump(self):
        try:
            while True:
                b = self.sock.recv(1 << 20)
                if not b:
                    self.closed = True
                    return
                self.buf += b
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True

    def wait_closed(self, timeout=TIMEOUT):
        def gone():
            self.pump()
            return self.closed
        wait_until(gone, timeout, interval=0, msg="the server closing the connection")

    def messages(self):
        """[(id, payload)], after the 68-byte handshake; id -1 for a keep-alive."""
        out, p = [], 68
        b = self.buf
        while len(b) - p >= 4:
            n = struct.unpack(">I", b[p:p + 4])[0]
            if len(b) - p - 4 < n:
                break
            out.append((b[p + 4] if n else -1, b[p + 5:p + 4 + n]))
            p += 4 + n
        return out

    def wait_message(self, pred, timeout=TIMEOUT, what="a message"):
        def got():
            self.pump()
            hits = [m for m in self.messages() if pred(m)]
            check(hits or not self.closed, f"closed while waiting for {what}")
            return hits
        return wait_until(got, timeout, interval=0, msg=what)
