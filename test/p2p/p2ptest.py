# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers of the peer-to-peer tests: hosts in network namespaces with shaped uplinks, test inputs in
memory (tmpfs), mc-swarm-tool processes in a host whose output lines are kept."""

import hashlib
import os
import shutil
import signal
import tempfile

import mctest
from mctest import check

MIB = 1 << 20


def shaped_network(names, rate, burst="256kb", latency="50ms"):
    """A Network with one host per name, what each sends limited to rate (tbf on its eth0)."""
    net = mctest.Network()
    hosts = []
    for name in names:
        h = net.add_host(name)
        if rate:
            h.shape(rate, burst=burst, latency=latency)
        hosts.append(h)
    return net, hosts


def memdir(prefix="p2p"):
    """A directory in /dev/shm (tmpfs) removed when the test ends: gigabytes of downloads measure the
    network, not this machine's disk (which other sessions share)."""
    d = tempfile.mkdtemp(prefix=f"mc-test-{prefix}-", dir="/dev/shm")
    os.chmod(d, 0o755)
    mctest.defer(shutil.rmtree, d, ignore_errors=True)
    return d


def make_input(d, size, seed=1):
    """size bytes of pseudo-random data (seeded, so that reruns see the same content) in d; returns
    (path, sha256 hex)."""
    path = os.path.join(d, "input")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(0, size, MIB):
            b = hashlib.shake_256(f"mc-p2p-{seed}-{i}".encode()).digest(min(MIB, size - i))
            h.update(b)
            f.write(b)
    return path, h.hexdigest()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def fields(line):
    """KEY=VALUE words after the first; a reason= is the rest of the line (it has spaces)."""
    line, _, reason = line.partition(" reason=")
    d = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    if reason:
        d["reason"] = reason
    return d


class Tool:
    """mc-swarm-tool ARGS run in a host (a Daemon without sd_notify: checked for its exit status and
    sanitizer reports when the test ends), with helpers over its output lines."""

    def __init__(self, host, args, name):
        self.d = mctest.Daemon("mc-swarm-tool", args, notify=False, host=host, name=name)

    def start(self):
        self.d.start()
        return self

    def lines(self, prefix):
        return [fields(x) for x in self.d.log_text().splitlines() if x.startswith(prefix + " ") or x == prefix]

    def wait_line(self, prefix, timeout):
        """The fields of the first line starting with prefix; fails at once if the tool exits first."""
        return mctest.wait_until(lambda: self.lines(prefix), timeout, msg=f"{prefix!r} from {self.d.name}",
                                 abort=lambda: not self.d.running and not self.lines(prefix) and
                                 f"exited with {self.d.proc.returncode}:\n{self.d.log_tail()}")[0]

    def signal(self, sig):
        check(self.d.running, f"{self.d.name} is not running:\n{self.d.log_tail()}")
        self.d.proc.send_signal(sig)

    def stats(self, timeout):
        """Asks for the server's counters (SIGUSR1) and returns the new "stats" line's fields as ints."""
        n = len(self.lines("stats"))
        self.signal(signal.SIGUSR1)
        mctest.wait_until(lambda: len(self.lines("stats")) > n, timeout, msg=f"stats from {self.d.name}")
        return {k: int(v) for k, v in self.lines("stats")[n].items()}

    def stop(self):
        self.d.stop()


class HostControl:
    """mc-control in a Host of a Network (net_only: PostgreSQL's unix socket is a path, reachable from
    any network namespace), for daemons in the other hosts; the test reaches its API through the host
    (Host.http). Offers what agenttest's push()/wait_final() use: url, push(), task()."""

    def __init__(self, pg, host, nodes, port=8080, env=None):
        import controltest
        self.host = host
        self.url = f"http://{host.address}:{port}"
        self.token = controltest.USER_TOKEN
        e = {"MC_DB_DSN": pg.dsn}
        e.update(env or {})
        self.daemon = mctest.Daemon("mc-control", ["--port", port, "--tokens-file", controltest.write_tokens(nodes),
                                                   "--listen-address", host.address, "--no-bus"],
                                    env=e, host=host, name="mc-control")

    def start(self):
        self.daemon.start()
        self.daemon.wait_ready()
        mctest.wait_until(lambda: self.http("GET", "/api/health").status == 200, msg="control healthy")
        return self

    def http(self, method, path, body=None, **kw):
        return self.host.http(method, self.url + path, body=body, token=self.token, **kw)

    def push(self, body):
        return self.http("POST", "/api/tasks/push", body)

    def task(self, task_id):
        r = self.http("GET", f"/api/tasks/{task_id}")
        check(r.status == 200, f"GET task {task_id}: {r.status} {r.text}")
        return r.json()
