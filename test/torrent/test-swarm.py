#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The peer-to-peer engine (src/torrent swarm, swarm-server, peer-conn) between our own processes
over loopback, through mc-swarm-tool:

- our fetcher downloads from our seeder, contents of every shape (empty, 1 byte, one block, one
  block + 1, multi-block pieces);
- several seeders at once: pieces come from more than one, and a hostile seeder serving wrong bytes
  is banned while the download completes from the others; a fetch with only hostile or dead peers
  ends with -ETIMEDOUT and a sentence;
- a fetch killed with abort() resumes from the durable pieces, fetching only the others;
- 33 malformed peer-wire inputs each close the connection with their errno, 9 more get their
  reject (or their answer), and the seeder keeps serving; the connection caps hold;
- 10 000 connections that send half a handshake and wait, from one address and from 2 500: a peer is
  served all along, and the seeder's descriptors come back afterwards."""

import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time

import mctest
from mctest import check, tmpdir, wait_until
from swarmtest import (KIB, MIB, RESERVED, RESERVED_NO_EXT, RESERVED_NO_FAST, Seeder, Wire, fetch, handshake,
                       make_file, msg, request, same_file)

EPROTO, EMSGSIZE, EOPNOTSUPP, EBADMSG, EILSEQ, ERANGE, EDOM, ENOENT = 71, 90, 95, 74, 84, 34, 33, 2
ETIMEDOUT = 110


def test_sizes():
    for size in [0, 1, 16 * KIB, 16 * KIB + 1, 3 * MIB + 7, 33 * MIB + 5]:
        path = make_file(size, size)
        s = Seeder(path)
        out = tmpdir("out")
        f = fetch(s.id, s.torrent, [s.addr], out)
        got = os.path.join(out, s.id)
        check(f.done["path"] == got and same_file(path, got), f"{size}: wrong bytes in {got}")
        check(int(f.done["bytes"]) == size and int(f.done["wasted"]) == 0, f"{size}: {f.done}")
        check(sorted(os.listdir(out)) == [s.id], f"{size}: leftovers {os.listdir(out)}")
        s.stop()


def test_several_seeders_and_a_hostile_one():
    path = make_file(8 * MIB + 3, 7)
    seeders = [Seeder(path) for _ in range(3)]
    hostile = Seeder(path, "--corrupt", 3)    # wrong bytes for every third piece
    out = tmpdir("out")
    f = fetch(seeders[0].id, seeders[0].torrent, [hostile.addr] + [s.addr for s in seeders], out)
    check(same_file(path, os.path.join(out, seeders[0].id)), "wrong bytes")
    by = {p["addr"]: p for p in f.peers}
    # Only the hostile seeder sends wrong bytes, so every piece that failed verification was its. A
    # peer is banned at its second bad piece (at its first when it alone sent the piece). How many
    # it gets to send depends on the schedule: on a loaded machine the honest seeders can finish the
    # content before it sends a bad piece at all (its ban alone is test_only_bad_peers').
    if int(f.done["failed"]) >= 2:
        check(by[hostile.addr]["banned"] == "1", f"the hostile seeder was not banned: {f.done} {f.peers}")
    honest = [by[s.addr] for s in seeders]
    check(all(p["banned"] == "0" for p in honest), f"an honest seeder was banned: {f.peers}")
    check(sum(1 for p in honest if int(p["pieces"]) > 0) >= 2, f"pieces came from fewer than 2 seeders: {f.peers}")
    check(int(f.done["peers_used"]) >= 2, f"{f.done}")


