#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""units/mc-seeder.{socket,service} in a real systemd manager (a private `systemd --user` with its own
journald): systemd-analyze verify is clean; the socket unit starts the service on the first peer
connection (Type=notify: READY, the watchdog) and serves that first connection a download (libtorrent);
the store survives `systemctl restart`. And socket activation by hand with systemd-socket-activate,
whose first connection is served a download too."""

import os
import subprocess

import mctest
from mctest import PrivateBus, SystemdNamespace, check, free_port, wait_until
import seedertest as st

UNITS = ("mc-seeder.service", "mc-seeder.socket")


def unit_text(name):
    with open(os.path.join(mctest.build_dir(), "units", "test", name)) as f:
        return f.read()


def test_units_verify():
    for name in UNITS:
        p = mctest.run(["systemd-analyze", "verify", os.path.join(mctest.build_dir(), "units", "test", name)],
                       check=False)
        check(p.returncode == 0 and p.stderr.strip() == "", f"systemd-analyze verify {name}: {p.returncode} {p.stderr}")
    text = unit_text("mc-seeder.service")
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=mc-seeder", "User=mc-seeder", "ProtectSystem=strict",
                 "PrivateTmp=yes", "NoNewPrivileges=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                 "CapabilityBoundingSet=\n", "Requires=mc-seeder.socket"):
        check(line in text, f"{line!r} in the unit")
    check("ListenStream=6881" in unit_text("mc-seeder.socket"), "the socket listens on 6881")


def download(store, cid, path, port, how):
    """libtorrent downloads content cid (the bytes of path) from 127.0.0.1:port, by "magnet" or by
    the .torrent `mc-seeder torrent` writes; its connection is the first the port gets."""
    sess = st.LtSession()
    save = mctest.tmpdir("lt")
    if how == "magnet":
        h = sess.add_magnet(cid, port, save)
    else:
        h = sess.add_torrent(store.cli("torrent", cid, binary=True).stdout, port, save)
    got = os.path.join(save, st.content_name(path))
    sess.wait_complete(h, got, os.path.getsize(path), f"downloading from the socket-activated seeder by {how}")
    check(st.same_file(path, got), "libtorrent got other bytes")
    sess.close()


def test_socket_activation_in_systemd():
    ns = SystemdNamespace()
    state = mctest.tmpdir("unit-state")
    port = free_port()
    ns.add_unit("mc-seeder.service", unit_text("mc-seeder.service"))
    ns.add_unit("mc-seeder.socket", unit_text("mc-seeder.socket").replace("ListenStream=6881", f"ListenStream=127.0.0.1:{port}"))
    os.makedirs(os.path.join(ns.unit_dir, "mc-seeder.service.d"))
    # As for the agent's unit test: a user manager cannot switch users, load a missing credential or set
    # up mount namespaces from inside the test's own; systemd-analyze checks those lines above.
    ns.add_unit("mc-seeder.service.d/test.conf", f"""[Service]
User=
Group=
LoadCredential=
StateDirectory=
Environment=STATE_DIRECTORY={state} MC_BUS=no MC_LOG_LEVEL=debug MC_CONFIG=/dev/null
ProtectSystem=no
ProtectHome=no
PrivateTmp=no
PrivateDevices=no
ProtectKernelTunables=no
ProtectKernelModules=no
ProtectKernelLogs=no
ProtectControlGroups=no
ProtectClock=no
ProtectHostname=no
ProtectProc=default
Environment=ASAN_OPTIONS=detect_leaks=0
""")
    ns.daemon_reload()
    # The store is the unit's: a content added by hand (no daemon on a bus) before the service ever ran.
    store = st.Store()
    store.dir = state
    store.env["STATE_DIRECTORY"] = state
    path = st.random_file(3 * st.MIB + 5000)
    cid = store.add(path)
    ns.systemctl("start", "mc-seeder.socket")
    check(ns.show("mc-seeder.service", "ActiveState") == "inactive", "not started before a connection")
    # The first connection starts the service, which serves it the whole content.
    try:
        download(store, cid, path, port, "torrent")
    except AssertionError:
        for e in ns.journal(unit="mc-seeder.service")[-40:]:
            print("#", e.get("MESSAGE"))
        print("#", ns.show("mc-seeder.service", "ActiveState"))
        raise
    ns.wait_state("mc-seeder.service", "active")
    check(ns.show("mc-seeder.service", "WatchdogUSec") == "30s", ns.show("mc-seeder.service", "WatchdogUSec"))
    # The store survives a restart; the socket stays, the new process serves it.
    ns.systemctl("restart", "mc-seeder.service")
    ns.wait_state("mc-seeder.service", "active")
    download(store, cid, path, port, "magnet")
    check([e["id"] for e in store.list()] == [cid], store.list())
    ns.systemctl("stop", "mc-seeder.service", "mc-seeder.socket")


def socket_listening(port):
    """Whether something listens on 127.0.0.1:port, without connecting (a connection would be the
    daemon's first)."""
    with open("/proc/net/tcp") as f:
        return any(line.split()[1] == f"0100007F:{port:04X}" and line.split()[3] == "0A" for line in f.readlines()[1:])


def test_systemd_socket_activate():
    bus = PrivateBus()
    store = st.Store(bus)
    path = st.random_file(2 * st.MIB + 3)
    cid = store.add(path)       # no daemon yet: into the store directly
    port = free_port()
    env = dict(os.environ)
    env.update(store.env)
    log = open(os.path.join(mctest.tmpdir("ssa"), "log"), "wb")
    p = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", "STATE_DIRECTORY",
                          "-E", "DBUS_SYSTEM_BUS_ADDRESS", "-E", "MC_LOG_TARGET", "-E", "MC_CONFIG",
                          mctest.binary("mc-seeder")], env=env, stdout=log, stderr=subprocess.STDOUT)
    mctest.defer(lambda: p.poll() is None and (p.terminate(), p.wait(30)))
    # systemd-socket-activate starts the daemon at once (its sockets are listening before the exec):
    # libtorrent's connection, the first, may arrive before the daemon accepts anything.
    wait_until(lambda: os.path.exists(f"/proc/{p.pid}") and socket_listening(port), 60, msg="the socket listening")
    download(store, cid, path, port, "torrent")
    bus.wait_name(st.SEEDER_NAME, timeout=60)
    check(st.bus_property(bus, "PeerPort") == port, "the daemon serves the passed socket")
    wait_until(lambda: st.bus_property(bus, "BytesServed") >= os.path.getsize(path), 30,
               msg="BytesServed counts the download")
    p.terminate()
    check(p.wait(30) == 0, "exit 0 on SIGTERM")


mctest.main()
