#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Control outage: 10 exec agents, 50 tasks of 30 s; once every task runs, the control is SIGKILLed
for 30-40 s and started again. Run with a lease TTL longer than the outage (nothing may be re-run)
and with the default TTL, 5 s (shorter than the outage: the agents cannot renew, so they fence their
tasks, which run again once the control is back; nothing may be lost or run twice at once). Then two
replicas at the default TTL, one killed for good: the agents move to the other and nothing is re-run.

Judged from the tasks' own start/end records and the database: tasks re-run, lost, alive twice at
once, and results delivered after the outage (tasks that ended while no control ran). raw/ holds each
phase's records, attempts and times (push, kill, control back, all final; wall clock)."""

import csv
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402
import mctest  # noqa: E402
from controltest import start_cluster  # noqa: E402

ex = exp.Experiment("control-outage", __doc__)
Q = ex.quick
ex.check_params()     # none: --param is for the others
AGENTS = 3 if Q else 10
TASKS = 6 if Q else 50
SECONDS = 6.0 if Q else 30.0
OUTAGE = (4.0, 5.0) if Q else (30.0, 40.0)
DEFAULT_TTL_MS = 5000     # the control's LEASE_TTL_MS default (src/control/control-main.c)
# (phase, replicas, lease TTL ms, what is killed)
PHASES = [("outage, TTL > outage", 1, 20000 if Q else 60000, "control"),
          ("two replicas, one killed", 2, DEFAULT_TTL_MS, "replica")]
if not Q:
    PHASES.insert(1, ("outage, TTL 5 s (the default)", 1, DEFAULT_TTL_MS, "control"))
ex.settings.update(agents=AGENTS, tasks=TASKS, task_seconds=SECONDS, outage_seconds_range=OUTAGE,
                   phases=[{"phase": p, "replicas": r, "lease_ttl_ms": t, "kill": k} for p, r, t, k in PHASES],
                   driver="exec")


