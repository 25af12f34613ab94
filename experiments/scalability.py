#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Scalability: 50 to 1000 exec agents on this one machine (each agent in a cgroup of its own,
MAX_TASKS 2), 10 tasks of 2-4 s per agent; once 30 % of the tasks have started, 10 % of the agents die
at once. Per size: success, copies alive at once, re-runs, recovery (node death to the next attempt's
own start record), false recalls, and the cost of the control and of PostgreSQL (CPU seconds, peak
memory, from /proc) and claim latency (the control's /metrics histogram). The inotify instance limit is
raised for the run (exp.host_limits()).

The sweep stops at the first size that does not finish (agents not registered, or tasks not final
within the time limit) or that the machine's free memory cannot hold, and says so.

Parameters (--param KEY=JSON): sizes (agents), tasks_per_agent, max_tasks (per agent at once),
task_seconds ([min, max]), lease_ttl_ms, timeout_s (per size), push_first_from (from this many agents
on, every task is queued before the agents start), agent_nice (the agents' niceness, 19; 0 in --quick), servers_first (the control and PostgreSQL in a cpu
cgroup of the largest weight, true)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402

ex = exp.Experiment("scalability", __doc__)
Q = ex.quick
SIZES = ex.param("sizes", [4, 8] if Q else [50, 100, 200, 500, 1000], exp.ALL_AT_LEAST_1)
TASKS_PER_AGENT = ex.param("tasks_per_agent", 3 if Q else 10, exp.AT_LEAST_1)
KILL = 0.25 if Q else 0.1
TTL_MS = ex.param("lease_ttl_ms", 3000 if Q else 5000, exp.LEASE_TTL)
SECONDS = tuple(ex.param("task_seconds", [1.0, 2.0] if Q else [2.0, 4.0], exp.DURATION_RANGE))
MAX_TASKS = ex.param("max_tasks", 2, exp.AT_LEAST_1)
TIMEOUT = ex.param("timeout_s", 90 if Q else 600, exp.AT_LEAST_1)
# Queue every task before the agents start (the push then does not compete with their claims; the
# sweep from 500 agents up, where pushing under the claims of all of them took minutes).
PUSH_FIRST_FROM = ex.param("push_first_from", 500, exp.AT_LEAST_0)
# The agents (and what they start) run at this niceness: a thousand simulated nodes on one machine
# must not starve the control and PostgreSQL, which a real cluster runs on machines of their own.
AGENT_NICE = ex.param("agent_nice", 0 if Q else 19, (lambda v: -20 <= v <= 19, "a niceness from -20 to 19"))
# ... and the control and PostgreSQL go into a cpu cgroup of the largest weight (exp.servers_first()).
SERVERS_FIRST = ex.param("servers_first", True)
ex.check_params()
MEM_PER_AGENT = 12 << 20         # a first guess; after each size, what the agents of that size took
ex.settings.update(agents=SIZES, tasks_per_agent=TASKS_PER_AGENT, killed_share=KILL, lease_ttl_ms=TTL_MS,
                   task_seconds=SECONDS, max_tasks_per_agent=MAX_TASKS, kill_after_started=0.3,
                   timeout_per_size_s=TIMEOUT, driver="exec", agent_nice=AGENT_NICE,
                   servers_first=SERVERS_FIRST)

COLS = ["agents", "tasks", "push_first", "complete", "stuck_leased_live_node", "start_agents_s", "push_s", "push_to_all_final_s", "success_share",
        "alive_twice", "completed_twice", "rerun_after_partial", "rerun_after_complete", "hit_by_death",
        "recovery_p50_s", "recovery_p95_s", "recovery_p99_s", "recovery_max_s", "false_recalls", "late_results_taken", "cost_window_s",
        "control_cpu_s", "control_cores", "control_peak_rss_mib", "postgres_cpu_s", "postgres_cores", "postgres_peak_pss_mib", "claims", "claim_p50_ms", "claim_p99_ms",
        "agents_mem_peak_mib", "loadavg_1m"]


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    rows, stopped = [], None
    for n in SIZES:
        per_agent = max([MEM_PER_AGENT] + [r["agents_mem_peak_mib"] * 2**20 / r["agents"] * 1.3 for r in rows
                                           if r.get("agents_mem_peak_mib")])
        if mem_available() < n * per_agent + (2 << 30):
            stopped = (f"{n} agents: {mem_available() >> 20} MiB available, less than {n} x {per_agent / 2**20:.1f} MiB "
                       f"(the last size's peak per agent, + 30 %) + 2 GiB kept for the machine")
            break
        ex.log(f"{n} agents, {n * TASKS_PER_AGENT} tasks")
        row, _, _ = exp.node_death_run(ex, f"s{n}", n, n * TASKS_PER_AGENT, KILL, TTL_MS, seconds=SECONDS,
                                       max_tasks=MAX_TASKS, timeout=TIMEOUT, node_prefix=f"sc{n}-",
                                       push_first=n >= PUSH_FIRST_FROM, agent_nice=AGENT_NICE,
                                       servers_cpu=SERVERS_FIRST)
        ex.log(f"{n} agents: " + ", ".join(f"{k}={exp.fmt(row.get(k))}" for k in COLS[2:]))
        rows.append(row)
        ex.check(row.get("alive_twice", 1) == 0, f"{n} agents: no task alive twice at once")
        ex.check(row.get("completed_twice", 1) == 0, f"{n} agents: no task completed twice")
        # Tasks held by a live agent that never starts them (an agent bug, counted) do not stop the
        # sweep; agents that cannot register, or a run that does not end, do.
        if not row.get("complete") and not row.get("stuck_leased_live_node"):
            stopped = f"{n} agents: {row.get('error', 'not complete')}"
            break
    if stopped:
        ex.log(f"sweep stopped: {stopped}")
    if Q:
        ex.check(not stopped and len(rows) == len(SIZES), f"every size ran ({stopped})")
    ex.table("scalability (ground truth)", COLS, [[r.get(c) for c in COLS] for r in rows])
    ex.csv("scalability.csv", COLS, [[r.get(c) for c in COLS] for r in rows])

    done = [r for r in rows if r.get("final")]
    xs = [r["agents"] for r in done]
    fig, axes = ex.figure(1, 3, figsize=(13, 3.8))
    a1, a2, a3 = axes
    for k, lab in (("recovery_p50_s", "p50"), ("recovery_p95_s", "p95"), ("recovery_p99_s", "p99"), ("recovery_max_s", "max")):
        a1.plot(xs, [r.get(k) for r in done], "o-", label=lab)
    a1.axhline(TTL_MS / 1000, color="0.6", ls="--", lw=0.8, label="lease TTL")
    a1.set_xscale("log")
    a1.set_xlabel("agents")
    a1.set_ylabel("node death -> next attempt running (s)")
    a1.set_title(f"recovery, {KILL:.0%} of the agents killed", fontsize=9)
    a1.legend(fontsize=7)
    a2.plot(xs, [r.get("control_cpu_s") for r in done], "o-", label="control CPU s")
    a2.plot(xs, [r.get("postgres_cpu_s") for r in done], "s-", label="PostgreSQL CPU s")
    a2.plot(xs, [r.get("push_to_all_final_s") for r in done], "^-", label="push -> all final (wall s)")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("agents")
    a2.set_title("cost of the whole run", fontsize=9)
    a2.legend(fontsize=7)
    a3.plot(xs, [r.get("claim_p50_ms") for r in done], "o-", label="claim p50 (bucket bound)")
    a3.plot(xs, [r.get("claim_p99_ms") for r in done], "s-", label="claim p99 (bucket bound)")
    a3.set_xscale("log")
    a3.set_yscale("log")
    a3.set_xlabel("agents")
    a3.set_ylabel("ms")
    a3.set_title("claim transaction (control /metrics)", fontsize=9)
    a3.legend(fontsize=7)
    ex.save(fig, "scalability.png")
    return ex.finish({"runs": rows, "stopped": stopped, "largest_complete": max([r["agents"] for r in rows if r.get("complete")], default=None)})


exp.run(main)
