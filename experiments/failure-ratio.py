#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Failure ratio: 100 exec agents, 1000 tasks; once 30 % of the tasks have started, a share of the
agents die at once (every process of their cgroups SIGKILLed: the agent, its fence keeper, its exec
supervisors and its tasks). Then, at 20 % killed, the lease TTL is varied to find the shortest one with
no false recall (a lease expired on a node that was never killed) while the machine is loaded by the
run itself; each TTL is run `repeats` times.

Recovery: from the first SIGKILL of the node to the start record of the task's next attempt.

Parameters (--param KEY=JSON): agents, tasks, ratios (shares killed at the TTL `ttl_ms`), ttl_ms,
ttls (the TTL sweep, ms), ttl_sweep_ratio, repeats (runs of each TTL of the sweep)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402

ex = exp.Experiment("failure-ratio", __doc__)
Q = ex.quick
AGENTS = ex.param("agents", 8 if Q else 100, exp.AT_LEAST_1)
TASKS = ex.param("tasks", 40 if Q else 1000, exp.AT_LEAST_1)
RATIOS = ex.param("ratios", [0.5] if Q else [0.2, 0.9], exp.kill_shares(AGENTS))
TTL_MS = ex.param("ttl_ms", 3000 if Q else 5000, exp.LEASE_TTL)
TTLS = ex.param("ttls", [2000] if Q else [3000, 4000, 5000, 8000], exp.ALL_LEASE_TTLS)
TTL_SWEEP_RATIO = ex.param("ttl_sweep_ratio", 0.5 if Q else 0.2, exp.kill_shares(AGENTS))
REPEATS = ex.param("repeats", 1 if Q else 2, exp.AT_LEAST_1)
ex.check_params()
SECONDS = (1.5, 3.0) if Q else (3.0, 6.0)
MAX_TASKS = 4
ex.settings.update(agents=AGENTS, tasks=TASKS, kill_ratios=RATIOS, lease_ttl_ms=TTL_MS, ttl_sweep_ms=TTLS,
                   ttl_sweep_kill_ratio=TTL_SWEEP_RATIO, ttl_sweep_repeats=REPEATS, task_seconds=SECONDS,
                   max_tasks_per_agent=MAX_TASKS, kill_after_started=0.3, lease_grace_ms=1000,
                   sweep_interval_ms=250, driver="exec")

COLS = ["label", "agents", "tasks", "killed_share", "lease_ttl_s", "complete", "success_share", "succeeded",
        "stuck_leased_live_node",
        "alive_twice", "completed_twice", "rerun_after_partial", "rerun_after_complete", "hit_by_death", "recovery_p50_s",
        "recovery_p95_s", "recovery_p99_s", "recovery_max_s", "false_recalls", "push_to_all_final_s",
        "control_cpu_s", "control_peak_rss_mib", "postgres_cpu_s", "postgres_peak_pss_mib", "claim_p50_ms",
        "claim_p99_ms", "loadavg_1m"]


