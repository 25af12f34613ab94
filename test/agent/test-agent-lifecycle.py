#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-agent end to end, against the real mc-control on a real PostgreSQL and the real dockerd: the
seed's sample task on node-b, limits and runtime as the engine records them, failure, timeout, cancel,
an unknown image and an unknown runtime, a task too large for any node, control failover; and the same
life cycle with the exec driver (limits read back from the task's own cgroup).

Usage: test-agent-lifecycle.py [docker|exec] [test names...]"""

import glob
import os
import signal
import subprocess
import sys
import time
import urllib.parse

import mctest
from mctest import check, http, wait_until
import agenttest as at

DRIVER = "docker"
if len(sys.argv) > 1 and sys.argv[1] in ("docker", "exec"):
    DRIVER = sys.argv.pop(1)


def setup(n_agents=1, replicas=1, names=None, **agent_kw):
    nodes = names or [at.node_name(f"node-{chr(ord('a') + i)}") for i in range(n_agents)]
    pg, controls = at.cluster(nodes, replicas=replicas)
    agents = [at.Agent(controls, n, driver=DRIVER, **agent_kw).start() for n in nodes]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    return pg, controls, agents


def logs(c, tid):
    r = http("GET", f"{c.url}/api/tasks/{tid}/logs", token=at.USER_TOKEN)
    check(r.status == 200, f"logs: {r.status} {r.text}")
    return r.text


def task_body(cmd, **kw):
    body = {"image": at.IMAGE, "cmd": ["sh", "-c", cmd], "timeout_sec": 60}
    body.update(kw)
    return body


def test_sample_task_on_node_b():
    """The seed's sample task, targeted at node-b, runs on node-b with its limits and runtime."""
    pg, (c,), (a, b) = setup(names=["node-a", "node-b"])
    # The sample's command, held running until the test has looked at it (its 2 s sleep could end
    # before a slow machine sees it running, and its container would be gone).
    marker = f"sample-{at.RUN}"
    body = dict(at.SAMPLE_TASK, cmd=["sh", "-c", "echo hi-from-A; " + at.held_cmd(marker, "uname -a")])
    if DRIVER == "docker":
        body["runtime"] = mctest.SECOND_RUNTIME
    tid = at.push(c, body)
    t = at.wait_status(c, tid, ("running",) + at.FINAL, 60)
    check(t["status"] == "running", f"task ended before it was seen running: {t}")
    check(t["lease"]["node_id"] == "node-b", t)
    if DRIVER == "docker":
        (ct,) = at.containers_of(tid)
        info = at.inspect(ct["Id"])
        hc = info["HostConfig"]
        check(hc["NanoCpus"] == 500000000 and hc["Memory"] == 268435456 and hc["Runtime"] == mctest.SECOND_RUNTIME,
              f"HostConfig: NanoCpus={hc['NanoCpus']} Memory={hc['Memory']} Runtime={hc['Runtime']}")
        labels = info["Config"]["Labels"]
        check(labels["mc.task_id"] == tid and labels["mc.node"] == "node-b" and labels["mc.lease_token"] == "1", labels)
    at.release(marker)
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded", t)
    check(t["attempt"] == 1 and len(t["attempts"]) == 1 and t["attempts"][0]["node_id"] == "node-b", t)
    check("hi-from-A" in t["result"]["stdout_tail"], t["result"])
    check(t["result"]["exit_code"] == 0, t["result"])
    check("hi-from-A" in logs(c, tid), "logs")
    check("node-b" not in a.log() or tid not in a.log(), "node-a touched the task")
    if DRIVER == "docker":
        wait_until(lambda: at.containers_of(tid) == [], 60, msg="container removed")


def test_exit_code():
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("echo out; echo err >&2; exit 3"))
    t = at.wait_final(c, tid)
    check(t["status"] == "failed" and t["result"]["exit_code"] == 3, t)
    check(t["result"]["stdout_tail"] == "out\n" and t["result"]["stderr_tail"] == "err\n", t["result"])
    check("3" in (t["result"]["reason"] or ""), t["result"])


