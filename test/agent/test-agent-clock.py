#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Leases against wall clocks that step (docs/architecture.md, "Leases"): PostgreSQL and mc-control run
under libfaketime (mctest.FakeClock), whose offset the test changes while real agents (exec driver)
run tasks, as an NTP step or a VM resume moves a real clock. Their monotonic clocks stay true.

- the database host's clock steps a minute ahead, then back, then a minute behind, and the control
  host's does the same: no lease is lost, none doubled; every task ends with one attempt;
- an agent stopped (SIGSTOP) past its lease, with the database's clock stepped back a minute meanwhile,
  still loses the lease, on time, and the task runs again elsewhere only once the first run is gone."""

import glob
import os
import signal
import time

import mctest
from mctest import FakeClock, check, http, wait_until
import agenttest as at

# Agents renew every TTL/3 and fence TTL/3 before the deadline: 6 s leaves a loaded machine 4 s of
# lateness before a renewal is really missed, which this test is not about.
TTL_MS, GRACE_MS = 6000, 1000


def body(cmd):
    return {"image": at.IMAGE, "cmd": ["sh", "-c", cmd], "timeout_sec": 300}


def gated(d, name):
    """A command that records its run (its pid, by attempt) and, should a run of an earlier attempt
    still be alive when it starts, an overlap; then waits for the gate file."""
    me = f"{d}/{name}.pid.$MC_ATTEMPT"
    return body(f"echo $$ > {me}; "
                f"for p in {d}/{name}.pid.*; do [ \"$p\" = {me} ] && continue; "
                f"s=$(cut -d' ' -f3 /proc/$(cat $p)/stat 2>/dev/null); "
                f"[ -n \"$s\" ] && [ \"$s\" != Z ] && echo \"$p alive\" >> {d}/{name}.overlap; done; "
                f"while [ ! -e {d}/gate ]; do sleep 0.1; done; echo done-{name}")


def setup(name, n_agents):
    db_clock, control_clock = FakeClock(), FakeClock()
    nodes = [at.node_name(f"{name}-{i}") for i in range(n_agents)]
    # No Docker here (at.cluster would make sure of a dockerd): the exec driver runs the tasks.
    env = {"MC_LEASE_TTL_MS": TTL_MS, "MC_LEASE_GRACE_MS": GRACE_MS, "MC_SWEEP_INTERVAL_MS": 100}
    env.update(control_clock.env())
    pg, (c,) = at.start_cluster(nodes=tuple(nodes), env=env, pg_env=db_clock.env())
    d = at.task_dir(name)
    agents = [at.Agent([c], n, driver="exec") for n in nodes]
    mctest.defer(at.kill_matching, d + "/", *(a.state_dir + "/" for a in agents))
    return pg, c, agents, d, db_clock, control_clock


def db_offset(pg):
    return float(pg.psql("SELECT extract(epoch FROM now())")[0][0]) - time.time()


def control_offset(c):
    """How far the control's wall clock is from ours, by the Date header of its answers (1 s steps)."""
    from email.utils import parsedate_to_datetime
    r = http("GET", c.url + "/api/health")
    return parsedate_to_datetime(r.headers.get("Date")).timestamp() - time.time()


def renewals(c, tids):
    return {t: c.task(t)["lease"]["renewals"] for t in tids}


def hold_through(c, tids, what):
    """Waits until every lease was renewed twice after the step and a TTL plus the grace has passed
    (time enough for any lease the step had broken to expire), and checks that all are as before."""
    before = renewals(c, tids)
    deadline = time.monotonic() + (TTL_MS + GRACE_MS) / 1000 + 1
    wait_until(lambda: time.monotonic() > deadline and
               all(n >= before[t] + 2 for t, n in renewals(c, tids).items()),
               60, msg=f"every lease renewed twice and a TTL passed after {what}")
    for t in tids:
        task = c.task(t)
        check(task["status"] == "running" and task["attempt"] == 1, f"after {what}: {task}")
    log = c.daemon.log_text()
    check("MC_EVENT=lease_expired" not in log and "MC_EVENT=lease_revoked" not in log,
          f"after {what}: a lease was lost:\n" + "\n".join(
              line for line in log.splitlines() if "lease_expired" in line or "lease_revoked" in line))


