#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The failure ratio's plots from several runs' results folders together (runs cut to fit a time
window): recovery and outcome against the share killed (TTL 5 s), and recovery and false recalls
against the TTL at 20 % killed, the runs of one TTL pooled. Prints the pooled TTL table.

    experiments/lib/combine-failure-ratio.py OUT_DIR RESULTS_DIR...      (writes OUT_DIR/failure-ratio-2.png
                                                                         and OUT_DIR/failure-ratio-ttl-2.png)"""
import csv
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if len(sys.argv) < 3:
    sys.exit(__doc__)
OUT = sys.argv[1]
runs = []
rec = []
for d in sys.argv[2:]:
    for r in csv.DictReader(open(os.path.join(d, "failure-ratio.csv"))):
        r["_d"] = d
        runs.append(r)
    for r in csv.DictReader(open(os.path.join(d, "failure-ratio-recovery.csv"))):
        r["_d"] = d
        rec.append(r)
f = lambda x: float(x) if x not in ("", None) else None
def pct(v, p):
    v = sorted(v); return v[min(len(v)-1, max(0, int(round(p/100*(len(v)-1)))))] if v else None
# kill ratios at 5 s
kr = sorted([r for r in runs if r["label"].startswith("kill")], key=lambda r: f(r["killed_share"]))
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
xs = [f(r["killed_share"]) * 100 for r in kr]
for k, lab in (("recovery_p50_s", "p50"), ("recovery_p95_s", "p95"), ("recovery_p99_s", "p99"), ("recovery_max_s", "max")):
    a1.plot(xs, [f(r[k]) for r in kr], "o-", label=lab)
a1.axhline(5, color="0.6", ls="--", lw=0.8, label="lease TTL")
a1.set_xlabel("agents killed (%)"); a1.set_ylabel("node death -> next attempt running (s)")
a1.set_title("recovery, TTL 5 s, 100 agents, 1000 tasks (second round)", fontsize=9); a1.legend(fontsize=7)
a2.plot(xs, [100 * f(r["success_share"]) for r in kr], "o-", label="succeeded (%)")
a2.plot(xs, [f(r["alive_twice"]) for r in kr], "s-", label="alive twice at once (tasks)")
a2.plot(xs, [f(r["completed_twice"]) for r in kr], "^-", label="completed twice (tasks)")
a2.plot(xs, [f(r["false_recalls"]) for r in kr], "x-", label="false recalls")
a2.plot(xs, [100 * f(r["rerun_after_partial"]) / 1000 for r in kr], "d-", label="re-run after a partial run (%)")
a2.set_xlabel("agents killed (%)"); a2.set_title("outcome", fontsize=9); a2.legend(fontsize=7)
fig.tight_layout(); fig.savefig(os.path.join(OUT, "failure-ratio-2.png"), dpi=90)
# TTL sweep at 20 %
sw = [r for r in runs if abs(f(r["killed_share"]) - 0.2) < 1e-9]
ttls = sorted({f(r["lease_ttl_s"]) for r in sw})
rows = []
for t in ttls:
    rs = [r for r in sw if f(r["lease_ttl_s"]) == t]
    keys = {(r["_d"], r["label"]) for r in rs}
    v = [f(x["recovery_s"]) for x in rec if (x["_d"], x["label"]) in keys]
    rows.append((t, len(rs), sum(int(r["false_recalls"]) for r in rs), pct(v, 50), pct(v, 95), max(v), len(v),
                 "/".join(f'{f(r["loadavg_1m"]):.0f}' for r in rs)))
    print("TTL %g s: %d run(s), %d false recalls, recovery p50 %.2f p95 %.2f max %.2f s (%d), load %s" % rows[-1])
fig, a1 = plt.subplots(figsize=(6.4, 4.0))
xs = [r[0] for r in rows]
a1.plot(xs, [r[3] for r in rows], "o-", label="recovery p50")
a1.plot(xs, [r[4] for r in rows], "o-", label="recovery p95")
a1.plot(xs, [r[5] for r in rows], "o-", label="recovery max")
a1.plot(xs, xs, color="0.6", ls="--", lw=0.8, label="TTL")
a1.set_xlabel("lease TTL (s)"); a1.set_ylabel("seconds")
a2 = a1.twinx()
a2.bar(xs, [r[2] for r in rows], width=0.3, color="C3", alpha=0.4, label="false recalls (all runs)")
for x, r in zip(xs, rows):
    a2.annotate(f"{r[2]} in {r[1]} run(s)", (x, 0.05), ha="center", fontsize=7, color="C3")
a2.set_ylim(0, 1); a2.set_ylabel("false recalls (leases expired on live nodes)")
a1.set_title("100 agents, 1000 tasks, 20 % killed, loaded machine (second round)", fontsize=9)
h1, l1 = a1.get_legend_handles_labels(); h2, l2 = a2.get_legend_handles_labels()
a1.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
fig.tight_layout(); fig.savefig(os.path.join(OUT, "failure-ratio-ttl-2.png"), dpi=90)
