#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Our DHT against an independent implementation, libtorrent-rasterbar 2.0 (python3-libtorrent), on
loopback: each side bootstraps from the other, reads the items the other stored (so each verifies the
other's ed25519 signatures) and sees the peers the other announced.

libtorrent needs its loopback guards off (restrict_*_ips, enforce_node_id, ignore_dark_internet), and
since every node here shares 127.0.0.1, its per-IP query limit (5/s by default) is raised: it would
otherwise block all of us as one abusive address."""

import hashlib
import os

import mctest
from mctest import Daemon, binary, check, run, tmpdir, wait_until

try:
    import libtorrent as lt
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TIMEOUT = 30


class LtNode:
    def __init__(self, bootstrap_port=None):
        self.s = lt.session({
            "listen_interfaces": "127.0.0.1:0", "enable_dht": True, "enable_lsd": False, "enable_upnp": False,
            "enable_natpmp": False, "dht_bootstrap_nodes": "",
            "alert_mask": lt.alert.category_t.all_categories,
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False, "dht_enforce_node_id": False,
            "dht_ignore_dark_internet": False, "dht_prefer_verified_node_ids": False,
            "dht_block_ratelimit": 100000, "dht_upload_rate_limit": 10000000,
        })
        if bootstrap_port:
            self.s.add_dht_node(("127.0.0.1", bootstrap_port))
        mctest.defer(self.close)

    @property
    def port(self):
        return self.s.listen_port()

    def close(self):
        # The DHT stopped while the session lives: destroyed with it running, under load, while the
        # other nodes still sent it packets, the session once crashed the interpreter (SIGSEGV) after
        # the test had passed.
        self.s.apply_settings({"enable_dht": False})
        self.s.pause()
        del self.s

    def wait_alert(self, what, pred=lambda a: True, timeout=TIMEOUT):
        """The first alert of that kind matching pred, others are dropped. An alert is valid only
        until the next pop_alerts(): use it at once."""
        def find():
            self.s.wait_for_alert(50)
            for a in self.s.pop_alerts():
                if a.what() == what and pred(a):
                    return a
            return None
        return wait_until(find, timeout, interval=0.01, msg=f"libtorrent alert {what}")

    def table_size(self):
        self.s.post_dht_stats()
        a = self.wait_alert("dht_stats")
        return sum(b["num_nodes"] for b in a.routing_table)


def our_node(name):
    d = Daemon("mc-dhtget", ["serve"], name=name).start()
    st = d.wait_ready(TIMEOUT)
    return d, int(st["STATUS"].split("port ")[1].split(",")[0])


def dhtget(boot_port, *args, check_rc=True):
    return run([binary("mc-dhtget"), "-b", f"127.0.0.1:{boot_port}", "-t", "20", *args], check=check_rc)


def network():
    """One node of ours, three libtorrent nodes joined through it."""
    ours, port = our_node("dht-a")
    lts = [LtNode(port) for _ in range(3)]
    wait_until(lambda: all(n.table_size() >= 3 for n in lts), TIMEOUT,
               msg="libtorrent nodes learning each other through our node")
    return ours, port, lts


def lt_key():
    seed = os.urandom(32)
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    pem = priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    return bytes(h), pub, pem


def test_libtorrent_bootstraps_from_ours():
    # network() waits until each libtorrent node, which knew only ours, holds the two others as well:
    # they learned them from our find_node answers.
    ours, port, lts = network()
    nodes = dhtget(port, "--json", "nodes")
    import json
    ports = {int(n["address"].rsplit(":", 1)[1]) for n in json.loads(nodes.stdout)["nodes"]}
    check({n.port for n in lts} <= ports, f"our node's table {ports} lacks libtorrent's {[n.port for n in lts]}")


def test_ours_bootstraps_from_libtorrent():
    first = LtNode()
    others = [LtNode(first.port) for _ in range(3)]
    wait_until(lambda: first.table_size() >= 3, TIMEOUT, msg="libtorrent nodes joining each other")
    # A node of ours that knows only the first libtorrent node...
    d = Daemon("mc-dhtget", ["serve", "-b", f"127.0.0.1:{first.port}"], name="dht-b").start()
    d.wait_ready(TIMEOUT)
    # ...finds the others through it (mc-dhtget prints the table after its own bootstrap).
    import json
    def learned():
        out = json.loads(dhtget(first.port, "--json", "nodes").stdout)
        ports = {int(n["address"].rsplit(":", 1)[1]) for n in out["nodes"]}
        return {n.port for n in others} <= ports and ports
    wait_until(learned, TIMEOUT, msg="our node learning libtorrent nodes from libtorrent")
    # ...and they learn it: it answers their queries.
    wait_until(lambda: all(n.table_size() >= 4 for n in others), TIMEOUT, msg="libtorrent adding our node")


def test_items_put_by_libtorrent():
    ours, port, lts = network()
    target = lts[0].s.dht_put_immutable_item("immutable from libtorrent")
    lts[0].wait_alert("dht_put")
    out = dhtget(port, "get", str(target))
    check(out.stdout == "immutable from libtorrent\n", f"get: {out.stdout!r}")

    secret, pub, _ = lt_key()
    lts[1].s.dht_put_mutable_item(secret, pub, "mutable from libtorrent", "task/abc")
    lts[1].wait_alert("dht_put")
    import json
    got = json.loads(dhtget(port, "--json", "get-mutable", pub.hex(), "--salt", "task/abc").stdout)
    check(got["value"] == "mutable from libtorrent" and got["seq"] >= 1 and got["key"] == pub.hex(), f"get-mutable: {got}")
    # the same key without the salt is another item: nothing there
    r = dhtget(port, "get-mutable", pub.hex(), check_rc=False)
    check(r.returncode == 2 and "not found" in r.stderr, f"get-mutable without salt: {r.returncode} {r.stderr}")


def test_items_put_by_ours():
    ours, port, lts = network()
    target = dhtget(port, "put", "immutable from mc").stdout.strip()
    lts[2].s.dht_get_immutable_item(lt.sha1_hash(bytes.fromhex(target)))
    a = lts[2].wait_alert("dht_immutable_item")
    check(a.item["value"] == b"immutable from mc", f"libtorrent got {a.item}")

    _, pub, pem = lt_key()
    keyfile = os.path.join(tmpdir("key"), "k.pem")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    dhtget(port, "put-mutable", "mutable from mc", "--key", keyfile, "--salt", "task/xyz", "--seq", "42")
    lts[0].s.dht_get_mutable_item(pub, "task/xyz")
    # libtorrent delivers an item only after checking its signature against the key.
    a = lts[0].wait_alert("dht_mutable_item", lambda a: a.item.get("value") == b"mutable from mc")
    check(a.seq == 42 and a.item["salt"] == b"task/xyz", f"libtorrent got {a.item}")


def test_announces_both_ways():
    ours, port, lts = network()
    ih = hashlib.sha1(b"announced by libtorrent").digest()
    atp = lt.add_torrent_params()
    atp.info_hashes = lt.info_hash_t(lt.sha1_hash(ih))
    atp.save_path = tmpdir("lt-save")
    lts[0].s.add_torrent(atp)  # libtorrent announces a torrent it has on the DHT (its listen port)
    wait_until(lambda: f"127.0.0.1:{lts[0].port}" in dhtget(port, "peers", ih.hex(), check_rc=False).stdout,
               TIMEOUT, msg="our get_peers seeing libtorrent's announce")

    ih2 = hashlib.sha1(b"announced by mc").digest()
    out = dhtget(port, "announce", ih2.hex(), "7654")
    check("announced to" in out.stdout, out.stdout)
    lts[1].s.dht_get_peers(lt.sha1_hash(ih2))
    a = lts[1].wait_alert("dht_get_peers_reply")
    check(("127.0.0.1", 7654) in a.peers(), f"libtorrent's get_peers: {a.peers()}")


mctest.main()
