#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-agent under faults, against the real control, PostgreSQL and dockerd. What happened is read from
the control's records and from Docker's own event stream (container start/die per mc.task_id label):

- kill -9 of the agent mid-task, then restart: the task finishes once, with one attempt;
- node death (agent and its containers killed): the task runs again on the other agent, attempt 2;
- every control unreachable for longer than the lease: the agent stops the container itself before
  the lease deadline, and the control re-queues the task only after that;
- every control unreachable while a task finishes: the result waits in the outbox (across an agent
  restart) and is delivered when a control is back; the task succeeds with one attempt;
- the same restarts with the exec driver (processes in cgroups, each watched by its supervisor): the
  task goes on while the agent is away, finishes once, and its result and full output are reported."""

import datetime
import glob
import os
import time

import mctest
from mctest import check, wait_until
import agenttest as at
from mctest import http


def body(cmd, **kw):
    b = {"image": at.IMAGE, "cmd": ["sh", "-c", cmd], "timeout_sec": 120}
    b.update(kw)
    return b


def ts_ns(iso):
    """The control's timestamps ("2026-11-27T10:00:00.123456Z") in ns since the epoch."""
    d = datetime.datetime.strptime(iso.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")
    return int(d.timestamp() * 1e6) * 1000


def starts(tid, since):
    return [e for e in at.task_events(tid, since) if e[1] == "start"]


def test_kill9_restart_adopts():
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    # The agent is away about two seconds: the lease must outlive that (a TTL of 10 s renews every
    # 3.3 s and fences 3.3 s before the deadline).
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
    at.record_events()
    a = at.Agent([c], node).start()
    since = time.time()
    # Held running until released: surely mid-task when the agent dies, however slow the machine.
    marker = f"kill9-{at.RUN}"
    tid = at.push(c, body("echo begin; " + at.held_cmd(marker, "echo end")))
    at.wait_status(c, tid, "running")
    a.kill()
    a.start()
    t = c.task(tid)
    check(t["status"] == "running" and t["attempt"] == 1, f"still on its first lease: {t}")
    at.release(marker)
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded", t)
    check(t["attempt"] == 1 and len(t["attempts"]) == 1, f"one attempt: {t['attempts']}")
    check("begin" in t["result"]["stdout_tail"] and "end" in t["result"]["stdout_tail"], t["result"])
    check(len(starts(tid, since)) == 1, f"one container start: {at.task_events(tid, since)}")
    check("MC_EVENT=container_adopted" in a.log(), "the restarted agent adopted the container")
    wait_until(lambda: at.containers_of(tid) == [], 60, msg="container removed")


def test_restart_while_exited_adopts_result():
    """The container ends while the agent is down: the restarted agent reports its result."""
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
    at.record_events()
    a = at.Agent([c], node).start()
    since = time.time()
    # Held running until the agent is dead, then let go: it surely ends while nobody watches (a
    # quick task raced the kill, and the agent could win).
    marker = f"exited-{at.RUN}"
    tid = at.push(c, body(at.held_cmd(marker, "echo quick; exit 5")))
    at.wait_status(c, tid, "running")
    a.kill()
    at.release(marker)
    wait_until(lambda: any(e[1] == "die" for e in at.task_events(tid, since)), 60, msg="the container to end")
    check(c.task(tid)["status"] == "running", "nobody reported it yet")
    a.start()
    t = at.wait_final(c, tid)
    check(t["status"] == "failed" and t["result"]["exit_code"] == 5 and t["attempt"] == 1, t)
    check(len(starts(tid, since)) == 1, at.task_events(tid, since))


def test_node_death_reruns_elsewhere():
    nx, ny = at.node_name("node-x"), at.node_name("node-y")
    for n in (nx, ny):
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster([nx, ny], lease_ttl_ms=3000, grace_ms=500)
    at.record_events()
    x = at.Agent([c], nx).start()
    since = time.time()
    # Each run holds until released: the first is surely running when its node dies; the second is
    # let go once it runs on node-y.
    marker = f"death-{at.RUN}"
    tid = at.push(c, body("echo run; " + at.held_cmd(marker, "echo ok")))
    t = at.wait_status(c, tid, "running")
    check(t["lease"]["node_id"] == nx, t)
    at.Agent([c], ny).start()
    # The node dies: its agent, and its containers with it.
    x.kill()
    for ct in at.containers_of(tid):
        mctest.docker_api("POST", f"/containers/{ct['Id']}/kill")
    wait_until(lambda: (lambda t: t["status"] == "running" and t["attempt"] == 2)(c.task(tid)), 90,
               msg="the second run on node-y")
    at.release(marker)
    t = at.wait_final(c, tid, 90)
    check(t["status"] == "succeeded", t)
    check(t["attempt"] == 2 and [a["node_id"] for a in t["attempts"]] == [nx, ny], t["attempts"])
    check(t["attempts"][0]["status"] != "succeeded", t["attempts"])
    iv = at.check_no_overlap(tid, since)
    check(len(iv) == 2, f"two containers: {iv}")
    at.cleanup_node_containers(nx)


def test_controls_unreachable_self_fence():
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=3000, grace_ms=500)
    at.record_events()
    a = at.Agent([c], node).start()
    since = time.time()
    # Held until released: only the agent's fencing can end the first run.
    marker = f"fence-{at.RUN}"
    tid = at.push(c, body(at.held_cmd(marker, "echo done"), max_attempts=3))
    at.wait_status(c, tid, "running")
    time.sleep(1.5)             # not a sample: the agent renews its lease meanwhile
    c.kill()
    t_kill = time.time()
    # The agent stops the container itself: Docker says when.
    wait_until(lambda: any(e[1] == "die" for e in at.task_events(tid, since)), 60, msg="the container to die")
    die_ns = [e[0] for e in at.task_events(tid, since) if e[1] == "die"][0]
    (expires,) = pg.psql(f"SELECT (extract(epoch FROM lease_expires_at) * 1e9)::bigint FROM tasks WHERE id = '{tid}'")[0]
    expires_ns = int(expires)
    check(die_ns < expires_ns, f"container died {(die_ns - expires_ns) / 1e6:.0f} ms after the lease deadline")
    print(f"# container died {(expires_ns - die_ns) / 1e6:.0f} ms before the control's deadline, "
          f"{(die_ns / 1e9 - t_kill):.2f} s after the control went away")
    check("lease_expired" in a.log(), "the agent logged its self-fencing")

    c.restart()
    wait_until(lambda: (lambda t: t["status"] == "running" and t["attempt"] == 2)(c.task(tid)), 90,
               msg="the second run")
    at.release(marker)
    t = at.wait_final(c, tid, 90)
    check(t["status"] == "succeeded" and t["attempt"] == 2, t)
    check(ts_ns(t["attempts"][1]["leased_at"]) > die_ns, f"re-queued only after the container was gone: {t['attempts']}")
    at.check_no_overlap(tid, since)


