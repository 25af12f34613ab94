# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for the mc-control tests: a control (or several) on a private PostgreSQL with a tokens
file, and a scripted agent that speaks the agent side of the API over HTTP."""

import hashlib
import http.client as httpclient
import os
import socket
import threading

import mctest
from mctest import Daemon, Postgres, check, free_port, http, tmpdir, wait_until

USER_TOKEN = "user-token-0123456789abcdef"
OTHER_USER_TOKEN = "user-token-bob-0123456789"


def agent_token(node):
    return f"agent-token-{node}-0123456789"


def write_tokens(nodes):
    d = tmpdir("tokens")
    path = os.path.join(d, "tokens")
    with open(path, "w") as f:
        f.write("# kind name token\n")
        f.write(f"user alice {USER_TOKEN}\n")
        f.write(f"user bob {OTHER_USER_TOKEN}\n")
        for n in nodes:
            f.write(f"agent {n} {agent_token(n)}\n")
    os.chmod(path, 0o600)
    return path


class Control:
    """mc-control on pg, listening on its own port."""

    def __init__(self, pg, nodes=("node-a", "node-b"), args=(), env=None, tokens=None, name=None, bus=None,
                 lease_ttl_ms=15000):
        self.pg = pg
        self.bus = bus          # a PrivateBus, or None: --no-bus
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens = tokens or write_tokens(nodes)
        # The tests were written for a 15 s TTL (the default until it became 5 s): generous on a
        # loaded machine for tests about something else. Tests of leases set theirs; None: the
        # control's own default.
        e = {"MC_DB_DSN": pg.dsn}
        if lease_ttl_ms is not None:
            e["MC_LEASE_TTL_MS"] = str(lease_ttl_ms)
        if bus is not None:
            e.update(bus.env())
        e.update(env or {})
        bus_args = [] if bus is not None else ["--no-bus"]
        self.daemon = Daemon("mc-control", ["--port", self.port, "--tokens-file", self.tokens,
                                            "--listen-address", "127.0.0.1"] + bus_args + list(args),
                             env=e, name=name)

    def start(self):
        self.daemon.start()
        self.daemon.wait_ready()
        mctest.wait_until(lambda: http("GET", self.url + "/api/health").status == 200, msg="control healthy")
        return self

    def stop(self):
        return self.daemon.stop()

    def kill(self):
        self.daemon.kill()

    def restart(self):
        self.daemon.kill()
        self.daemon.start()
        self.daemon.wait_ready()
        return self

    # user side
    def push(self, body, token=USER_TOKEN, **kw):
        return http("POST", self.url + "/api/tasks/push", body, token=token, **kw)

    def get(self, task_id, token=USER_TOKEN):
        return http("GET", f"{self.url}/api/tasks/{task_id}", token=token)

    def task(self, task_id):
        r = self.get(task_id)
        check(r.status == 200, f"GET task {task_id}: {r.status} {r.text}")
        return r.json()

    def list(self, query="", token=USER_TOKEN):
        return http("GET", f"{self.url}/api/tasks{query}", token=token)

    def cancel(self, task_id, token=USER_TOKEN):
        return http("POST", f"{self.url}/api/tasks/{task_id}/cancel", token=token)

    def put_content(self, content_id, torrent, token=USER_TOKEN):
        return http("PUT", f"{self.url}/api/contents/{content_id}", torrent, token=token,
                    headers={"Content-Type": "application/x-bittorrent"})

    def add_content(self, data=b""):
        """Registers the content of data (at most 16 KiB); returns its id."""
        content_id, torrent = small_content(data)
        r = self.put_content(content_id, torrent)
        check(r.status in (200, 201), f"PUT content {content_id}: {r.status} {r.text}")
        return content_id

    def agent(self, node, **kw):
        return ScriptedAgent(self, node, **kw)


class ScriptedAgent:
    """Acts as an agent over HTTP, one call at a time, as the test tells it."""

    def __init__(self, control, node, nano_cpus=4_000_000_000, memory_bytes=8 << 30, token=None):
        self.control = control
        self.node = node
        self.token = token or agent_token(node)
        self.nano_cpus = nano_cpus
        self.memory_bytes = memory_bytes

    def call(self, path, body, timeout=60):
        return http("POST", self.control.url + path, body, token=self.token, timeout=timeout)

    def register(self):
        r = self.call("/api/agents/register", {"node_id": self.node, "capacity": {
            "nano_cpus": self.nano_cpus, "memory_bytes": self.memory_bytes}, "runtime": "runc", "driver": "docker"})
        check(r.status == 200, f"register {self.node}: {r.status} {r.text}")
        return r.json()

    def claim(self, wait_ms=0, timeout=60):
        return self.call("/api/agents/claim", {"node_id": self.node, "wait_ms": wait_ms}, timeout=timeout)

    def claim_task(self, wait_ms=0):
        """Claims; returns (task record, lease token) or None when nothing was there."""
        r = self.claim(wait_ms)
        check(r.status in (200, 204), f"claim {self.node}: {r.status} {r.text}")
        if r.status == 204:
            return None
        j = r.json()
        return j["task"], j["lease_token"]

    def heartbeat(self, leases, draining=False):
        r = self.call("/api/agents/heartbeat", {"node_id": self.node, "draining": draining,
                                                "leases": [{"task_id": t, "lease_token": k} for t, k in leases]})
        check(r.status == 200, f"heartbeat {self.node}: {r.status} {r.text}")
        return r.json()

    def started(self, task_id, token, **extra):
        body = {"node_id": self.node, "lease_token": token}
        body.update(extra)
        return self.call(f"/api/tasks/{task_id}/started", body)

    def release(self, task_id, token, code="inputs_unavailable", **extra):
        body = {"node_id": self.node, "lease_token": token, "code": code}
        body.update(extra)
        return self.call(f"/api/tasks/{task_id}/release", body)

    def finish(self, task_id, token, status="succeeded", exit_code=0, **extra):
        body = {"node_id": self.node, "lease_token": token, "status": status, "exit_code": exit_code}
        body.update(extra)
        return self.call(f"/api/tasks/{task_id}/finish", body)


SAMPLE_TASK = {
    "image": "alpine:3.20",
    "cmd": ["sh", "-c", "echo hi-from-A && sleep 2 && uname -a"],
    "timeout_sec": 60,
    "labels": {"job": "demo", "target_node": "node-b"},
    "resources": {"nano_cpus": 500000000, "memory_bytes": 268435456},
}


def bencode(x):
    """Bencoding of ints, str/bytes, lists and dicts (keys sorted, as BitTorrent wants)."""
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(v) for v in x) + b"e"
    items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"


def small_content(data=b""):
    """The canonical manifest (src/torrent/manifest.h) of a file of at most 16 KiB, without a
    BitTorrent library: such a file is one block, whose SHA-256 is its pieces root (the empty file
    has none), and has no piece layer. Returns (content id, .torrent)."""
    assert len(data) <= 16384
    entry = {"length": len(data)}
    if data:
        entry["pieces root"] = hashlib.sha256(data).digest()
    name = entry["pieces root"].hex() if data else "00" * 32
    info = bencode({"file tree": {name: {"": entry}}, "meta version": 2, "name": name, "piece length": 16384})
    return hashlib.sha256(info).hexdigest(), b"d4:info" + info + b"12:piece layersdee"


def udp_port():
    return free_port(socket.SOCK_DGRAM)


def start_bootstrap():
    """A DHT node (mc-dhtget serve) on loopback for the others to bootstrap from: "127.0.0.1:PORT"."""
    port = udp_port()
    d = Daemon("mc-dhtget", ["serve", "--port", port, "--bind", "127.0.0.1", "-4"], name="dht-bootstrap").start()
    d.wait_ready()
    return f"127.0.0.1:{port}"


def metric(control, name):
    """The value of a series of the control's /metrics (mctest.metric_at()), or None."""
    return mctest.metric_at(control.url + "/metrics", name)


