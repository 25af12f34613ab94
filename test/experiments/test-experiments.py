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
    p = subprocess.run(["/usr/bin/python3", run, "--quick", "--out", out, "--seed", "42",
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


mctest.main()