def main():
    rows, rec_rows, fr_rows = [], [], []
    runs = [(f"kill{int(r * 100)}", r, TTL_MS) for r in RATIOS]
    # The sweep's first point at TTL_MS is the ratio run with the same share killed.
    for k in range(REPEATS):
        runs += [(f"ttl{t}" + (f"-r{k + 1}" if k else ""), TTL_SWEEP_RATIO, t) for t in TTLS
                 if not (k == 0 and t == TTL_MS and any(abs(r - TTL_SWEEP_RATIO) < 1e-9 for r in RATIOS))]
    for label, ratio, ttl in runs:
        ex.log(f"run {label}: {AGENTS} agents, {TASKS} tasks, {ratio:.0%} killed, TTL {ttl / 1000:g} s")
        row, rec, fr = exp.node_death_run(ex, label, AGENTS, TASKS, ratio, ttl, seconds=SECONDS, max_tasks=MAX_TASKS,
                                          timeout=120 if Q else 600, node_prefix=f"fr{label}-")
        ex.log(f"run {label}: " + ", ".join(f"{k}={exp.fmt(row.get(k))}" for k in COLS[5:19]))
        rows.append(row)
        rec_rows += [(label, ratio, ttl / 1000, x) for x in rec]
        fr_rows += [(label, ratio, ttl / 1000, t, a, n) for t, a, n in fr]
        ex.check(row.get("complete", False), f"{label}: every task final ({row.get('error', '')})")
        ex.check(row.get("alive_twice", 1) == 0, f"{label}: no task alive twice at once")
        ex.check(row.get("completed_twice", 1) == 0, f"{label}: no task completed twice")
    ex.table("failure ratio (ground truth)", COLS, [[r.get(c) for c in COLS] for r in rows])
    ex.csv("failure-ratio.csv", COLS, [[r.get(c) for c in COLS] for r in rows])
    ex.csv("failure-ratio-recovery.csv", ["label", "killed_share", "lease_ttl_s", "recovery_s"], rec_rows)
    ex.csv("failure-ratio-false-recalls.csv", ["label", "killed_share", "lease_ttl_s", "task", "attempt", "node"], fr_rows)

    kr = [r for r in rows if r["label"].startswith("kill")]
    fig, (a1, a2) = ex.figure(1, 2, figsize=(10, 3.8))
    xs = [r["killed_share"] * 100 for r in kr]
    for k, lab in (("recovery_p50_s", "p50"), ("recovery_p95_s", "p95"), ("recovery_p99_s", "p99"),
                   ("recovery_max_s", "max")):
        a1.plot(xs, [r.get(k) for r in kr], "o-", label=lab)
    a1.axhline(TTL_MS / 1000, color="0.6", ls="--", lw=0.8, label="lease TTL")
    a1.set_xlabel("agents killed (%)")
    a1.set_ylabel("node death -> next attempt running (s)")
    a1.set_title(f"recovery, TTL {TTL_MS / 1000:g} s", fontsize=9)
    a1.legend(fontsize=7)
    a2.plot(xs, [100 * (r.get("success_share") or 0) for r in kr], "o-", label="succeeded (%)")
    a2.plot(xs, [r.get("alive_twice") for r in kr], "s-", label="alive twice at once (tasks)")
    a2.plot(xs, [r.get("completed_twice") for r in kr], "^-", label="completed twice (tasks)")
    a2.plot(xs, [100 * (r.get("rerun_after_partial") or 0) / TASKS for r in kr], "d-", label="re-run after a partial run (%)")
    a2.set_xlabel("agents killed (%)")
    a2.set_title("outcome", fontsize=9)
    a2.legend(fontsize=7)
    ex.save(fig, "failure-ratio.png")

    # The TTL sweep, its repeats pooled: recovery over every run of a TTL, false recalls summed.
    sweep = [r for r in rows if r["label"].startswith("ttl")
             or (r["label"].startswith("kill") and abs(r["killed_share"] - TTL_SWEEP_RATIO) < 1e-9)]
    by_ttl = {}
    for r in sweep:
        by_ttl.setdefault(r["lease_ttl_s"], []).append(r)
    pooled = []
    for ttl in sorted(by_ttl):
        rs = by_ttl[ttl]
        labels = {r["label"] for r in rs}
        rec = [x for lab, _, t, x in rec_rows if lab in labels]
        st = exp.recovery_stats(rec)
        pooled.append({"lease_ttl_s": ttl, "runs": len(rs), "complete": all(r.get("complete") for r in rs),
                       "false_recalls": sum(r.get("false_recalls") or 0 for r in rs),
                       "false_recalls_per_run": "/".join(str(r.get("false_recalls")) for r in rs),
                       "stuck_leased_live_node": sum(r.get("stuck_leased_live_node") or 0 for r in rs),
                       "alive_twice": sum(r.get("alive_twice") or 0 for r in rs),
                       "hit_by_death": sum(r.get("hit_by_death") or 0 for r in rs),
                       "recovery_p50_s": st["p50"], "recovery_p95_s": st["p95"], "recovery_p99_s": st["p99"],
                       "recovery_max_s": st["max"],
                       "loadavg_1m": "/".join(f"{r.get('loadavg_1m', 0):.1f}" for r in rs)})
    PC = ["lease_ttl_s", "runs", "complete", "false_recalls", "false_recalls_per_run", "stuck_leased_live_node",
          "alive_twice", "hit_by_death", "recovery_p50_s", "recovery_p95_s", "recovery_p99_s", "recovery_max_s",
          "loadavg_1m"]
    ex.table("lease TTL sweep (repeats pooled)", PC, [[r.get(c) for c in PC] for r in pooled])
    ex.csv("failure-ratio-ttl.csv", PC, [[r.get(c) for c in PC] for r in pooled])
    fig, a1 = ex.figure()
    xs = [r["lease_ttl_s"] for r in pooled]
    for k, lab in (("recovery_p50_s", "recovery p50"), ("recovery_p95_s", "recovery p95"), ("recovery_max_s", "recovery max")):
        a1.plot(xs, [r.get(k) for r in pooled], "o-", label=lab)
    a1.plot(xs, xs, color="0.6", ls="--", lw=0.8, label="TTL")
    a1.set_xlabel("lease TTL (s)")
    a1.set_ylabel("seconds")
    a2 = a1.twinx()
    a2.bar(xs, [r["false_recalls"] for r in pooled], width=0.4, color="C3", alpha=0.4,
           label=f"false recalls (sum of {REPEATS} run(s) per TTL)")
    a2.set_ylabel("false recalls (leases expired on live nodes)")
    a2.set_ylim(0, max([r["false_recalls"] for r in pooled] + [1]) * 1.2)
    a1.set_title(f"{AGENTS} agents, {TASKS} tasks, {TTL_SWEEP_RATIO:.0%} killed", fontsize=9)
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = a2.get_legend_handles_labels()
    a1.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ex.save(fig, "failure-ratio-ttl.png")
    zero = [r["lease_ttl_s"] for r in pooled if r["false_recalls"] == 0 and r["complete"]]
    return ex.finish({"runs": rows, "ttl_sweep": pooled,
                      "shortest_ttl_without_false_recall_s": min(zero) if zero else None})


exp.run(main)
