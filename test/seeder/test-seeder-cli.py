#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-seeder's commands, with the daemon on a private bus and without one: add prints the id that the
library computes independently (mc-torrent-tool) and libtorrent agrees with; list, torrent, magnet,
remove; the D-Bus interface (signals, properties, Add by path, errors); hostile inputs refused without
hanging; no write access; a file that changes while it is added; kill -9 in the middle of an add
leaves no visible content, and the daemon's next start drops the leftovers."""

import os
import signal
import subprocess
import threading

import mctest
from mctest import PrivateBus, check, tmpdir, wait_until
import seedertest as st


def check_content(store, cid, path):
    check(cid == st.expected_id(path), f"id {cid} is the library's id of the file")
    torrent = store.cli("torrent", cid, binary=True).stdout
    # libtorrent refuses torrents of no bytes ("invalid length of torrent"); ours of the empty file is
    # checked by the id above.
    if os.path.getsize(path) > 0:
        check(st.libtorrent_v2_id(torrent) == cid, "libtorrent parses the .torrent and computes the same id")
    with open(os.path.join(store.contents, cid), "rb") as a, open(path, "rb") as b:
        check(a.read() == b.read(), "the stored copy has the file's bytes")
    mode = os.stat(os.path.join(store.contents, cid)).st_mode & 0o777
    check(mode == 0o444, f"the stored copy is read-only: {oct(mode)}")
    check(os.stat(os.path.join(store.contents, cid)).st_ino != os.stat(path).st_ino, "a copy, not a hard link")
    magnet = store.cli("magnet", cid).stdout
    check(magnet == f"magnet:?xt=urn:btmh:1220{cid}\n", magnet)


def test_commands_without_daemon():
    bus = PrivateBus()      # a bus without a seeder on it: the commands use the store
    store = st.Store(bus)
    files = tmpdir("files")
    small = st.random_file(100_000, files, "small")
    big = st.random_file(40 << 20, files, "big")        # > 32 MiB: 32 KiB pieces, a piece layer
    empty = os.path.join(files, "empty")
    open(empty, "w").close()
    ids = {}
    for path in (small, big, empty):
        ids[path] = store.add(path)
        check_content(store, ids[path], path)
    check(store.add(small) == ids[small], "the same bytes again: the same id")
    listed = store.list()
    check([e["id"] for e in listed] == [ids[small], ids[big], ids[empty]], f"list in the order added: {listed}")
    check([e["size"] for e in listed] == [100_000, 40 << 20, 0], listed)
    table = store.cli("list").stdout.splitlines()
    check(len(table) == 4 and all(any(i in line for line in table) for i in ids.values()), table)

    store.cli("remove", ids[big])
    check(ids[big] not in store.visible() and ids[big] + ".torrent" not in store.visible(), store.visible())
    check([e["id"] for e in store.list()] == [ids[small], ids[empty]], store.list())
    store.cli("remove", ids[big], check_rc=2)
    store.cli("torrent", ids[big], check_rc=2)
    store.cli("remove", "not-an-id", check_rc=1)
    p = store.cli("add", check_rc=1)
    check(p.stdout == "", p.stdout)
    for cmd in ("add", "list", "remove", "torrent", "magnet"):
        p = store.cli(cmd, "--help")
        check(p.stdout.startswith(f"mc-seeder [OPTIONS...] {cmd}"), p.stdout)


def test_commands_with_daemon():
    bus = PrivateBus()
    store = st.Store(bus)
    d = store.daemon().start()
    d.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    mon = bus.monitor()
    path = st.random_file(3 << 20)
    cid = store.add(path)
    check_content(store, cid, path)
    wait_until(lambda: mon.signals("ContentAdded"), msg="ContentAdded signal")
    check(mon.signals("ContentAdded")[0]["payload"]["data"] == [cid], mon.signals("ContentAdded"))
    check(st.bus_property(bus, "Contents") == 1, "Contents")
    check(st.bus_property(bus, "StoreBytes") == 3 << 20, "StoreBytes")
    listed = st.bus_list(bus)
    check(listed[0]["id"] == cid and listed[0]["registration"] == "off", listed)
    check(st.bus_property(bus, "PeerPort") > 0, "PeerPort")

    # Add by path (busctl users): the daemon opens the file itself.
    other = st.random_file(50_000)
    r = bus.busctl_json("call", st.SEEDER_NAME, st.SEEDER_PATH, st.SEEDER_NAME, "Add", "s", other)
    check(r["data"] == [st.expected_id(other)], r)
    # Refusals come back as errors.
    for bad in ("relative/path", tmpdir("dir"), "/proc/self/mem", "/dev/null", "/nonexistent"):
        p = bus.busctl("call", st.SEEDER_NAME, st.SEEDER_PATH, st.SEEDER_NAME, "Add", "s", bad, check=False)
        check(p.returncode != 0, f"Add {bad}: {p.stdout}")
    p = bus.busctl("call", st.SEEDER_NAME, st.SEEDER_PATH, st.SEEDER_NAME, "Remove", "s", "0" * 64, check=False)
    check(p.returncode != 0, "Remove of an unknown id fails")

    store.cli("remove", cid)
    wait_until(lambda: mon.signals("ContentRemoved"), msg="ContentRemoved signal")
    check([e["id"] for e in store.list()] == [st.expected_id(other)], store.list())
    check(cid not in store.visible(), store.visible())
    store.cli("remove", cid, check_rc=2)

    # A restart loads the store.
    d.restart()
    bus.wait_name(st.SEEDER_NAME)
    check([e["id"] for e in st.bus_list(bus)] == [st.expected_id(other)], "the store after a restart")
    out = bus.busctl("introspect", st.SEEDER_NAME, st.SEEDER_PATH)
    for member in (".Add ", ".AddFd ", ".Remove ", ".List ", ".GetTorrent ", ".Contents ", ".Peers ",
                   ".BytesServed ", ".ContentAdded ", ".ContentRemoved "):
        check(member in out, f"{member} in the introspection")
    d.stop()