def test_controls_unreachable_result_in_outbox():
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000, grace_ms=500)
    a = at.Agent([c], node).start()
    # It ends only once the control is gone (a 2 s sleep could end before, on a slow machine, and its
    # result would be delivered at once).
    marker = f"outbox-{at.RUN}"
    tid = at.push(c, body(at.held_cmd(marker, "echo finished-offline")))
    at.wait_status(c, tid, "running")
    c.kill()
    at.release(marker)
    wait_until(lambda: a.outbox(), 60, msg="the result in the outbox")
    entry = a.outbox()
    check(len(entry) == 1 and entry[0].startswith(tid), entry)
    # The result survives an agent restart (a crash, even).
    # (That it is delivered below, after the restart, is the proof; here only that the restarted
    # agent, ready, did not drop it while no control answers.)
    a.kill()
    a.start()
    check(a.outbox() == entry, f"outbox after restart: {a.outbox()}")
    c.daemon.start()
    c.daemon.wait_ready()
    t = at.wait_final(c, tid, 60)
    check(t["status"] == "succeeded" and t["attempt"] == 1, t)
    check("finished-offline" in t["result"]["stdout_tail"], t["result"])
    wait_until(lambda: a.outbox() == [], 60, msg="the outbox emptied")


def test_agent_gone_keeper_fences():
    """The agent is killed and does not come back: the fence keeper (or the container's own
    mc-fence-init, at the same time) stops its container before the lease deadline, and the task runs
    again elsewhere, never twice at once."""
    nx, ny = at.node_name("node-x"), at.node_name("node-y")
    for n in (nx, ny):
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster([nx, ny], lease_ttl_ms=3000, grace_ms=500)
    at.record_events()
    x = at.Agent([c], nx).start()
    since = time.time()
    # Held until released: only the fence keeper can end the first run; the second is let go once it
    # runs on node-y.
    marker = f"keeper-{at.RUN}"
    tid = at.push(c, body(at.held_cmd(marker, "echo ok")))
    at.wait_status(c, tid, "running")
    x.kill()                    # the node lives on; its agent does not
    at.Agent([c], ny).start()
    wait_until(lambda: any(e[1] == "die" for e in at.task_events(tid, since)), 60, msg="the keeper to stop the container")
    die_ns = [e[0] for e in at.task_events(tid, since) if e[1] == "die"][0]
    wait_until(lambda: (lambda t: t["status"] == "running" and t["attempt"] == 2)(c.task(tid)), 90,
               msg="the second run on node-y")
    at.release(marker)
    t = at.wait_final(c, tid, 90)
    check(t["status"] == "succeeded" and t["attempt"] == 2 and t["attempts"][1]["node_id"] == ny, t)
    check(ts_ns(t["attempts"][1]["leased_at"]) > die_ns, t["attempts"])
    at.check_no_overlap(tid, since)
    # Whoever came first, at the same fence time: the keeper (its event, a field, not its wording,
    # logged just after its kill) or the container's own mc-fence-init (its exit code).
    codes = [e.get("Actor", {}).get("Attributes", {}).get("exitCode") for e in mctest.docker_events(
        {"type": ["container"], "label": [f"mc.task_id={tid}"], "event": ["die"]}, since=since)]
    wait_until(lambda: "MC_FENCED_BY=keeper" in x.log() or (codes and codes[0] == "250"), 60,
               msg=f"the keeper's lease_expired event or the init's exit code (die codes {codes})")


