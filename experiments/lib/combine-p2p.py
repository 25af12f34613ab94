#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""P2P against central from several runs' results folders together (a run measured under another
load, or only the swarm): for each number of hosts, the swarm's time in every folder that measured it
(labelled with the folder's load average at its start and end) and the central server's, with the bounds F/U
and N*F/U. Prints the rows it plots.

    experiments/lib/combine-p2p.py OUT_PNG RESULTS_DIR...

Only rows of one input size and uplink are combined (the first folder's)."""
import csv
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
OUT = sys.argv[1]
f = lambda x: float(x) if x not in ("", None) else None  # noqa: E731
swarm, central, bounds = [], {}, {}
size = rate = None
for d in sys.argv[2:]:
    with open(os.path.join(d, "settings.json")) as fh:
        st = json.load(fh)
    label = (f"{st['started_utc'][11:16]} UTC, load average {float(st['machine']['loadavg'].split()[0]):.0f} to "
             f"{float(st['loadavg_end'].split()[0]):.0f}")
    with open(os.path.join(d, "p2p-vs-central.csv")) as fh:
        for r in csv.DictReader(fh):
            n, u = int(r["fetchers"]), f(r["uplink_mbit"])
            if f(r["swarm_last_s"]) is not None:
                if size is None:
                    size, rate = f(r["swarm_size_mib"]), u
                if (f(r["swarm_size_mib"]), u) != (size, rate):
                    continue
                swarm.append((n, label, f(r["swarm_last_s"])))
                bounds[n] = (f(r["F/U_s"]), None)
            if f(r["central_last_s"]) is not None and f(r["central_size_mib"]) == size and u == rate:
                central[n] = f(r["central_last_s"])
                bounds[n] = (bounds.get(n, (None,))[0], f(r["central_N*F/U_s"]))
if not swarm:
    sys.exit("combine-p2p: no swarm row in the folders given")
ns = sorted({n for n, _, _ in swarm} | set(central))
labels = list(dict.fromkeys(lb for _, lb, _ in swarm))     # in the order of the folders given
width = 0.8 / (len(labels) + 1)
fig, ax = plt.subplots(figsize=(7.5, 4.2))
for i, lb in enumerate(labels):
    xs = [ns.index(n) + (i - len(labels) / 2) * width for n, l2, _ in swarm if l2 == lb]
    ys = [t for _, l2, t in swarm if l2 == lb]
    ax.bar(xs, ys, width=width, label=f"swarm, {lb}", color=f"C{i if i == 0 else i + 1}", alpha=1 if i == 0 else 0.55)
xc = [ns.index(n) + len(labels) / 2 * width for n in ns if n in central]
ax.bar(xc, [central[n] for n in ns if n in central], width=width, color="C1", label="central HTTP (one nginx)")
for n in ns:
    fu, nfu = bounds.get(n, (None, None))
    x0 = ns.index(n)
    if fu:
        ax.hlines(fu, x0 - 0.45, x0 + 0.45, color="k", lw=1.5, label="F/U (any schedule's bound)" if n == ns[0] else None)
    if nfu:
        ax.hlines(nfu, x0 - 0.45, x0 + 0.45, color="0.4", lw=1.5, ls="--", label="N*F/U (one server's bound)" if n == ns[0] else None)
ax.set_xticks(range(len(ns)))
ax.set_xticklabels([f"{n} hosts" for n in ns])
ax.set_ylabel("seconds until the last host has the input")
ax.set_yscale("log")
ax.set_title(f"one {size / 1024:g} GiB input to N hosts, uplinks {rate:g} Mbit/s each", fontsize=9)
ax.set_ylim(top=max([t for _, _, t in swarm] + list(central.values())) * 5)     # room for the legend
ax.legend(fontsize=7, loc="upper left", ncol=2)
fig.tight_layout()
fig.savefig(OUT, dpi=100)
for n, lb, t in swarm:
    print(f"{n} hosts, swarm ({lb}): {t:.1f} s = {t / bounds[n][0]:.2f} x F/U")
for n, t in sorted(central.items()):
    print(f"{n} hosts, central: {t:.1f} s = {t / bounds[n][1]:.2f} x N*F/U")
