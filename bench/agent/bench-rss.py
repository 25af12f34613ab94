#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The agent's resident memory: idle (registered, long-polling, heartbeating), and with 10 running
tasks; and its fence keeper's.

    MC_BUILD_DIR=$PWD/build-release MC_SOURCE_DIR=$PWD PYTHONPATH=$PWD/test/lib \\
        /usr/bin/python3 bench/agent/bench-rss.py"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "agent"))
import mctest  # noqa: E402
from mctest import check, wait_until  # noqa: E402
import agenttest as at  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mem(pid):
    """(RSS, PSS, private) in KiB: RSS counts every resident page of the shared libraries, PSS a fair
    share of them, private what no other process shares."""
    v = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                v[k] = int(rest.split()[0])
    return v.get("Rss", 0), v.get("Pss", 0), v.get("Private_Clean", 0) + v.get("Private_Dirty", 0)


def fmt(m):
    return f"RSS {m[0] / 1024:.2f} MiB (PSS {m[1] / 1024:.2f}, private {m[2] / 1024:.2f})"


def keeper_pid(agent):
    try:
        with open(os.path.join(agent.state_dir, "fence-keeper.pid")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def test_rss():
    node = at.node_name("rss")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=3000)
    for driver in ("docker", "exec"):
        a = at.Agent([c], node, driver=driver, env={"MC_LOG_LEVEL": "info"}).start()
        time.sleep(5)       # a few heartbeats and claims
        idle = mem(a.daemon.pid)
        tids = [at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", "sleep 20"], "timeout_sec": 60})
                for _ in range(10)]
        for t in tids:
            at.wait_status(c, t, "running", 60)
        time.sleep(3)
        busy = mem(a.daemon.pid)
        kp = keeper_pid(a)
        keeper = mem(kp) if kp else (0, 0, 0)
        for t in tids:
            c.cancel(t)
        for t in tids:
            at.wait_final(c, t)
        a.stop()
        print(f"# {driver:6} driver: agent idle {fmt(idle)}; with 10 running tasks {fmt(busy)}; "
              f"fence keeper {fmt(keeper)}")


mctest.main()
