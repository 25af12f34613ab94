#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Dispatch latency with idle agents: from a push to the agent's first request to Docker for the task
(create), to its start request, and to the container running (Docker's "start" event), p50 and p99
over N tasks pushed one at a time; next to a plain `docker run` of the same image in the same run
(invocation to its container's "start" event, and the whole command).

Build without sanitizers for figures that mean something:
    meson setup build-release -Dbuildtype=release && ninja -C build-release
    MC_BUILD_DIR=$PWD/build-release MC_SOURCE_DIR=$PWD PYTHONPATH=$PWD/test/lib \\
        /usr/bin/python3 bench/agent/bench-dispatch.py [N]"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "agent"))
import mctest  # noqa: E402
from mctest import check, docker_api, wait_until  # noqa: E402
import agenttest as at  # noqa: E402

N = int(sys.argv.pop(1)) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 200


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def summary(name, ms):
    return f"{name:<34} p50 {pct(ms, 50):7.1f} ms   p99 {pct(ms, 99):7.1f} ms   (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def start_events(since, until, label):
    ev = mctest.docker_events({"type": ["container"], "event": ["start"], "label": [label]}, since=since, until=until)
    return ev


def docker_run_baseline(n=20):
    """`docker run --rm` of the same image: invocation to the container's start event, and in all."""
    rec = at.EventRecorder({"type": ["container"], "event": ["start"], "label": ["mc.bench"]})
    to_start, total = [], []
    docker = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
    for i in range(n):
        name = f"mc-bench-run-{os.getpid()}-{i}"
        t0 = time.time()
        subprocess.run([docker, "run", "--rm", "--name", name, "--label", f"mc.bench={name}", at.IMAGE, "true"],
                       check=True, capture_output=True)
        t1 = time.time()
        total.append((t1 - t0) * 1000)
        wait_until(lambda: any(e["Actor"]["Attributes"].get("mc.bench") == name for e in rec.events), 10)
        ev = [e for e in rec.events if e["Actor"]["Attributes"].get("mc.bench") == name]
        to_start.append((ev[0]["timeNano"] / 1e9 - t0) * 1000)
    return to_start, total


def test_dispatch_latency():
    nodes = [at.node_name("bench-a"), at.node_name("bench-b")]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=15000, grace_ms=1000)
    rec = at.record_events()
    agents = [at.Agent([c], n, env={"MC_LOG_LEVEL": "debug"}).start() for n in nodes]
    # Both agents long-poll; give them a moment to have their claims waiting.
    time.sleep(1)

    def run_one(i):
        body = {"image": at.IMAGE, "cmd": ["true"], "timeout_sec": 60, "labels": {"bench": "dispatch"}}
        t0 = time.time()
        tid = at.push(c, body)
        wait_until(lambda: c.task(tid)["status"] in at.FINAL, 60, interval=0.01)
        return tid, t0

    for i in range(10):     # warm-up: image layers, connections
        run_one(i)
    since = time.time()
    pushes = {}
    for i in range(N):
        tid, t0 = run_one(i)
        pushes[tid] = t0
        time.sleep(0.05)    # idle agents: their next claim is waiting again
    until = time.time() + 0.5

    create, start, claimed = {}, {}, {}
    pat = re.compile(r"Task (\w+): (create requested|start requested|claim answered) at ([0-9.]+)\.")
    for a in agents:
        for m in pat.finditer(a.log()):
            d = {"create requested": create, "start requested": start, "claim answered": claimed}[m.group(2)]
            d[m.group(1)] = float(m.group(3))
    running = {}
    for tid in pushes:
        for t_ns, action, cid in rec.of_task(tid):
            if action == "start":
                running[tid] = t_ns / 1e9

    to_claimed = [(claimed[t] - pushes[t]) * 1000 for t in pushes if t in claimed]
    claim_to_create = [(create[t] - claimed[t]) * 1000 for t in pushes if t in create and t in claimed]
    to_create = [(create[t] - pushes[t]) * 1000 for t in pushes if t in create]
    to_start = [(start[t] - pushes[t]) * 1000 for t in pushes if t in start]
    to_running = [(running[t] - pushes[t]) * 1000 for t in pushes if t in running]
    check(len(to_create) == N and len(to_start) == N and len(to_running) == N,
          f"measured {len(to_create)}/{len(to_start)}/{len(to_running)} of {N}")
    base_start, base_total = docker_run_baseline()
    print("# dispatch latency, idle agents (2 agents, one control, tasks pushed one at a time)")
    print("# " + summary("push -> claim answered (control)", to_claimed))
    print("# " + summary("claim answered -> create (agent)", claim_to_create))
    print("# " + summary("push -> docker create request", to_create))
    print("# " + summary("push -> docker start request", to_start))
    print("# " + summary("push -> container running", to_running))
    print("# " + summary("docker run -> container running", base_start))
    print("# " + summary("docker run, whole command", base_total))


mctest.main()
