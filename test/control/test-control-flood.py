#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-control under a connection flood (docs/api.md, "Connections: caps and deadlines"): 10 000 connections that each sent half a
request header and then nothing or a byte a second, kept open by a flooder that reopens every one the
control closes; first from one address, then spread over 2 500 loopback addresses. Meanwhile a client
pushes tasks one after another from its own address.

The contract: every push is answered 201 while the flood goes on; the control's descriptors stay
under its cap; once the flooder is gone they come back to what they were before (within 60 s), and
/api/health answers. The refusals, evictions and deadlines show as http_limit and http_timeout events.
The push latencies (p50, p99) are printed; bench/control/flood compares them with a quiet control.

And the watchdog: the control pings it only while its socket accepts connections. With no descriptor
left (its RLIMIT_NOFILE lowered under the ones it holds, from outside) it cannot accept anyone, its
event loop still running: the pings stop, http_not_serving says why, and they resume once it can."""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import mctest
from mctest import check, http
from controltest import SAMPLE_TASK, USER_TOKEN, start_cluster, write_tokens
from mctest import Daemon, Postgres, free_port

CONNECTIONS = 10000
MAX_CONNECTIONS = 2000          # the global cap, small enough for the eviction to work hard
PER_ADDRESS = 64                # the default
FLOOD_SECONDS = 8
TIMEOUT = 120


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    check(hard >= n, f"this test needs RLIMIT_NOFILE of {n} at least (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Pusher:
    """Pushes tasks one after another (a new connection each) until stopped; keeps every answer."""

    def __init__(self, control):
        self.control = control
        self.results = []       # (seconds, status or exception text)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            t = time.monotonic()
            try:
                status = self.control.push(dict(SAMPLE_TASK, labels={"job": "flood", "n": str(n)}), timeout=60).status
            except Exception as e:  # noqa: BLE001 (every failure counts, whatever it is)
                status = repr(e)
            self.results.append((time.monotonic() - t, status))

    def mark(self):
        return len(self.results)

    def since(self, mark):
        return self.results[mark:]


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))] if v else float("nan")


def flood(control, sources, mode):
    """Runs the flooder for FLOOD_SECONDS; returns its counts and the control's largest fd count."""
    script = os.path.join(mctest.source_dir(), "test", "lib", "tcp-flood.py")
    p = subprocess.Popen([sys.executable, script, "--port", str(control.port), "--sources", sources,
                          "--connections", str(CONNECTIONS), "--mode", mode],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    mctest.defer(p.kill)
    line = p.stdout.readline()
    check(line.strip() == "ready", f"flooder: {line!r}")
    peak = 0
    end = time.monotonic() + FLOOD_SECONDS
    while time.monotonic() < end:
        peak = max(peak, fd_count(control.daemon.pid))
        time.sleep(0.2)
    out, _ = p.communicate("stop\n", timeout=TIMEOUT)
    return json.loads(out.strip().splitlines()[-1]), peak


def check_pushes(results, what):
    failed = [(round(t, 3), s) for t, s in results if s != 201]
    check(len(results) >= 5, f"{what}: only {len(results)} pushes")
    check(not failed, f"{what}: {len(failed)} of {len(results)} pushes failed: {failed[:10]}")
    lat = [t for t, _ in results]
    print(f"{what}: {len(results)} pushes, all 201; latency p50 {percentile(lat, 50) * 1000:.1f} ms, "
          f"p99 {percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms", flush=True)


def wait_recovered(control, baseline, what):
    pid = control.daemon.pid
    mctest.wait_until(lambda: fd_count(pid) <= baseline, TIMEOUT,
                      msg=f"{what}: the control's descriptors back to {baseline} (now {fd_count(pid)})")
    r = http("GET", control.url + "/api/health", timeout=10)
    check(r.status == 200, f"{what}: health {r.status} {r.text}")


def events(control, name):
    return events_of(control.daemon, name)


def events_of(daemon, name):
    """A daemon's console entries of event name, as dicts of their FIELD=value pairs."""
    out = []
    for line in daemon.log_text().splitlines():
        if f" MC_EVENT={name} " not in line:
            continue
        fields = {}
        for word in line.split(" MC_EVENT=", 1)[1].split(" "):
            k, _, v = word.partition("=")
            fields[k] = v
        out.append(fields)
    return out


def test_flood_from_one_address_then_many():
    raise_nofile(CONNECTIONS + MAX_CONNECTIONS + 1000)
    pg, (c,) = start_cluster(args=["--http-max-connections", MAX_CONNECTIONS,
                                   "--http-header-timeout-sec", 5])
    pusher = Pusher(c)
    pusher.thread.start()
    mctest.defer(pusher.stopping.set)
    mctest.wait_until(lambda: len(pusher.results) >= 20, TIMEOUT, msg="20 pushes before the flood")
    check_pushes(pusher.results, "quiet")
    baseline = fd_count(c.daemon.pid)

    # 1. One address: all but PER_ADDRESS of its connections are refused at once (429), again and again.
    m = pusher.mark()
    counts, peak = flood(c, "127.0.0.2", "mixed")
    print(f"one address: flooder {counts}, control's descriptors at most {peak}", flush=True)
    check_pushes(pusher.since(m), "flood from one address")
    check(peak <= baseline + PER_ADDRESS + 64 + 10, f"{peak} descriptors with {PER_ADDRESS} allowed per address")
    wait_recovered(c, baseline, "after the flood from one address")
    check(any(e.get("HTTP_LIMIT") == "per_address" for e in events(c, "http_limit")), "no per_address http_limit event")

    # 2. 2 500 addresses, 4 connections each: under the per-address cap, over the global one, where the
    # connections waiting longest for their request make room for new ones.
    m = pusher.mark()
    counts, peak = flood(c, "127.1.0.1/2500", "mixed")
    print(f"2500 addresses: flooder {counts}, control's descriptors at most {peak}", flush=True)
    check_pushes(pusher.since(m), "flood from 2500 addresses")
    check(peak <= baseline + MAX_CONNECTIONS + 64 + 64, f"{peak} descriptors with a cap of {MAX_CONNECTIONS}")
    wait_recovered(c, baseline, "after the flood from 2500 addresses")
    check(any(e.get("HTTP_LIMIT") == "global_evicted" for e in events(c, "http_limit")),
          "no global_evicted http_limit event")

    pusher.stopping.set()
    pusher.thread.join(TIMEOUT)
    check_pushes(pusher.since(m), "after the floods")

    # The counters in /metrics: the per-address refusals, the evictions, the header deadline (5 s,
    # shorter than a flood: the connections let in from the single address were cut by it).
    text = http("GET", c.url + "/metrics").text
    closed = {}
    for line in text.splitlines():
        if line.startswith("mc_http_connections_closed_total{reason=\""):
            reason = line.split('"')[1]
            closed[reason] = int(line.split()[-1])
    for reason in ("refused_per_address", "evicted", "header_timeout"):
        check(closed.get(reason, 0) > 0, f"mc_http_connections_closed_total{{reason={reason}}}: {closed}")
    check(f'mc_http_connections{{limit="global"}} {MAX_CONNECTIONS}' in text, "the global cap in /metrics")


def test_no_token_no_body():
    # A request that needs a token, without one, is answered 401 as soon as its headers are in: a
    # client cannot hold the connection by sending its body slowly (past the headers, the control no
    # longer closes it to make room). With a token, the same request waits for its body.
    pg, (c,) = start_cluster()
    head = (b"POST /api/tasks/push HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n")
    s = socket.create_connection(("127.0.0.1", c.port), timeout=TIMEOUT)
    mctest.defer(s.close)
    s.sendall(head + b"\r\n{\"image\":")
    answer = s.recv(4096)
    check(answer.startswith(b"HTTP/1.1 401 "), f"without a token: {answer[:200]!r}")

    t = socket.create_connection(("127.0.0.1", c.port), timeout=TIMEOUT)
    mctest.defer(t.close)
    t.sendall(head + f"Authorization: Bearer {USER_TOKEN}\r\n\r\n{{\"image\":".encode())
    t.settimeout(1)
    try:
        early = t.recv(4096)
    except socket.timeout:
        early = None
    check(early is None, f"with a token, answered before the body: {early!r}")


def pings(d):
    return sum(1 for m in d.notifications(since_start=True) if m.get("WATCHDOG") == "1")


def lowest_free_fd(pid):
    used = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    return next(n for n in range(len(used) + 1) if n not in used)


def test_watchdog_follows_accepting():
    pg = Postgres().start()
    port = free_port()
    d = Daemon("mc-control", ["--port", port, "--listen-address", "127.0.0.1", "--no-bus",
                              "--tokens-file", write_tokens(["node-a"])],
               env={"MC_DB_DSN": pg.dsn}, watchdog_usec=2_000_000).start()
    d.wait_ready(timeout=TIMEOUT)
    d.wait_notify("WATCHDOG", "1", count=3, timeout=TIMEOUT)
    soft, hard = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)

    # No descriptor to be had: the probe of the socket cannot even be made, nor a client accepted.
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (lowest_free_fd(d.pid), hard))
    mctest.wait_until(lambda: events_of(d, "http_not_serving"), TIMEOUT, msg="an http_not_serving event")
    # From here no round of probes can succeed: not a single ping more, for longer than the watchdog
    # interval (systemd would have restarted the control by then).
    before = pings(d)
    time.sleep(3)
    check(pings(d) == before, f"{pings(d) - before} watchdog pings while the control could not accept")
    check(d.running, "the control exited")

    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (soft, hard))
    mctest.wait_until(lambda: pings(d) >= before + 2, TIMEOUT, msg="watchdog pings again")
    r = http("GET", f"http://127.0.0.1:{port}/api/health", timeout=10)
    check(r.status == 200, f"health: {r.status} {r.text}")
    check(d.stop(timeout=TIMEOUT) == 0, "exit status")


