#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""org.mutualcloud.Agent1 on a private bus, with busctl: the interface as introspected, its
properties, ListTasks(), the TaskStarted/TaskFinished signals, and Drain()/Resume() (a draining agent
claims nothing new, and lets what runs finish)."""

import json
import subprocess

import mctest
from mctest import PrivateBus, check, http, wait_until
import agenttest as at

NAME = "org.mutualcloud.Agent1"
PATH = "/org/mutualcloud/Agent1"


def setup():
    node = at.node_name("node-bus")
    mctest.defer(at.cleanup_node_containers, node)
    bus = PrivateBus()
    pg, (c,) = at.cluster([node])
    a = at.Agent([c], node, bus=bus).start()
    bus.wait_name(NAME)
    return bus, c, a, node


def prop(bus, name):
    return bus.busctl_json("get-property", NAME, PATH, NAME, name)["data"]


def test_interface():
    bus, c, a, node = setup()
    out = bus.busctl("introspect", NAME, PATH, NAME)
    for member in ("NodeId", "Runtime", "CapacityNanoCpus", "CapacityMemoryBytes", "RunningTasks",
                   "ListTasks", "Drain", "Resume", "TaskStarted", "TaskFinished"):
        check(member in out, f"{member} in the introspection:\n{out}")
    check(prop(bus, "NodeId") == node, "NodeId")
    check(prop(bus, "Runtime") == "runc", "Runtime")
    check(prop(bus, "CapacityNanoCpus") == 4_000_000_000, "CapacityNanoCpus")
    check(prop(bus, "CapacityMemoryBytes") == 4 << 30, "CapacityMemoryBytes")
    check(prop(bus, "RunningTasks") == 0, "RunningTasks")
    tasks = json.loads(bus.busctl_json("call", NAME, PATH, NAME, "ListTasks")["data"][0])
    check(tasks == [], f"ListTasks: {tasks}")


def test_signals_and_list():
    bus, c, a, node = setup()
    mon = bus.monitor()
    # Runs until released (a fixed sleep may end before a slow machine has looked), then exits 4.
    marker = f"signals-{at.RUN}"
    tid = at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", at.held_cmd(marker, "exit 4")], "timeout_sec": 120})
    at.wait_status(c, tid, "running")
    wait_until(lambda: prop(bus, "RunningTasks") == 1, 60, msg="RunningTasks 1")
    tasks = json.loads(bus.busctl_json("call", NAME, PATH, NAME, "ListTasks")["data"][0])
    check(len(tasks) == 1 and tasks[0]["id"] == tid and tasks[0]["state"] == "running" and tasks[0]["lease_token"] == 1,
          f"ListTasks: {tasks}")
    at.release(marker)
    check(at.wait_final(c, tid)["status"] == "failed", "task")
    wait_until(lambda: prop(bus, "RunningTasks") == 0, 60, msg="RunningTasks 0")
    finished = wait_until(lambda: mon.signals("TaskFinished", PATH), 60, msg="TaskFinished")
    started = mon.signals("TaskStarted", PATH)
    check(started and started[0]["payload"]["data"] == [tid], f"TaskStarted: {started}")
    check(finished and finished[0]["payload"]["data"] == [tid, "failed", 4], f"TaskFinished: {finished}")


def heartbeat(c, node):
    """When the control last heard the node's heartbeat (its own clock)."""
    (n,) = [n for n in http("GET", c.url + "/api/nodes", token=at.USER_TOKEN).json()["nodes"] if n["node_id"] == node]
    return n["last_heartbeat"]


def test_drain_and_resume():
    bus, c, a, node = setup()
    marker = f"drain-{at.RUN}"
    long = at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", at.held_cmd(marker, "echo long")], "timeout_sec": 120})
    at.wait_status(c, long, "running")
    bus.busctl("call", NAME, PATH, NAME, "Drain")
    check(prop(bus, "Draining") is True, "Draining")
    wait_until(lambda: any(n["node_id"] == node and n["state"] == "draining"
                           for n in http("GET", c.url + "/api/nodes", token=at.USER_TOKEN).json()["nodes"]),
               60, msg="the control sees the node draining")
    tid = at.push(c, {"image": at.IMAGE, "cmd": ["echo", "after-drain"], "timeout_sec": 30})
    # What runs finishes; nothing new is claimed, though the node has room again. "Not claimed" is
    # judged after two more heartbeats of the agent (draining, with room): its own pace, not a
    # fixed time that a slow machine may not fill.
    at.release(marker)
    check(at.wait_final(c, long)["status"] == "succeeded", "the running task finished")
    hb = [heartbeat(c, node)]
    for _ in range(2):
        hb.append(wait_until(lambda: (lambda h: h if h != hb[-1] else None)(heartbeat(c, node)), 60,
                             msg="the draining agent's next heartbeat"))
    check(c.task(tid)["status"] == "queued", f"nothing claimed while draining: {c.task(tid)}")
    bus.busctl("call", NAME, PATH, NAME, "Resume")
    check(prop(bus, "Draining") is False, "not draining")
    t = at.wait_final(c, tid)
    check(t["status"] == "succeeded" and "after-drain" in t["result"]["stdout_tail"], t)


def test_drain_needs_privilege():
    """Drain() checks its caller itself, whatever the bus policy lets through: a bus that lets anyone
    call anything (a system-type bus, so that other users may connect at all)."""
    d = mctest.tmpdir("sysbus")
    sock = f"{d}/bus"
    conf = f"{d}/bus.conf"
    with open(conf, "w") as f:
        f.write(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={sock}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>
""")
    bus = PrivateBus(config_file=conf)
    node = at.node_name("node-bus")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node])
    at.Agent([c], node, bus=bus).start()
    bus.wait_name(NAME)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busctl",
                        f"--address={bus.address}", "call", NAME, PATH, NAME, "Drain"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode != 0 and "denied" in (p.stderr + p.stdout).lower(), f"unprivileged Drain(): {p.returncode} {p.stderr}")
    check(prop(bus, "Draining") is False, "still serving")
    # Reading is for everyone.
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busctl",
                        f"--address={bus.address}", "get-property", NAME, PATH, NAME, "NodeId"],
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 0 and node in p.stdout, f"unprivileged read: {p.returncode} {p.stderr}")
    bus.busctl("call", NAME, PATH, NAME, "Drain")
    check(prop(bus, "Draining") is True, "root may drain")


mctest.main()