def test_stop_and_restart_keeps_tasks():
    """systemctl restart (SIGTERM, start): running tasks go on, nothing runs twice."""
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
    at.record_events()
    a = at.Agent([c], node).start()
    since = time.time()
    # Held until released: all three surely run across the restart (3 s sleeps could end before the
    # last one was seen running).
    markers = [f"restart-{i}-{at.RUN}" for i in range(3)]
    tids = [at.push(c, body(at.held_cmd(m, f"echo t{i}"))) for i, m in enumerate(markers)]
    for tid in tids:
        at.wait_status(c, tid, "running")
    a.stop()
    a.start()
    for m in markers:
        at.release(m)
    for i, tid in enumerate(tids):
        t = at.wait_final(c, tid)
        check(t["status"] == "succeeded" and t["attempt"] == 1 and f"t{i}" in t["result"]["stdout_tail"], t)
        check(len(starts(tid, since)) == 1, at.task_events(tid, since))


def test_timed_out_task_ended_while_agent_down():
    """The agent stops a task for its timeout and is killed before it reports: the task, which ended
    while no agent ran, is still reported timed_out (not as the exit status SIGTERM left), once."""
    node = at.node_name("node-a")
    mctest.defer(at.cleanup_node_containers, node)
    # A long lease: the agent is away until the task has ended, and that must stay well within the
    # lease (less the fencing margin), or the fence keeper ends it and the task runs again, rightly.
    pg, (c,) = at.cluster([node], lease_ttl_ms=30000)
    at.record_events()
    # A long grace, so that the old agent's SIGKILL timer is not what ends it.
    a = at.Agent([c], node, env={"MC_STOP_GRACE_SEC": "60"}).start()
    since = time.time()
    # Its SIGTERM trap holds until released (not a 2 s sleep, which the kill below had to beat): it
    # surely ends after the agent is gone.
    marker = f"late-{at.RUN}"
    tid = at.push(c, body(f"trap 'trap \"echo late-term; exit 143\" USR1; sleep 600 & wait' TERM; : {marker}; "
                          "echo begin; sleep 100 & wait", timeout_sec=2))
    at.wait_status(c, tid, "running")
    # The engine was asked to stop it: the agent has recorded why by then (before asking).
    wait_until(lambda: any(e[1] == "kill" for e in at.task_events(tid, since)), 60, msg="the stop for the timeout")
    a.kill()
    at.release(marker)
    wait_until(lambda: any(e[1] == "die" for e in at.task_events(tid, since)), 60, msg="the container to end")
    check(c.task(tid)["status"] == "running", "nobody reported it yet")
    a.start()
    t = at.wait_final(c, tid)
    check(t["status"] == "timed_out" and t["attempt"] == 1 and len(t["attempts"]) == 1, t)
    check("timed out" in (t["result"]["reason"] or "") and "late-term" in t["result"]["stdout_tail"], t["result"])
    check(len(starts(tid, since)) == 1, f"one container start: {at.task_events(tid, since)}")


