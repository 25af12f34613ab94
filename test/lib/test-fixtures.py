#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Self-test of the fixtures in mctest.py, against the real parts."""

import os
import signal
import time

import mctest
from mctest import Daemon, Dockerd, Postgres, PrivateBus, check, docker_api, docker_events, http, tmpdir, wait_until

# A stand-in daemon that speaks sd_notify like ours do: STATUS, READY=1, WATCHDOG=1, clean SIGTERM exit.
FAKE_DAEMON = r'''#!/usr/bin/python3
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(int(os.environ.get("EXIT_CODE", "0"))))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=starting", os.environ["NOTIFY_SOCKET"])
print("hello from", os.environ["STATE_DIRECTORY"], flush=True)
if os.environ.get("LISTEN_FDS"):
    # Socket-activated: fd 3, meant for this very process.
    assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_PID"] == str(os.getpid())
    srv = socket.socket(fileno=3)
    srv.settimeout(0.05)
s.sendto(b"READY=1\nSTATUS=up", os.environ["NOTIFY_SOCKET"])
while True:
    if os.environ.get("LISTEN_FDS"):
        try:
            c, _ = srv.accept()
            c.recv(65536)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\n" + os.environ["LISTEN_FDNAMES"].encode())
            c.close()
        except socket.timeout:
            pass
    else:
        time.sleep(0.05)
    s.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
'''


def fake_daemon():
    path = os.path.join(tmpdir("fake"), "fake-daemon")
    with open(path, "w") as f:
        f.write(FAKE_DAEMON)
    os.chmod(path, 0o755)
    return path


def test_postgres_kill_and_restart():
    pg = Postgres().start()
    pg.psql("CREATE TABLE t (x int, y text)")
    pg.psql("INSERT INTO t VALUES (1, 'a|b'), (2, NULL), (3, E'two\\nlines')")
    rows = pg.psql("SELECT x, y FROM t ORDER BY x")
    check(rows == [("1", "a|b"), ("2", None), ("3", "two\nlines")], f"rows: {rows}")
    check(pg.psql("SELECT 1 WHERE false") == [], "empty result")
    pg.kill()
    check(not pg.running, "postgres still running after kill()")
    pg.start()
    # Committed rows survive a SIGKILL of every postgres process (fsync is on).
    check(pg.psql("SELECT count(*) FROM t") == [("3",)], "rows lost after kill")
    # The URI form works with libpq too.
    out = mctest.run(["psql", "-XAt", pg.uri, "-c", "SELECT 42"]).stdout.strip()
    check(out == "42", f"psql via uri: {out!r}")
    pg.stop()
    check(not pg.running, "postgres still running after stop()")


def test_postgres_standby_promote_and_rebuild():
    primary = Postgres(settings={"synchronous_standby_names": "*"}).start()
    standby = Postgres(standby_of=primary).start()
    check(standby.in_recovery() and not primary.in_recovery(), "a standby and a primary")
    wait_until(lambda: primary.psql("SELECT sync_state FROM pg_stat_replication") == [("sync",)], 60,
               msg="the standby synchronous")
    primary.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    check(standby.psql("SELECT x FROM t") == [("1",)], "a synchronous commit is on the standby")
    primary.kill()
    standby.promote()
    check(not standby.in_recovery(), "promoted")
    standby.psql("INSERT INTO t VALUES (2)")
    # The old primary, in its own place again, as a standby of the new one.
    primary.rebuild_as_standby_of(standby)
    check(primary.in_recovery(), "rebuilt as a standby")
    wait_until(lambda: primary.psql("SELECT count(*) FROM t") == [("2",)], 60, msg="the rebuilt standby follows")


def test_daemon_notify_and_stop():
    d = Daemon(fake_daemon()).start()
    d.wait_ready()
    d.wait_notify("WATCHDOG", "1", count=3)
    d.wait_log("hello from " + d.state_dir)
    msgs = d.notifications()
    check(msgs[0] == {"STATUS": "starting"} and msgs[1] == {"READY": "1", "STATUS": "up"}, f"messages: {msgs[:2]}")
    check(d.stop() == 0, "exit status")
    d.restart()
    d.kill()
    check(d.returncode == -signal.SIGKILL, f"returncode after kill: {d.returncode}")


