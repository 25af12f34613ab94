#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every experiment of experiments/ in --quick mode, on the suite's own (ASan) build, so that they keep
working: each must exit 0 (its own invariants held: nothing lost, no task alive twice at once, no
task completed twice, every task final), and leave its CSV, PNG and settings.json (with the seed, the
settings and the machine) in its results folder."""

import csv
import glob
import json
import os
import subprocess

import mctest
from mctest import check

EXPERIMENTS = ["control-outage", "scalability", "failure-ratio", "p2p-vs-central", "discovery", "scheduling-wait"]


def test_quick_runs():
    mctest.Dockerd.ensure()
    out = mctest.tmpdir("experiments")
    run = os.path.join(mctest.source_dir(), "experiments", "run")
    # samples is scheduling-wait's alone (4 is its --quick default): given to it, and to no other.
    p = subprocess.run(["/usr/bin/python3", run, "--quick", "--out", out, "--seed", "42", "--param", "samples=4",
                        "--build-dir", mctest.build_dir()], capture_output=True, text=True, timeout=560)
    print(p.stdout[-6000:])
    check(p.returncode == 0, f"experiments/run --quick exited {p.returncode}:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    for name in EXPERIMENTS:
        d = os.path.join(out, name)
        check(os.path.isdir(d), f"{name}: no results folder {d}")
        check(glob.glob(os.path.join(d, "*.csv")), f"{name}: no CSV in {d}")
        check(glob.glob(os.path.join(d, "*.png")), f"{name}: no PNG in {d}")
        for png in glob.glob(os.path.join(d, "*.png")):
            with open(png, "rb") as f:
                check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG")
        with open(os.path.join(d, "settings.json")) as f:
            s = json.load(f)
        check(s["experiment"] == name and s["quick"] is True and s["seed"] == 42, f"{name}: settings.json: {s}")
        check(s["settings"], f"{name}: no settings recorded")
        for k in ("nproc", "kernel", "cgroup_layout", "loadavg"):
            check(s["machine"].get(k), f"{name}: machine.{k} missing")
        check(s["failed_checks"] == [], f"{name}: failed checks {s['failed_checks']}")
        given = {"samples": 4} if name == "scheduling-wait" else {}
        check(s["settings"].get("params_given") == given, f"{name}: params_given {s['settings'].get('params_given')}")
    # The invariants once more, from the CSV files themselves.
    for name, fname in (("failure-ratio", "failure-ratio.csv"), ("scalability", "scalability.csv")):
        with open(os.path.join(out, name, fname)) as f:
            rows = list(csv.DictReader(f))
        check(rows, f"{name}: empty CSV")
        for r in rows:
            check(r["complete"] == "True", f"{name}: not every task final: {r}")
            check(r["alive_twice"] == "0", f"{name}: a task alive twice at once: {r}")
            check(r["completed_twice"] == "0", f"{name}: a task completed twice: {r}")
            check(float(r["success_share"]) == 1.0, f"{name}: not every task succeeded: {r}")
            check(int(r["hit_by_death"]) > 0 and r["recovery_p50_s"], f"{name}: no recovery measured: {r}")
    with open(os.path.join(out, "control-outage", "control-outage.csv")) as f:
        for r in csv.DictReader(f):
            check(r["lost"] == "0" and r["rerun"] == "0" and r["alive_twice"] == "0", f"control-outage: {r}")
            check(r["delivered_after"] == r["ended_during_outage"], f"control-outage: results not delivered: {r}")



def test_bad_params():
    """A bad --param is refused before anything is built or run: exit status 2, the key and the value
    named, and no results folder made."""
    out = mctest.tmpdir("experiments-bad")
    run = os.path.join(mctest.source_dir(), "experiments", "run")
    cases = [
        (["--param", "samples"], "samples"),                                # no =JSON
        (["--param", "sizes=[1"], "[1"),                                    # not JSON
        (["--param", "nosuch=1", "discovery"], "nosuch"),                   # no experiment named has it
        (["--param", "samples=4", "discovery"], "samples"),                 # another experiment's
        (["--param", "sizes=[]", "scalability"], "sizes"),                  # empty list
        (["--param", "sizes=[50, 0]", "scalability"], "[50, 0]"),           # below 1
        (["--param", "sizes=[50, \"x\"]", "scalability"], "sizes"),         # not numbers
        (["--param", "servers_first=1", "scalability"], "servers_first"),   # a number for a bool
        (["--param", "task_seconds=[3, 1]", "scalability"], "task_seconds"),
        (["--param", "ttls=[100]", "failure-ratio"], "ttls"),               # below the control's 300 ms
        (["--param", "agents=2", "--param", "ratios=[0.9]", "failure-ratio"], "ratios"),  # kills both
        (["--param", "configs=[[8, 16, 400]]", "p2p-vs-central"], "configs"),
    ]
    for args, named in cases:
        p = subprocess.run(["/usr/bin/python3", run, "--quick", "--out", out, "--build-dir", mctest.build_dir()] + args,
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 2, f"{args}: exit status {p.returncode}, not 2:\n{p.stdout}\n{p.stderr}")
        check(named in p.stderr, f"{args}: the error does not name {named!r}: {p.stderr}")
        check(os.listdir(out) == [], f"{args}: something ran: {os.listdir(out)}")


mctest.main()