# ---------------------------------------------------------------------------------------------------
# The exec driver: no Docker events to count starts by; each run of the command appends a line to a
# file of its own, and waits for a gate file, so that it is surely running (or surely over) when the
# test acts.

def exec_task(d, tail):
    runs, gate = os.path.join(d, "runs"), os.path.join(d, "gate")
    cmd = f"echo run >> {runs}; echo begin; echo to-err >&2; while [ ! -e {gate} ]; do sleep 0.05; done; {tail}"
    return body(cmd), runs, gate


def exec_setup(name):
    """A control and an exec-driver agent on node-a (10 s leases), and a directory for the test's files;
    whatever the test leaves running is killed at its end."""
    node = at.node_name("node-a")
    d = at.task_dir(name)
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
    a = at.Agent([c], node, driver="exec")
    mctest.defer(at.kill_matching, a.state_dir + "/", d + "/")
    a.start()
    return c, a, d


def runs_of(path):
    try:
        with open(path) as f:
            return f.read().count("run")
    except FileNotFoundError:
        return 0


def runs_of_pids(path):
    try:
        with open(path) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def exec_output(c, tid):
    r = http("GET", f"{c.url}/api/tasks/{tid}/logs", token=at.USER_TOKEN)
    check(r.status == 200, f"logs: {r.status} {r.text}")
    return r.text


def exec_jobs_gone(a):
    """The agent removed the job: its cgroup's work directory and its supervisor's record."""
    return glob.glob(os.path.join(a.state_dir, "exec", "*")) == []


def test_exec_kill9_restart_adopts():
    """kill -9 of the agent in the middle of an exec task, then restart: the task finishes once, with
    one attempt, with its full output."""
    c, a, d = exec_setup("exec-kill9")
    b, runs, gate = exec_task(d, "echo end")
    tid = at.push(c, b)
    at.wait_status(c, tid, "running")
    wait_until(lambda: runs_of(runs) == 1, 30, msg="the command to run")
    a.kill()
    a.start()
    a.daemon.wait_log("MC_EVENT=container_adopted", 60)
    t = c.task(tid)
    check(t["status"] == "running" and t["attempt"] == 1, f"still on its first lease: {t}")
    open(gate, "w").close()
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded" and t["result"]["exit_code"] == 0, t)
    check(t["attempt"] == 1 and len(t["attempts"]) == 1, f"one attempt: {t['attempts']}")
    check(t["result"]["stdout_tail"] == "begin\nend\n" and t["result"]["stderr_tail"] == "to-err\n", t["result"])
    out = exec_output(c, tid)
    check("begin\n" in out and "to-err\n" in out and "end\n" in out, f"full output: {out!r}")
    check(runs_of(runs) == 1, "the command ran once")
    wait_until(lambda: exec_jobs_gone(a), 60, msg="the job removed")


def test_exec_restart_while_exited_adopts_result():
    """The exec task ends while the agent is down: its result (exit code, output) is reported after
    the restart, with one attempt."""
    c, a, d = exec_setup("exec-exited")
    b, runs, gate = exec_task(d, "echo done-offline; exit 5")
    tid = at.push(c, b)
    at.wait_status(c, tid, "running")
    wait_until(lambda: runs_of(runs) == 1, 30, msg="the command to run")
    a.kill()
    open(gate, "w").close()
    # Its supervisor records the result once the command has ended.
    wait_until(lambda: glob.glob(os.path.join(a.state_dir, "exec", "*.job", "result")), 30,
               msg="the result recorded while the agent is down")
    check(c.task(tid)["status"] == "running", "nobody reported it yet")
    a.start()
    t = at.wait_final(c, tid)
    check(t["status"] == "failed" and t["result"]["exit_code"] == 5 and t["attempt"] == 1, t)
    check(len(t["attempts"]) == 1, t["attempts"])
    check(t["result"]["stdout_tail"] == "begin\ndone-offline\n" and t["result"]["stderr_tail"] == "to-err\n",
          t["result"])
    out = exec_output(c, tid)
    check("begin\n" in out and "done-offline\n" in out and "to-err\n" in out, f"full output: {out!r}")
    check(runs_of(runs) == 1, "the command ran once")
    check("MC_EVENT=container_adopted" in a.log(), "the restarted agent adopted the job")
    wait_until(lambda: exec_jobs_gone(a), 60, msg="the job removed")