def test_hostile_inputs():
    for with_daemon in (False, True):
        bus = PrivateBus()
        store = st.Store(bus)
        if with_daemon:
            d = store.daemon().start()
            d.wait_ready()
            bus.wait_name(st.SEEDER_NAME)
        d_ = tmpdir("hostile")
        fifo = os.path.join(d_, "fifo")
        os.mkfifo(fifo)
        link = os.path.join(d_, "link-to-dir")
        os.symlink(d_, link)
        for bad in (d_, fifo, link, "/proc/self/mem", "/proc/self/status", "/dev/null",
                    os.path.join(d_, "missing")):
            p = store.cli("add", bad, check_rc=1, timeout=60)
            check(p.stdout == "", f"add {bad}: nothing on stdout: {p.stdout!r}")
            check(p.stderr.startswith(f"mc-seeder: {bad}: ") or f"mc-seeder: Cannot add {bad}: " in p.stderr,
                  f"add {bad}: the message names the file: {p.stderr!r}")
        check(store.visible() == [], f"nothing stored: {store.visible()}")


def test_no_write_access():
    store = st.Store()
    os.chmod(store.dir, 0o755)
    path = st.random_file(1000)
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o644)
    p = store.cli("add", path, check_rc=1, user=65534)
    check(p.stdout == "" and p.stderr.startswith("mc-seeder: No mc-seeder daemon"), p.stderr)
    check(store.visible() == [], store.visible())


def temp_fd_open(pid, contents):
    """Whether process pid has a file of contents/ open (the copy being made)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(contents + "/"):
                    return True
            except OSError:
                pass
    except FileNotFoundError:
        return False
    return False


def start_add(store, path):
    env = dict(os.environ)
    env.update(store.env)
    log_dir = tmpdir("add")
    env.update(mctest._sanitizer_env(log_dir))
    p = subprocess.Popen([mctest.binary("mc-seeder"), "add", path], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    mctest.defer(lambda: p.poll() is None and (p.kill(), p.wait()))
    return p


def big_sparse_file(size=3 << 30):
    """A large file that costs no disk: copying and hashing it still takes seconds."""
    path = os.path.join(tmpdir("big"), "big")
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(os.urandom(4096))
    return path


def test_file_changes_while_added():
    store = st.Store()
    path = big_sparse_file()
    p = start_add(store, path)
    wait_until(lambda: temp_fd_open(p.pid, store.contents) or p.poll() is not None, 120,
               msg="the add copying the file")
    check(p.poll() is None, "the add was still running")
    os.truncate(path, 1 << 20)
    out, err = p.communicate(timeout=300)
    check(p.returncode == 1 and out == "" and err.startswith(f"mc-seeder: {path}: "), (p.returncode, out, err))
    check(store.visible() == [], f"nothing visible: {store.visible()}")
    # A file that grows in between is refused just as well.
    path = big_sparse_file()
    p = start_add(store, path)
    wait_until(lambda: temp_fd_open(p.pid, store.contents) or p.poll() is not None, 120,
               msg="the add copying the file")
    with open(path, "ab") as f:
        f.write(b"more")
    out, err = p.communicate(timeout=300)
    check(p.returncode == 1 and out == "", (p.returncode, out, err))
    check(store.visible() == [], f"nothing visible: {store.visible()}")


def test_kill_during_add():
    bus = PrivateBus()
    store = st.Store(bus)
    path = big_sparse_file()
    p = start_add(store, path)
    wait_until(lambda: temp_fd_open(p.pid, store.contents) or p.poll() is not None, 120,
               msg="the add copying the file")
    check(p.poll() is None, "the add was still running")
    p.send_signal(signal.SIGKILL)
    p.wait()
    check(store.visible() == [], f"no visible content after kill -9: {store.visible()}")
    check(store.list() == [], "the store lists nothing")
    # A hidden leftover (a filesystem without O_TMPFILE leaves one) and a content without its
    # manifest (a crash between the two names) are dropped when the daemon starts.
    with open(os.path.join(store.contents, ".import.0123456789abcdef"), "w") as f:
        f.write("half")
    orphan = "ab" * 32
    with open(os.path.join(store.contents, orphan), "w") as f:
        f.write("no manifest")
    check(store.list() == [], "a content without its manifest is not listed")
    d = store.daemon().start()
    d.wait_ready()
    check(sorted(os.listdir(store.contents)) == [], f"leftovers dropped at start: {os.listdir(store.contents)}")
    small = st.random_file(10_000)
    check(store.add(small) == st.expected_id(small), "the store works after the crash")
    d.stop()


def test_daemon_keeps_serving_while_adding():
    """An add of a big file runs off the event loop: the bus answers meanwhile, and the watchdog is
    pinged."""
    bus = PrivateBus()
    store = st.Store(bus)
    d = store.daemon()
    d.env["WATCHDOG_USEC"] = str(2_000_000)
    d.start()
    d.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    path = big_sparse_file(6 << 30)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("p", store.cli("add", path, timeout=600)))
    t.start()
    wait_until(lambda: temp_fd_open(d.pid, store.contents), 120, msg="the daemon copying the file")
    before = len([m for m in d.notifications(since_start=True) if m.get("WATCHDOG") == "1"])
    check(st.bus_list(bus) == [], "List answers while the add runs")
    d.wait_notify("WATCHDOG", "1", count=before + 2, timeout=60)
    t.join(600)
    check(result["p"].stdout.strip() == st.expected_id(path), result)
    d.stop()


mctest.main()
