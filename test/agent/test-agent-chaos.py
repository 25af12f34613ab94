#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""No duplicates under faults: 3 agents, 60 short tasks, agents killed (SIGKILL) or stopped (SIGTERM)
and restarted at random while they run, some staying away longer than a lease. From Docker's own
event stream (container start/die per mc.task_id label), no two containers of one task ever overlap
in time; every task ends in a final state.

Usage: test-agent-chaos.py [seed]"""

import random
import sys
import time

import mctest
from mctest import check, wait_until
import agenttest as at

SEED = int(sys.argv.pop(1)) if len(sys.argv) > 1 and sys.argv[1].isdigit() else int(time.time())
N_TASKS = 60
CHAOS_SECONDS = 45


def test_no_duplicates_under_faults():
    rnd = random.Random(SEED)
    print(f"# seed {SEED}")
    nodes = [at.node_name(f"chaos-{i}") for i in range(3)]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=3000, grace_ms=500)
    rec = at.record_events()
    agents = [at.Agent([c], n, env={"MC_MAX_TASKS": "6"}).start() for n in nodes]
    since = time.time()
    tids = []
    for i in range(N_TASKS):
        secs = rnd.choice(["0.5", "1", "2", "3", "4"])
        tids.append(at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", f"sleep {secs}; echo task-{i}"],
                                "timeout_sec": 60, "max_attempts": 20}))

    down = {}           # agent index -> when to bring it back
    kills = stops = 0
    t_end = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < t_end:
        time.sleep(rnd.uniform(0.5, 2.5))
        now = time.monotonic()
        for i, when in list(down.items()):
            if now >= when:
                agents[i].start()
                del down[i]
        up = [i for i in range(len(agents)) if i not in down]
        if len(up) > 1:
            i = rnd.choice(up)
            if rnd.random() < 0.7:
                agents[i].kill()
                kills += 1
            else:
                agents[i].stop()
                stops += 1
            # Mostly back within a lease (adoption); sometimes away for longer (the keeper fences).
            down[i] = now + (rnd.uniform(0.2, 1.5) if rnd.random() < 0.7 else rnd.uniform(3, 6))
    for i in list(down):
        agents[i].start()
    print(f"# {kills} kills, {stops} stops in {CHAOS_SECONDS} s")

    def all_final():
        return all(c.task(t)["status"] in at.FINAL for t in tids)
    wait_until(all_final, 300, interval=0.5, msg="every task to end")

    statuses, attempts, overlaps = {}, [], []
    for tid in tids:
        t = c.task(tid)
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
        attempts.append(t["attempt"])
        iv = sorted(at.run_intervals(at.task_events(tid, since)).values())
        for (s1, e1), (s2, e2) in zip(iv, iv[1:]):
            if e1 is None or e1 > s2:
                overlaps.append((tid, iv))
    n_events = len(rec.events)
    n_starts = sum(1 for e in rec.events if e["Action"] == "start")
    check(n_starts >= N_TASKS, f"every task's containers seen: {n_starts} starts in {n_events} events")
    print(f"# {n_starts} container starts in {n_events} Docker events")
    print(f"# statuses {statuses}; attempts: max {max(attempts)}, mean {sum(attempts) / len(attempts):.2f}; "
          f"tasks run more than once: {sum(1 for a in attempts if a > 1)}")
    check(not overlaps, f"overlapping containers: {overlaps[:3]}")
    check(statuses.get("succeeded", 0) >= N_TASKS * 0.9, f"most tasks succeed: {statuses}")


mctest.main()