def test_metrics():
    """GET /metrics on METRICS_PORT: claims, the tasks by state, control round trips, the process, in a
    text promtool finds nothing to say about; only /metrics is served."""
    port = mctest.free_port()
    pg, (c,), (a,) = setup(env={"MC_METRICS_PORT": str(port)})
    tid = at.push(c, task_body("echo metered"))
    check(at.wait_final(c, tid)["status"] == "succeeded", c.task(tid))
    url = f"http://127.0.0.1:{port}/metrics"
    # The lease is counted when the claim's answer is handled, the task when it is held.
    m = wait_until(lambda: (lambda t: t if 'mc_agent_claims_total{outcome="leased"} 1' in t else None)(http("GET", url).text),
                   60, msg="the claim counted")
    for needle in ['mc_agent_tasks{state="running"} ', "mc_agent_fences_total 0", 'mc_agent_heartbeats_total{outcome="failed"} ',
                   'mc_agent_heartbeats_total{outcome="answered"} ',
                   'mc_agent_input_bytes_total{source="seeders"} 0', "mc_agent_control_request_duration_seconds_count ",
                   'mc_build_info{program="mc-agent",version="', "process_resident_memory_bytes ", "process_open_fds "]:
        check(needle in m, f"{needle!r} not in the agent's /metrics:\n{m}")
    count = int(m.split("mc_agent_control_request_duration_seconds_count ")[1].split()[0])
    check(count >= 2, f"register and started at least: {count} round trips")
    mctest.check_prometheus_text(m)
    check(http("GET", f"http://127.0.0.1:{port}/api/tasks").status == 404, "only /metrics")
    check(http("POST", url, body=b"x").status == 405, "GET only")


def requests_waiting_at(c):
    """Whether a request lies unread at control c: a connection in its accept queue, or bytes on
    one it has accepted (Recv-Q of its sockets on its port)."""
    port = urllib.parse.urlsplit(c.url).port
    out = subprocess.run(["ss", "-Htan", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return any(int(line.split()[1]) > 0 for line in out.splitlines())


def test_stalled_control_keeps_leases():
    """With one control, a renewal waits for its answer until the first lease's fence, not a third of
    the TTL: there is nowhere else to send it, and a retry would queue behind the first. A control that
    stops answering for longer than that timeout (SIGSTOP for 7 s, against 5 s) renews the lease when it
    comes back; the agent neither gives the heartbeat up nor stops the task."""
    port = mctest.free_port()
    nodes = [at.node_name("node-a")]
    # TTL 30 s: the renewal is sent 7.5 s after the previous one and fenced 19.5 s after that (the
    # margin is at most 3 s); the old timeout was min(REQUEST_TIMEOUT_MS 5 s, TTL/3).
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=30000)
    at.Agent([c], nodes[0], driver=DRIVER, env={"MC_METRICS_PORT": str(port), "MC_MAX_TASKS": "1"}).start()
    mctest.defer(at.cleanup_node_containers, nodes[0])
    marker = f"stalled-control-{at.RUN}"
    tid = at.push(c, task_body(at.held_cmd(marker), timeout_sec=600))
    at.wait_status(c, tid, "running")
    url = f"http://127.0.0.1:{port}/metrics"

    def counters():
        m = mctest.metrics_at(url)
        return {"answered": m.get('mc_agent_heartbeats_total{outcome="answered"}'),
                "failed": m.get('mc_agent_heartbeats_total{outcome="failed"}'), "fences": m.get("mc_agent_fences_total")}

    before = wait_until(lambda: (lambda n: n if n["answered"] >= 1 else None)(counters()), 60,
                        msg="a heartbeat answered")
    c.daemon.kill(signal.SIGSTOP)
    try:
        # Only the heartbeat can come: the one task it may hold is running, its start reported.
        wait_until(lambda: requests_waiting_at(c), 60, msg="a heartbeat waiting at the stopped control")
        time.sleep(7)   # the stall itself, not a wait for something to happen
    finally:
        c.daemon.kill(signal.SIGCONT)
    after = wait_until(lambda: (lambda n: n if n["answered"] > before["answered"] else None)(counters()), 60,
                       msg="the waiting heartbeat answered")
    check(after["failed"] == before["failed"] and after["fences"] == 0, f"before {before}, after {after}")
    t = c.task(tid)
    check(t["status"] == "running" and t["attempt"] == 1, t)
    at.release(marker)
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded" and t["attempt"] == 1, t)


def test_timeout():
    pg, (c,), (a,) = setup()
    # It would sleep far longer than the wait below: ending within it, it was stopped (no bound on
    # how soon after its 2 s, which is the machine's speed).
    tid = at.push(c, task_body("echo started; sleep 600", timeout_sec=2))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "timed_out", t)
    check("timed out" in (t["result"]["reason"] or ""), t["result"])
    check("started" in t["result"]["stdout_tail"], t["result"])
    if DRIVER == "docker":
        # (Removed and acknowledged after the control has the result: waited for, not sampled.)
        wait_until(lambda: at.containers_of(tid) == [], 60, msg="the container gone")
    wait_until(lambda: a.outbox() == [], 60, msg="the outbox emptied")


