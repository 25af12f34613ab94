#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fencing that needs no mc process on the node: two agents, and rounds of faults on whichever node
runs the task, each kept up until the control has handed the task to the other node (past the lease):

- kill -9 of every mc process of the node at once (agent, fence keeper, exec supervisors), twice;
- SIGSTOP of the agent (its keeper killed, so that only the task's own mc-fence-init is left);
- kill -9 of the agent alone (the keeper stays);
- kill -9 of the keeper alone (the agent stays: nothing happens, the task finishes on its lease);
- kill -9 of the agent and the keeper together (exec supervisors stay).

The old run must be dead before the new one starts. Docker: from the engine's own events (start/die
of the containers labelled mc.task_id). exec: from the processes themselves: each run's first act is
to record its start (wall clock), and every process of the old run is watched with a pidfd, its end
stamped when the kernel says so (never before it). Every task ends succeeded; none is lost.

Docker: an image's own ENTRYPOINT still runs, after the init, with the task's cmd, as whatever USER
the image names. Also: a fence keeper that starts (again) long after a lease's fence time kills that job's processes at
once, and, --persistent (as its unit runs it), stays with no agent.

Usage: test-fence-faults.py docker|exec"""

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import time

import mctest
from mctest import check, wait_until
import agenttest as at

DRIVER = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in ("docker", "exec") else "docker"
TTL_MS = 3000


# ------------------------------------------------------------------------------------------------
# The node's mc processes


def keeper_pids(agent):
    """The fence keepers watching this agent's lease file."""
    lease = os.path.join(agent.state_dir, "leases.json").encode()
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and at.exe_name(p) == "mc-fence-keeper" and lease in at.cmdline(p)]


def supervisor_pids(agent):
    state = agent.state_dir.encode()
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and at.exe_name(p) == "mc-exec-supervisor" and state in at.cmdline(p)]


def kill_all(pids, sig=signal.SIGKILL):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------------------------
# exec: the processes of a run, and when each ended


def run_processes(marker):
    """Every process whose command line holds marker (the init and the task's shell), and all their
    descendants (its `sleep`); not the supervisor, whose command line holds the task's too."""
    return at.process_tree(marker, exclude_exe="mc-exec-supervisor")