def test_only_bad_peers():
    path = make_file(MIB, 8)
    hostile = Seeder(path, "--corrupt", 1)
    out = tmpdir("out")
    f = fetch(hostile.id, hostile.torrent, [hostile.addr], out, "--timeout", 3, "--remove-partial", check_rc=False)
    check(f.rc == 1 and f.error and f"code=-{ETIMEDOUT}" in f.error and "no peer delivered within 3 s" in f.error,
          f"expected a timeout: {f}")
    check(f.peers[0]["banned"] == "1", f"{f.peers}")
    check(os.listdir(out) == [], f"partial files left: {os.listdir(out)}")

    # Nobody listening at all.
    dead = mctest.free_port()
    f = fetch(hostile.id, hostile.torrent, [f"127.0.0.1:{dead}"], out, "--timeout", 2, check_rc=False)
    check(f.rc == 1 and "no peer delivered within 2 s" in f.error, f"expected a timeout: {f}")
    check(int(f.peers[0]["failures"]) >= 1, f"{f.peers}")


def test_resume_after_abort():
    path = make_file(8 * MIB, 9)      # 512 pieces of 16 KiB
    s = Seeder(path)
    out = tmpdir("out")
    f = fetch(s.id, s.torrent, [s.addr], out, "--abort-after", 300, "--flush-every", 100, check_rc=False)
    check(f.rc == -signal.SIGABRT, f"the fetch was to abort: {f}")
    state = os.path.join(out, f".{s.id}.state")
    with open(state) as fh:
        have = next(x for x in fh.read().splitlines() if x.startswith("have "))[5:]
    durable = sum(bin(int(c, 16)).count("1") for c in have)
    check(durable == 300, f"durable pieces: {durable}")
    check(not os.path.exists(os.path.join(out, s.id)), "the final name exists after a crash")

    f = fetch(s.id, s.torrent, [s.addr], out)
    check(int(f.done["resumed"]) == durable and int(f.done["fetched"]) == 512 - durable, f"{f.done}")
    check(int(f.done["bytes"]) == (512 - durable) * 16 * KIB, f"fetched more than the missing pieces: {f.done}")
    check(same_file(path, os.path.join(out, s.id)), "wrong bytes after resuming")
    check(sorted(os.listdir(out)) == [s.id], f"leftovers {os.listdir(out)}")