def test_exec_stop_and_restart_keeps_tasks():
    """systemctl restart (SIGTERM, start) with the exec driver: running tasks go on, nothing runs twice."""
    c, a, d = exec_setup("exec-restart")
    tasks = []
    for i in range(3):
        sub = os.path.join(d, str(i))
        os.mkdir(sub)
        os.chmod(sub, 0o777)    # written by the task's user (at.task_dir)
        b, runs, gate = exec_task(sub, f"echo t{i}")
        tasks.append((at.push(c, b), runs, gate))
    for tid, runs, _ in tasks:
        at.wait_status(c, tid, "running")
        wait_until(lambda: runs_of(runs) == 1, 30, msg="the command to run")
    a.stop()
    a.start()
    for tid, _, gate in tasks:
        open(gate, "w").close()
    for i, (tid, runs, _) in enumerate(tasks):
        t = at.wait_final(c, tid)
        check(t["status"] == "succeeded" and t["attempt"] == 1 and f"t{i}" in t["result"]["stdout_tail"], t)
        check(runs_of(runs) == 1, f"task {i} ran once")
    wait_until(lambda: exec_jobs_gone(a), 60, msg="the jobs removed")


def test_exec_agent_gone_keeper_fences():
    """The agent is killed and does not come back: the fence keeper (or the job's own mc-fence-init,
    at the same time) kills its exec task's processes before the lease deadline (its supervisor
    records that), and the task runs again elsewhere, never
    twice at once: each run checks, as it starts, that no earlier run's process is alive."""
    nx, ny = at.node_name("node-x"), at.node_name("node-y")
    d = at.task_dir("exec-keeper")
    runs, overlap, gate = os.path.join(d, "runs"), os.path.join(d, "overlap"), os.path.join(d, "gate")
    pg, (c,) = at.cluster([nx, ny], lease_ttl_ms=3000, grace_ms=500)
    x = at.Agent([c], nx, driver="exec")
    mctest.defer(at.kill_matching, x.state_dir + "/", d + "/")
    x.start()
    cmd = (f"for p in $(cat {runs} 2>/dev/null); do kill -0 $p 2>/dev/null && echo $p >> {overlap}; done; "
           f"echo $$ >> {runs}; while [ ! -e {gate} ]; do sleep 0.05; done; echo ok")
    tid = at.push(c, body(cmd))
    at.wait_status(c, tid, "running")
    wait_until(lambda: os.path.exists(runs), 30, msg="the command to run")
    x.kill()                    # the node lives on; its agent does not
    y = at.Agent([c], ny, driver="exec")
    mctest.defer(at.kill_matching, y.state_dir + "/")
    y.start()
    # The supervisor outlives the kill of its command and records it.
    wait_until(lambda: glob.glob(os.path.join(x.state_dir, "exec", "*.job", "result")), 60,
               msg="the keeper to kill the command")
    # Each run waits for the gate (a 6 s sleep could end before the keeper acts on a slow machine):
    # it opens once the second run has started.
    wait_until(lambda: runs_of_pids(runs) == 2, 90, msg="the second run on node-y")
    open(gate, "w").close()
    t = at.wait_final(c, tid, 90)
    check(t["status"] == "succeeded" and t["attempt"] == 2 and t["attempts"][1]["node_id"] == ny, t)
    with open(runs) as f:
        check(len(f.read().split()) == 2, "two runs")
    check(not os.path.exists(overlap), "no run overlapped another")
    # Whoever came first, at the same fence time: the keeper (its event, a field, not its wording,
    # logged just after its kill) or the job's own mc-fence-init (its exit code, 250).
    results = glob.glob(os.path.join(x.state_dir, "exec", "*.job", "result"))
    fenced_by_init = any("exit_code=250\n" in open(r, errors="replace").read() for r in results)
    wait_until(lambda: fenced_by_init or "MC_FENCED_BY=keeper" in x.log(), 60,
               msg="the keeper's lease_expired event or the init's exit code")


mctest.main()