# Sends READY=1, a few messages and STOPPING=1, and exits. Fewer than the socket's queue holds
# (net.unix.max_dgram_qlen: the kernel's default is 10, systemd's 512), so that the sender never
# waits for the reader.
BURST = 6
BURST_DAEMON = r'''#!/usr/bin/python3
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
for i in range(%d):
    s.sendto(b"STATUS=%%d" %% i, os.environ["NOTIFY_SOCKET"])
s.sendto(b"STOPPING=1", os.environ["NOTIFY_SOCKET"])
''' % BURST


def test_daemon_messages_read_after_exit():
    """What a daemon sent before it exited is all in notifications() once it has, in order, though the
    reader thread had not read it when the process was gone."""
    path = os.path.join(tmpdir("burst"), "burst-daemon")
    with open(path, "w") as f:
        f.write(BURST_DAEMON)
    os.chmod(path, 0o755)
    d = Daemon(path)
    # Holding the fixture's lock keeps its reader thread from taking the messages in while the
    # daemon runs: they wait in the socket's queue, as they may when a daemon exits right after
    # sending them.
    with d._cond:
        d.start()
        d.proc.wait(60)
    msgs = d.notifications()
    check(msgs == [{"READY": "1"}] + [{"STATUS": str(i)} for i in range(BURST)] + [{"STOPPING": "1"}],
          f"{len(msgs)} messages: {msgs[:3]} ... {msgs[-3:]}")
    check(d.wait_notify("STOPPING", "1") == {"STOPPING": "1"}, "wait_notify after the exit")


def test_daemon_socket_activated():
    sock = mctest.listen_socket()
    port = sock.getsockname()[1]
    d = Daemon(fake_daemon()).start(listen=[sock], fdnames=["public"])
    d.wait_ready()
    r = http("GET", f"http://127.0.0.1:{port}/")
    check(r.status == 200 and r.text == "public", f"response: {r}")
    # The same socket again after a restart; connections made meanwhile wait in its backlog.
    d.stop()
    pending = mctest.background(lambda: http("GET", f"http://127.0.0.1:{port}/"))
    time.sleep(0.2)  # not a timing assertion: only gives the request a chance to be early
    check(not pending.done, "answered while the daemon was down")
    d.start()
    d.wait_ready()
    check(pending.get().status == 200, "request made while the daemon was down")


def test_real_daemon_notify_and_watchdog():
    # WATCHDOG_USEC=200 ms: sd-event pings at half of it, so WATCHDOG=1 arrives several times a second.
    d = Daemon("mc-fixture-daemon", watchdog_usec=200000).start()
    ready = d.wait_ready()
    check(ready.get("STATUS") == "Fixture ready.", f"READY message: {ready}")
    d.wait_notify("WATCHDOG", "1", count=3)
    d.wait_log("Fixture daemon ready. MC_EVENT=node_registered NODE_ID=fixture-node")
    check(d.stop() == 0, "exit status")
    check(any(m.get("STOPPING") == "1" for m in d.notifications()), "no STOPPING=1")


def test_real_sanitizer_reports_are_caught():
    for env, expect in (({"FIXTURE_LEAK": "1"}, "LeakSanitizer"), ({"FIXTURE_UB": "1"}, "signed integer overflow")):
        d = Daemon("mc-fixture-daemon", env=env).start()
        d.wait_ready()
        try:
            d.stop()
        except AssertionError as e:
            check(expect in str(e), f"{env}: report does not mention {expect}: {e}")
        else:
            raise AssertionError(f"{env}: stop() saw no sanitizer report")
        for f in os.listdir(d.dir):  # handled: keep the fixture's own cleanup from failing the test
            if f.startswith(("asan.", "ubsan.")):
                os.unlink(os.path.join(d.dir, f))


def test_network_of_hosts():
    net = mctest.Network()
    a, b = net.add_host("a"), net.add_host("b")
    sock = a.listen_socket(8080)
    d = Daemon(fake_daemon(), host=a).start(listen=[sock], fdnames=["onhost"])
    d.wait_ready()
    r = b.http("GET", f"http://{a.address}:8080/")
    check(r.status == 200 and r.text == "onhost", f"b -> a: {r}")
    # Cut a's cable: b cannot reach it; put it back: it can.
    a.set_link(False)
    try:
        b.http("GET", f"http://{a.address}:8080/", timeout=1)
    except OSError:
        pass
    else:
        raise AssertionError("reached a with its link down")
    a.set_link(True)
    r = wait_until(lambda: b.http("GET", f"http://{a.address}:8080/", timeout=2), msg="a reachable again")
    check(r.status == 200, f"after the link is back: {r}")
    a.shape("10mbit")
    check(b.http("GET", f"http://{a.address}:8080/").status == 200, "shaped link")
    # The hosts are not on this machine's network.
    out = a.run(["ip", "-o", "addr"]).stdout
    check(a.address in out and "eth0" in out, f"a's addresses: {out}")