def bad_streams(s):
    """(name, bytes after connecting, reserved bits of our handshake or None when the bytes are the whole
    stream, expected errno)."""
    ih = bytes.fromhex(s.id)[:20]
    root = bytes.fromhex(s.root)
    n = s.pieces                                     # 7 pieces of 16 KiB
    hdr = lambda b, l, p=0: root + struct.pack(">IIII", b, 0, l, p)  # noqa: E731
    ext_hs = msg(20, b"\x00d1:md11:ut_metadatai3eee")
    return [
        ("garbage handshake", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 40, None, EPROTO),
        ("protocol length 20", b"\x14" + handshake(ih)[1:] + b"x", None, EPROTO),
        ("protocol name", handshake(ih).replace(b"protocol", b"protocoX"), None, EPROTO),
        ("unknown info-hash", handshake(b"\x11" * 20), None, ENOENT),
        ("length prefix of 1 MiB", struct.pack(">IB", 1 << 20, 7), RESERVED, EMSGSIZE),
        ("length prefix 0xffffffff", b"\xff\xff\xff\xff", RESERVED, EMSGSIZE),
        ("unknown message id", msg(99), RESERVED, EOPNOTSUPP),
        ("have of 5 bytes", msg(4, b"\0" * 5), RESERVED, EBADMSG),
        ("have past the last piece", msg(4, struct.pack(">I", 1000)), RESERVED, ERANGE),
        ("bitfield of the wrong length", msg(5, b"\xfe\x00"), RESERVED, EILSEQ),
        ("bitfield with spare bits", msg(5, b"\xff"), RESERVED, EILSEQ),
        ("second bitfield", msg(5, b"\x00") + msg(5, b"\x00"), RESERVED, EPROTO),
        ("bitfield after have", msg(4, struct.pack(">I", 1)) + msg(5, b"\x00"), RESERVED, EPROTO),
        ("have all without the fast extension", msg(14), RESERVED_NO_FAST, EPROTO),
        ("unsolicited piece", msg(7, struct.pack(">II", 0, 0) + b"x" * 10), RESERVED, EPROTO),
        ("piece block over 16 KiB", msg(7, struct.pack(">II", 0, 0) + b"x" * 16385), RESERVED, EMSGSIZE),
        ("piece past the last piece", msg(7, struct.pack(">II", n, 0) + b"x"), RESERVED, ERANGE),
        ("piece past its piece's end", msg(7, struct.pack(">II", 0, 16380) + b"x" * 10), RESERVED, ERANGE),
        ("reject of a request never made", request(16, 0, 0, 16384), RESERVED, EPROTO),
        ("reject without the fast extension", request(16, 0, 0, 16384), RESERVED_NO_FAST, EPROTO),
        ("unsolicited hashes", msg(22, hdr(0, 2) + b"h" * 64), RESERVED, EPROTO),
        ("unsolicited hash reject", msg(23, hdr(0, 2)), RESERVED, EPROTO),
        ("hash reject no request could have", msg(23, hdr(0, 3)), RESERVED, EDOM),
        ("hashes of the wrong count", msg(22, hdr(0, 2) + b"h" * 96), RESERVED, EBADMSG),
        ("extended without the extension bit", ext_hs, RESERVED_NO_EXT, EPROTO),
        ("extended without an extension id", msg(20), RESERVED, EBADMSG),
        ("malformed extension handshake", msg(20, b"\x00d1:mi3e"), RESERVED, EPROTO),
        ("malformed ut_metadata", ext_hs + msg(20, b"\x01li1ee"), RESERVED, EPROTO),
        ("ut_metadata request without ut_metadata", msg(20, b"\x01d8:msg_typei0e5:piecei0ee"), RESERVED, EPROTO),
        ("choke with a payload", msg(0, b"x"), RESERVED, EBADMSG),
        ("request of 13 bytes", msg(6, b"\0" * 13), RESERVED, EBADMSG),
        ("cancel of 11 bytes", msg(8, b"\0" * 11), RESERVED, EBADMSG),
        ("port of 3 bytes", msg(9, b"\0" * 3), RESERVED, EBADMSG),
        ("hash request of 47 bytes", msg(21, b"\0" * 47), RESERVED, EBADMSG),
        ("allowed fast past the last piece", msg(17, struct.pack(">I", 500)), RESERVED, ERANGE),
        ("a second handshake", handshake(ih), RESERVED, EMSGSIZE),
    ]


