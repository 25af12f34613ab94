#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The peer-to-peer engine against libtorrent-rasterbar 2.0 (python3-libtorrent), over TCP on
loopback (uTP off on libtorrent's side: it would dial uTP first and wait ~3 s before TCP):

- libtorrent downloads from our seeder starting from a magnet link with the seeder in x.pe: the
  info dictionary over ut_metadata (BEP 9), the piece layer with BEP 52 hash requests, the blocks;
- libtorrent downloads from our seeder with our .torrent;
- our fetcher downloads from libtorrent seeding our .torrent;
for contents of 1 byte, one block, one block + 1, a few multi-block pieces and ~64 MiB. The empty
content: libtorrent refuses a torrent without bytes (checked, so that a libtorrent that starts
taking it shows up here), and our fetcher completes it without a peer (test-swarm)."""

import os
import signal
import time

import mctest
from mctest import check, tmpdir, wait_until
from swarmtest import KIB, MIB, Seeder, fetch, make_file, same_file

try:
    import libtorrent as lt
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")

TIMEOUT = 120


class Session:
    def __init__(self):
        self.s = lt.session({
            "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False,
            "enable_outgoing_utp": False, "enable_incoming_utp": False,
            "out_enc_policy": int(lt.enc_policy.disabled), "in_enc_policy": int(lt.enc_policy.enabled),
            "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
        })
        mctest.defer(self.close)

    def close(self):
        self.s.pause()
        del self.s

    def errors(self):
        return [a.message() for a in self.s.pop_alerts() if "error" in a.what() or "failed" in a.what()]

    def add(self, atp, save_path):
        atp.save_path = save_path
        return self.s.add_torrent(atp)

    def wait_seeding(self, h, what, path=None, size=None, same_as=None):
        """Until libtorrent seeds and (when given) path has size bytes and the bytes of same_as: its
        disk thread may write after the last piece counted, and a later piece first (the file has its
        size before an earlier piece's bytes are in it: seen with 16 KiB + 1)."""
        t0 = time.monotonic()
        wait_until(lambda: h.status().is_seeding and (path is None or (os.path.exists(path) and os.path.getsize(path) == size
                                                                       and (same_as is None or same_file(same_as, path)))),
                   TIMEOUT,
                   msg=f"libtorrent {what} (state {h.status().state}, progress {h.status().progress:.3f}, "
                       f"errors {h.status().errc.message()} {self.errors()})")
        return time.monotonic() - t0


SIZES = [1, 16 * KIB, 16 * KIB + 1, 33 * MIB + 5, 64 * MIB + 12345]


def test_libtorrent_from_our_seeder():
    for i, size in enumerate(SIZES):
        path = make_file(size, 100 + i)
        s = Seeder(path)
        sess = Session()

        # From a magnet: ut_metadata, then hash requests for the piece layer, then blocks.
        save = tmpdir("lt")
        uri = f"magnet:?xt=urn:btmh:1220{s.id}&x.pe=127.0.0.1:{s.port}"
        h = sess.add(lt.parse_magnet_uri(uri), save)
        got = os.path.join(save, s.root)
        secs = sess.wait_seeding(h, f"downloading {size} bytes from our seeder by magnet", got, size, same_as=path)
        check(same_file(path, got), f"{size}: libtorrent got other bytes from our seeder")
        print(f"# {size} bytes by magnet in {secs:.2f} s")

        # From our .torrent (another session: one takes an info-hash once).
        sess = Session()
        save = tmpdir("lt")
        atp = lt.add_torrent_params()
        with open(s.torrent, "rb") as f:
            atp.ti = lt.torrent_info(f.read())
        h = sess.add(atp, save)
        h.connect_peer(("127.0.0.1", s.port))
        sess.wait_seeding(h, f"downloading {size} bytes from our seeder with our .torrent", os.path.join(save, s.root), size,
                          same_as=path)
        check(same_file(path, os.path.join(save, s.root)), f"{size}: libtorrent got other bytes from our seeder")

        os.kill(s.d.pid, signal.SIGUSR1)  # the seeder's counters now
        st = wait_until(lambda: (x := s.stats()) and x["metadata_pieces"] >= 1 and
                        (s.pieces == 1 or x["hash_requests"] >= 1) and x, 10,
                        msg=f"{size}: ut_metadata and hash requests served: {s.stats()}")
        check(st["violations"] == 0, f"{size}: {st}")
        s.stop()


def test_our_fetcher_from_libtorrent():
    sess = Session()
    for i, size in enumerate(SIZES):
        path = make_file(size, 200 + i)
        s = Seeder(path)          # for the .torrent and the names; stopped before fetching
        s.stop()
        save = tmpdir("lt")
        os.link(path, os.path.join(save, s.root))
        atp = lt.add_torrent_params()
        with open(s.torrent, "rb") as f:
            atp.ti = lt.torrent_info(f.read())
        sess.wait_seeding(sess.add(atp, save), f"checking {size} bytes against our .torrent")
        out = tmpdir("out")
        f = fetch(s.id, s.torrent, [f"127.0.0.1:{sess.s.listen_port()}"], out)
        check(same_file(path, os.path.join(out, s.id)), f"{size}: we got other bytes from libtorrent")
        check(int(f.done["bytes"]) == size and int(f.done["failed"]) == 0, f"{size}: {f.done}")
        print(f"# {size} bytes from libtorrent: {f.done}")


def test_empty_content():
    path = make_file(0, 300)
    s = Seeder(path)
    with open(s.torrent, "rb") as f:
        data = f.read()
    try:
        lt.torrent_info(data)
        taken = True
    except RuntimeError:
        taken = False
    check(not taken, "libtorrent now takes an empty torrent: add the empty content to the exchanges above")
    s.stop()


mctest.main()