def test_cancel():
    pg, (c,), (a,) = setup()
    marker = f"cancel-{at.RUN}"
    tid = at.push(c, task_body(f"trap 'echo got-term; exit 143' TERM; echo {marker}; sleep 60 & wait"))
    at.wait_status(c, tid, "running")
    wait_until(lambda: at.term_trapped(marker), 30, msg="the task's shell to set its trap")
    r = c.cancel(tid)
    check(r.status == 200, f"cancel: {r.status} {r.text}")
    # The record says cancelled at once; the agent stops the container and reports its result.
    wait_until(lambda: (lambda t: t["result"] is not None and t["result"]["exit_code"] is not None)(c.task(tid)),
               30, msg="the agent's result of the cancelled task")
    t = c.task(tid)
    check(t["status"] == "cancelled", t)
    check(t["result"]["exit_code"] == 143 and "got-term" in t["result"]["stdout_tail"], t["result"])
    if DRIVER == "docker":
        wait_until(lambda: at.containers_of(tid) == [], 60, msg="container removed")
    wait_until(lambda: a.outbox() == [], 60, msg="outbox empty")


def test_revoked_lease_kill_measured():
    """A lease revoked while its task runs (superseded: here its token raised in the database, as when
    the task went to another node) has the process killed at once, no result sent; the time from that
    SIGKILL to the process's end is in mc_agent_kill_duration_seconds, which an operator compares with
    the fence margin."""
    port = mctest.free_port()
    pg, (c,), (a,) = setup(env={"MC_METRICS_PORT": str(port)})
    url = f"http://127.0.0.1:{port}/metrics"

    def kills():
        m = mctest.metrics_at(url)
        return m.get("mc_agent_kill_duration_seconds_count"), m.get("mc_agent_kill_duration_seconds_sum")

    marker = f"revoked-kill-{at.RUN}"
    tid = at.push(c, task_body(at.held_cmd(marker), timeout_sec=600))
    at.wait_status(c, tid, "running")
    check(kills() == (0, 0), f"a kill counted before any: {kills()}")
    pg.psql(f"UPDATE tasks SET lease_token = lease_token + 1 WHERE id = '{tid}'")
    n, total = wait_until(lambda: (lambda k: k if k[0] >= 1 else None)(kills()), 60, msg="the kill measured")
    check(n == 1 and total >= 0, f"one kill: count {n}, sum {total}")
    print(f"  kill took {total * 1000:.1f} ms")
    mctest.check_prometheus_text(http("GET", url).text)
    wait_until(lambda: not at.trapping_pids(marker, signal.SIGUSR1) and a.outbox() == [], 60,
               msg="the process gone, no result")
    check(c.task(tid)["result"] is None, c.task(tid))
    check(c.cancel(tid).status == 200, "cancel")    # its lease is nobody's: out of the way


