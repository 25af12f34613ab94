# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for the mc-seeder tests: the daemon on a private bus with its own store, the command line
pointed at the same store and bus, and the content id computed without the seeder (mc-torrent-tool,
src/torrent's rule) and checked with libtorrent."""

import json
import os
import subprocess

import mctest
from mctest import Daemon, check, tmpdir

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

    def __init__(self, bus=None, env=None):
        self.dir = tmpdir("seeder-state")
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

    def daemon(self, args=(), env=None):
        e = dict(self.env)
        e.update(env or {})
        d = Daemon("mc-seeder", ["--port", 0, "--listen-address", "127.0.0.1"] + list(args), env=e)
        # The daemon's own directories are its Daemon's; the store is ours.
        d.env["STATE_DIRECTORY"] = self.dir
        return d


def bus_list(bus):
    return json.loads(bus.busctl_json("call", SEEDER_NAME, SEEDER_PATH, SEEDER_NAME, "List")["data"][0])


def bus_property(bus, name):
    return bus.busctl_json("get-property", SEEDER_NAME, SEEDER_PATH, SEEDER_NAME, name)["data"]