def peer_connections(pid, address):
    """Established TCP connections of process pid whose peer is the IPv4 address."""
    inodes = mctest.socket_inodes(pid)
    peer = "".join(f"{int(b):02X}" for b in reversed(address.split(".")))
    n = 0
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2].split(":")[0] == peer and fields[3] == "01" and fields[9] in inodes:
                n += 1
    return n


def test_per_address_cap_as_large_as_the_global_one():
    """A per-address cap at least as large as the global cap (many agents behind one address) is no cap of
    its own: one address's idle connections filling the global cap make room for its next request (the
    one waiting longest is closed), instead of that address being refused with 429 by its own idle ones."""
    import socket
    pg, (c,) = start_cluster(args=["--http-max-connections", 40, "--http-header-timeout-sec", 600],
                             env={"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "100000"})
    u = urllib.parse.urlsplit(c.url)
    idle = []
    for _ in range(40):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect((u.hostname, u.port))
        idle.append(s)
    mctest.defer(lambda: [s.close() for s in idle])
    # Counted in the control's own sockets (a request of ours would be one more connection, and close
    # one): all 40 from 127.0.0.2 accepted, whatever else it held before (a health check's idle one).
    mctest.wait_until(lambda: peer_connections(c.daemon.pid, "127.0.0.2") >= 40, TIMEOUT,
                      msg="the 40 idle connections taken")
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.settimeout(TIMEOUT)
    s.connect((u.hostname, u.port))
    s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := s.recv(4096):
        answer += chunk
    s.close()
    check(answer.startswith(b"HTTP/1.1 200"), f"the idle address's own next request: {answer[:120]!r}")
    check(any(e.get("HTTP_LIMIT") == "global_evicted" for e in events(c, "http_limit")),
          "no global_evicted http_limit event")
    check(not any(e.get("HTTP_LIMIT") == "per_address" for e in events(c, "http_limit")),
          "a per_address refusal with a per-address cap as large as the global one")


mctest.main()