def input_bytes_metrics(control):
    """The control's mc_input_bytes_total by source, {"agents": n, "cache": n, "seeders": n}: exactly
    those three series."""
    prefix, suffix = 'mc_input_bytes_total{source="', '"}'
    found = {k[len(prefix):-len(suffix)]: v for k, v in mctest.metrics_at(control.url + "/metrics").items()
             if k.startswith(prefix) and k.endswith(suffix)}
    check(sorted(found) == ["agents", "cache", "seeders"], f"mc_input_bytes_total series: {found}")
    return found


class Transaction:
    """A psql session holding a transaction open, to keep the locks its statements took while the test
    makes the control wait on them. The statements end with one that prints the line `ready`; the
    constructor returns once it has. commit() ends it; the test's end kills it if the test did not."""

    def __init__(self, pg, statements, ready="locked"):
        import subprocess
        self.proc = subprocess.Popen([os.path.join(pg.bindir, "psql"), "-X", "-q", "-At", "-h", pg.dir, "-p",
                                      str(pg.port), "-U", "postgres", "-d", "postgres"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        mctest.defer(lambda: self.proc.poll() is None and self.proc.kill())
        self.proc.stdin.write(f"BEGIN; {statements}\n")
        self.proc.stdin.flush()
        # (Statements before the last may print empty lines.)
        check(any(self.proc.stdout.readline().strip() == ready for _ in range(5)), f"the transaction: {statements}")

    def commit(self):
        self.proc.stdin.write("COMMIT;\n")
        self.proc.stdin.close()
        self.proc.wait(60)


def post_and_leave_open(control, path, node, body):
    """Sends an agent's POST by hand and returns the socket without reading the answer: the test closes
    it to play an agent that gave up waiting."""
    import json
    import urllib.parse
    u = urllib.parse.urlsplit(control.url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {agent_token(node)}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def start_cluster(nodes=("node-a", "node-b"), args=(), env=None, replicas=1, bus=None, pg_env=None):
    pg = Postgres(env=pg_env).start()
    tokens = write_tokens(nodes)
    controls = [Control(pg, nodes, args=args, env=env, tokens=tokens, name=f"mc-control-{i}", bus=bus).start()
                for i in range(replicas)]
    return pg, controls


def task_count(pg, where="true"):
    return int(pg.psql(f"SELECT count(*) FROM tasks WHERE {where}")[0][0])


class Events:
    """GET /api/events, its lines read on a thread as they come."""

    def __init__(self, c):
        self.conn = httpclient.HTTPConnection("127.0.0.1", c.port, timeout=120)
        self.conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {USER_TOKEN}"})
        self.resp = self.conn.getresponse()
        self.lines = []
        if self.resp.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while line := self.resp.readline():
                self.lines.append(line.decode())
        except (OSError, AttributeError, ValueError):
            pass


def awaits_held(pg, kinds=("queued", "events"), idle=False):
    """How many of the locks that ask for announcements (awaits.h: mc_await_key(kind) for kind in
    kinds) the controls' listening connections hold; with idle, only those of a connection that is
    idle, so that its mc_await() is done."""
    keys = ", ".join(f"mc_await_key('{k}')" for k in kinds)
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                       "WHERE a.application_name = 'mc-control-listener' AND l.locktype = 'advisory' AND l.granted "
                       f"AND l.mode = 'ShareLock' AND (l.classid::bigint << 32 | l.objid::bigint) IN ({keys})"
                       + (" AND a.state = 'idle'" if idle else ""))[0][0])


def wait_awaiting(pg, kind, timeout=60):
    """Waits until a control's listening connection holds the lock for kind ("queued" or "events")
    and is idle, so mc_await() is done."""
    wait_until(lambda: awaits_held(pg, (kind,), idle=True) == 1, timeout,
               msg=f"the listening connection to hold the lock for {kind}")


def blocked_await(pg, kinds="%"):
    """The query_start of the listening connection's mc_await() (its argument LIKE kinds) while it
    waits for a lock (a transaction that changed a task still open), or None."""
    rows = pg.psql("SELECT query_start FROM pg_stat_activity WHERE application_name = 'mc-control-listener' "
                   f"AND wait_event_type = 'Lock' AND query LIKE 'SELECT mc_await(''{kinds}'')'")
    return rows[0][0] if rows else None