def phase(idx, name, replicas, ttl_ms, kill):
    nodes = [f"out{idx}-{i}" for i in range(AGENTS)]
    pg, controls = start_cluster(nodes=tuple(nodes), env=dict(exp.CONTROL_ENV, MC_LEASE_TTL_MS=str(ttl_ms)), replicas=replicas)
    agents = [exp.ExecNode(controls, n) for n in nodes]
    mctest.defer(exp.teardown_nodes, agents)
    for a in agents:
        a.start()
    exp.wait_registered(pg, AGENTS)
    wl = exp.Workload()
    prefix = f"o{idx}-{ex.seed}-"
    bodies = [{"id": f"{prefix}{i:04d}", "image": "mc-test/busybox:latest", "cmd": wl.cmd(SECONDS), "timeout_sec": int(SECONDS * 4 + 120),
               "max_attempts": 5} for i in range(TASKS)]
    t_push = time.time()
    exp.push_many(controls[0], bodies)
    mctest.wait_until(lambda: len(wl.read()) >= TASKS, 120, interval=0.2, msg="every task started")
    t_all = time.time()
    ex.log(f"{name}: all {TASKS} tasks running {t_all - t_push:.1f} s after the push")
    time.sleep(ex.rnd.uniform(1, 3) if Q else ex.rnd.uniform(3, 6))
    victim = controls[0]
    t_kill = time.time()
    victim.kill()
    outage = None
    if kill == "control":
        outage = ex.rnd.uniform(*OUTAGE)
        ex.log(f"{name}: control killed for {outage:.1f} s")
        time.sleep(outage)
        victim.daemon.start()
        victim.daemon.wait_ready(60)
        t_back = time.time()
        ex.log(f"{name}: control back")
    else:
        t_back = t_kill
        ex.log(f"{name}: replica 0 killed for good")
    exp.wait_all_final(pg, prefix, TASKS, SECONDS * 6 + 240)
    t_done = time.time()
    tasks = exp.task_rows(pg, prefix)
    attempts = exp.attempt_rows(pg, prefix)
    gt = exp.ground_truth(wl, tasks, attempts, {})
    rec = wl.read()
    # The raw ground truth, for a look afterwards: the tasks' records, the attempts, the phase's times.
    raw = os.path.join(ex.dir, "raw")
    os.makedirs(raw, exist_ok=True)
    shutil.copy(wl.records, os.path.join(raw, f"phase{idx}-records.txt"))
    exp.write_attempts_csv(pg, prefix, attempts, os.path.join(raw, f"phase{idx}-attempts.csv"))
    with open(os.path.join(raw, f"phase{idx}-times.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["phase", "push_wall", "all_running_wall", "kill_wall", "back_wall", "all_final_wall"])
        w.writerow([name, t_push, t_all, t_kill, t_back if kill == "control" else "", t_done])
    ended_in_outage = [t for t, r in rec.items() if any(t_kill <= w < t_back for _, w in r["ends"])]
    delivered = [t for t in ended_in_outage if tasks.get(t, ("", 0))[0] == "succeeded"]
    expired = [(t, a) for t, a, _, st, _ in attempts if st == "expired"]
    lost = [t for t, (s, _) in tasks.items() if s != "succeeded"]
    row = {
        "phase": name, "replicas": replicas, "lease_ttl_s": ttl_ms / 1000, "outage_s": outage,
        "tasks": TASKS, "succeeded": gt["succeeded"], "lost": len(lost), "rerun": len(gt["rerun"]),
        "expired_leases": len(expired), "alive_twice": len(gt["overlaps"]),
        "completed_twice": len(gt["completed_twice"]),
        "ended_during_outage": len(ended_in_outage), "delivered_after": len(delivered),
        "last_result_after_back_s": t_done - t_back,
    }
    ex.check(not lost, f"{name}: nothing lost ({len(lost)} not succeeded)")
    ex.check(not gt["overlaps"], f"{name}: no task alive twice at once ({gt['overlaps'][:3]})")
    ex.check(not gt["completed_twice"], f"{name}: no task completed twice ({gt['completed_twice'][:3]})")
    ex.check(len(delivered) == len(ended_in_outage), f"{name}: every result of the outage delivered")
    if ttl_ms / 1000 > (outage or 0) + 5 or kill == "replica":
        ex.check(not gt["rerun"], f"{name}: nothing re-run ({len(gt['rerun'])} re-run)")
    # The timeline of the phase, for the plot: starts and ends relative to the kill.
    timeline = [(name, t, a, w - t_kill, "start") for t, r in rec.items() for a, w, _ in r["starts"]]
    timeline += [(name, t, a, w - t_kill, "end") for t, r in rec.items() for a, w in r["ends"]]
    for c in controls:
        if c.daemon.running:
            c.stop()
    pg.stop()
    return row, timeline, (0.0, t_back - t_kill)


def main():
    rows, timeline, windows = [], [], []
    for i, (name, replicas, ttl, kill) in enumerate(PHASES):
        r, tl, win = phase(i, name, replicas, ttl, kill)
        rows.append(r)
        timeline += tl
        windows.append((name, win))
    header = list(rows[0])
    ex.table("control outage (ground truth: the tasks' own records, the database)", header,
             [[r[h] for h in header] for r in rows])
    ex.csv("control-outage.csv", header, [[r[h] for h in header] for r in rows])
    ex.csv("control-outage-timeline.csv", ["phase", "task", "attempt", "seconds_from_kill", "event"], timeline)

    fig, axes = ex.figure(len(PHASES), 1, figsize=(7, 2.4 * len(PHASES)), squeeze=False)
    for ax, (name, (lo, hi)) in zip(axes[:, 0], windows):
        tl = [x for x in timeline if x[0] == name]
        tasks = sorted({x[1] for x in tl})
        y = {t: i for i, t in enumerate(tasks)}
        for t in tasks:
            starts = sorted((a, s) for _, tt, a, s, k in tl if tt == t and k == "start")
            ends = {a: s for _, tt, a, s, k in tl if tt == t and k == "end"}
            for a, s in starts:
                e = ends.get(a)
                ax.plot([s, e if e is not None else s], [y[t], y[t]], color="C0" if a == 1 else "C3", lw=1.2)
                if e is None:
                    ax.plot([s], [y[t]], "x", color="C3", ms=3)
        ax.axvspan(lo, max(hi, lo + 0.2), color="0.85", label="control down" if hi > lo else "replica killed")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("task")
        ax.legend(loc="lower right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds from the kill (blue: attempt 1, red: a later attempt; x: killed run)")
    ex.save(fig, "control-outage.png")
    return ex.finish({"phases": rows})


exp.run(main)