def test_malformed_input():
    path = make_file(100000, 11)      # 7 pieces of 16 KiB, the last one 1696 bytes
    s = Seeder(path)
    ih = bytes.fromhex(s.id)[:20]
    cases = bad_streams(s)
    check(len(cases) >= 30, "too few cases")
    for i, (name, data, reserved, errno) in enumerate(cases):
        w = Wire(s.port)
        w.send((handshake(ih, reserved) if reserved is not None else b"") + data)
        w.wait_closed()
        closed = wait_until(lambda: len(s.closed()) > i and s.closed(), 10, msg=f"{name}: the seeder's closed line")
        c = closed[i]
        check(int(c["error"]) == -errno, f"{name}: closed with {c['error']} ({c['reason']}), expected -{errno}")
    st = s.stats()
    unknown = sum(1 for c in cases if c[3] == ENOENT)
    check(st["unknown_info_hash"] == unknown and st["violations"] == len(cases) - unknown, f"counted: {st}")

    # Requests that are answered with a reject, the connection staying open.
    root = bytes.fromhex(s.root)
    w = Wire(s.port)
    w.send(handshake(ih) + msg(20, b"\x00d1:md11:ut_metadatai3eee") + msg(2))
    rejects = [
        ("block over 16 KiB", (0, 0, 16385)),
        ("past its piece", (0, 16384, 1)),
        ("past the last piece", (7, 0, 16384)),
        ("of length 0", (0, 0, 0)),
        ("running past the last piece's padding", (6, 16000, 1000)),
    ]
    for name, (index, begin, length) in rejects:
        w.send(request(6, index, begin, length))
        want = struct.pack(">III", index, begin, length)
        w.wait_message(lambda m: m[0] == 16 and m[1] == want, what=f"a reject of the request {name}")
    for name, fields in [("length 3", (0, 0, 3, 0)), ("another root", None)]:
        payload = (root + struct.pack(">IIII", *fields)) if fields else (b"\x01" * 32 + struct.pack(">IIII", 0, 0, 8, 0))
        w.send(msg(21, payload))
        w.wait_message(lambda m: m[0] == 23 and m[1] == payload, what=f"a hash reject of the hash request with {name}")
    w.send(msg(20, b"\x01d8:msg_typei0e5:piecei1ee"))      # the seeder's ut_metadata id is 1
    w.wait_message(lambda m: m[0] == 20 and m[1].startswith(b"\x03d8:msg_typei2e5:piecei1e"), what="a ut_metadata reject")
    # And good ones are served: a block, the last block padded the way libtorrent asks for it, the
    # tree's leaves, the info dictionary.
    w.send(request(6, 1, 0, 16384))
    with open(path, "rb") as fh:
        data = fh.read()
    w.wait_message(lambda m: m[0] == 7 and m[1] == struct.pack(">II", 1, 0) + data[16384:32768], what="block 1")
    w.send(request(6, 6, 0, 16384))
    tail = data[6 * 16384:] + b"\0" * (7 * 16384 - len(data))
    w.wait_message(lambda m: m[0] == 7 and m[1] == struct.pack(">II", 6, 0) + tail, what="the padded last block")
    w.send(msg(21, root + struct.pack(">IIII", 0, 0, 8, 0)))
    w.wait_message(lambda m: m[0] == 22 and len(m[1]) == 48 + 8 * 32, what="the leaf hashes")
    w.send(msg(20, b"\x01d8:msg_typei0e5:piecei0ee"))
    w.wait_message(lambda m: m[0] == 20 and m[1].startswith(b"\x03d8:msg_typei1e"), what="the info dictionary")
    check(not w.closed, "the connection closed")

    # A flood of requests beyond the cap (500 queued): every request gets exactly one answer, the
    # excess a reject.
    flood = Wire(s.port)
    flood.send(handshake(ih) + msg(2) + b"".join(request(6, i % 6, 0, 16384) for i in range(5000)))

    def answered():
        flood.pump()
        m = flood.messages()
        return len([x for x in m if x[0] in (7, 16)]) >= 5000 and m
    m = wait_until(answered, 120, interval=0, msg="answers to 5000 requests")
    pieces = sum(1 for x in m if x[0] == 7)
    rejected = sum(1 for x in m if x[0] == 16)
    check(pieces + rejected == 5000 and pieces >= 500 and rejected > 0, f"{pieces} blocks, {rejected} rejects")

    # The seeder still serves.
    out = tmpdir("out")
    fetch(s.id, s.torrent, [s.addr], out)
    check(same_file(path, os.path.join(out, s.id)), "wrong bytes")
    s.stop()


def test_hash_requests_below_the_piece_layer():
    """Block hashes of a piece (what libtorrent asks after a failed piece check) are answered by
    hashing the piece again: one piece per request, 8 such requests a second per connection."""
    path = make_file(33 * MIB + 5, 15)    # 1057 pieces of 32 KiB: the piece layer is level 1
    s = Seeder(path)
    check(s.piece_length == 32 * KIB, f"piece length {s.piece_length}")
    root = bytes.fromhex(s.root)
    ih = bytes.fromhex(s.id)[:20]
    w = Wire(s.port)
    w.send(handshake(ih))
    two_pieces = root + struct.pack(">IIII", 0, 0, 4, 0)
    w.send(msg(21, two_pieces))
    w.wait_message(lambda m: m[0] == 23 and m[1] == two_pieces, what="a hash reject of a request over two pieces")
    reqs = [root + struct.pack(">IIII", 0, 2 * i, 2, 0) for i in range(20)]
    w.send(b"".join(msg(21, r) for r in reqs))

    def answered():
        w.pump()
        got = [m for m in w.messages() if m[0] in (22, 23) and m[1][:48] in reqs]
        return len(got) == 20 and got
    got = wait_until(answered, 30, interval=0, msg="answers to 20 hash requests")
    hashes = [m for m in got if m[0] == 22]
    check(8 <= len(hashes) <= 16, f"{len(hashes)} of 20 answered")   # 8 a second (a burst may span two)
    with open(path, "rb") as fh:
        data = fh.read(64 * KIB)
    first = [m for m in hashes if m[1][:48] == reqs[0]]
    check(first and first[0][1][48:] == hashlib.sha256(data[:16384]).digest() + hashlib.sha256(data[16384:32768]).digest(),
          "the first piece's block hashes")
    s.stop()


