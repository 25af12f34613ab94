#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Scheduling wait: from a push (the client's clock just before the request) to the agent's first
request to the engine (Docker's "create" event of the task's container) and to the container running
(Docker's "start" event), one task at a time on one Docker agent; and to the exec driver's process
start (the command's own start record) on one exec agent. Idle, and with many other agents connected
(idle exec agents long-polling their claims on the same control).

Parameters (--param KEY=JSON): loads (numbers of other agents), samples (per row)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402
import mctest  # noqa: E402
import agenttest as at  # noqa: E402
from controltest import start_cluster  # noqa: E402

ex = exp.Experiment("scheduling-wait", __doc__)
Q = ex.quick
LOADS = ex.param("loads", [0, 4] if Q else [0, 100, 500, 1000], exp.ALL_AT_LEAST_0)
SAMPLES = ex.param("samples", 4 if Q else 20, exp.AT_LEAST_1)
ex.check_params()
ex.settings.update(other_agents=LOADS, samples=SAMPLES, lease_ttl_ms=15000, docker_image=at.IMAGE,
                   claim_wait_ms="agent default (20000)")
COLS = ["other_agents", "driver", "samples", "to_lease_p50_ms", "to_lease_p95_ms", "to_engine_create_p50_ms",
        "to_engine_create_p95_ms", "to_running_p50_ms", "to_running_p95_ms", "to_running_p99_ms", "to_running_max_ms"]


def measure(load):
    mctest.Dockerd.ensure()
    dnode, enode = f"sw{load}-docker", f"sw{load}-exec"
    others = [f"sw{load}-idle{i}" for i in range(load)]
    ex.settings.setdefault("host_limits", {}).update(exp.host_limits(load + 2))
    pg, (c,) = start_cluster(nodes=tuple([dnode, enode] + others), env=dict(exp.CONTROL_ENV, MC_LEASE_TTL_MS="15000"))
    mctest.defer(at.cleanup_node_containers, dnode)
    rec = at.EventRecorder({"type": ["container"], "label": ["mc.task_id"]})
    da = at.Agent([c], dnode, env={"MC_LOG_LEVEL": "info", "MC_BUS": "no"}).start()
    ea = exp.ExecNode([c], enode)
    idle = [exp.ExecNode([c], n) for n in others]
    mctest.defer(exp.teardown_nodes, [ea] + idle)
    for a in [ea] + idle:
        a.start()
    exp.wait_registered(pg, load + 2, timeout=max(120, load))
    time.sleep(2)   # every idle agent's first claim is waiting on the control
    wl = exp.Workload()
    samples = {"docker": [], "exec": []}
    for i in range(SAMPLES):
        for driver, node in (("docker", dnode), ("exec", enode)):
            tid = f"sw{load}-{driver}-{ex.seed}-{i}"
            body = {"id": tid, "image": at.IMAGE, "timeout_sec": 60, "labels": {"target_node": node},
                    "cmd": ["sh", "-c", "sleep 0.2"] if driver == "docker" else wl.cmd(0.2)}
            t0 = time.time()
            r = c.push(body)
            mctest.check(r.status in (200, 201), f"push: {r.status} {r.text}")
            if driver == "docker":
                ev = mctest.wait_until(lambda: {a: t for t, a, _ in rec.of_task(tid)} if any(
                    a == "start" for _, a, _ in rec.of_task(tid)) else None, 60, interval=0.005)
                create, running = ev["create"] / 1e9, ev["start"] / 1e9
            else:
                running = mctest.wait_until(lambda: (wl.read().get(tid) or {"starts": [None]})["starts"][0], 60,
                                            interval=0.005)[1]
                create = None
            leased = float(pg.psql(f"SELECT extract(epoch FROM leased_at) FROM attempts WHERE task_id = '{tid}'")[0][0])
            samples[driver].append(((leased - t0) * 1000, (create - t0) * 1000 if create else None, (running - t0) * 1000))
            exp.wait_all_final(pg, tid, 1, 60)
    rows = []
    for driver, s in samples.items():
        lease, create, run = [x[0] for x in s], [x[1] for x in s if x[1] is not None], [x[2] for x in s]
        rows.append([load, driver, len(s), exp.pct(lease, 50), exp.pct(lease, 95), exp.pct(create, 50), exp.pct(create, 95),
                     exp.pct(run, 50), exp.pct(run, 95), exp.pct(run, 99), max(run)])
    raw = [(load, d, i, *x) for d, s in samples.items() for i, x in enumerate(s)]
    exp.teardown_nodes([ea] + idle)
    da.stop(expect=None)
    c.stop()
    pg.stop()
    return rows, raw


def main():
    rows, raw = [], []
    for load in LOADS:
        ex.log(f"{load} other agents")
        r, w = measure(load)
        for x in r:
            ex.log("  ".join(f"{c}={exp.fmt(v)}" for c, v in zip(COLS, x)))
        rows += r
        raw += w
    ex.table("push -> lease -> engine create -> running (ms)", COLS, rows)
    ex.csv("scheduling-wait.csv", COLS, rows)
    ex.csv("scheduling-wait-samples.csv", ["other_agents", "driver", "sample", "to_lease_ms", "to_engine_create_ms",
                                           "to_running_ms"], raw)
    fig, ax = ex.figure()
    for driver, m in (("docker", "o"), ("exec", "s")):
        rs = [r for r in rows if r[1] == driver]
        xs = [max(r[0], 1) for r in rs]
        ax.plot(xs, [r[7] for r in rs], m + "-", label=f"{driver}: push -> running p50")
        ax.plot(xs, [r[8] for r in rs], m + "--", label=f"{driver}: push -> running p95")
        if driver == "docker":
            ax.plot(xs, [r[5] for r in rs], m + ":", label="docker: push -> engine create p50")
        ax.plot(xs, [r[3] for r in rs], m + "-.", lw=0.8, label=f"{driver}: push -> lease p50")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("other agents connected (0 drawn at 1)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=6)
    ex.save(fig, "scheduling-wait.png")
    return ex.finish({"rows": [dict(zip(COLS, r)) for r in rows]})


exp.run(main)