def run_starts(path):
    """[(attempt, ns)] from the runs file the exec tasks append to."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(int(a), int(ns)) for line in f if line.startswith("start ")
                for _, a, _pid, ns in [line.split()]]


# ------------------------------------------------------------------------------------------------


def fault(kind, a):
    """Does the fault to agent a; returns what undoes it once the task has moved."""
    if kind == "kill_all":
        kill_all([a.daemon.pid] + keeper_pids(a) + supervisor_pids(a))
        a.daemon.proc.wait()
        return lambda: a.start()
    if kind == "sigstop":
        kill_all(keeper_pids(a))
        a.daemon.kill(signal.SIGSTOP)
        return lambda: a.daemon.kill(signal.SIGCONT)
    if kind == "kill_agent":
        a.kill()
        return lambda: a.start()
    if kind == "kill_agent_keeper":
        kill_all([a.daemon.pid] + keeper_pids(a))
        a.daemon.proc.wait()
        return lambda: a.start()
    if kind == "kill_keeper":
        kill_all(keeper_pids(a))
        return None
    raise AssertionError(kind)


ROUNDS = ("kill_all", "sigstop", "kill_agent", "kill_keeper", "kill_agent_keeper", "kill_all")


def test_fence_without_mc_processes():
    nodes = [at.node_name(f"fence-{DRIVER}-{i}") for i in range(2)]
    for n in nodes:
        mctest.defer(at.cleanup_node_containers, n)
    pg, (c,) = at.cluster(nodes, lease_ttl_ms=TTL_MS, grace_ms=500)
    rec = at.record_events() if DRIVER == "docker" else None
    agents = {n: at.Agent([c], n, driver=DRIVER).start() for n in nodes}
    runs = os.path.join(at.task_dir("fence-runs"), "runs")
    tids = []

    for i, kind in enumerate(ROUNDS):
        # Not a prefix of any node name: the agents' and keepers' command lines hold those.
        marker = f"held-{DRIVER}-round{i}-{at.RUN}"
        log = f"{runs}-{i}"
        since = time.time()
        # Held until released, so that the old run is surely alive when the fault comes and the new
        # one when the test looks. exec: each run first records its start.
        first = f"echo start $MC_ATTEMPT $$ $(date +%s%N) >> {log}; " if DRIVER == "exec" else ""
        tid = at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", first + at.held_cmd(marker, "echo done")],
                          "timeout_sec": 300, "max_attempts": 10})
        tids.append(tid)
        t = at.wait_status(c, tid, "running", 90)
        victim = t["lease"]["node_id"]
        a = agents[victim]
        # The whole run is up (its trap set) before the fault: nothing of it is still starting.
        wait_until(lambda: at.trapping_pids(marker, signal.SIGUSR1), 60, msg=f"round {i}: the task's shell")
        watch = at.DeathWatch(run_processes(marker)) if DRIVER == "exec" else None
        print(f"# round {i} ({kind}): task {tid} on {victim}")
        expired_before = a.log().count("MC_EVENT=lease_expired")
        undo = fault(kind, a)

        if kind == "kill_keeper":
            at.release(marker)
            t = at.wait_final(c, tid, 90)
            # Most often on its first lease; a machine stalled past a lease makes the agent fence
            # itself, which is right too: what matters is below.
            check(t["status"] == "succeeded", f"round {i} ({kind}): {t}")
        else:
            t = wait_until(lambda: (lambda t: t if t["status"] == "running" and t["attempt"] >= 2 else None)(
                c.task(tid)), 120, msg=f"round {i} ({kind}): the task running again elsewhere")
            check(t["lease"]["node_id"] != victim, f"round {i}: moved off {victim}: {t}")
            undo()
            at.release(marker)
            t = at.wait_final(c, tid, 90)
            check(t["status"] == "succeeded", f"round {i} ({kind}): {t}")
            check(t["attempt"] >= 2 and t["attempts"][0]["node_id"] == victim, t["attempts"])

        if DRIVER == "docker":
            iv = at.check_no_overlap(tid, since)
            check(2 <= len(iv) <= t["attempt"] if t["attempt"] >= 2 else len(iv) == 1,
                  f"round {i}: a container per attempt: {iv}")
            print("#   containers: " + ", ".join(
                f"{(s - iv[0][0]) / 1e9:.3f}-{(e - iv[0][0]) / 1e9:.3f} s" for s, e in iv))
            if kind in ("kill_all", "sigstop", "kill_agent_keeper"):
                # Nobody of ours was left to kill it (the agent dead or stopped, its keeper dead): the
                # first container's init did, and said so in its exit code.
                with rec._lock:
                    dies = [e for e in rec.events if e.get("Action") == "die"
                            and e.get("Actor", {}).get("Attributes", {}).get("mc.task_id") == tid]
                code = dies[0]["Actor"]["Attributes"].get("exitCode") if dies else None
                check(code == "250", f"round {i} ({kind}): the first container fenced by its init: exit {code}")
        else:
            starts = run_starts(log)
            check(1 <= len(starts) <= t["attempt"], f"round {i}: at most a run per attempt: {starts}")
            if t["attempt"] >= 2:
                wait_until(watch.all_ended, 30, msg=f"round {i}: every process of the first run to end")
                last_end = max(watch.ends.values())
                second = min(ns for att, ns in starts if att >= 2)
                check(last_end < second,
                      f"round {i} ({kind}): the first run's last process ended "
                      f"{(last_end - second) / 1e9:.3f} s after the second run started")
                print(f"#   first run gone {(second - last_end) / 1e9:.3f} s before the second started")
        if kind == "sigstop":
            # Back and running: it must not have reported anything for the lease it lost.
            wait_until(lambda: a.log().count("MC_EVENT=lease_expired") > expired_before, 60,
                       msg="the stopped agent to drop its lease")

    for tid in tids:
        t = c.task(tid)
        check(t["status"] == "succeeded", f"none lost: {t}")
    for a in agents.values():
        a.stop()


def entrypoint_image():
    """mc-test/fence-ep:<run>: the test image with ENTRYPOINT ["/bin/echo", "ep"] and USER 65534."""
    r = mctest.docker_api("POST", "/containers/create", {"Image": at.IMAGE, "Cmd": ["true"]})
    check(r.status == 201, f"create: {r.status} {r.text}")
    cid = r.json()["Id"]
    tag = f"mc-test/fence-ep:{at.RUN}"
    q = urllib.parse.urlencode([("container", cid), ("repo", tag.split(":")[0]), ("tag", tag.split(":")[1]),
                                ("changes", 'ENTRYPOINT ["/bin/echo", "ep"]'), ("changes", "USER 65534")])
    r = mctest.docker_api("POST", "/commit?" + q)
    mctest.docker_api("DELETE", f"/containers/{cid}?force=1")
    check(r.status == 201, f"commit: {r.status} {r.text}")
    mctest.defer(mctest.docker_api, "DELETE", f"/images/{urllib.parse.quote(tag, safe='')}?force=1")
    return tag


def image_entrypoint_and_user():
    node = at.node_name("fence-ep")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=TTL_MS)
    image = entrypoint_image()
    at.Agent([c], node).start()
    tid = at.push(c, {"image": image, "cmd": ["hello", "world"], "timeout_sec": 60})
    t = at.wait_final(c, tid, 90)
    # Run as the image's user, the init could read its lease file (or it would have exited 251).
    check(t["status"] == "succeeded" and t["result"]["stdout_tail"] == "ep hello world\n", t)


if DRIVER == "docker":      # images are Docker's
    test_image_entrypoint_and_user = image_entrypoint_and_user


def cgroup_root():
    for d in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(d, "cgroup.procs")) and os.path.exists(os.path.join(d, "cgroup.controllers")):
            return d
    return "/sys/fs/cgroup/memory"


def job_cgroup(name):
    """A cgroup named like an exec job's (its mark: "/<name>\n" ending the line of /proc/PID/cgroup)."""
    cg = os.path.join(cgroup_root(), "mc.test", name)
    os.makedirs(cg, exist_ok=True)
    mctest.defer(lambda: os.path.isdir(cg) and os.rmdir(cg))
    return cg


