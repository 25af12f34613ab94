#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-control with the systemd and D-Bus parts it is shipped for, all real: socket activation by
systemd-socket-activate, sd_notify (READY, STATUS, WATCHDOG, STOPPING) on a notify socket, the unit files
meson generates loaded into a real `systemd --user` manager (socket activation, Type=notify, watchdog,
credentials, sandboxing, clean stop), `systemd-analyze verify`, the org.mutualcloud.Control1 interface
on a private bus, the shipped D-Bus policy on a system-type dbus-daemon, and the journal fields of
mc-control's events as journald stores them.

The manager tests load build/units/test/mc-control.{socket,service} unchanged, plus drop-ins that say
where this test's PostgreSQL, tokens and port are and override what a user manager cannot do (each
override is explained where the drop-in is written, in write_dropins())."""

import grp
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET

import mctest
from mctest import (Daemon, Postgres, PrivateBus, SystemdNamespace, binary, build_dir, check, defer,
                    enter_private_mount_namespace, free_port, http, listen_socket, run, source_dir, tmpdir,
                    wait_until)
from controltest import SAMPLE_TASK, USER_TOKEN, Control, write_tokens

BUS_NAME = "org.mutualcloud.Control1"
BUS_PATH = "/org/mutualcloud/Control1"
BUS_IFACE = "org.mutualcloud.Control1"
NOBODY = 65534

# Generous: this runs on a loaded 2-core machine, with sanitizers.
TIMEOUT = 90


def unit_dir():
    """The unit files meson generated for tests (ExecStart= is the binary in the build tree)."""
    d = os.path.join(build_dir(), "units", "test")
    for u in ("mc-control.socket", "mc-control.service"):
        check(os.path.isfile(os.path.join(d, u)), f"{d}/{u} is missing (meson generates it)")
    return d


def asan_build():
    with open(binary("mc-control"), "rb") as f:
        return b"__asan_init" in f.read()


def serving(status):
    """Whether a STATUS= text says the daemon serves, with authentication. Only its start is fixed: the
    daemon keeps it up to date ("Serving; 1 queued, 0 running, ..."), so what it says at a given
    moment is not the test's to know."""
    return bool(status) and status.startswith("Serving") and "WITHOUT AUTHENTICATION" not in status


def listening_ports(pid):
    """The TCP ports that process pid holds a listening socket on (IPv4 and IPv6), from /proc: what it
    serves on, whatever it logs about it."""
    inodes = mctest.socket_inodes(pid)
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def sanitizer_lines(text):
    return [line for line in text.splitlines()
            if "AddressSanitizer" in line or "LeakSanitizer" in line or "runtime error:" in line]


# ---------------------------------------------------------------------------------------------------
# 1. Socket activation without a manager

def test_socket_activation_without_manager():
    pg = Postgres().start()
    tokens = write_tokens(["node-a"])
    port = free_port()
    mc = binary("mc-control")
    # systemd-socket-activate hands the child only the variables named with -E (and PATH, HOME...);
    # it execs mc-control in its own process, so the pid Daemon watches becomes the daemon's.
    passed = ["MC_DB_DSN", "NOTIFY_SOCKET", "ASAN_OPTIONS", "UBSAN_OPTIONS", "MC_LOG_TARGET"]
    args = ["-l", f"127.0.0.1:{port}"]
    for var in passed:
        args += ["-E", var]
    # --port names another port: were the passed socket ignored, the request below would hang.
    args += [mc, "--tokens-file", tokens, "--no-bus", "--port", free_port()]
    d = Daemon(shutil.which("systemd-socket-activate"), args, env={"MC_DB_DSN": pg.dsn}, name="socket-activate").start()
    d.wait_log(f"Listening on 127.0.0.1:{port}", timeout=TIMEOUT)

    # Nothing has started yet: the listener waits for a connection.
    with open(f"/proc/{d.pid}/comm") as f:
        check(f.read().strip().startswith("systemd-socket"), "mc-control started before any connection")
    check(d.notifications() == [], f"notifications before activation: {d.notifications()}")

    # The first connection starts mc-control, which answers it on the socket it was given.
    r = http("GET", f"http://127.0.0.1:{port}/api/health", timeout=TIMEOUT)
    check(r.status in (200, 503) and r.json().get("version"), f"first request: {r.status} {r.text}")
    with open(f"/proc/{d.pid}/comm") as f:
        check(f.read().strip() == "mc-control", "the activated process is not mc-control")
    ready = d.wait_ready(timeout=TIMEOUT)
    check(serving(ready.get("STATUS")), f"READY without a STATUS= that says it serves: {ready}")
    # It serves on the passed socket and opened none of its own (READY=1 comes after its sockets).
    check(listening_ports(d.pid) == {int(port)}, f"mc-control listens on {listening_ports(d.pid)}, "
          f"not only on the passed port {port}:\n" + d.log_tail())
    wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/api/health").status == 200, TIMEOUT,
               msg="the activated control to reach its database")
    r = http("POST", f"http://127.0.0.1:{port}/api/tasks", SAMPLE_TASK, token=USER_TOKEN)
    check(r.status == 201, f"push through the passed socket: {r.status} {r.text}")
    check(d.stop() == 0, "exit status")


def test_several_passed_sockets():
    """LISTEN_FDS=2 (what a socket unit with two ListenStream= lines passes): both are served."""
    pg = Postgres().start()
    socks = [listen_socket(), listen_socket()]
    ports = [s.getsockname()[1] for s in socks]
    d = Daemon("mc-control", ["--tokens-file", write_tokens(["node-a"]), "--no-bus"], env={"MC_DB_DSN": pg.dsn})
    d.start(listen=socks, fdnames=["http", "http"])
    for s in socks:
        s.close()  # the daemon has its own copies
    d.wait_ready(timeout=TIMEOUT)
    check(listening_ports(d.pid) == set(ports), f"listens on {listening_ports(d.pid)}, not on the passed {ports}")
    for port in ports:
        r = wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/api/health"), TIMEOUT)
        check(r.status in (200, 503), f"port {port}: {r.status} {r.text}")
    check(d.stop() == 0, "exit status")