def test_network_shaping_and_counters():
    net = mctest.Network()
    a, b = net.add_host("a"), net.add_host("b", net_only=True)
    sock = a.listen_socket(8080)
    d = Daemon(fake_daemon(), host=a).start(listen=[sock], fdnames=["shaped"])
    d.wait_ready()
    a.shape("50mbit", burst="64kb", latency="50ms")
    b.shape_ingress("50mbit", burst="64kb", latency="50ms")
    tx0, rx0 = a.link_bytes()
    r = b.http("GET", f"http://{a.address}:8080/")
    check(r.status == 200 and r.text == "shaped", f"through both shapers: {r}")
    tx1, rx1 = a.link_bytes()
    check(tx1 > tx0 and rx1 > rx0, f"a's counters: {tx0}->{tx1}, {rx0}->{rx1}")
    # Both tbf qdiscs are in place: a's on eth0, b's on its ifb device (eth0's ingress goes there).
    check("tbf" in a.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout, "a's tbf")
    check("tbf" in b.run(["tc", "qdisc", "show", "dev", "ifb0"]).stdout, "b's ifb tbf")
    check("mirred" in b.run(["tc", "filter", "show", "dev", "eth0", "parent", "ffff:"]).stdout, "b's redirect")
    # b (net_only) sees this machine's mounts, cgroups included; a (ip netns exec) its own sysfs.
    check(os.listdir("/sys/fs/cgroup") and b.run(["ls", "/sys/fs/cgroup"]).stdout.split(), "b's /sys/fs/cgroup")
    check(a.run(["ls", "/sys/fs/cgroup"]).stdout.split() == [], "a's /sys is the namespace's")


def test_daemon_bad_exit_is_reported():
    d = Daemon(fake_daemon(), env={"EXIT_CODE": "3"}).start()
    d.wait_ready()
    try:
        d.stop()
    except AssertionError as e:
        check("exited with 3" in str(e), f"message: {e}")
    else:
        raise AssertionError("stop() accepted exit status 3")
    check(d.stop(expect=3) == 3, "stop(expect=3)")


def test_daemon_sanitizer_report_is_reported():
    d = Daemon(fake_daemon()).start()
    d.wait_ready()
    with open(os.path.join(d.dir, "asan.12345"), "w") as f:
        f.write("ERROR: AddressSanitizer: heap-use-after-free (fake)\n")
    try:
        d.stop()
    except AssertionError as e:
        check("heap-use-after-free" in str(e), f"message: {e}")
    else:
        raise AssertionError("stop() ignored a sanitizer report")
    os.unlink(os.path.join(d.dir, "asan.12345"))


def test_private_bus():
    bus = PrivateBus()
    check(bus.address.startswith("unix:path="), bus.address)
    r = bus.busctl_json("call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")
    check(r["type"] == "s" and len(r["data"][0]) == 32, f"GetId: {r}")
    bus.wait_name("org.freedesktop.DBus")


def test_docker():
    Dockerd.ensure()
    r = docker_api("GET", "/containers/json")
    check(r.status == 200 and isinstance(r.json(), list), f"containers: {r}")
    info = docker_api("GET", "/v1.41/info").json()
    check(mctest.SECOND_RUNTIME in info["Runtimes"], f"runtimes: {list(info['Runtimes'])}")
    r = docker_api("GET", f"/images/{mctest.TEST_IMAGE}/json")
    check(r.status == 200, f"image: {r}")
    since = time.time() - 1
    name = f"mc-fixture-{os.getpid()}"
    r = docker_api("POST", f"/containers/create?name={name}",
                   {"Image": mctest.TEST_IMAGE, "Cmd": ["sh", "-c", "echo hi; id -u"],
                    "Labels": {"mc.fixture": "1"}, "HostConfig": {"Runtime": mctest.SECOND_RUNTIME}})
    check(r.status == 201, f"create: {r}")
    cid = r.json()["Id"]
    mctest.defer(docker_api, "DELETE", f"/containers/{cid}?force=1")
    check(docker_api("POST", f"/containers/{cid}/start").status == 204, "start")
    w = docker_api("POST", f"/containers/{cid}/wait").json()
    check(w["StatusCode"] == 0, f"wait: {w}")
    ev = wait_until(lambda: [e for e in docker_events({"type": ["container"], "label": ["mc.fixture=1"]}, since=since)
                             if e.get("Action") == "die" and e.get("id") == cid], msg="die event")
    check(ev[0]["Actor"]["Attributes"]["exitCode"] == "0", f"event: {ev[0]}")
    # Unknown runtimes are refused by the engine (tests use this for the error path).
    r = docker_api("POST", "/containers/create", {"Image": mctest.TEST_IMAGE, "Cmd": ["true"],
                                                   "HostConfig": {"Runtime": "kata-runtime"}})
    check(r.status >= 400, f"unknown runtime accepted: {r}")