def start_in(cg, cmd):
    def join():
        if cg:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write("0")
    p = subprocess.Popen(cmd, preexec_fn=join)
    mctest.defer(lambda: p.poll() is None and p.kill())
    return p


def cgroup_pids(cg):
    with open(os.path.join(cg, "cgroup.procs")) as f:
        return [int(x) for x in f.read().split()]


def start_keeper(name, fence_in_s, pid, cgroup_dir=None):
    """A persistent keeper (as its unit runs it, no agent) over a lease file of one lease of the job
    cgroup `name`, whose fence time is fence_in_s from now (negative: past), its process pid (0: none),
    and the job's cgroup directory as the exec driver records it (None: not recorded)."""
    state = mctest.tmpdir("keeper")
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    now = int(time.monotonic() * 1e6)
    fence = now + int(fence_in_s * 1e6)
    lease = {"task_id": "t-" + name, "lease_token": 1, "deadline_usec": fence + 1_000_000,
             "fence_usec": fence, "pid": pid, "cgroup_marker": f"/{name}\n"}
    if cgroup_dir:
        lease["cgroup_dir"] = cgroup_dir
    with open(os.path.join(state, "leases.json"), "w") as f:
        json.dump({"boot_id": boot, "ttl_usec": 3_000_000, "agent_pid": 0, "leases": [lease]}, f)
    keeper = mctest.Daemon("mc-fence-keeper", ["--fence-keeper", os.path.join(state, "leases.json"),
                                               os.path.join(state, "fence-keeper.pid"), "--persistent"],
                           notify=False, name=f"mc-fence-keeper-{name}")
    keeper.start()
    mctest.defer(lambda: keeper.running and keeper.stop(expect=None))
    return keeper