def test_block_sender_sinks():
    """The seeder's io_uring block sender (src/seeder) as the PeerSink: the same bytes on each of its
    paths, and the request cap holds with its queue accounting."""
    path = make_file(3 * MIB + 7, 13)
    for kind in ["auto", "splice", "sendfile"]:
        s = Seeder(path, "--sink", kind)
        check("sink: block sender, path" in s.d.log_text(), f"{kind}: {s.d.log_text()}")
        out = tmpdir("out")
        fetch(s.id, s.torrent, [s.addr], out)
        check(same_file(path, os.path.join(out, s.id)), f"{kind}: wrong bytes")
        ih = bytes.fromhex(s.id)[:20]
        flood = Wire(s.port)
        flood.send(handshake(ih) + msg(2) + b"".join(request(6, i % 100, 0, 16384) for i in range(3000)))

        def answered():
            flood.pump()
            m = flood.messages()
            return len([x for x in m if x[0] in (7, 16)]) >= 3000 and m
        m = wait_until(answered, 120, interval=0, msg=f"{kind}: answers to 3000 requests")
        pieces = sum(1 for x in m if x[0] == 7)
        check(pieces >= 500 and pieces < 3000 and len(m) == 3000 + 3, f"{kind}: {pieces} blocks of {len(m)} messages")
        s.stop()


def test_timeouts_and_keepalives():
    path = make_file(50000, 14)
    s = Seeder(path, "--timeouts", "1000,3000,500")
    ih = bytes.fromhex(s.id)[:20]
    # Silent from the start: closed for want of a handshake.
    w = Wire(s.port)
    w.wait_closed(10)
    # After the handshake: keep-alives while we say nothing, then closed for our silence.
    w = Wire(s.port)
    w.send(handshake(ih))
    w.wait_message(lambda m: m[0] == -1, 10, what="a keep-alive")
    w.wait_closed(10)
    closed = wait_until(lambda: len(s.closed()) >= 2 and s.closed(), 10, msg="two closed lines")
    check([int(c["error"]) for c in closed] == [-ETIMEDOUT, -ETIMEDOUT], f"{closed}")
    check(closed[0]["reason"] == "no handshake in time" and closed[1]["reason"] == "the peer went silent", f"{closed}")
    check(s.stats()["timeouts"] == 2, f"{s.stats()}")


def test_connection_caps():
    path = make_file(50000, 12)
    s = Seeder(path, "--max-per-addr", 2, "--max-conns", 3)
    ih = bytes.fromhex(s.id)[:20]
    ok = []

    def serve(src):
        w = Wire(s.port, src)
        w.send(handshake(ih))
        w.wait_message(lambda m: m[0] == 1, what="unchoke")   # served
        ok.append(w)
    serve("127.0.0.1")
    serve("127.0.0.1")
    third = Wire(s.port, "127.0.0.1")         # a third from one address
    third.wait_closed()
    serve("127.0.0.2")
    fourth = Wire(s.port, "127.0.0.3")        # a fourth in all
    fourth.wait_closed()
    os.kill(s.d.pid, signal.SIGUSR1)
    st = wait_until(lambda: (x := s.stats()) and x["refused_address"] == 1 and x["refused_global"] == 1 and x,
                    10, msg=f"the refusals counted: {s.d.log_text()[-600:]}")
    check(st["connections"] == 3, f"{st}")
    for w in ok:
        w.pump()
        check(not w.closed, "a served connection was closed")