def test_http_never_raises_on_errors():
    # dockerd over its socket answers 404 for an unknown path: a Response, not an exception.
    Dockerd.ensure()
    r = http("GET", "http://localhost/v1.41/no-such-thing", unix_socket=mctest.DOCKER_SOCKET)
    check(r.status == 404, f"status {r.status}")


def test_systemd_namespace():
    ns = mctest.SystemdNamespace()
    ns.add_unit("mc-fixture-sleep.service",
                "[Service]\nType=simple\nExecStart=/bin/sh -c 'echo hello-from-unit; exec sleep infinity'\n")
    # A socket-activated Type=notify service with a watchdog: what the mc units use.
    port = mctest.free_port()
    ns.add_unit("mc-fixture-notify.socket", f"[Socket]\nListenStream=127.0.0.1:{port}\n")
    script = os.path.join(ns.dir, "notify-service")
    with open(script, "w") as f:
        f.write(NOTIFY_SERVICE)
    os.chmod(script, 0o755)
    ns.add_unit("mc-fixture-notify.service",
                f"[Service]\nType=notify\nWatchdogSec=5\nExecStart={script}\n")
    ns.daemon_reload()
    ns.systemctl("start", "mc-fixture-sleep.service")
    ns.wait_state("mc-fixture-sleep.service", "active")
    entries = ns.wait_journal(unit="mc-fixture-sleep.service", MESSAGE="hello-from-unit")
    check(entries[0]["_TRANSPORT"] == "stdout", f"entry: {entries[0]}")

    ns.systemctl("start", "mc-fixture-notify.socket")
    check(ns.show("mc-fixture-notify.service", "ActiveState") == "inactive", "service started before a connection")
    r = http("GET", f"http://127.0.0.1:{port}/")
    check(r.status == 200 and r.text == "activated", f"response: {r}")
    ns.wait_state("mc-fixture-notify.service", "active")
    check(ns.show("mc-fixture-notify.service", "StatusText") == "serving", "STATUS= reached the manager")
    e = ns.wait_journal(unit="mc-fixture-notify.service", MC_EVENT="fixture_started")
    check(e[0]["MESSAGE"] == "structured", f"entry: {e[0]}")
    # Our log module writes structured fields to the journal when it is there.
    d = Daemon("mc-fixture-daemon", env={"MC_LOG_TARGET": "journal"}).start()
    d.wait_ready()
    e = ns.wait_journal(MC_EVENT="node_registered", SYSLOG_IDENTIFIER="mc-fixture-daemon")
    check(e[0]["NODE_ID"] == "fixture-node" and e[0]["MESSAGE"] == "Fixture daemon ready.", f"entry: {e[0]}")
    d.stop()
    ns.systemctl("stop", "mc-fixture-notify.service", "mc-fixture-notify.socket", "mc-fixture-sleep.service")
    ns.wait_state("mc-fixture-sleep.service", "inactive")


# Socket-activated, Type=notify, sends a structured journal entry with the native protocol.
NOTIFY_SERVICE = r'''#!/usr/bin/python3
import os, signal, socket, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
assert os.environ["LISTEN_FDS"] == "1" and int(os.environ["LISTEN_PID"]) == os.getpid()
srv = socket.socket(fileno=3)
j = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
j.sendto(b"MESSAGE=structured\nMC_EVENT=fixture_started\nPRIORITY=6\n", "/run/systemd/journal/socket")
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
while True:
    c, _ = srv.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nactivated")
    c.close()
'''


mctest.main()
