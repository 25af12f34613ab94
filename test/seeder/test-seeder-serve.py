#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-seeder serving its store to peers, on the real daemon (private bus, its own store, 127.0.0.1):

- python3-libtorrent 2.0.8 downloads contents of 1 B, 16 KiB + 1 and ~64 MiB from the daemon, from a
  magnet with x.pe (ut_metadata, BEP 52 hash requests for the piece layer) and from `mc-seeder
  torrent ID`'s .torrent, with SEND_PATH=auto; and, with each forced path (splice, send-zc,
  sendfile), a small content by magnet and the large one by .torrent. Every byte is compared.
- Peers and BytesServed follow (a connection held open by hand shows as 1 peer; BytesServed reaches
  what was downloaded); PropertiesChanged comes at most once a second; the watchdog is pinged while
  the daemon serves 64 MiB.
- Hostile peers (a garbage handshake, an unknown info-hash, an oversized message, a request over
  16 KiB) while libtorrent downloads: the first three are disconnected and counted (PeerViolations),
  the oversized request gets a reject (the fast extension's answer: the engine rejects rather than
  disconnects well-formed requests it will not serve) and the connection serves a good request
  next; libtorrent's download completes meanwhile.
- MAX_PEERS_PER_ADDRESS: a connection over it is closed at once and counted (PeersRefused).
- Removing a content while peers download it (a raw peer, and libtorrent rate-limited) closes their
  connections; the daemon serves the other contents after it and exits cleanly."""

import os
import time

import mctest
from mctest import BusMonitor, PrivateBus, check, tmpdir, wait_until
import seedertest as st
from seedertest import KIB, MIB

try:
    import libtorrent  # noqa: F401
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")

SMALL = [1, 16 * KIB + 1]
LARGE = 64 * MIB + 12345


def make_contents(sizes):
    d = tmpdir("files")
    return [st.random_file(size, d, f"c{i}") for i, size in enumerate(sizes)]


class Served:
    """A daemon on a private bus with the given files in its store."""

    def __init__(self, files, env=None, watchdog_usec=None):
        self.bus = PrivateBus()
        self.store = st.Store(self.bus, env=env)
        self.d = self.store.daemon()
        if watchdog_usec:
            self.d.env["WATCHDOG_USEC"] = str(int(watchdog_usec))
        self.d.start()
        self.d.wait_ready()
        self.bus.wait_name(st.SEEDER_NAME)
        self.port = st.bus_property(self.bus, "PeerPort")
        self.contents = {}
        for path in files:
            cid = self.store.add(path)      # through the daemon (AddFd): served from the add on
            self.contents[path] = cid

    def prop(self, name):
        return st.bus_property(self.bus, name)

    def torrent(self, cid):
        return self.store.cli("torrent", cid, binary=True).stdout

    def stop(self):
        self.d.stop()


def download(srv, sess, path, how):
    """libtorrent downloads the content of path from srv, by 'magnet' or 'torrent'; bytes compared."""
    cid = srv.contents[path]
    size = os.path.getsize(path)
    save = tmpdir("lt")
    if how == "magnet":
        h = sess.add_magnet(cid, srv.port, save)
    else:
        h = sess.add_torrent(srv.torrent(cid), srv.port, save)
    got = os.path.join(save, st.content_name(path))
    t0 = time.monotonic()
    sess.wait_complete(h, got, size, f"downloading {size} bytes by {how}")
    secs = time.monotonic() - t0
    check(st.same_file(path, got), f"{size} bytes by {how}: libtorrent got other bytes")
    print(f"# {size} bytes by {how} in {secs:.2f} s")
    return h


def test_libtorrent_downloads_auto():
    files = make_contents(SMALL + [LARGE])
    # A short watchdog: the loop must go on pinging while it serves 64 MiB at full speed.
    srv = Served(files, watchdog_usec=4 * 1000000)
    check(srv.prop("SendPath") in ("send-zc", "splice", "sendfile"), srv.prop("SendPath"))
    mon = BusMonitor(srv.bus)
    t0 = time.monotonic()
    total = 0
    for path in files:
        for how in ("magnet", "torrent"):
            sess = st.LtSession()      # one session per download: a session takes an info-hash once
            download(srv, sess, path, how)
            sess.close()
            total += os.path.getsize(path)
    elapsed = time.monotonic() - t0
    # Everything downloaded was served (libtorrent may ask for a block twice, never for less).
    wait_until(lambda: srv.prop("BytesServed") >= total, 30, msg=f"BytesServed >= {total}: {srv.prop('BytesServed')}")
    wait_until(lambda: srv.prop("Peers") == 0, 60, msg=f"no peer left: {srv.prop('Peers')}")
    check(srv.prop("PeerViolations") == 0, f"libtorrent broke no rule: {srv.prop('PeerViolations')}")
    # PropertiesChanged for the serving counters: some, and no more than one a second.
    changes = [m for m in mon.signals("PropertiesChanged", st.SEEDER_PATH)
               if "BytesServed" in str(m.get("payload"))]
    check(len(changes) >= 1, "PropertiesChanged for BytesServed")
    check(len(changes) <= elapsed + 2, f"{len(changes)} PropertiesChanged in {elapsed:.1f} s: more than one a second")
    # The watchdog: pinged all along (sd-event pings at half the period when the loop runs).
    pings = [t for t, text in srv.d._messages if "WATCHDOG=1" in text]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    check(len(pings) >= 2 and max(gaps) < 4.0, f"watchdog pings every < 4 s while serving: gaps {gaps}")
    srv.stop()
    check("MC_EVENT=serving_summary" in srv.d.log_text(), "a serving summary at stop")


def test_libtorrent_downloads_forced_paths():
    files = make_contents([16 * KIB + 1, LARGE])
    for path_name in ("splice", "send-zc", "sendfile"):
        srv = Served(files, env={"MC_SEND_PATH": path_name})
        check(srv.prop("SendPath") == path_name, f"SEND_PATH={path_name}: {srv.prop('SendPath')}")
        sess = st.LtSession()
        download(srv, sess, files[0], "magnet")
        sess.close()
        sess = st.LtSession()
        download(srv, sess, files[1], "torrent")
        sess.close()
        wait_until(lambda: srv.prop("BytesServed") >= LARGE, 30, msg=f"{path_name}: BytesServed {srv.prop('BytesServed')}")
        srv.stop()


def test_peers_property_and_caps():
    files = make_contents([100 * KIB])
    srv = Served(files, env={"MC_MAX_PEERS_PER_ADDRESS": "2"})
    cid = srv.contents[files[0]]
    peers = []
    for n in (1, 2):
        p = st.RawPeer(srv.port)
        p.handshake(cid)
        p.read_handshake()
        p.read_until(st.MSG_UNCHOKE)
        peers.append(p)
        wait_until(lambda: srv.prop("Peers") == n, 30, msg=f"Peers == {n}: {srv.prop('Peers')}")
    # A third from the same address: closed at once, counted.
    third = st.RawPeer(srv.port)
    check(third.closed_by_peer(), "the connection over the cap is closed")
    wait_until(lambda: srv.prop("PeersRefused") == 1, 30, msg=f"PeersRefused == 1: {srv.prop('PeersRefused')}")
    check(srv.prop("Peers") == 2, srv.prop("Peers"))
    # A block by hand: 16 KiB of the file, BytesServed moves by as much.
    before = srv.prop("BytesServed")
    peers[0].request(0, 0, 16 * KIB)
    payload = peers[0].read_until(st.MSG_PIECE)
    with open(files[0], "rb") as f:
        check(payload[8:] == f.read(16 * KIB), "the block's bytes")
    wait_until(lambda: srv.prop("BytesServed") == before + 16 * KIB, 30, msg=f"BytesServed {srv.prop('BytesServed')}")
    for p in peers:
        p.close()
    wait_until(lambda: srv.prop("Peers") == 0, 30, msg=f"Peers == 0: {srv.prop('Peers')}")
    check(srv.prop("PeerViolations") == 0, srv.prop("PeerViolations"))
    srv.stop()
    check("MC_EVENT=peer_limit" in srv.d.log_text(), "the refusal in the journal")


def test_hostile_peers_while_serving():
    files = make_contents([LARGE, 1 * MIB])
    srv = Served(files)
    big, small = (srv.contents[p] for p in files)
    # libtorrent downloads slowly meanwhile (1 MiB/s: 64 s at most, lifted below).
    sess = st.LtSession()
    save = tmpdir("lt")
    h = sess.add_torrent(srv.torrent(big), srv.port, save, download_limit=1 * MIB)
    wait_until(lambda: h.status().total_wanted_done > 0, 60, msg="libtorrent started downloading")
    wait_until(lambda: srv.prop("Peers") == 1, 30, msg=f"libtorrent connected: Peers {srv.prop('Peers')}")

    # 1. Not a BitTorrent handshake.
    p = st.RawPeer(srv.port)
    p.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 60)
    check(p.closed_by_peer(), "garbage handshake: closed")
    wait_until(lambda: srv.prop("PeerViolations") == 1, 30, msg=f"PeerViolations 1: {srv.prop('PeerViolations')}")
    # 2. An info-hash the seeder does not have.
    p = st.RawPeer(srv.port)
    p.handshake(os.urandom(32).hex())
    check(p.closed_by_peer(), "unknown info-hash: closed")
    wait_until(lambda: srv.prop("PeerViolations") == 2, 30, msg=f"PeerViolations 2: {srv.prop('PeerViolations')}")
    # 3. A message longer than any the wire allows (1 MiB announced).
    p = st.RawPeer(srv.port)
    p.handshake(small)
    p.read_handshake()
    p.read_until(st.MSG_UNCHOKE)
    p.send((1 << 20).to_bytes(4, "big") + bytes([st.MSG_PIECE]) + b"\0" * 1000)
    check(p.closed_by_peer(), "oversized message: closed")
    wait_until(lambda: srv.prop("PeerViolations") == 3, 30, msg=f"PeerViolations 3: {srv.prop('PeerViolations')}")
    # 4. A request over 16 KiB: rejected (BEP 6), the connection stays and serves a good request.
    p = st.RawPeer(srv.port)
    p.handshake(small)
    p.read_handshake()
    p.read_until(st.MSG_UNCHOKE)
    p.request(0, 0, 64 * KIB)
    rej = p.read_until(st.MSG_REJECT)
    check(rej == (0).to_bytes(4, "big") * 2 + (64 * KIB).to_bytes(4, "big"), f"the reject names the request: {rej!r}")
    plen = int(st.content_hash(files[1])["piece_length"])
    p.request(16 * KIB // plen, 16 * KIB % plen, 16 * KIB)
    payload = p.read_until(st.MSG_PIECE)
    with open(files[1], "rb") as f:
        f.seek(16 * KIB)
        check(payload[8:] == f.read(16 * KIB), "the good block after the reject")
    p.close()
    check(srv.prop("PeerViolations") == 3, f"a rejected request is no violation: {srv.prop('PeerViolations')}")

    # libtorrent was served all along; now at full speed to the end.
    check(h.status().num_peers == 1, f"libtorrent still connected: {h.status().num_peers}")
    h.set_download_limit(-1)
    got = os.path.join(save, st.content_name(files[0]))
    sess.wait_complete(h, got, LARGE, "finishing the download beside the hostile peers")
    check(st.same_file(files[0], got), "libtorrent's bytes")
    wait_until(lambda: srv.prop("BytesServed") >= LARGE, 30, msg=f"BytesServed {srv.prop('BytesServed')}")
    sess.close()
    srv.stop()
    log = srv.d.log_text()
    check("MC_EVENT=peer_violation" in log and "PEER_VIOLATIONS=1" in log,
          "the first violation in the journal, with its count")


def test_remove_while_downloading():
    files = make_contents([LARGE, 64 * KIB + 3])
    srv = Served(files)
    big, small = (srv.contents[p] for p in files)

    # A raw peer asks for 400 blocks and reads nothing: its socket fills, the sender holds the rest.
    p = st.RawPeer(srv.port)
    p.handshake(big)
    p.read_handshake()
    p.read_until(st.MSG_UNCHOKE)
    per_piece = int(st.content_hash(files[0])["piece_length"]) // (16 * KIB)
    for i in range(400):
        p.request(i // per_piece, (i % per_piece) * 16 * KIB, 16 * KIB)
    # libtorrent, rate-limited so that it is still downloading when the content goes.
    sess = st.LtSession()
    h = sess.add_torrent(srv.torrent(big), srv.port, tmpdir("lt"), download_limit=256 * KIB)
    wait_until(lambda: h.status().total_wanted_done > 0, 60, msg="libtorrent started downloading")
    wait_until(lambda: srv.prop("Peers") == 2, 30, msg=f"two peers: {srv.prop('Peers')}")

    srv.store.cli("remove", big)
    check(p.closed_by_peer(), "the raw peer's connection closed by the remove")
    wait_until(lambda: h.status().num_peers == 0, 60, msg=f"libtorrent disconnected: {h.status().num_peers}")
    wait_until(lambda: srv.prop("Peers") == 0, 30, msg=f"Peers 0: {srv.prop('Peers')}")
    check(not h.status().is_seeding, "libtorrent did not finish: the remove came first")
    # A reconnection for the removed content is an unknown info-hash now (as libtorrent's retries are).
    q = st.RawPeer(srv.port)
    q.handshake(big)
    check(q.closed_by_peer(), "the removed content is not served")
    sess.close()

    # The daemon goes on: the other content downloads.
    sess = st.LtSession()
    download(srv, sess, files[1], "magnet")
    sess.close()
    check(srv.d.running, "the daemon runs")
    srv.stop()


mctest.main()
