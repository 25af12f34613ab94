#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The long, randomized version of test/agent/test-fence-faults.py: 6 Docker agents, 60 tasks of 3-8 s, lease TTL 4 s, SECONDS (60) of random faults on random nodes, each kept for a random
time, often past the lease:

- kill -9 of every mc process of the node at once (agent, fence keeper, exec supervisors);
- kill -9 of the agent and its keeper together;
- kill -9 of the agent alone;
- SIGSTOP of the agent (with its keeper killed), SIGCONT later.

Judged by Docker's events (start/die of the containers labelled mc.task_id): no two containers of a
task alive at once; every task final, none lost. Prints the figures (how long before the re-run each
old container was gone, how many were fenced by their own init); fails on an overlap or a lost task.

    MC_BUILD_DIR=$PWD/build MC_SOURCE_DIR=$PWD PYTHONPATH=$PWD/test/lib \\
        /usr/bin/python3 bench/agent/chaos-fence.py [SEED] [SECONDS]"""

import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "agent"))
import mctest  # noqa: E402
from mctest import check, wait_until  # noqa: E402
import agenttest as at  # noqa: E402

_args = sys.argv[1:]
del sys.argv[1:]
SEED = int(_args.pop(0)) if _args else int(time.time())
SECONDS = int(_args.pop(0)) if _args else 60
N_AGENTS, N_TASKS, TTL_MS = 6, 60, 4000


def procs_of(agent, names):
    state = agent.state_dir.encode()
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{p}/exe"))
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if exe in names and state in cmd:
            out.append(int(p))
    return out


def kill(pids, sig=signal.SIGKILL):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def test_chaos_fence():
    rnd = random.Random(SEED)
    print(f"# seed {SEED}, {SECONDS} s of faults")
    nodes = [at.node_name(f"chaosf-{i}") for i in range(N_AGENTS)]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=TTL_MS, grace_ms=500)
    rec = at.record_events()
    agents = [at.Agent([c], n, env={"MC_MAX_TASKS": "6", "MC_LOG_LEVEL": "info"}).start() for n in nodes]
    since = time.time()
    tids = []
    for i in range(N_TASKS):
        secs = rnd.uniform(3, 8)
        tids.append(at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", f"sleep {secs:.2f}; echo task-{i}"],
                                "timeout_sec": 120, "max_attempts": 30}))

    down = {}           # agent index -> (when to undo, undo)
    counts = {}
    t_end = time.monotonic() + SECONDS
    while time.monotonic() < t_end:
        time.sleep(rnd.uniform(0.5, 2.0))
        now = time.monotonic()
        for i, (when, undo) in list(down.items()):
            if now >= when:
                undo()
                del down[i]
        up = [i for i in range(N_AGENTS) if i not in down]
        if len(up) <= 2:
            continue
        i = rnd.choice(up)
        a = agents[i]
        kind = rnd.choice(["all", "agent_keeper", "agent", "sigstop"])
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "sigstop":
            kill(procs_of(a, ("mc-fence-keeper",)))
            a.daemon.kill(signal.SIGSTOP)
            undo = (lambda a=a: a.daemon.kill(signal.SIGCONT))
        else:
            names = {"all": ("mc-fence-keeper",), "agent_keeper": ("mc-fence-keeper",),
                     "agent": ()}[kind]
            kill([a.daemon.pid] + procs_of(a, names))
            a.daemon.proc.wait()
            undo = (lambda a=a: a.start())
        # Mostly past the lease (the task goes elsewhere), sometimes back within it (adoption).
        down[i] = (now + (rnd.uniform(5, 9) if rnd.random() < 0.7 else rnd.uniform(0.3, 1.5)), undo)
    for i, (_, undo) in list(down.items()):
        undo()
    print(f"# faults: {counts}")

    wait_until(lambda: all(c.task(t)["status"] in at.FINAL for t in tids), 600, interval=1,
               msg="every task to end")
    statuses, attempts = {}, []
    for tid in tids:
        t = c.task(tid)
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
        attempts.append(t["attempt"])
        if t["status"] != "succeeded":
            print(f"# {tid} {t['status']}: {(t.get('result') or {}).get('reason')}; attempts "
                  + ", ".join(f"{a['node_id']} {a['status']} {a.get('reason')}" for a in t["attempts"]))
    print(f"# statuses {statuses}; attempts: max {max(attempts)}, mean {sum(attempts) / len(attempts):.2f}")

    overlaps, gaps = [], []
    for tid in tids:
        iv = sorted(at.run_intervals(at.task_events(tid, since)).values())
        for (s1, e1), (s2, e2) in zip(iv, iv[1:]):
            if e1 is None or e1 > s2:
                overlaps.append((tid, iv))
            else:
                gaps.append((s2 - e1) / 1e9)
    if gaps:
        gaps.sort()
        print(f"# {len(gaps)} re-runs; the old container gone before the new one started by: "
              f"min {gaps[0]:.3f} s, p50 {gaps[len(gaps) // 2]:.3f} s")
    fenced = sum(1 for e in rec.events if e.get("Action") == "die"
                 and e.get("Actor", {}).get("Attributes", {}).get("exitCode") == "250")
    print(f"# containers fenced by their own init (exit 250): {fenced}")
    check(not overlaps, f"overlapping containers: {overlaps[:3]}")
    check(sum(statuses.get(s, 0) for s in at.FINAL) == N_TASKS, f"none lost: {statuses}")
    for a in agents:
        a.stop(expect=None)


mctest.main()