def test_global_cap_evicts_handshaking():
    # At the global cap, connections that never send a handshake (from as many addresses as it takes)
    # do not keep a peer out: the one waiting longest for its handshake makes room.
    path = make_file(50000, 13)
    s = Seeder(path, "--max-per-addr", 2, "--max-conns", 3)
    ih = bytes.fromhex(s.id)[:20]
    silent = [Wire(s.port, f"127.0.0.{10 + i}") for i in range(3)]

    def stats():
        os.kill(s.d.pid, signal.SIGUSR1)    # prints a stats line
        time.sleep(0.05)
        return s.stats()
    wait_until(lambda: stats().get("connections") == 3, 10, msg="three silent connections")
    w = Wire(s.port, "127.0.0.20")
    w.send(handshake(ih))
    w.wait_message(lambda m: m[0] == 1, what="unchoke")   # served
    silent[0].wait_closed()
    st = wait_until(lambda: (x := stats()) and x["evicted"] == 1 and x, 10, msg="the eviction counted")
    check(st["refused_global"] == 0 and st["connections"] == 3, f"{st}")
    for x in silent[1:]:
        x.pump()
        check(not x.closed, "a newer silent connection was closed")


def test_flood_of_half_handshakes():
    # A flooder keeps 10 000 connections that sent half a handshake, reopening those the seeder closes
    # (test/lib/tcp-flood.py): from one address (over its per-address cap: refused at once), then from
    # 2 500 (over the global cap: the connections waiting longest for their handshake make room). A
    # peer that connects meanwhile is served every time; afterwards the descriptors are back.
    connections = 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard >= connections + 1000, f"this test needs RLIMIT_NOFILE of {connections + 1000} (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s = Seeder(make_file(50000, 14))          # its default caps: 256 connections, 16 per address
    ih = bytes.fromhex(s.id)[:20]
    pid = s.d.pid

    def fds():
        return len(os.listdir(f"/proc/{pid}/fd"))

    def serve_once(what):
        w = Wire(s.port, "127.0.0.1")
        w.send(handshake(ih))
        w.wait_message(lambda m: m[0] == 1, what=f"unchoke {what}")
        w.sock.close()
    # Served once first: the seeder opens its file then, and keeps it.
    serve_once("before the floods")
    wait_until(lambda: (os.kill(pid, signal.SIGUSR1), s.stats().get("connections") == 0)[1], 60,
               msg="the first peer's connection gone")
    baseline = fds()
    flooder = os.path.join(mctest.source_dir(), "test", "lib", "tcp-flood.py")
    for sources in ("127.0.0.2", "127.1.0.1/2500"):
        p = subprocess.Popen([sys.executable, flooder, "--port", str(s.port), "--sources", sources,
                              "--connections", str(connections), "--mode", "idle", "--payload", "bittorrent"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        mctest.defer(p.kill)
        check(p.stdout.readline().strip() == "ready", "the flooder did not start")
        served, peak, end = 0, 0, time.monotonic() + 6
        while time.monotonic() < end:
            serve_once(f"during the flood from {sources}")
            served += 1
            peak = max(peak, fds())
        counts = json.loads(p.communicate("stop\n", timeout=120)[0].strip().splitlines()[-1])
        print(f"flood from {sources}: {counts}; a peer served {served} times; seeder's descriptors at most {peak}")
        check(served >= 3, f"served only {served} times")
        # Two descriptors a connection (the block sender keeps a duplicate), a burst of 64 accepted at once.
        check(peak <= baseline + 2 * 256 + 64, f"{peak} descriptors with a cap of 256 connections")
        wait_until(lambda: fds() <= baseline, 120, msg=f"the seeder's descriptors back to {baseline} (now {fds()})")


mctest.main()