# ---------------------------------------------------------------------------------------------------
# 2. sd_notify: READY, STATUS, WATCHDOG, STOPPING

def test_notify_ready_watchdog_stopping():
    pg = Postgres().start()
    port = free_port()
    # A 2 s watchdog: sd-event pings every 1 to 1.5 s. Only the pings are counted, never their timing.
    d = Daemon("mc-control", ["--port", port, "--listen-address", "127.0.0.1", "--no-bus",
                              "--tokens-file", write_tokens(["node-a"])],
               env={"MC_DB_DSN": pg.dsn}, watchdog_usec=2_000_000).start()
    ready = d.wait_ready(timeout=TIMEOUT)
    check(serving(ready.get("STATUS")), f"READY=1 came without a STATUS= that says it serves: {ready}")
    d.wait_notify("WATCHDOG", "1", count=3, timeout=TIMEOUT)
    # (sd-event also pings once when the watchdog is switched on, before READY=1: that is fine.)
    msgs = d.notifications(since_start=True)
    check(all(m.get("WATCHDOG", "1") == "1" for m in msgs), f"odd WATCHDOG= values: {msgs}")
    # Still serving while it pings.
    wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/api/health").status == 200, TIMEOUT)

    check(d.stop(timeout=TIMEOUT) == 0, "exit status after SIGTERM")
    # The datagram was sent before exit; the reader thread may take a moment to pick it up.
    stopping = wait_until(lambda: [m for m in d.notifications(since_start=True) if m.get("STOPPING") == "1"],
                          TIMEOUT, msg="STOPPING=1")
    msgs = d.notifications(since_start=True)
    check(msgs.index(stopping[0]) > msgs.index(ready), f"STOPPING=1 before READY=1: {msgs}")
    check(stopping[0].get("STATUS"), f"STOPPING=1 without a STATUS=: {stopping[0]}")


# ---------------------------------------------------------------------------------------------------
# 4. systemd-analyze verify (runs before the tests below move this process into a mount namespace)

def test_analyze_verify():
    d = unit_dir()
    p = run(["systemd-analyze", "verify", os.path.join(d, "mc-control.socket"), os.path.join(d, "mc-control.service")],
            check=False, timeout=120)
    # It exits 0 even on warnings: any output at all is a failure.
    check(p.returncode == 0 and p.stdout == "" and p.stderr == "",
          f"systemd-analyze verify ({p.returncode}):\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")


# ---------------------------------------------------------------------------------------------------
# D-Bus helpers

class BusMonitor:
    """`busctl monitor` on a bus, collecting the messages that match, parsed from --json=short."""

    def __init__(self, bus, *matches):
        argv = ["busctl", f"--address={bus.address}", "monitor", "--json=short"] + [f"--match={m}" for m in matches]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        self.messages = []
        self.errors = []
        self._lock = threading.Lock()
        self._monitoring = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        defer(self.stop)
        # busctl says so once BecomeMonitor has been answered: from then on nothing is missed.
        wait_until(lambda: self._monitoring.is_set(), TIMEOUT, msg="busctl monitor to start",
                   abort=lambda: self.proc.poll() is not None and f"busctl monitor exited: {self.errors}")

    def _read_out(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                with self._lock:
                    self.messages.append(json.loads(line))

    def _read_err(self):
        for line in self.proc.stderr:
            if "Monitoring bus message stream" in line:
                self._monitoring.set()
            else:
                self.errors.append(line.strip())

    def signals(self, member):
        with self._lock:
            return [m["payload"]["data"] for m in self.messages
                    if m.get("type") == "signal" and m.get("member") == member]

    def wait_signal(self, member, pred, what):
        return wait_until(lambda: [d for d in self.signals(member) if pred(d)], TIMEOUT, msg=what)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def task_changes(mon):
    """Every (id, status) of the TasksChanged signals seen so far, in the order sent."""
    return [change for data in mon.signals("TasksChanged") for change in data[0]]


def wait_change(mon, task_id, status):
    wait_until(lambda: [task_id, status] in task_changes(mon), TIMEOUT,
               msg=f"TasksChanged with ({task_id}, {status})")


def dbus_send(address, method, *args, as_user=None, groups=None, interface=BUS_IFACE):
    """A method call with dbus-send, which names the error of a failed call (busctl prints only its
    message). as_user: a uid to call as (with no groups but `groups`). Returns (ok, reply or
    "ErrorName: message")."""
    argv = ["dbus-send", f"--bus={address}", "--print-reply", f"--dest={BUS_NAME}", BUS_PATH,
            f"{interface}.{method}"] + list(args)
    if as_user is not None:
        argv = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}"] + \
               ([f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]) + argv
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if p.returncode == 0:
        return True, p.stdout
    m = re.search(r"Error (\S+): (.*)", p.stderr, re.S)
    check(m, f"dbus-send failed without an error name ({p.returncode}): {p.stderr}")
    return False, f"{m.group(1)}: {m.group(2).strip()}"


def expect_error(result, name, *words):
    ok, text = result
    check(not ok, f"expected {name}, the call succeeded: {text}")
    check(text.startswith(name + ":"), f"expected {name}, got {text}")
    for w in words:
        check(w in text, f"error {text!r} does not mention {w!r}")
    return text


def call(bus, method, signature, *args):
    """busctl call; returns the reply's values (a list, empty for a method that returns nothing)."""
    out = bus.busctl("--json=short", "call", BUS_NAME, BUS_PATH, BUS_IFACE, method, signature, *args, timeout=120)
    return json.loads(out)["data"] if out.strip() else []


def prop(bus, name):
    return bus.busctl_json("get-property", BUS_NAME, BUS_PATH, BUS_IFACE, name)["data"]


