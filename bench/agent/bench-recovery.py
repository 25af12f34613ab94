#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Recovery time after node death: from kill -9 of the agent running a task (its containers killed
with it, as when the node dies) to that task's container running on the other node (Docker's "start"
event), p50 and p95 over N trials, for lease TTLs of 3 s and 10 s.

    MC_BUILD_DIR=$PWD/build-release MC_SOURCE_DIR=$PWD PYTHONPATH=$PWD/test/lib \\
        /usr/bin/python3 bench/agent/bench-recovery.py [N] [GRACE_MS]"""

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "agent"))
import mctest  # noqa: E402
from mctest import check, docker_api, wait_until  # noqa: E402
import agenttest as at  # noqa: E402

_args = [int(sys.argv.pop(1)) for _ in range(len(sys.argv) - 1) if sys.argv[1].isdigit()]
N = _args[0] if len(_args) > 0 else 20
GRACE_MS = _args[1] if len(_args) > 1 else 500


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def ts(iso):
    return datetime.datetime.strptime(iso.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def trials(ttl_ms):
    nodes = [at.node_name(f"rec{ttl_ms}-a"), at.node_name(f"rec{ttl_ms}-b")]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=ttl_ms, grace_ms=GRACE_MS)
    at.record_events()
    agents = {n: at.Agent([c], n, env={"MC_LOG_LEVEL": "info"}).start() for n in nodes}
    out, leased = [], []
    for i in range(N):
        tid = at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", "sleep 600"], "timeout_sec": 900,
                          "max_attempts": 5})
        t = at.wait_status(c, tid, "running", 60)
        victim = t["lease"]["node_id"]
        other = [n for n in nodes if n != victim][0]
        # Anywhere in the renewal cycle, as a real failure would be.
        time.sleep((ttl_ms / 3000) * (i % 7) / 7)
        old = [x["Id"] for x in at.containers_of(tid)]
        t_kill = time.time()
        agents[victim].kill()
        for cid in old:
            docker_api("POST", f"/containers/{cid}/kill")
        # The task's next container, on the other node.
        def started_elsewhere():
            for e in at.task_events(tid, t_kill - 0.5):
                if e[1] == "start" and e[2] not in old:
                    return e[0] / 1e9
            return None
        t_start = wait_until(started_elsewhere, ttl_ms / 1000 * 4 + 30, interval=0.02)
        out.append((t_start - t_kill) * 1000)
        after = c.task(tid)
        check(after["lease"]["node_id"] == other and after["attempt"] == 2, after)
        leased.append((ts(after["attempts"][1]["leased_at"]) - t_kill) * 1000)
        # Done with it; the victim comes back for the next trial.
        c.cancel(tid)
        at.wait_final(c, tid)
        at.cleanup_node_containers(victim)
        agents[victim].start()
    return out, leased


def test_recovery_time():
    res, lease = {}, {}
    for ttl in (3000, 10000):
        res[ttl], lease[ttl] = trials(ttl)
    print(f"# recovery after node death (kill -9 of the agent and its containers -> the task's container "
          f"running on the other node), LEASE_GRACE_MS={GRACE_MS}, {N} trials each")
    for ttl, ms in res.items():
        ls = lease[ttl]
        print(f"# TTL {ttl / 1000:4.1f} s: to running p50 {pct(ms, 50) / 1000:6.2f} s   p95 {pct(ms, 95) / 1000:6.2f} s   "
              f"(min {min(ms) / 1000:.2f}, max {max(ms) / 1000:.2f}; goal TTL + 1 s = {ttl / 1000 + 1:.1f} s); "
              f"to the new lease p50 {pct(ls, 50) / 1000:.2f} s p95 {pct(ls, 95) / 1000:.2f} s")
        print(f"#   each (s): {' '.join(f'{x / 1000:.2f}' for x in ms)}")


mctest.main()
