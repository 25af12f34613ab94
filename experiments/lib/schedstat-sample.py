#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Who waits for the CPU during an experiment: every INTERVAL seconds, the time the processes of each
kind ran and the time they waited in the run queue (runnable, not running), summed over the processes
alive at both ends of the interval, from /proc/PID/schedstat (its first two fields, in ns).

    experiments/lib/schedstat-sample.py [--interval 5] [--count N]

Run beside an experiment (as root, to read every process). One line per interval, in ms:

    14:47:54 load 225.10 agent:run=838,wait=11466,n=90 ctl:run=244,wait=550,n=1 ... pg:run=1168,wait=2606,n=15

Kinds: pg (postgres), ctl (mc-control), agent (mc-agent), sup (mc-exec-supervisor), keeper
(mc-fence-keeper), other. A wait well above the run means that kind of process is starved: this is how
docs/experiments.md found the control and PostgreSQL waiting 3-5 s per second they ran at 1 000
agents before the experiments put them first (exp.servers_first())."""

import argparse
import os
import time

KINDS = (("postgres", "pg"), ("mc-control", "ctl"), ("mc-agent", "agent"), ("mc-exec-super", "sup"),
         ("mc-fence-keep", "keeper"))


def kind(comm):
    for prefix, name in KINDS:
        if comm.startswith(prefix):
            return name
    return "other"


def snapshot():
    """{pid: (kind, run ns, wait ns)} of every process readable now."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/schedstat") as f:
                run, wait, _ = f.read().split()
        except (OSError, ValueError):
            continue
        out[pid] = (kind(comm), int(run), int(wait))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--count", type=int, default=0, help="stop after this many lines (0: never)")
    args = p.parse_args()
    prev, lines = snapshot(), 0
    while args.count == 0 or lines < args.count:
        time.sleep(args.interval)
        cur = snapshot()
        sums = {}
        for pid, (k, run, wait) in cur.items():
            if pid in prev and prev[pid][0] == k:
                s = sums.setdefault(k, [0, 0, 0])
                s[0] += (run - prev[pid][1]) / 1e6
                s[1] += (wait - prev[pid][2]) / 1e6
                s[2] += 1
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(time.strftime("%T"), "load", load,
              " ".join(f"{k}:run={v[0]:.0f},wait={v[1]:.0f},n={v[2]}" for k, v in sorted(sums.items())), flush=True)
        prev, lines = cur, lines + 1


if __name__ == "__main__":
    main()