def test_cancel_queued_and_claimed():
    """Cancelling a task before the agent started it: it never runs."""
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("echo should-not-run", labels={"target_node": "nobody"}))
    r = c.cancel(tid)
    check(r.status == 200, r.text)
    t = c.task(tid)
    check(t["status"] == "cancelled" and t["attempt"] == 0, t)


def test_unknown_image():
    if DRIVER != "docker":
        return
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("true", image="mc-test/does-not-exist:1.0"))
    t = at.wait_final(c, tid)
    check(t["status"] == "failed", t)
    reason = t["result"]["reason"] or ""
    check("mc-test/does-not-exist:1.0" in reason and "pull" in reason, f"reason: {reason!r}")
    check(t["attempt"] == 1, t)


def test_unknown_runtime():
    if DRIVER != "docker":
        return
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("true", runtime="kata-runtime"))
    t = at.wait_final(c, tid)
    check(t["status"] == "failed", t)
    reason = t["result"]["reason"] or ""
    check("kata-runtime" in reason and "not available" in reason, f"reason: {reason!r}")


def test_command_not_found():
    pg, (c,), (a,) = setup()
    tid = at.push(c, {"image": at.IMAGE, "cmd": ["no-such-command-mc"], "timeout_sec": 30})
    t = at.wait_final(c, tid)
    check(t["status"] == "failed" and "no-such-command-mc" in (t["result"]["reason"] or ""), t)


def test_too_large_stays_queued():
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("true", resources={"nano_cpus": 64_000_000_000, "memory_bytes": 1 << 30}))
    small = at.push(c, task_body("echo small"))
    check(at.wait_final(c, small)["status"] == "succeeded", "a task that fits still runs")
    # The explanation is refreshed every few housekeeping rounds: wait for it, however slow they are.
    t = wait_until(lambda: (lambda t: t if t["pending_reason"] or t["status"] != "queued" else None)(c.task(tid)),
                   120, msg="the queued task too large for every node to say why (pending_reason)")
    check(t["status"] == "queued" and t["attempt"] == 0, t)
    check(t["pending_reason"], f"a queued task too large for every node says why: {t}")
    print(f"# pending_reason: {t['pending_reason']}")


def test_limits_visible():
    """The requested limits, as the kernel (exec) or the engine (docker) applies them."""
    pg, (c,), (a,) = setup()
    res = {"nano_cpus": 250_000_000, "memory_bytes": 64 << 20}
    if DRIVER == "docker":
        marker = f"limits-{at.RUN}"
        tid = at.push(c, task_body(at.held_cmd(marker), resources=res))
        at.wait_status(c, tid, "running")
        (ct,) = at.containers_of(tid)
        hc = at.inspect(ct["Id"])["HostConfig"]
        check(hc["NanoCpus"] == 250_000_000 and hc["Memory"] == 64 << 20 and hc["Runtime"] == "runc", hc)
        at.release(marker)
        check(at.wait_final(c, tid)["status"] == "succeeded", "task")
        return
    # The task reads its own cgroup, v1 or v2 (or hybrid: v1 controllers, whatever hierarchies they
    # share, such as cpu,cpuacct).
    script = r"""
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  p=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
  echo "cpu $(cat /sys/fs/cgroup$p/cpu.max)"; echo "mem $(cat /sys/fs/cgroup$p/memory.max)"
else
  m=$(grep -E ':([^:]*,)?memory(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3); c=$(grep -E ':([^:]*,)?cpu(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3)
  echo "cpu $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu$c/cpu.cfs_period_us)"
  echo "mem $(cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes)"
fi
"""
    tid = at.push(c, task_body(script, resources=res))
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded", t)
    out = t["result"]["stdout_tail"]
    check("cpu 25000 100000" in out and f"mem {64 << 20}" in out, f"cgroup limits seen by the task: {out!r}")


def test_binary_output():
    """Megabytes of binary output: the result still gets through (valid UTF-8, within the control's
    limits), marked truncated, with the end of stdout in its tail."""
    pg, (c,), (a,) = setup()
    tid = at.push(c, task_body("head -c 3000000 /dev/urandom; echo; echo the-end; echo err-end >&2"))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "succeeded", t)
    res = t["result"]
    check(res["truncated"] is True, res)
    check(res["stdout_tail"].endswith("the-end\n") and res["stderr_tail"] == "err-end\n", res)
    check(len(res["stdout_tail"].encode()) <= 64 * 1024, "tail within the control's limit")
    check(len(logs(c, tid)) > 0, "the output is kept")
    wait_until(lambda: a.outbox() == [], 60, msg="outbox empty")