# ---------------------------------------------------------------------------------------------------
# 5. The D-Bus interface

def test_bus_interface():
    bus = PrivateBus()
    pg = Postgres().start()
    c = Control(pg, bus=bus).start()
    bus.wait_name(BUS_NAME, timeout=TIMEOUT)
    mon = BusMonitor(bus, f"type='signal',path='{BUS_PATH}'")

    # What busctl introspect shows, and the same in XML with argument names and directions.
    table = bus.busctl("introspect", BUS_NAME, BUS_PATH)
    for row in (r"^org\.mutualcloud\.Control1\s+interface", r"^\.PushTask\s+method\s+s\s+s\s",
                r"^\.GetTask\s+method\s+s\s+s\s", r"^\.ListTasks\s+method\s+su\s+s\s",
                r"^\.CancelTask\s+method\s+s\s+-\s", r"^\.TasksChanged\s+signal\s+a\(ss\)\s",
                r"^\.Version\s+property\s+s\s+\"[^\"]+\"\s+const",
                r"^\.TasksQueued\s+property\s+u\s+\d+\s+emits-change", r"^\.TasksRunning\s+property\s+u\s+\d+\s+emits-change",
                r"^\.NodesReady\s+property\s+u\s+\d+\s+emits-change"):
        check(re.search(row, table, re.M), f"busctl introspect has no line like {row!r}:\n{table}")
    xml = ET.fromstring(bus.busctl("introspect", "--xml-interface", BUS_NAME, BUS_PATH))
    iface = xml.find(f"interface[@name='{BUS_IFACE}']")
    check(iface is not None, "no org.mutualcloud.Control1 in the introspection XML")
    methods = {m.get("name"): [(a.get("name"), a.get("type"), a.get("direction")) for a in m.findall("arg")]
               for m in iface.findall("method")}
    check(methods == {
        "PushTask": [("json", "s", "in"), ("id", "s", "out")],
        "GetTask": [("id", "s", "in"), ("json", "s", "out")],
        "ListTasks": [("status", "s", "in"), ("limit", "u", "in"), ("json", "s", "out")],
        "CancelTask": [("id", "s", "in")],
    }, f"methods: {methods}")
    props = {p.get("name"): (p.get("type"), p.get("access")) for p in iface.findall("property")}
    check(props == {"Version": ("s", "read"), "TasksQueued": ("u", "read"), "TasksRunning": ("u", "read"),
                    "NodesReady": ("u", "read")}, f"properties: {props}")
    sigs = {s.get("name"): [(a.get("name"), a.get("type")) for a in s.findall("arg")] for s in iface.findall("signal")}
    check(sigs == {"TasksChanged": [("changes", "a(ss)")]}, f"signals: {sigs}")

    health = http("GET", c.url + "/api/health").json()
    check(prop(bus, "Version") == health["version"], f"Version {prop(bus, 'Version')!r} vs health {health}")
    check(prop(bus, "TasksQueued") == 0 and prop(bus, "TasksRunning") == 0 and prop(bus, "NodesReady") == 0,
          "counts of an empty database")

    # PushTask with the seed's sample body; the HTTP API shows the same task.
    (tid,) = call(bus, "PushTask", "s", json.dumps(SAMPLE_TASK))
    check(re.fullmatch(r"[0-9a-f]{32}", tid), f"PushTask returned {tid!r}")
    t = c.task(tid)
    check(t["status"] == "queued", t)
    for key, value in SAMPLE_TASK.items():
        check(t[key] == value, f"field {key} pushed over D-Bus: {value!r}, HTTP shows {t.get(key)!r}")
    wait_change(mon, tid, "queued")

    (got,) = call(bus, "GetTask", "s", tid)
    got = json.loads(got)
    check(got["id"] == tid and got["status"] == "queued" and got["image"] == SAMPLE_TASK["image"], got)

    # An id of our own: the push is idempotent, and the same id with another body is a conflict.
    body = dict(SAMPLE_TASK, id="bus-task-2", labels={"job": "bus"})
    check(call(bus, "PushTask", "s", json.dumps(body)) == ["bus-task-2"], "PushTask with an id")
    check(call(bus, "PushTask", "s", json.dumps(body)) == ["bus-task-2"], "the same push again")
    expect_error(dbus_send(bus.address, "PushTask", "string:" + json.dumps(dict(body, cmd=["true"]))),
                 f"{BUS_IFACE}.Conflict", '"id"')
    (third,) = call(bus, "PushTask", "s", json.dumps({"image": "busybox", "cmd": ["true"]}))

    (listed,) = call(bus, "ListTasks", "su", "queued", 10)
    ids = [x["id"] for x in json.loads(listed)["tasks"]]
    check(sorted(ids) == sorted([tid, "bus-task-2", third]), f"ListTasks(queued): {ids}")
    (listed,) = call(bus, "ListTasks", "su", "", 2)
    check(len(json.loads(listed)["tasks"]) == 2, f"ListTasks limit 2: {listed}")
    (listed,) = call(bus, "ListTasks", "su", "succeeded", 0)
    check(json.loads(listed)["tasks"] == [], f"ListTasks(succeeded): {listed}")

    # The counts follow (they are refreshed in the background, and announced with PropertiesChanged).
    wait_until(lambda: prop(bus, "TasksQueued") == 3, TIMEOUT, msg="TasksQueued to reach 3")
    mon.wait_signal("PropertiesChanged",
                    lambda d: d[0] == BUS_IFACE and d[1].get("TasksQueued", {}).get("data") == 3,
                    "PropertiesChanged with TasksQueued=3")

    # CancelTask; GetTask and HTTP then show it cancelled, and a TasksChanged says so.
    check(call(bus, "CancelTask", "s", tid) == [], "CancelTask returns nothing")
    check(json.loads(call(bus, "GetTask", "s", tid)[0])["status"] == "cancelled", "GetTask after CancelTask")
    check(c.task(tid)["status"] == "cancelled", "HTTP after CancelTask")
    wait_change(mon, tid, "cancelled")
    changes = task_changes(mon)
    check(changes.index([tid, "queued"]) < changes.index([tid, "cancelled"]), f"changes out of order: {changes}")
    wait_until(lambda: prop(bus, "TasksQueued") == 2, TIMEOUT, msg="TasksQueued to drop to 2")

    # Errors carry D-Bus error names, and a bad body names its field.
    expect_error(dbus_send(bus.address, "PushTask", 'string:{"image": 5, "cmd": ["x"]}'),
                 "org.freedesktop.DBus.Error.InvalidArgs", '"image"')
    expect_error(dbus_send(bus.address, "PushTask", 'string:{"image": "x"}'),
                 "org.freedesktop.DBus.Error.InvalidArgs", '"cmd"')
    expect_error(dbus_send(bus.address, "PushTask", 'string:{"image": "x", "cmd": ["x"], "colour": 1}'),
                 "org.freedesktop.DBus.Error.InvalidArgs", '"colour"')
    expect_error(dbus_send(bus.address, "PushTask", "string:{not json"), "org.freedesktop.DBus.Error.InvalidArgs")
    expect_error(dbus_send(bus.address, "GetTask", "string:no-such-task"), f"{BUS_IFACE}.NoSuchTask")
    expect_error(dbus_send(bus.address, "GetTask", "string:bad id!"), "org.freedesktop.DBus.Error.InvalidArgs")
    expect_error(dbus_send(bus.address, "CancelTask", "string:no-such-task"), f"{BUS_IFACE}.NoSuchTask")
    expect_error(dbus_send(bus.address, "CancelTask", f"string:{tid}"), f"{BUS_IFACE}.Conflict")
    expect_error(dbus_send(bus.address, "ListTasks", "string:bogus", "uint32:1"),
                 "org.freedesktop.DBus.Error.InvalidArgs", "bogus")
    expect_error(dbus_send(bus.address, "ListTasks", "string:", "uint32:1001"),
                 "org.freedesktop.DBus.Error.InvalidArgs", "1000")
    # None of the refused calls changed anything.
    (listed,) = call(bus, "ListTasks", "su", "", 100)
    check(sorted(x["id"] for x in json.loads(listed)["tasks"]) == sorted([tid, "bus-task-2", third]),
          f"tasks after the refused calls: {listed}")
    check(c.stop() == 0, "exit status")


