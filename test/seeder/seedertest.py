# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for the mc-seeder tests: the daemon on a private bus with its own store, the command line
pointed at the same store and bus, and the content id computed without the seeder (mc-torrent-tool,
src/torrent's rule) and checked with libtorrent."""

import json
import os
import subprocess

import mctest
from mctest import Daemon, check, tmpdir, wait_until

KIB = 1024
MIB = 1024 * KIB
SEEDER_NAME = "org.mutualcloud.Seeder1"
SEEDER_PATH = "/org/mutualcloud/Seeder1"


def expected_id(path):
    """The content id of the file, from mc-torrent-tool (the library's manifest rule, no seeder)."""
    out = mctest.run([mctest.binary("mc-torrent-tool"), "hash", path]).stdout
    ids = [line.split()[1] for line in out.splitlines() if line.startswith("id ")]
    check(len(ids) == 1, f"mc-torrent-tool hash: {out}")
    return ids[0]


def libtorrent_v2_id(torrent_bytes):
    """The v2 info-hash libtorrent computes for a .torrent (it must parse it)."""
    import libtorrent as lt
    ti = lt.torrent_info(lt.bdecode(torrent_bytes))
    return ti.info_hashes().v2.to_bytes().hex()


def random_file(size, directory=None, name="content"):
    path = os.path.join(directory or tmpdir("files"), name)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


class Store:
    """A store directory and the environment that points the command line (and a daemon) at it."""

    def __init__(self, bus=None, env=None, directory=None):
        """directory: the store's (default a new temporary one), e.g. in /dev/shm for large contents."""
        self.dir = directory or tmpdir("seeder-state")
        self.env = {"STATE_DIRECTORY": self.dir, "MC_LOG_TARGET": "console", "MC_CONFIG": "/dev/null"}
        if bus is not None:
            self.env.update(bus.env())
        else:
            # No daemon can be on a bus that is not there.
            self.env["MC_BUS"] = "no"
        self.env.update(env or {})

    @property
    def contents(self):
        return os.path.join(self.dir, "contents")

    def visible(self):
        """The names in contents/ that are not temporary (hidden) ones."""
        try:
            return sorted(n for n in os.listdir(self.contents) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def cli(self, *args, check_rc=0, timeout=300, user=None, binary=False):
        """Runs `mc-seeder ARGS`; returns the CompletedProcess (stdout bytes if binary). Checks the exit
        status when check_rc is not None."""
        env = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"):
            env.pop(k, None)
        env.update(self.env)
        log_dir = tmpdir("cli")
        os.chmod(log_dir, 0o777)        # for a command run as another user
        env.update(mctest._sanitizer_env(log_dir))
        argv = [mctest.binary("mc-seeder")] + [str(a) for a in args]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
        p = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           text=not binary)
        reports = mctest._sanitizer_reports(log_dir)
        if reports:
            raise AssertionError(f"mc-seeder {' '.join(map(str, args))}: sanitizer report:\n" + "\n".join(reports))
        if check_rc is not None and p.returncode != check_rc:
            raise AssertionError(f"mc-seeder {' '.join(map(str, args))}: exit {p.returncode} (expected {check_rc})\n"
                                 f"stdout: {p.stdout!r}\nstderr: {p.stderr!r}")
        return p

    def add(self, path):
        p = self.cli("add", path)
        check(p.stdout.endswith("\n") and len(p.stdout) == 65 and all(c in "0123456789abcdef" for c in p.stdout[:64]),
              f"add prints the id and nothing else: {p.stdout!r}")
        return p.stdout[:64]

    def list(self):
        return json.loads(self.cli("list", "--json").stdout)

    def daemon(self, args=(), env=None, host=None, port=0):
        """The daemon on this store; with host (a mctest Network Host), serving there on port."""
        e = dict(self.env)
        e.update(env or {})
        address = host.address if host is not None else "127.0.0.1"
        d = Daemon("mc-seeder", ["--port", port, "--listen-address", address] + list(args), env=e, host=host)
        # The daemon's own directories are its Daemon's; the store is ours.
        d.env["STATE_DIRECTORY"] = self.dir
        return d


def bus_list(bus):
    return json.loads(bus.busctl_json("call", SEEDER_NAME, SEEDER_PATH, SEEDER_NAME, "List")["data"][0])


def bus_property(bus, name):
    return bus.busctl_json("get-property", SEEDER_NAME, SEEDER_PATH, SEEDER_NAME, name)["data"]


def bus_properties(bus, *names):
    return {n: bus_property(bus, n) for n in names}


# ---------------------------------------------------------------------------------------------------
# Peers: libtorrent, and a raw peer-wire client for what libtorrent would never send

class LtSession:
    """A python3-libtorrent session on 127.0.0.1, TCP only (uTP would be dialled first and waited
    for), no encryption, no DHT, LSD, UPnP or NAT-PMP: it reaches only the peers it is told of."""

    def __init__(self, settings=None):
        import libtorrent as lt
        self.lt = lt
        s = {
            "listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False,
            "enable_outgoing_utp": False, "enable_incoming_utp": False,
            "out_enc_policy": int(lt.enc_policy.disabled), "in_enc_policy": int(lt.enc_policy.enabled),
            "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification,
        }
        s.update(settings or {})
        self.s = lt.session(s)
        mctest.defer(self.close)

    def close(self):
        if self.s is not None:
            self.s.pause()
            self.s = None

    def errors(self):
        return [a.message() for a in self.s.pop_alerts() if "error" in a.what() or "failed" in a.what()]

    def add_magnet(self, cid, port, save):
        p = self.lt.parse_magnet_uri(f"magnet:?xt=urn:btmh:1220{cid}&x.pe=127.0.0.1:{port}")
        p.save_path = save
        return self.s.add_torrent(p)

    def add_torrent(self, torrent_bytes, port, save, download_limit=None):
        """download_limit: bytes a second for this torrent (a session's rate limits exempt local peers)."""
        p = self.lt.add_torrent_params()
        p.ti = self.lt.torrent_info(self.lt.bdecode(torrent_bytes))
        p.save_path = save
        if download_limit:
            p.download_limit = download_limit
        h = self.s.add_torrent(p)
        h.connect_peer(("127.0.0.1", port))
        return h

    def wait_complete(self, h, path, size, what, timeout=180):
        """Until libtorrent seeds and path has size bytes (its disk thread may write after the last
        piece counted)."""
        wait_until(lambda: h.status().is_seeding and os.path.exists(path) and os.path.getsize(path) == size,
                   timeout,
                   msg=f"libtorrent {what} (state {h.status().state}, progress {h.status().progress:.3f}, "
                       f"peers {h.status().num_peers}, errors {h.status().errc.message()} {self.errors()})")


def content_hash(path):
    """mc-torrent-tool hash: {"root", "piece_length", "pieces", "id", ...} as strings."""
    out = mctest.run([mctest.binary("mc-torrent-tool"), "hash", path]).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def content_name(path):
    """The file name in a content's manifest: the hex of its pieces root."""
    return content_hash(path)["root"]


def same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


MSG_CHOKE, MSG_UNCHOKE, MSG_REQUEST, MSG_PIECE, MSG_HAVE_ALL, MSG_REJECT, MSG_EXTENDED = 0, 1, 6, 7, 14, 16, 20


class RawPeer:
    """One TCP connection to the seeder speaking the peer wire by hand (BEP 3, 6 and 52 bits set)."""

    def __init__(self, port):
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def handshake(self, cid_hex):
        reserved = bytearray(8)
        reserved[5] |= 0x10                     # extension protocol
        reserved[7] |= 0x04 | 0x10              # fast extension, v2
        self.send(b"\x13BitTorrent protocol" + bytes(reserved) + bytes.fromhex(cid_hex)[:20] + os.urandom(20))

    def _fill(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("the seeder closed the connection")
            self.buf += data

    def recv_exact(self, n):
        self._fill(n)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_handshake(self):
        h = self.recv_exact(68)
        check(h[:20] == b"\x13BitTorrent protocol", f"a handshake: {h!r}")
        return h

    def read_message(self):
        """(id, payload); (None, b"") for a keep-alive."""
        n = int.from_bytes(self.recv_exact(4), "big")
        if n == 0:
            return None, b""
        body = self.recv_exact(n)
        return body[0], body[1:]

    def read_until(self, msg_id):
        while True:
            m, payload = self.read_message()
            if m == msg_id:
                return payload

    def request(self, index, begin, length):
        self.send((13).to_bytes(4, "big") + bytes([MSG_REQUEST]) + index.to_bytes(4, "big") +
                  begin.to_bytes(4, "big") + length.to_bytes(4, "big"))

    def closed_by_peer(self, timeout=60):
        """Reads (and drops) whatever comes until the seeder closes: True on EOF or a reset."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        return True
