#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-agent checks NODE_ID at start by the control's own rule (src/shared/id-util.h: 1 to 128
characters of [A-Za-z0-9._-], the first a letter or digit): a name the control would refuse at
register stops the agent before it is ready, with an error naming NODE_ID, instead of leaving it
retrying; the longest valid name starts and registers. Likewise an EXEC_USER that names no user, and
a state directory the exec tasks' user cannot get through."""

import os

import mctest
from mctest import check, http, wait_until
import agenttest as at
from controltest import USER_TOKEN, start_cluster


def registered(control, node):
    r = http("GET", control.url + "/api/nodes", token=USER_TOKEN)
    check(r.status == 200, f"nodes: {r.status} {r.text[:200]}")
    return any(n["node_id"] == node for n in r.json()["nodes"])


def refused(node):
    # A control address nothing listens on: the agent must not get as far as needing one.
    # (The daemon's own name is short: its directories are named after it, and a socket path is short.)
    a = at.Agent([], node, driver="exec", env={"MC_CONTROL_URLS": "http://127.0.0.1:9"}, name="mc-agent-bad-id")
    a.daemon.start()
    rc = a.daemon.wait(timeout=60)
    check(rc != 0, f"NODE_ID of {len(node)} characters: exit status {rc}")
    check(not any(m.get("READY") == "1" for m in a.daemon.notifications(since_start=True)),
          "the agent said it was ready")
    lines = [line for line in a.log().splitlines() if "NODE_ID" in line and not line.startswith("--- start")]
    check(lines, f"no message names NODE_ID:\n{a.log()[-2000:]}")


def test_exec_user_unknown_is_refused_at_start():
    """An EXEC_USER that names no user or group, or is no user at all, stops the agent at start,
    naming the key."""
    for value in ("no-such-user-mc", "root:no-such-group-mc", "4242:", ":4242", "-1"):
        a = at.Agent([], at.node_name("node-user"), driver="exec",
                     env={"MC_CONTROL_URLS": "http://127.0.0.1:9", "MC_EXEC_USER": value}, name="mc-agent-bad-user")
        a.daemon.start()
        rc = a.daemon.wait(timeout=60)
        check(rc != 0, f"EXEC_USER={value}: exit status {rc}")
        check(not any(m.get("READY") == "1" for m in a.daemon.notifications(since_start=True)),
              f"EXEC_USER={value}: the agent said it was ready")
        lines = [line for line in a.log().splitlines() if "EXEC_USER" in line and not line.startswith("--- start")]
        check(lines, f"EXEC_USER={value}: no message names EXEC_USER:\n{a.log()[-2000:]}")


def test_exec_work_dir_out_of_the_task_users_reach_is_refused_at_start():
    """Exec tasks run as another user: a state directory that user cannot get through stops the agent
    at start, naming the directory, rather than failing every task."""
    a = at.Agent([], at.node_name("node-reach"), driver="exec",
                 env={"MC_CONTROL_URLS": "http://127.0.0.1:9", "MC_EXEC_USER": "4242:4242"}, name="mc-agent-reach")
    os.chmod(a.daemon.dir, 0o700)
    a.daemon.start()
    rc = a.daemon.wait(timeout=60)
    check(rc != 0, f"exit status {rc}")
    lines = [line for line in a.log().splitlines() if a.daemon.dir in line and not line.startswith("--- start")]
    check(lines, f"no message names {a.daemon.dir}:\n{a.log()[-2000:]}")


def test_node_id_too_long_is_refused_at_start():
    refused("n" * 200)
    refused("n" * 129)


def test_node_id_not_an_id_is_refused_at_start():
    for node in ("-starts-with-a-dash", "has/slash", "has space", "dot..ok-but-then-ü"):
        refused(node)


def test_longest_node_id_registers():
    base = at.node_name("long")
    node = base + "x" * (128 - len(base))
    check(len(node) == 128, len(node))
    pg, (c,) = start_cluster(nodes=(node,))
    a = at.Agent([c], node, driver="exec", name="mc-agent-long-id").start()
    wait_until(lambda: registered(c, node), timeout=60, msg="the agent registered")
    a.stop()


mctest.main()
