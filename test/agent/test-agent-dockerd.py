#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Docker engine restarted under running tasks. Two docker-driver agents share a dockerd of this
test's own (its own socket, data root, exec root, and a containerd of its own that outlives it, as
containerd.service does: restarting it disturbs no other test), and each round restarts it while long
tasks run (one of them ignoring SIGTERM) and short ones are claimed:

- default settings, dockerd stopped cleanly (SIGTERM): the engine stops the containers;
- default settings, dockerd SIGKILLed: the containers outlive it, and its next life stops them;
- `live-restore: true`, stopped cleanly, then SIGKILLed: the containers live through both;
- the same SIGKILL with both agents killed (kill -9) while the engine is down, started again once it
  is back: they adopt their containers (the lease TTL is long enough for that, so that neither
  their fence keepers nor the containers' inits fence them meanwhile).

Whatever happens, every task ends succeeded with its output, none is lost, and no two runs of one
task are ever alive at once. Without live-restore a run the engine killed is run again (a later
attempt), and the old run's processes (watched with pidfds) ended before the engine reported the new
container's start. With live-restore the agents keep their containers: the same attempt, one
container, never a second start. Short tasks claimed while the engine is away run once it is back.

Docker's own events are followed across the engine's lives (the stream ends with each life and is
taken up again from the last event seen)."""

import http.client as httpclient
import io
import json
import os
import signal
import subprocess
import tarfile
import threading
import time
import urllib.parse

import mctest
from mctest import check, wait_until
import agenttest as at

# Long enough for an agent killed with the engine to be back before its leases' fence time.
TTL_MS = 30000
N_LONG = 3
N_SHORT = 3
APPLETS = "sh echo sleep cat ls uname true false env id printf head tail wc seq yes kill".split()


class PrivateDockerd:
    """A dockerd of our own, with a containerd of our own that outlives its lives, as the system's
    containerd.service does (a containerd that dockerd starts itself is its child, and hangs, its log
    pipe full, once a SIGKILLed dockerd no longer reads it)."""

    def __init__(self):
        self.dir = mctest.tmpdir("dockerd")
        self.socket = os.path.join(self.dir, "docker.sock")
        self.config = os.path.join(self.dir, "daemon.json")
        self.log_path = os.path.join(self.dir, "dockerd.log")
        self.namespace = f"mc-test-{at.RUN}"
        self.proc = None
        self.containerd = None
        self.containerd_socket = os.path.join(self.dir, "containerd.sock")
        self.lives = 0
        self.live_restore = False       # of the life running now
        self.set_live_restore(False)
        mctest.defer(self.cleanup)

    def set_live_restore(self, on):
        """Takes effect at the next start."""
        self._next_live_restore = on
        with open(self.config, "w") as f:
            json.dump({"live-restore": on}, f)

    def start_containerd(self):
        conf = os.path.join(self.dir, "containerd.toml")
        with open(conf, "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/containerd-root"
state = "{self.dir}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
""")
        log = open(os.path.join(self.dir, "containerd.log"), "a")
        self.containerd = subprocess.Popen(["containerd", "--config", conf], stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_until(lambda: os.path.exists(self.containerd_socket), 60, msg="containerd's socket")

    def start(self):
        if self.containerd is None:
            self.start_containerd()
        self.lives += 1
        self.live_restore = self._next_live_restore
        log = open(self.log_path, "a")
        log.write(f"---- life {self.lives}\n")
        log.flush()
        self.proc = subprocess.Popen(
            ["dockerd", "--host", f"unix://{self.socket}", "--data-root", os.path.join(self.dir, "data"),
             "--exec-root", os.path.join(self.dir, "exec"), "--pidfile", os.path.join(self.dir, "dockerd.pid"),
             "--config-file", self.config, "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--containerd", self.containerd_socket,
             "--containerd-namespace", self.namespace,
             "--containerd-plugins-namespace", self.namespace + "-plugins"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_until(self.ping, 120, msg=f"dockerd life {self.lives} to answer on {self.socket}")
        return self

    def ping(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"dockerd exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            r = self.api("GET", "/_ping", timeout=5)
        except OSError:
            return False
        return r.status == 200

    def log_tail(self, n=30):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def stop(self, sig=signal.SIGTERM):
        """Ends this life: SIGTERM (the engine shuts down as a service manager would stop it) or
        SIGKILL (it dies on the spot; its containerd and the containers' shims stay)."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dockerd did not end within 120 s of signal {sig}: {self.log_tail()}")

    def api(self, method, path, body=None, timeout=120):
        return mctest.http(method, "http://localhost" + path, body=body, timeout=timeout, unix_socket=self.socket)

    def import_image(self, tag):
        """The test image, made as tools/ensure-docker makes it: busybox-static and its applets."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            def add(name, kind, **kw):
                ti = tarfile.TarInfo(name)
                ti.type = kind
                for k, v in kw.items():
                    setattr(ti, k, v)
                return ti
            for d, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)):
                tar.addfile(add(d, tarfile.DIRTYPE, mode=mode))
            with open("/bin/busybox", "rb") as f:
                data = f.read()
            tar.addfile(add("bin/busybox", tarfile.REGTYPE, mode=0o755, size=len(data)), io.BytesIO(data))
            for c in APPLETS:
                tar.addfile(add(f"bin/{c}", tarfile.SYMTYPE, linkname="busybox"))
            for name, text in (("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n"), ("etc/group", b"root:x:0:\n")):
                tar.addfile(add(name, tarfile.REGTYPE, mode=0o644, size=len(text)), io.BytesIO(text))
        repo, t = tag.split(":")
        conn = mctest.UnixHTTPConnection(self.socket, timeout=120)
        conn.request("POST", "/images/create?" + urllib.parse.urlencode({"fromSrc": "-", "repo": repo, "tag": t}),
                     body=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        conn.close()
        check(r.status == 200 and "error" not in text.lower(), f"image import: {r.status} {text[:500]}")

    def containers(self):
        r = self.api("GET", "/containers/json?all=1")
        check(r.status == 200, f"docker list: {r.status} {r.text}")
        return r.json()

    def _leftover_pids(self):
        """The shims of its containers (their command lines hold containerd's socket), and what else names
        its directory."""
        key = self.dir.encode()
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and key in at.cmdline(p)]

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            for c in self.containers():
                self.api("DELETE", f"/containers/{c['Id']}?force=1")
            self.stop()
        if self.containerd is not None:
            self.containerd.terminate()
            try:
                self.containerd.wait(60)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait()
        for p in self._leftover_pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["umount", "-R", os.path.join(self.dir, "exec")], capture_output=True)
        subprocess.run(["sh", "-c", f"grep -o ' {self.dir}/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"],
                       capture_output=True)


class LifelongEvents:
    """The engine's container events across its lives: the stream ends when a life does, and is taken
    up again on the next one from the last event seen (events are deduplicated)."""

    def __init__(self, dockerd):
        self.dockerd = dockerd
        self.events = []
        self._seen = set()
        self._lock = threading.Lock()
        self._stop = False
        self._conn = None
        self._since = time.time()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        mctest.defer(self.stop)

    def _run(self):
        q = {"filters": json.dumps({"type": ["container"], "label": ["mc.task_id"]})}
        while not self._stop:
            try:
                conn = mctest.UnixHTTPConnection(self.dockerd.socket, timeout=None)
                self._conn = conn
                conn.request("GET", "/events?" + urllib.parse.urlencode(dict(q, since=f"{self._since:.9f}")))
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(f"events: {resp.status}")
                for line in resp:
                    if not line.strip():
                        continue
                    e = json.loads(line)
                    key = (e.get("timeNano"), e.get("id"), e.get("Action"))
                    with self._lock:
                        if key not in self._seen:
                            self._seen.add(key)
                            self.events.append(e)
                        self._since = max(self._since, e["timeNano"] / 1e9 - 0.001)
            except (OSError, httpclient.HTTPException, ValueError):
                pass
            if not self._stop:
                time.sleep(0.2)

    def stop(self):
        self._stop = True
        if self._conn is not None:
            try:
                self._conn.sock.shutdown(2)
            except (OSError, AttributeError):
                pass

    def of_task(self, tid, action=None):
        with self._lock:
            ev = sorted(self.events, key=lambda e: e["timeNano"])
        return [e for e in ev if e.get("Actor", {}).get("Attributes", {}).get("mc.task_id") == tid
                and (action is None or e["Action"] == action)]


def process_watch(marker):
    """The processes of a run (every process whose command line holds its marker, and their
    descendants), and when each ended."""
    return at.DeathWatch(at.process_tree(marker))


ROUNDS = (
    # (name, live_restore, signal, agents killed too)
    ("default-stop", False, signal.SIGTERM, False),
    ("default-kill", False, signal.SIGKILL, False),
    ("live-restore-stop", True, signal.SIGTERM, False),
    ("live-restore-kill", True, signal.SIGKILL, False),
    ("live-restore-kill-agents", True, signal.SIGKILL, True),
)


def test_dockerd_restart():
    nodes = [at.node_name(f"dockerd-{i}") for i in range(2)]
    dockerd = PrivateDockerd().start()
    dockerd.import_image(at.IMAGE)
    events = LifelongEvents(dockerd)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=TTL_MS)
    agents = [at.Agent([c], n, env={"MC_DOCKER_SOCKET": dockerd.socket}).start() for n in nodes]
    tids = []

    for rnd, (name, live, sig, kill_agents) in enumerate(ROUNDS):
        if live != dockerd.live_restore:
            # A planned restart with nothing running, to take the setting.
            check(not dockerd.containers(), f"{name}: nothing left from the round before: {dockerd.containers()}")
            dockerd.set_live_restore(live)
            dockerd.stop()
            dockerd.start()
            info = dockerd.api("GET", "/info").json()
            check(info["LiveRestoreEnabled"] == live, f"{name}: live-restore {info['LiveRestoreEnabled']}")

        # Long tasks, held until the test lets them go, running when the engine goes. The first ignores
        # SIGTERM: an engine that stops it kills it (exit 137) after its stop timeout.
        markers = [f"long-r{rnd}-{i}-{at.RUN}" for i in range(N_LONG)]
        cmds = [("trap '' TERM; " if i == 0 else "") + at.held_cmd(m, f"echo done {m}") for i, m in enumerate(markers)]
        longs = [at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", cmd], "timeout_sec": 600, "max_attempts": 5})
                 for cmd in cmds]
        tids += longs
        for tid, m in zip(longs, markers):
            at.wait_status(c, tid, "running", 120)
            wait_until(lambda: at.trapping_pids(m, signal.SIGUSR1), 120, msg=f"{name}: the shell of {tid}")
        first = {tid: c.task(tid) for tid in longs}
        busy = {t["lease"]["node_id"] for t in first.values()}
        lost_before = {a.node: len(at.events(a.log(), "container_lost")) for a in agents}
        away_before = {a.node: len(at.events(a.log(), "engine_unavailable")) for a in agents}
        watches = {tid: process_watch(m) for tid, m in zip(longs, markers)}
        for tid, w in watches.items():
            check(w.pids, f"{name}: processes of {tid}")
        print(f"# {name}: {len(longs)} long tasks running on "
              + ", ".join(sorted({t['lease']['node_id'] for t in first.values()})))

        if kill_agents:
            for a in agents:
                a.kill()
        t0 = time.monotonic()
        dockerd.stop(sig)
        down = time.monotonic()
        if not kill_agents:
            # An agent whose containers run sees the engine go, and stops claiming.
            for a in agents:
                if a.node in busy:
                    wait_until(lambda: len(at.events(a.log(), "engine_unavailable")) > away_before[a.node], 120,
                               msg=f"{name}: {a.node} to see the engine gone")
        # Short tasks pushed while the engine is away: at most the claim each agent had waiting at the
        # control takes one (it waits on that node for the engine); the others wait in the queue.
        shorts = [at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", f"echo short-r{rnd}-{i}"],
                              "timeout_sec": 600, "max_attempts": 5}) for i in range(N_SHORT)]
        tids += shorts
        if not kill_agents and busy == set(nodes):
            taken = [t for t in (c.task(tid) for tid in shorts) if t["status"] != "queued"]
            check(len(taken) <= len(agents), f"{name}: agents without an engine claimed {taken}")
        dockerd.start()
        up = time.monotonic()
        if kill_agents:
            for a in agents:
                a.start()
        print(f"# {name}: dockerd down {down - t0:.1f} s after the signal, answering again "
              f"{up - down:.1f} s later")

        for tid, m in zip(longs, markers):
            w = watches[tid]
            if live:
                # Kept: the same run, the same lease.
                t = c.task(tid)
                check(t["status"] == "running" and t["attempt"] == first[tid]["attempt"]
                      and t["lease"]["lease_token"] == first[tid]["lease"]["lease_token"],
                      f"{name}: {tid} kept on its lease: {t}")
                check(not w.ends, f"{name}: {tid}: processes of the live-restored run ended: {w.ends}")
            else:
                t = wait_until(lambda: (lambda t: t if t["status"] == "running" and t["attempt"] > first[tid]["attempt"]
                                        else None)(c.task(tid)), 180, msg=f"{name}: {tid} running again")
                wait_until(w.all_ended, 60, msg=f"{name}: every process of {tid}'s first run to end")
                wait_until(lambda: at.trapping_pids(m, signal.SIGUSR1), 120, msg=f"{name}: the new shell of {tid}")
                starts = [e for e in events.of_task(tid, "start")
                          if e["Actor"]["Attributes"].get("mc.lease_token") == str(t["lease"]["lease_token"])]
                check(len(starts) == 1, f"{name}: {tid}: one start of the new attempt's container: {starts}")
                gap = starts[0]["timeNano"] - max(w.ends.values())
                check(gap > 0, f"{name}: {tid}: the new run started {-gap / 1e9:.3f} s before the old one ended")
                print(f"#   {tid}: attempt {t['attempt']} started {gap / 1e9:.3f} s after the old run's end")
            at.release(m, 120)

        for tid, m in zip(longs, markers):
            t = at.wait_final(c, tid, 180)
            check(t["status"] == "succeeded" and f"done {m}" in t["result"]["stdout_tail"],
                  f"{name}: {tid}: {t}")
            runs = events.of_task(tid, "start")
            if live:
                check(t["attempt"] == first[tid]["attempt"] and len(runs) == 1,
                      f"{name}: {tid}: one run on one lease: attempt {t['attempt']}, starts {len(runs)}")
        for i, tid in enumerate(shorts):
            t = at.wait_final(c, tid, 180)
            # Claimed while the engine was away, started once it was back: its first attempt, one run.
            # (With the agents killed, a claim they had waiting may have been answered to nobody: that
            # lease expires, and the next attempt runs.)
            check(t["status"] == "succeeded" and t["result"]["stdout_tail"] == f"short-r{rnd}-{i}\n"
                  and (t["attempt"] == 1 or kill_agents) and len(events.of_task(tid, "start")) == 1,
                  f"{name}: short {tid}: {t}")
        # The agents said what the engine did: each long task's run lost once without live-restore.
        lost = [e["TASK_ID"] for a in agents for e in at.events(a.log(), "container_lost")[lost_before[a.node]:]]
        check(sorted(lost) == ([] if live else sorted(longs)), f"{name}: container_lost for {lost}, long tasks {longs}")

        # Every container of every task of the round: no two alive at once (by the engine's events,
        # where it reported both the start and the end).
        for tid in longs + shorts:
            iv = sorted(at.run_intervals([(e["timeNano"], e["Action"], e["id"]) for e in events.of_task(tid)]).values())
            for (s1, e1), (s2, e2) in zip(iv, iv[1:]):
                check(e1 is None or e1 <= s2, f"{name}: {tid}: containers overlap: {iv}")
        wait_until(lambda: not dockerd.containers(), 120, msg=f"{name}: the agents to remove their containers")

    for tid in tids:
        t = c.task(tid)
        check(t["status"] == "succeeded", f"none lost: {t}")
    for a in agents:
        a.stop()


mctest.main()