def test_bus_task_changes_coalesced():
    """Many task changes share TasksChanged signals, and each change is in exactly one of them. A
    signal per change would be as many signals as pushes; coalescing needs only two pushes within one
    interval (100 ms) of each other, which 16 concurrent clients always give."""
    bus = PrivateBus()
    pg = Postgres().start()
    c = Control(pg, bus=bus).start()
    bus.wait_name(BUS_NAME, timeout=TIMEOUT)
    mon = BusMonitor(bus, f"type='signal',path='{BUS_PATH}'")

    n = 200
    ids = [f"coalesced-{i}" for i in range(n)]
    answers = {}

    def push(chunk):
        for i in chunk:
            answers[i] = c.push(dict(SAMPLE_TASK, id=i)).status

    threads = [threading.Thread(target=push, args=(ids[k::16],)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(sorted(answers.values()) == [201] * n, f"push answers: {sorted(set(answers.values()))}")

    wanted = {(i, "queued") for i in ids}
    wait_until(lambda: wanted <= {tuple(ch) for ch in task_changes(mon)}, TIMEOUT,
               msg=f"TasksChanged with the {n} pushed tasks queued")
    mine = [tuple(ch) for ch in task_changes(mon) if tuple(ch) in wanted]
    check(len(mine) == n, f"{len(mine) - n} changes announced more than once")
    signals = [data[0] for data in mon.signals("TasksChanged")]
    check(len(signals) < n, f"{n} changes took {len(signals)} signals: not coalesced")
    check(all(1 <= len(s) <= 4096 for s in signals), f"signal sizes: {[len(s) for s in signals]}")
    check(c.stop() == 0, "exit status")


# ---------------------------------------------------------------------------------------------------
# Users and groups of the shipped sysusers.d file, in this process's private mount namespace

_users = None


def shipped_users():
    """Creates the users and groups of sysusers.d/mc-control.conf (mc-control, mc) with systemd-sysusers in a
    copy of /etc/passwd, group, shadow and gshadow, bind-mounted over the originals in this process's
    private mount namespace: the machine's own files stay untouched. Returns {"mc": gid, ...}."""
    global _users
    if _users is not None:
        return _users
    enter_private_mount_namespace()
    root = tmpdir("sysusers")
    os.makedirs(os.path.join(root, "etc"))
    files = ("passwd", "group", "shadow", "gshadow")
    for f in files:
        shutil.copy2(os.path.join("/etc", f), os.path.join(root, "etc", f))
    conf = os.path.abspath(os.path.join(source_dir(), "sysusers.d", "mc-control.conf"))
    run(["systemd-sysusers", f"--root={root}", conf])
    for f in files:
        subprocess.run(["mount", "--bind", os.path.join(root, "etc", f), os.path.join("/etc", f)], check=True)
    _users = {"mc": grp.getgrnam("mc").gr_gid, "mc-control": pwd.getpwnam("mc-control").pw_uid}
    return _users


# ---------------------------------------------------------------------------------------------------
# 6. The shipped D-Bus policy on a system-type bus

def system_bus_config(socket_path):
    """Debian's system bus configuration (its default policy: deny method calls and name ownership,
    let through what policy files allow), listening on socket_path, with the project's dbus/
    directory as its only policy directory."""
    tree = ET.parse("/usr/share/dbus-1/system.conf")
    root = tree.getroot()
    check(root.findtext("type") == "system", "/usr/share/dbus-1/system.conf is not a system bus configuration")
    # Dropped: running as messagebus, forking, the pid file, activation, syslog, the machine's policy
    # directories and its listening socket.
    for el in list(root):
        if el.tag in ("user", "fork", "pidfile", "syslog", "servicehelper", "standard_system_servicedirs",
                      "listen", "include", "includedir"):
            root.remove(el)
    ET.SubElement(root, "listen").text = f"unix:path={socket_path}"
    ET.SubElement(root, "includedir").text = os.path.abspath(os.path.join(source_dir(), "dbus"))
    d = tmpdir("system-bus")
    path = os.path.join(d, "system.conf")
    with open(path, "w") as f:
        f.write('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
                ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n')
        f.write(ET.tostring(root, encoding="unicode"))
    return path


def test_shipped_bus_policy():
    ids = shipped_users()
    sock_dir = tmpdir("system-bus-socket")
    bus = PrivateBus(config_file=system_bus_config(os.path.join(sock_dir, "system_bus_socket")))

    # Name ownership: the service user and root may own the name, nobody else. (RequestName is asked of
    # the bus itself; the reply code 1 is "primary owner".)
    def request_name(uid):
        argv = ["dbus-send", f"--bus={bus.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", f"string:{BUS_NAME}", "uint32:0"]
        if uid != 0:
            argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + argv
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)
    for uid in (0, ids["mc-control"]):
        p = request_name(uid)
        check(p.returncode == 0 and "uint32 1" in p.stdout, f"uid {uid} may not own {BUS_NAME}: {p.stdout}{p.stderr}")
    p = request_name(NOBODY)
    check(p.returncode != 0 and "org.freedesktop.DBus.Error.AccessDenied" in p.stderr,
          f"nobody could own {BUS_NAME}: {p.stdout}{p.stderr}")

    pg = Postgres().start()
    c = Control(pg, bus=bus).start()  # as root, as the policy lets it
    bus.wait_name(BUS_NAME, timeout=TIMEOUT)
    (tid,) = call(bus, "PushTask", "s", json.dumps(SAMPLE_TASK))
    check(c.task(tid)["status"] == "queued", "root's push")

    def busctl_as(uid, *args, groups=None):
        argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}"] + \
               ([f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]) + \
               ["busctl", f"--address={bus.address}"] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    # Anyone may introspect and read the properties...
    p = busctl_as(NOBODY, "introspect", BUS_NAME, BUS_PATH)
    check(p.returncode == 0 and ".PushTask" in p.stdout and ".TasksQueued" in p.stdout,
          f"introspect as nobody: {p.returncode} {p.stdout}{p.stderr}")
    p = busctl_as(NOBODY, "get-property", BUS_NAME, BUS_PATH, BUS_IFACE, "Version", "TasksQueued")
    check(p.returncode == 0 and p.stdout.startswith("s "), f"get-property as nobody: {p.stdout}{p.stderr}")
    ok, text = dbus_send(bus.address, "GetAll", f"string:{BUS_IFACE}", as_user=NOBODY,
                         interface="org.freedesktop.DBus.Properties")
    check(ok and "TasksQueued" in text, f"GetAll as nobody: {text}")
    # ...but not call the methods: the bus refuses before mc-control sees the call.
    expect_error(dbus_send(bus.address, "PushTask", "string:" + json.dumps(SAMPLE_TASK), as_user=NOBODY),
                 "org.freedesktop.DBus.Error.AccessDenied")
    for method, args in (("GetTask", [f"string:{tid}"]), ("ListTasks", ["string:", "uint32:10"]),
                         ("CancelTask", [f"string:{tid}"])):
        expect_error(dbus_send(bus.address, method, *args, as_user=NOBODY), "org.freedesktop.DBus.Error.AccessDenied")
    expect_error(dbus_send(bus.address, "Set", f"string:{BUS_IFACE}", "string:TasksQueued", "variant:uint32:7",
                           as_user=NOBODY, interface="org.freedesktop.DBus.Properties"),
                 "org.freedesktop.DBus.Error.AccessDenied")
    p = busctl_as(NOBODY, "call", BUS_NAME, BUS_PATH, BUS_IFACE, "PushTask", "s", json.dumps(SAMPLE_TASK))
    check(p.returncode != 0, f"busctl PushTask as nobody succeeded: {p.stdout}")
    check(c.task(tid)["status"] == "queued", "nobody's cancel went through")

    # A member of the group "mc" may use the methods (the policy lets the call through, and mc-control's
    # own check, BUS_GROUP=mc by default, accepts it).
    ok, text = dbus_send(bus.address, "PushTask", "string:" + json.dumps(dict(SAMPLE_TASK, id="from-mc-group")),
                         as_user=NOBODY, groups=[ids["mc"]])
    check(ok and '"from-mc-group"' in text, f"PushTask as a member of mc: {text}")
    ok, text = dbus_send(bus.address, "GetTask", "string:from-mc-group", as_user=NOBODY, groups=[ids["mc"]])
    check(ok and "from-mc-group" in text, f"GetTask as a member of mc: {text}")
    check(c.stop() == 0, "exit status")

    # mc-control checks too: with BUS_GROUP naming another group, the same caller passes the bus
    # policy and is refused by the daemon.
    c2 = Control(pg, bus=bus, env={"MC_BUS_GROUP": "mc-control"}, name="mc-control-other-group").start()
    bus.wait_name(BUS_NAME, timeout=TIMEOUT)
    expect_error(dbus_send(bus.address, "PushTask", "string:" + json.dumps(SAMPLE_TASK), as_user=NOBODY,
                           groups=[ids["mc"]]),
                 "org.freedesktop.DBus.Error.AccessDenied", '"mc-control"')
    expect_error(dbus_send(bus.address, "CancelTask", "string:from-mc-group", as_user=NOBODY, groups=[ids["mc"]]),
                 "org.freedesktop.DBus.Error.AccessDenied")
    check(c2.task("from-mc-group")["status"] == "queued", "the refused cancel went through")
    check(c2.stop() == 0, "exit status")


# ---------------------------------------------------------------------------------------------------
# 3 and 7. The generated units in a real systemd --user manager

class ControlUnits:
    """A systemd --user manager (mctest.SystemdNamespace, with its private journald) that loads
    build/units/test/ as they are, plus the drop-ins of write_dropins(); a PostgreSQL on loopback TCP and
    a tokens file for them."""

    _run_is_mount = False

    def __init__(self):
        shipped_users()
        # What PID 1 sets up at boot and this container lacks. /run must be a mount point: where it is not,
        # systemd puts a fresh tmpfs over it in each sandboxed service, hiding the journal's socket.
        if not ControlUnits._run_is_mount:
            subprocess.run(["mount", "--rbind", "/run", "/run"], check=True)
            ControlUnits._run_is_mount = True
        self.pg_port = free_port()
        # TCP, not the usual socket in a directory under /tmp: PrivateTmp=yes hides that from the service.
        self.pg = Postgres(port=self.pg_port, settings={"listen_addresses": "127.0.0.1"}).start()
        self.tokens = write_tokens(["node-a", "node-b"])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # In a user manager StateDirectory= is under $XDG_CONFIG_HOME, and that is where the drop-ins go.
        self.config_home = tmpdir("xdg-config")
        saved = os.environ.get("XDG_CONFIG_HOME")
        os.environ["XDG_CONFIG_HOME"] = self.config_home
        try:
            self.ns = SystemdNamespace(unit_dir=unit_dir(), timeout=TIMEOUT)
        finally:
            if saved is None:
                del os.environ["XDG_CONFIG_HOME"]
            else:
                os.environ["XDG_CONFIG_HOME"] = saved
        mctest.make_inaccessible_nodes()
        # The runtime directory as a shared mount (as / is on a booted system; this process made
        # everything private): the service's mount namespace is set up from it, and without it the
        # service never starts (the first connection is reset). LoadCredential='s ramfs, which a drop-in
        # may add, reaches the manager the same way.
        rt = self.ns.runtime_dir
        subprocess.run(["mount", "--bind", rt, rt], check=True)
        defer(self._cleanup)
        subprocess.run(["mount", "--make-shared", rt], check=True)
        self.write_dropins()
        self.ns.daemon_reload()

    def write_dropins(self):
        user_dir = os.path.join(self.config_home, "systemd", "user")
        os.makedirs(os.path.join(user_dir, "mc-control.socket.d"))
        os.makedirs(os.path.join(user_dir, "mc-control.service.d"))
        with open(os.path.join(user_dir, "mc-control.socket.d", "50-test.conf"), "w") as f:
            f.write("# The shipped socket listens on port 8080 of every address; this test's port instead.\n"
                    f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{self.port}\n")
        with open(os.path.join(user_dir, "mc-control.service.d", "50-test.conf"), "w") as f:
            f.write(f"""[Service]
# Site configuration, what /etc/mc/control.conf and /etc/mc/tokens hold on a real host.
Environment="MC_DB_DSN=host=127.0.0.1 port={self.pg_port} user=postgres dbname=postgres"
Environment=MC_TOKENS_FILE={self.tokens}
# The service reads the tokens file itself (as the shipped unit reads /etc/mc/tokens), and PrivateTmp=
# hides this test's temporary directories.
BindReadOnlyPaths={os.path.dirname(self.tokens)}

# What a user manager cannot do. Its notify socket is $XDG_RUNTIME_DIR/systemd/notify, owned by the
# manager's user with mode 0755 in a directory of mode 0700, where a system manager has
# /run/systemd/notify open to all: a service running as another user (User=mc-control) can never send
# READY=1, and Type=notify never finishes starting. So the service runs as the manager's user (root).
User=
Group=
# The runtime directory is also hidden by the service's sandbox (PrivateTmp=yes here, where it is
# under /tmp; ProtectHome=yes under /run/user), which a system manager's /run/systemd/notify is not.
# Only the socket is let through; every sandboxing setting of the unit stays as shipped.
BindReadOnlyPaths={self.ns.runtime_dir}/systemd/notify
# Not for a user manager but for where the tree was checked out: the build-tree binary that ExecStart=
# names is hidden as well when the checkout lies under /tmp (PrivateTmp=) or a home (ProtectHome=), as
# a CI clone may. An installed binary under /usr needs none of this.
BindReadOnlyPaths={mctest.build_dir()}
""")
            if asan_build():
                f.write("""
# Not for a user manager but for the sanitizer build: LeakSanitizer stops the process with ptrace() at
# exit to look for leaks, which SystemCallFilter=@system-service does not allow, and the service then
# hangs until TimeoutStopSec= ends it with SIGKILL. (Added to the unit's allow-list, not replacing it.)
SystemCallFilter=ptrace
""")

    def _cleanup(self):
        self.ns.stop()  # first: its units may still hold mounts under the runtime directory
        subprocess.run(["umount", "-R", "-l", self.ns.runtime_dir], check=True)

    def show(self, unit, *props):
        out = self.ns.systemctl("show", unit, "-p", ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def unit_log(self, unit="mc-control.service"):
        lines = [f"{e.get('_PID', '?')}: {e.get('MESSAGE')}" for e in self.ns.journal(unit=unit)]
        manager = [e.get("MESSAGE") for e in self.ns.journal("USER_UNIT=" + unit)]
        return "--- journal of the unit:\n" + "\n".join(lines[-60:]) + \
               "\n--- the manager about it:\n" + "\n".join(str(m) for m in manager[-30:])

    def start(self):
        """Starts the socket; the first request then starts the service. Returns the first answer."""
        self.ns.systemctl("start", "mc-control.socket")
        s = self.show("mc-control.service", "ActiveState")
        check(s["ActiveState"] == "inactive", f"mc-control.service started before any connection: {s}")
        try:
            return http("GET", self.url + "/api/health", timeout=TIMEOUT)
        except OSError as e:
            raise AssertionError(f"first request: {e}\n{self.unit_log()}")

    def wait_running(self):
        def running():
            s = self.show("mc-control.service", "ActiveState", "SubState", "Result")
            if s["ActiveState"] == "failed":
                raise AssertionError(f"mc-control.service failed: {s}\n{self.unit_log()}")
            return s["SubState"] == "running"
        try:
            wait_until(running, TIMEOUT, msg="mc-control.service to be running (READY=1)")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.unit_log()}")
        wait_until(lambda: http("GET", self.url + "/api/health").status == 200, TIMEOUT,
                   msg="the service to reach its database")

    def push(self, body):
        r = http("POST", self.url + "/api/tasks", body, token=USER_TOKEN, timeout=TIMEOUT)
        check(r.status == 201, f"push: {r.status} {r.text}\n{self.unit_log()}")
        return r.json()["id"]

    def check_no_sanitizer_reports(self):
        bad = sanitizer_lines("\n".join(str(e.get("MESSAGE")) for e in self.ns.journal(unit="mc-control.service")))
        check(not bad, "sanitizer report in the service's journal:\n" + "\n".join(bad) + "\n" + self.unit_log())

    def stop(self):
        """systemctl stop, then checks that it stopped by itself after SIGTERM with exit status 0."""
        pid = self.show("mc-control.service", "MainPID")["MainPID"]
        self.ns.systemctl("stop", "mc-control.service", timeout=TIMEOUT)
        s = self.show("mc-control.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus",
                      "ExecMainPID")
        # ExecMainCode 1 is CLD_EXITED: it exited, and was not killed (SIGKILL after TimeoutStopSec=
        # would make Result=timeout).
        check(s == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0",
                    "ExecMainPID": pid}, f"after systemctl stop: {s}\n{self.unit_log()}")
        # Its graceful path (the exact wording of that message is not the test's business).
        wait_until(lambda: [e for e in self.ns.journal(f"_PID={pid}", unit="mc-control.service")
                            if str(e.get("MESSAGE", "")).startswith("Stopping")],
                   TIMEOUT, msg=f"mc-control ({pid}) to log that it is stopping")
        self.check_no_sanitizer_reports()


def test_units_in_user_manager():
    u = ControlUnits()
    s = u.show("mc-control.service", "FragmentPath", "DropInPaths", "Type", "User", "NotifyAccess")
    check(s["FragmentPath"] == os.path.join(unit_dir(), "mc-control.service"), f"loaded from elsewhere: {s}")
    check(s["Type"] == "notify" and s["NotifyAccess"] == "main", s)
    s = u.show("mc-control.socket", "FragmentPath", "Listen")
    check(s["FragmentPath"] == os.path.join(unit_dir(), "mc-control.socket"), s)
    check(s["Listen"] == f"127.0.0.1:{u.port} (Stream)", f"socket listens on {s['Listen']}")

    # The first connection starts the Type=notify service, which answers it.
    r = u.start()
    check(r.status in (200, 503) and r.json().get("version"), f"first request: {r.status} {r.text}")
    u.wait_running()
    tid = u.push(SAMPLE_TASK)
    r = http("GET", f"{u.url}/api/tasks/{tid}", token=USER_TOKEN)
    check(r.status == 200 and r.json()["status"] == "queued", f"GET {tid}: {r.status} {r.text}")

    s = u.show("mc-control.service", "ActiveState", "SubState", "StatusText", "WatchdogUSec", "MainPID",
               "NRestarts", "TriggeredBy", "WatchdogTimestampMonotonic")
    check(s["ActiveState"] == "active" and s["SubState"] == "running", s)
    check(serving(s["StatusText"]), f"STATUS= did not reach the manager: {s}")
    check(s["WatchdogUSec"] == "30s", f"watchdog: {s}")
    check(s["NRestarts"] == "0" and s["TriggeredBy"] == "mc-control.socket", s)
    pid = int(s["MainPID"])
    check(pid > 0, s)

    # The sandbox of the unit is in force on the process.
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    check(status["NoNewPrivs"].strip() == "1", "NoNewPrivileges= not applied")
    check(status["Seccomp"].strip() == "2", "SystemCallFilter= not applied")
    check(int(status["CapBnd"].strip(), 16) == 0, f"CapabilityBoundingSet= not applied: {status['CapBnd']}")
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = f.read()
    check(re.search(r" / / ro[ ,]", mounts), "ProtectSystem=strict: / is not read-only")
    # The service read the tokens file named by MC_TOKENS_FILE (the push above was authorised).
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(kv.split("=", 1) for kv in f.read().decode().split("\0") if "=" in kv)
    check(env.get("MC_TOKENS_FILE") == u.tokens, f"MC_TOKENS_FILE={env.get('MC_TOKENS_FILE')}")

    # The manager hears the watchdog pings (sd-event pings once a quarter of WatchdogSec= has passed,
    # when its loop wakes up, which it does often: 7.5 s here).
    first = int(s["WatchdogTimestampMonotonic"])
    wait_until(lambda: int(u.show("mc-control.service", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]) > first,
               TIMEOUT, msg="a WATCHDOG=1 ping to reach the manager")

    u.stop()
    # The socket stays, and the next connection starts the service again.
    check(u.show("mc-control.socket", "ActiveState")["ActiveState"] == "active", "the socket went with the service")
    r = http("GET", f"{u.url}/api/tasks/{tid}", token=USER_TOKEN, timeout=TIMEOUT)
    check(r.status in (200, 503), f"after re-activation: {r.status} {r.text}")
    u.wait_running()
    r = http("GET", f"{u.url}/api/tasks/{tid}", token=USER_TOKEN)
    check(r.status == 200 and r.json()["id"] == tid, f"the task after a restart: {r.status} {r.text}")
    check(int(u.show("mc-control.service", "MainPID")["MainPID"]) != pid, "the same process again")
    u.stop()
    u.ns.systemctl("stop", "mc-control.socket")
    with socket.socket() as s:
        check(s.connect_ex(("127.0.0.1", u.port)) != 0, "the port still listens after the socket was stopped")


def test_journal_fields():
    u = ControlUnits()
    u.start()
    u.wait_running()
    targeted = u.push(SAMPLE_TASK)   # labels.target_node = node-b
    untargeted = u.push({"image": "busybox", "cmd": ["true"]})
    pid = u.show("mc-control.service", "MainPID")["MainPID"]

    (e,) = u.ns.wait_journal(MC_EVENT="task_queued", TASK_ID=targeted, unit="mc-control.service", timeout=TIMEOUT)
    check(e.get("NODE_ID") == "node-b", f"targeted task's entry without NODE_ID=node-b: {e}")
    check(e.get("PRIORITY") == "6", f"PRIORITY: {e.get('PRIORITY')}")
    check(e.get("SYSLOG_IDENTIFIER") == "mc-control" and e.get("_PID") == pid, f"not from mc-control ({pid}): {e}")
    check(e.get("_SYSTEMD_USER_UNIT") == "mc-control.service", e)
    check(targeted in e.get("MESSAGE", "") and "queued" in e["MESSAGE"], f"MESSAGE: {e.get('MESSAGE')}")
    check(e.get("MC_STATUS") == "queued" and e.get("ATTEMPT") == "0", e)
    check(e.get("CODE_FILE") and e.get("CODE_FUNC"), f"not a native journal entry: {e}")

    (e,) = u.ns.wait_journal(MC_EVENT="task_queued", TASK_ID=untargeted, unit="mc-control.service", timeout=TIMEOUT)
    check("NODE_ID" not in e, f"untargeted task's entry has NODE_ID: {e}")
    check(untargeted in e.get("MESSAGE", "") and e.get("PRIORITY") == "6", e)

    # A cancel is an event too.
    r = http("POST", f"{u.url}/api/tasks/{untargeted}/cancel", token=USER_TOKEN)
    check(r.status == 200, f"cancel: {r.status} {r.text}")
    (e,) = u.ns.wait_journal(TASK_ID=untargeted, MC_STATUS="cancelled", unit="mc-control.service", timeout=TIMEOUT)
    check(e.get("MC_EVENT") == "task_finished" and e.get("PRIORITY") == "6", e)

    # ExecReload= (systemctl reload) is SIGHUP: the same process re-reads its tokens and says so, and
    # a token added to the file since the start works (the file, not a copy made at the start).
    carol = "carol-token-" + "7" * 24
    r = http("GET", f"{u.url}/api/tasks/{targeted}", token=carol)
    check(r.status == 401, f"an unknown token before the reload: {r.status} {r.text}")
    with open(u.tokens, "a") as f:
        f.write(f"user carol {carol}\n")
    u.ns.systemctl("reload", "mc-control.service")
    (e,) = u.ns.wait_journal(MC_EVENT="credentials_reloaded", unit="mc-control.service", timeout=TIMEOUT)
    check(e.get("_PID") == pid and e.get("PRIORITY") == "6" and e.get("TOKENS") == "5" and e.get("TLS") == "no", e)
    check(u.show("mc-control.service", "MainPID")["MainPID"] == pid, "reload restarted the service")
    for token in (USER_TOKEN, carol):
        r = http("GET", f"{u.url}/api/tasks/{targeted}", token=token)
        check(r.status == 200, f"after the reload: {r.status} {r.text}")

    # Everything mc-control logs goes to the journal natively: no line came through stderr.
    stream = [x for x in u.ns.journal(unit="mc-control.service", _TRANSPORT="stdout")]
    check(stream == [], "lines on stdout/stderr instead of the journal:\n" + "\n".join(str(x.get("MESSAGE")) for x in stream))
    u.stop()


def test_watchdog_restarts_a_control_that_cannot_accept():
    # The watchdog is pinged only while the control's socket accepts connections (http-server.h). Left
    # without a descriptor (its RLIMIT_NOFILE lowered under those it holds, from outside), its event
    # loop runs on but it can accept no one: the manager must see the pings stop and restart it, and
    # the new process serves on the same socket.
    import resource
    u = ControlUnits()
    dropin = os.path.join(u.config_home, "systemd", "user", "mc-control.service.d", "60-watchdog.conf")
    with open(dropin, "w") as f:
        f.write("[Service]\n# Short, for the test: 30 s as shipped.\nWatchdogSec=4s\n")
    u.ns.daemon_reload()
    u.start()
    u.wait_running()
    s = u.show("mc-control.service", "MainPID", "NRestarts", "WatchdogUSec")
    check(s["WatchdogUSec"] == "4s" and s["NRestarts"] == "0", s)
    pid = int(s["MainPID"])

    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = next(n for n in range(len(used) + 1) if n not in used)
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))

    wait_until(lambda: u.show("mc-control.service", "NRestarts")["NRestarts"] != "0", TIMEOUT,
               msg=f"the manager to restart mc-control ({pid})\n{u.unit_log()}")
    (e, *_) = u.ns.wait_journal(MC_EVENT="http_not_serving", unit="mc-control.service", timeout=TIMEOUT)
    check(e.get("_PID") == str(pid) and e.get("HTTP_PROBE_ERROR"), f"http_not_serving: {e}")
    u.wait_running()
    check(int(u.show("mc-control.service", "MainPID")["MainPID"]) != pid, "the same process again")
    tid = u.push(SAMPLE_TASK)
    check(tid, "push after the restart")
    u.ns.systemctl("stop", "mc-control.service", timeout=TIMEOUT)


mctest.main()