def test_damaged_state_files():
    """A lease file that is not what the agent writes (a damaged disk, a hand edit), and an outbox entry
    under another name than its content's: the agent says so, adopts and sends nothing of them, and
    goes on working."""
    node = at.node_name("node-a")
    pg, (c,) = at.cluster([node])
    mctest.defer(at.cleanup_node_containers, node)
    a = at.Agent([c], node, driver=DRIVER)
    os.makedirs(a.state_dir, exist_ok=True)
    with open(os.path.join(a.state_dir, "leases.json"), "w") as f:
        f.write('{"boot_id": "x", "leases": [')
    os.makedirs(os.path.join(a.state_dir, "outbox"), exist_ok=True)
    with open(os.path.join(a.state_dir, "outbox", "misnamed.json"), "w") as f:
        f.write('{"task_id": "ghost", "lease_token": 1, "finish": {"status": "succeeded"}}')
    # A write a crash interrupted: never acknowledged, so removed, not sent.
    torn = os.path.join(a.state_dir, "outbox", ".ghost.2.json.tmp")
    with open(torn, "w") as f:
        f.write('{"task_id": "gho')
    a.start()
    a.daemon.wait_log("Cannot read the lease file", 30)
    a.daemon.wait_log("Ignoring outbox entry", 30)
    wait_until(lambda: not os.path.exists(torn), 60, msg="the torn temporary file to be removed")
    tid = at.push(c, task_body("echo after-damage"))
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded" and "after-damage" in t["result"]["stdout_tail"], t)


def test_failover_between_controls():
    """The first control URL is dead: the agent uses the second, for everything."""
    pg, (c1, c2) = at.cluster([at.node_name("node-a")], replicas=2)
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    c1.kill()
    at.Agent([c1, c2], node, driver=DRIVER).start()
    tid = at.push(c2, task_body("echo via-second"))
    t = at.wait_final(c2, tid)
    check(t["status"] == "succeeded" and "via-second" in t["result"]["stdout_tail"], t)