def test_clock_steps_keep_leases():
    pg, c, agents, d, db_clock, control_clock = setup("steps", 3)
    for a in agents:
        a.start()
    tids = [at.push(c, gated(d, f"t{i}")) for i in range(8)]
    for t in tids:
        at.wait_status(c, t, "running")
    check(len({c.task(t)["lease"]["node_id"] for t in tids}) > 1, "the tasks run on several agents")

    # Ahead, a minute behind, back to true; then the control's clock ahead and back.
    for clock, offset, name, steps in ((db_clock, lambda: db_offset(pg), "the database's", (60, -120, 60)),
                                       (control_clock, lambda: control_offset(c), "the control's", (60, -60))):
        for step in steps:
            clock.step(step)
            # The step is real where it matters (else this test proves nothing).
            check(abs(offset() - clock.offset) < 5, f"{name} clock is {offset():.1f}s off, not {clock.offset}s")
            hold_through(c, tids, f"{name} clock stepped {step:+d}s to {clock.offset:+d}s")

    open(os.path.join(d, "gate"), "w").close()
    for i, t in enumerate(tids):
        task = at.wait_final(c, t)
        check(task["status"] == "succeeded" and task["attempt"] == 1 and len(task["attempts"]) == 1, task)
        check(f"done-t{i}" in task["result"]["stdout_tail"], task["result"])
    check(glob.glob(os.path.join(d, "*.pid.2")) == [], "no task ran a second time")
    check(glob.glob(os.path.join(d, "*.overlap")) == [], "no overlap")


def test_stopped_agent_loses_its_lease():
    """Expiry still works: an agent stopped past its lease has it taken back, on time even though the
    database's clock stepped back a minute meanwhile (the old deadline-by-clock waited that minute out),
    and the task runs again on the other agent only once its first run was killed (by the fence
    keeper, as the agent cannot)."""
    pg, c, (x, y), d, db_clock, _ = setup("stopped", 2)
    x.start()
    tid = at.push(c, gated(d, "t"))
    at.wait_status(c, tid, "running")
    wait_until(lambda: os.path.exists(f"{d}/t.pid.1"), 30, msg="the first run")
    y.start()

    os.kill(x.daemon.pid, signal.SIGSTOP)
    mctest.defer(lambda: x.daemon.running and os.kill(x.daemon.pid, signal.SIGCONT))
    stopped = time.monotonic()
    db_clock.step(-60)
    wait_until(lambda: c.task(tid)["attempt"] == 2, 45, msg="the lease to expire and the task to be claimed again")
    check(time.monotonic() - stopped < 45, "expired without waiting out the clock's step")
    check("MC_EVENT=lease_expired" in c.daemon.log_text(), "the sweep's lease_expired event")
    wait_until(lambda: os.path.exists(f"{d}/t.pid.2"), 30, msg="the second run")
    check(not os.path.exists(f"{d}/t.overlap"), "the first run was alive when the second started")

    # The stopped agent comes back: it fences the lease it lost rather than renew it (no revocation
    # of a renewal it sent), and reports nothing of it (no stale report).
    back = pg.psql("SELECT now()")[0][0]
    os.kill(x.daemon.pid, signal.SIGCONT)
    wait_until(lambda: pg.psql(f"SELECT last_heartbeat > '{back}' FROM nodes WHERE node_id = '{x.node}'")[0][0] == "t",
               30, msg="a heartbeat of the agent that was stopped")
    open(os.path.join(d, "gate"), "w").close()
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded" and t["attempt"] == 2, t)
    check([a["status"] for a in t["attempts"]] == ["expired", "succeeded"], t["attempts"])
    check(t["attempts"][1]["node_id"] == y.node, t["attempts"])
    log = c.daemon.log_text()
    check("MC_EVENT=lease_revoked" not in log and "MC_EVENT=stale_lease" not in log,
          "the agent that was stopped renewed or reported its lost lease:\n" +
          "\n".join(line for line in log.splitlines() if "lease_revoked" in line or "stale_lease" in line))


mctest.main()
