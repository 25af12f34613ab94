#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mcctl against a live cluster (real PostgreSQL, mc-control, an mc-agent with the exec driver): run
and push with --wait end with the task's exit code; get, list, nodes, cancel; logs -f shows a line
while the task runs; drain stops new work on a node; the exit status of usage errors, of an
unreachable control and of a refused token; shell completion that knows every command and option."""

import json
import os
import re
import shlex
import sys

import mctest
from mctest import check, http, run

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "agent"))
import agenttest as at  # noqa: E402
from controltest import start_cluster  # noqa: E402

MCCTL = os.path.join(mctest.build_dir(), "src", "mcctl", "mcctl")


def mcctl(control, *args, token=at.USER_TOKEN, timeout=120, input=None):
    env = {"MC_URL": control.url if control else "http://127.0.0.1:1", "MC_TOKEN": token,
           "HOME": mctest.tmpdir("home")}
    return run([MCCTL, *args], env=env, check=False, timeout=timeout, input=input)


def commands_of_help():
    out = mcctl(None, "--help").stdout
    return re.findall(r"^  ([a-z]+) ", out.split("Commands:", 1)[1], re.M)


def bash_complete(*words):
    """What mcctl's bash completion offers for the last of words (as typed so far)."""
    script = os.path.join(mctest.source_dir(), "shell-completion", "mcctl.bash")
    line = " ".join(words)
    p = run(["bash", "-c", "source /usr/share/bash-completion/bash_completion; source " + shlex.quote(script) + "; "
             f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}; "
             f"COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}; _mcctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""])
    return p.stdout.split()


def test_completion_knows_every_command_and_option():
    commands = commands_of_help()
    check(len(commands) >= 11, f"commands in --help: {commands}")
    for c in commands:
        check(bash_complete("mcctl", "--url", "http://x", c[:-1]) == [c] or c in bash_complete("mcctl", c[:-1]),
              f"bash completion of {c}: {bash_complete('mcctl', c[:-1])}")
        lines = mcctl(None, c, "--help").stdout.splitlines()
        # The usage line and the option lines (prose may mention another command's options).
        listed = [lines[0]] + [ln for ln in lines if re.match(r"\s+-", ln)]
        for opt in sorted(set(re.findall(r"(--[a-z][a-z-]+)", "\n".join(listed)))):
            check(opt in bash_complete("mcctl", c, opt[:4]), f"bash completion of `mcctl {c} {opt}`")
    for f in ("_mcctl", "mcctl.fish"):
        with open(os.path.join(mctest.source_dir(), "shell-completion", f)) as fh:
            text = fh.read()
        for c in commands:
            check(re.search(rf"\b{c}\b", text), f"{f} does not know the command {c}")


def cluster():
    node = at.node_name("node-m")
    pg, (c,) = start_cluster(nodes=(node,), env={"MC_LEASE_TTL_MS": "10000", "MC_SWEEP_INTERVAL_MS": "100"})
    agent = at.Agent([c], node, driver="exec").start()
    mctest.wait_until(lambda: any(n["node_id"] == node for n in
                                  http("GET", c.url + "/api/nodes", token=at.USER_TOKEN).json()["nodes"]),
                      60, msg=f"{node} to register")
    return c, node, agent


def test_usage_errors_and_unreachable_control():
    p = mcctl(None, "--help")
    check(p.returncode == 0 and "watch" in p.stdout, f"--help: {p.returncode} {p.stdout}")
    for args in (["frob"], ["run", "--", "true"], ["run", "--image=x", "--memory=lots", "true"],
                 ["run", "--image=x"], ["get"], ["get", "../etc"], ["list", "--status=done"],
                 ["drain"], ["logs", "a", "b"]):
        p = mcctl(None, *args)
        check(p.returncode == 2, f"{args}: exit {p.returncode}, wanted 2 (usage)\n{p.stderr}")
        check(p.stderr.strip() != "", f"{args}: no message")
    p = mcctl(None, "list")
    check(p.returncode == 3 and "127.0.0.1:1" in p.stderr, f"unreachable: {p.returncode} {p.stderr}")


def test_run_wait_ends_with_the_exit_code():
    c, node, _ = cluster()
    p = mcctl(c, "run", "--image", at.IMAGE, "--wait", "--label", "suite=mcctl", "--",
              "sh", "-c", "echo out-line; exit 7")
    check(p.returncode == 7, f"run --wait: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    tid = p.stdout.split()[0]
    t = c.task(tid)
    check(t["status"] == "failed" and t["result"]["exit_code"] == 7, t)
    check(t["labels"] == {"suite": "mcctl"} and t["cmd"] == ["sh", "-c", "echo out-line; exit 7"], t)
    p = mcctl(c, "logs", tid)
    check(p.returncode == 0 and "out-line" in p.stdout, f"logs: {p.returncode} {p.stdout!r}")

    # A task file, from standard input, on the node named.
    body = {"image": at.IMAGE, "cmd": ["sh", "-c", "echo from-file"], "labels": {"target_node": node}}
    p = mcctl(c, "push", "-f", "-", "--wait", input=json.dumps(body))
    check(p.returncode == 0, f"push --wait: exit {p.returncode}\n{p.stderr}")
    pushed = p.stdout.split()[0]
    check(c.task(pushed)["status"] == "succeeded", c.task(pushed))

    p = mcctl(c, "get", "-o", "json", pushed)
    check(p.returncode == 0 and json.loads(p.stdout)["id"] == pushed, p.stdout)
    p = mcctl(c, "get", pushed)
    check(p.returncode == 0 and pushed in p.stdout and "succeeded" in p.stdout, p.stdout)
    p = mcctl(c, "list", "-o", "json", "--status", "failed")
    ids = [t["id"] for t in json.loads(p.stdout)]
    check(p.returncode == 0 and ids == [tid], f"list --status failed: {ids}")
    p = mcctl(c, "list", "--label", "suite=mcctl")
    rows = p.stdout.splitlines()
    check(p.returncode == 0 and rows[0].split()[:2] == ["ID", "STATUS"] and len(rows) == 2 and rows[1].split()[:2] == [tid, "failed"],
          f"list table: {p.stdout}")
    p = mcctl(c, "nodes", "-o", "json")
    check(p.returncode == 0 and [n["node_id"] for n in json.loads(p.stdout)] == [node], p.stdout)
    p = mcctl(c, "nodes")
    check(p.returncode == 0 and p.stdout.splitlines()[1].split()[:2] == [node, "ready"], p.stdout)


def test_cancel_watch_and_errors():
    c, node, _ = cluster()
    marker = f"mcctl-held-{at.RUN}"
    p = mcctl(c, "run", "--image", at.IMAGE, "--", "sh", "-c", at.held_cmd(marker))
    check(p.returncode == 0, p.stderr)
    tid = p.stdout.strip()
    at.wait_status(c, tid, "running")
    watcher = mctest.background(mcctl, c, "watch", tid)
    p = mcctl(c, "cancel", tid)
    check(p.returncode == 0 and p.stdout.split() == [tid, "cancelled"], f"cancel: {p.stdout} {p.stderr}")
    w = watcher.get(timeout=120)
    check(w.returncode == 1, f"watch of a cancelled task: exit {w.returncode}\n{w.stderr}")
    p = mcctl(c, "cancel", tid)
    check(p.returncode == 1 and "409" in p.stderr, f"cancel again: {p.returncode} {p.stderr}")
    p = mcctl(c, "get", "no-such-task")
    check(p.returncode == 1 and "404" in p.stderr, f"unknown id: {p.returncode} {p.stderr}")
    p = mcctl(c, "list", token="not-a-token")
    check(p.returncode == 1 and "401" in p.stderr, f"bad token: {p.returncode} {p.stderr}")
    bad = os.path.join(mctest.tmpdir("bad"), "task.json")
    with open(bad, "w") as f:
        f.write("{not json")
    p = mcctl(c, "push", "-f", bad)
    check(p.returncode == 1 and bad in p.stderr, f"bad file: {p.returncode} {p.stderr}")
    p = mcctl(c, "push", "-f", "-", input='{"image": "x"}')
    check(p.returncode == 1 and "400" in p.stderr, f"refused push: {p.returncode} {p.stderr}")


def test_logs_follow_shows_output_while_running():
    c, node, _ = cluster()
    marker = f"mcctl-follow-{at.RUN}"
    p = mcctl(c, "run", "--image", at.IMAGE, "--", "sh", "-c", "echo first-line; " + at.held_cmd(marker, "echo second-line"))
    check(p.returncode == 0, p.stderr)
    tid = p.stdout.strip()
    follower = mctest.background(mcctl, c, "logs", "-f", tid)
    # The task prints its first line and is held: the line reaches the control while it runs.
    mctest.wait_until(lambda: "first-line" in mcctl(c, "logs", tid).stdout, 60, msg="the first line while it runs")
    check(c.task(tid)["status"] == "running", c.task(tid))
    check(not follower.done, "logs -f ended while the task runs")
    at.release(marker)
    f = follower.get(timeout=120)
    check(f.returncode == 0 and f.stdout.count("first-line") == 1 and "second-line" in f.stdout,
          f"logs -f: {f.returncode} {f.stdout!r} {f.stderr}")
    check(c.task(tid)["status"] == "succeeded", c.task(tid))


def test_drain_stops_new_work():
    c, node, _ = cluster()
    p = mcctl(c, "drain", node)
    check(p.returncode == 0 and p.stdout.split() == [node, "draining"], f"drain: {p.stdout} {p.stderr}")
    p = mcctl(c, "nodes", "-o", "json")
    check(json.loads(p.stdout)[0]["state"] == "draining", p.stdout)
    p = mcctl(c, "run", "--image", at.IMAGE, "--", "true")
    tid = p.stdout.strip()
    # Long enough for several of the agent's claims and heartbeats: it must not take the task.
    for _ in range(3):
        t = http("GET", f"{c.url}/api/tasks/{tid}?wait=2&since=queued", token=at.USER_TOKEN).json()
        check(t["status"] == "queued", f"a drained node took the task: {t}")
    p = mcctl(c, "undrain", node)
    check(p.returncode == 0 and p.stdout.split() == [node, "ready"], f"undrain: {p.stdout} {p.stderr}")
    p = mcctl(c, "watch", tid)
    check(p.returncode == 0, f"watch after undrain: {p.returncode} {p.stderr}")
    p = mcctl(c, "drain", "no-such-node")
    check(p.returncode == 1 and "404" in p.stderr, f"drain of an unknown node: {p.returncode} {p.stderr}")


mctest.main()