if DRIVER == "exec":
    # Exec tasks run on the host, as EXEC_USER: what they may do is the driver's to restrict.
    PRIVILEGE_CMD = ("echo uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,); "
                     "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status | tr -d ' \\t'; "
                     "if touch /etc/mc-x-$MC_TASK_ID 2>/dev/null; then echo etc=written; else echo etc=refused; fi; "
                     "if echo x > $HOME/own; then echo home=written; fi; "
                     "echo sid=$(cut -d' ' -f6 /proc/$$/stat)")

    def privileges_of(c, tid):
        t = at.wait_final(c, tid)
        check(t["status"] == "succeeded", t)
        out = dict(line.split("=", 1) if "=" in line else line.split(":", 1)
                   for line in t["result"]["stdout_tail"].split() if "=" in line or ":" in line)
        return t, out

    def check_unprivileged(out, uid, gid, agent):
        check(out["uid"] == str(uid) and out["uid"] != "0", f"the task's uid: {out}")
        check(out["gid"] == str(gid) and out["groups"] == str(gid), f"the task's gid and groups: {out}")
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            check(int(out[cap], 16) == 0, f"{cap} of the task: {out}")
        check(out["NoNewPrivs"] == "1", f"NoNewPrivs of the task: {out}")
        check(out["etc"] == "refused", f"the task wrote to /etc: {out}")
        check(out["home"] == "written", f"the task cannot write its work directory: {out}")
        # A session of its own: neither the agent's nor the supervisor's.
        with open(f"/proc/{agent.daemon.pid}/stat") as f:
            agent_sid = f.read().rsplit(")", 1)[1].split()[3]
        check(out["sid"] != agent_sid, f"the task is in the agent's session {agent_sid}: {out}")

    def test_result_sent_while_job_removed():
        """A task's result goes to the control when its process ends, not once its job is removed
        (which can take seconds on a host busy with cgroups), and a fence meanwhile does not drop it:
        the process is gone, so nothing can run twice, and a result dropped is a task run again. The
        agent's remover thread is held still (ptrace) to keep the job from going."""
        bus = mctest.PrivateBus()
        port = mctest.free_port()
        node = at.node_name("node-rm")
        pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
        a = at.Agent([c], node, driver=DRIVER, bus=bus, env={"MC_METRICS_PORT": str(port)}).start()
        bus.wait_name("org.mutualcloud.Agent1")

        def fences():
            return mctest.metric_at(f"http://127.0.0.1:{port}/metrics", "mc_agent_fences_total")

        # 1. Delivered while the job is still there.
        marker = f"rm-held-{at.RUN}"
        tid = at.push(c, task_body(at.held_cmd(marker, "echo first-done")))
        at.wait_status(c, tid, "running")
        stall = at.ThreadStall(a.daemon.pid, "mc-cgroup-rm")
        try:
            at.release(marker)
            t = at.wait_final(c, tid)
            check(t["status"] == "succeeded" and t["attempt"] == 1 and "first-done" in t["result"]["stdout_tail"], t)
            mine = at.bus_task(bus, tid)
            check(mine is not None and mine["state"] == "exited", f"the job still being removed: {mine}")
        finally:
            stall.release()
        wait_until(lambda: at.bus_task(bus, tid) is None and a.outbox() == [], 60, msg="the task gone once its job is")

        # 2. Its fence passes (the control stopped, nothing renews) while the job is being removed:
        # the result is kept and sent, not dropped.
        marker = f"rm-fence-{at.RUN}"
        tid = at.push(c, task_body(at.held_cmd(marker, "echo second-done")))
        at.wait_status(c, tid, "running")
        stall = at.ThreadStall(a.daemon.pid, "mc-cgroup-rm")
        try:
            c.daemon.kill(signal.SIGSTOP)
            try:
                at.release(marker)
                wait_until(lambda: (at.bus_task(bus, tid) or {}).get("state") == "exited", 60, msg="the task's exit seen")
                # The agent's own deadline, on its clock: its fence (3 s before) has passed by then.
                wait_until(lambda: (at.bus_task(bus, tid) or {}).get("lease_remaining_ms", 1) == 0, 60,
                           msg="the lease's deadline passed on the agent's clock")
                mine = at.bus_task(bus, tid)
                check(not mine.get("abandoned") and fences() == 0, f"fenced while its result waits: {mine}")
                check(len(a.outbox()) == 1, f"the result in the outbox: {a.outbox()}")
            finally:
                c.daemon.kill(signal.SIGCONT)
        finally:
            stall.release()
        # The control was away past the deadline: its sweep may have taken the lease back before the
        # result came (409, and the task runs again), or not. Either way it ends once, succeeded.
        t = at.wait_final(c, tid)
        check(t["status"] == "succeeded" and "second-done" in t["result"]["stdout_tail"], t)
        wait_until(lambda: at.bus_task(bus, tid) is None and a.outbox() == [], 60, msg="the task gone")

    def test_result_of_a_run_that_ended_before_a_late_seen_fence():
        """An agent short of CPU may reach a lease's fence before it sees that the task had already
        ended, on its own, in time: the supervisor records when the command ended, and the result is
        sent, not dropped (it ran once, within its lease). Here the agent is stopped (SIGSTOP) while
        the task ends, and until its fence time has passed; the control is stopped meanwhile too, so
        that the outcome does not hang on which of its sweep and the result comes first (it takes the
        result either way: nobody else holds the task). The remover thread is held, so that the agent
        claims nothing again before the result is in."""
        bus = mctest.PrivateBus()
        node = at.node_name("node-late")
        pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
        a = at.Agent([c], node, driver=DRIVER, bus=bus, env={"MC_MAX_TASKS": "1"}).start()
        bus.wait_name("org.mutualcloud.Agent1")

        marker = f"late-seen-{at.RUN}"
        tid = at.push(c, task_body(at.held_cmd(marker, "echo ended-in-time")))
        at.wait_status(c, tid, "running")
        result_files = lambda: glob.glob(os.path.join(a.state_dir, "**", f"{tid}-*.job", "result"), recursive=True)
        stall = at.ThreadStall(a.daemon.pid, "mc-cgroup-rm")
        try:
            c.daemon.kill(signal.SIGSTOP)
            a.daemon.kill(signal.SIGSTOP)
            try:
                at.release(marker)
                wait_until(result_files, 60, msg="the supervisor's record of the end")
                fence = a.fence_usec(tid)
                wait_until(lambda: time.monotonic() * 1e6 > fence + 500_000, 60, msg="the fence time passed")
            finally:
                a.daemon.kill(signal.SIGCONT)
            # It sees the end, and its fence, at once, in either order: the result is kept.
            wait_until(lambda: (at.bus_task(bus, tid) or {}).get("state") == "exited", 60, msg="the end seen")
            mine = at.bus_task(bus, tid)
            check(not mine.get("abandoned") and mine.get("status") == "succeeded", f"its result dropped: {mine}")
            check(len(a.outbox()) == 1, f"the result in the outbox: {a.outbox()}")
            c.daemon.kill(signal.SIGCONT)
            t = at.wait_final(c, tid)
            check(t["status"] == "succeeded" and t["attempt"] == 1 and "ended-in-time" in t["result"]["stdout_tail"], t)
        finally:
            c.daemon.kill(signal.SIGCONT)
            a.daemon.kill(signal.SIGCONT)
            stall.release()
        wait_until(lambda: at.bus_task(bus, tid) is None and a.outbox() == [], 60, msg="the task gone")
        check(c.task(tid)["attempt"] == 1, c.task(tid))

    def test_exec_task_user_configured():
        """EXEC_USER=UID:GID (a uid no user has): the task runs as that, with no capabilities, bounding
        set included, no_new_privs, a session of its own; /etc refuses it, its work directory does not."""
        pg, (c,), (a,) = setup(env={"MC_EXEC_USER": "4242:4243"})
        tid = at.push(c, task_body(PRIVILEGE_CMD))
        t, out = privileges_of(c, tid)
        check_unprivileged(out, 4242, 4243, a)
        check(not os.path.exists(f"/etc/mc-x-{tid}"), "/etc/mc-x written")

    def test_exec_task_user_default():
        """No EXEC_USER: the dedicated user mc-task, or nobody where there is none."""
        import pwd
        try:
            pw = pwd.getpwnam("mc-task")
        except KeyError:
            pw = pwd.getpwuid(65534)
        pg, (c,), (a,) = setup()
        tid = at.push(c, task_body(PRIVILEGE_CMD))
        t, out = privileges_of(c, tid)
        check_unprivileged(out, pw.pw_uid, pw.pw_gid, a)


def test_several_at_once():
    """Several tasks run at the same time, up to the node's capacity."""
    pg, (c,), (a,) = setup()
    # Each runs until released, so that they all run at once however long their starts take.
    markers = [f"several-{i}-{at.RUN}" for i in range(6)]
    tids = [at.push(c, task_body(at.held_cmd(m, "echo done"), resources={"nano_cpus": 500_000_000, "memory_bytes": 64 << 20}))
            for m in markers]
    wait_until(lambda: all(c.task(t)["status"] == "running" for t in tids), 120, msg="all six tasks running at once")
    for m in markers:
        at.release(m)
    for tid in tids:
        t = at.wait_final(c, tid)
        check(t["status"] == "succeeded" and "done" in t["result"]["stdout_tail"], t)
    starts = sorted(c.task(t)["attempts"][0]["started_at"] for t in tids)
    ends = sorted(c.task(t)["attempts"][0]["ended_at"] for t in tids)
    # Overlap, by the control's own records: the last one started before the first one ended.
    check(starts[-1] < ends[0], f"tasks did not run at the same time: starts {starts} ends {ends}")


mctest.main()