def test_restarted_keeper_acts_at_once():
    name = f"keeper-{DRIVER}-{at.RUN}"
    victim = start_in(job_cgroup(name), ["sleep", "600"])
    # Its fence time a minute ago: longer than a running keeper keeps watching a lease after it.
    keeper = start_keeper(name, -60, 0)
    check(victim.wait(60) == -signal.SIGKILL, "the keeper killed the job's process")
    check(keeper.running, "the persistent keeper stays with no agent")
    keeper.stop(expect=None)


def test_keeper_kills_job_cgroup():
    """The lease names the job's process: the keeper finds the job's cgroup from it, and at the fence
    kills every process in it, also when that process itself has ended by then (its child left)."""
    name = f"keeper-cg-{DRIVER}-{at.RUN}"
    cg = job_cgroup(name)
    # The recorded process starts a child in the same cgroup and waits for it.
    parent = start_in(cg, ["sh", "-c", "sleep 600 & wait"])
    wait_until(lambda: len(cgroup_pids(cg)) >= 2, 60, msg="the job's two processes in its cgroup")
    child = [p for p in cgroup_pids(cg) if p != parent.pid][0]
    deaths = at.DeathWatch([child])
    keeper = start_keeper(name, 4, parent.pid)
    # The recorded process ends on its own before the fence; its child stays in the job's cgroup.
    parent.kill()
    parent.wait(60)
    wait_until(lambda: not deaths.alive(), 120, msg="the keeper to kill the job's remaining process at its fence")
    check(cgroup_pids(cg) == [], "nothing is left in the job's cgroup")
    check(keeper.running, "the persistent keeper stays")


def test_keeper_kills_recorded_cgroup_dir():
    """The exec driver records the job's cgroup directory before the command runs: at the fence the
    keeper empties it, with no process known (pid 0) and nothing to scan."""
    name = f"keeper-dir-{DRIVER}-{at.RUN}"
    cg = job_cgroup(name)
    victim = start_in(cg, ["sh", "-c", "sleep 600 & wait"])
    wait_until(lambda: len(cgroup_pids(cg)) >= 2, 60, msg="the job's two processes in its cgroup")
    deaths = at.DeathWatch(cgroup_pids(cg))
    start_keeper(name, 1, 0, cgroup_dir=cg)
    check(victim.wait(60) == -signal.SIGKILL, "the keeper killed the job's process")
    wait_until(lambda: not deaths.alive(), 60, msg="every process of the job's cgroup dead")


def test_keeper_ignores_cgroup_dir_without_the_mark():
    """A recorded directory that does not carry the job's mark (here the parent of the job's cgroup, where
    a bystander runs) is not trusted: the bystander lives, the job dies all the same, found by its mark."""
    name = f"keeper-baddir-{DRIVER}-{at.RUN}"
    cg = job_cgroup(name)
    parent = os.path.dirname(cg)
    victim = start_in(cg, ["sleep", "600"])
    bystander = start_in(parent, ["sleep", "600"])
    start_keeper(name, -1, 0, cgroup_dir=parent)
    check(victim.wait(60) == -signal.SIGKILL, "the keeper killed the job's process")
    check(bystander.poll() is None, "the process in the directory without the mark is alive")


def test_keeper_ignores_reused_pid():
    """The lease's process number now belongs to someone else (outside the job's cgroup): the keeper
    must not kill that one, and still kills the job's processes, found by their mark."""
    name = f"keeper-reuse-{DRIVER}-{at.RUN}"
    victim = start_in(job_cgroup(name), ["sleep", "600"])
    bystander = start_in(None, ["sleep", "600"])
    keeper = start_keeper(name, -1, bystander.pid)
    check(victim.wait(60) == -signal.SIGKILL, "the keeper killed the job's process")
    # The job's process and a wrongly targeted one would have died in the same pass.
    check(bystander.poll() is None, "the process that reused the lease's pid is alive")
    check(keeper.running, "the persistent keeper stays")


mctest.main()
