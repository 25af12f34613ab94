#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Discovery: DHT lookups at 100 to 10 000 nodes with 0-30 % churn, from bench/dht's simulator
(dht-sim: N of our DHT nodes in one process on loopback addresses; the network forms, 100 nodes
announce, a share of the nodes is killed without a word, then get_peers lookups from random
survivors). Success share, rounds and latency percentiles per size and churn; each simulator run's
own output in raw/.

Nothing in the simulation re-announces (a real peer does, every few minutes), so an announce whose
every holder the churn killed is lost to the network whatever the lookups do: of 267 runs of the
quick check's 200 nodes at 30 % churn (20 announces each), 2 lost announces (3 in all), and each
lost one failed its 5 or so lookups, below the 99 % the check asked of all lookups. The check is
therefore on the lookups for announces some live node still held (`success_held_percent`); the
table keeps the plain success beside it and how many announces the churn took (`announces_lost`),
and the announces' placement: the least number of the 8 nodes closest to an announce's info-hash
that hold it (`placement_min`; 7 when the announcing node is one of them, as it does not store its
own)."""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402
import mctest  # noqa: E402

ex = exp.Experiment("discovery", __doc__)
Q = ex.quick
ex.check_params()     # none: --param is for the others
SIZES = [100, 200] if Q else [100, 300, 1000, 3000, 10000]
CHURN = [0, 30] if Q else [0, 10, 20, 30]
# A network of 3 000 or 10 000 nodes takes minutes to form (waves of 100 joins): there, 0 and 30 % only.
CHURN_LARGE = CHURN if Q else [0, 30]
LOOKUPS = 100 if Q else 1000
ANNOUNCES = 20 if Q else 100
ex.settings.update(nodes=SIZES, churn_percent=CHURN, churn_percent_above_1000_nodes=CHURN_LARGE, lookups=LOOKUPS, announces=ANNOUNCES, simulator="bench/dht/dht-sim")

LINE = re.compile(r"churn (\d+)% \((\d+) killed\): (\d+) lookups, success ([\d.]+)%, rounds p50 (\d+) p99 (\d+) "
                  r"\(mean ([\d.]+)\), latency p50 ([\d.]+) ms p99 ([\d.]+) ms max ([\d.]+) ms, queries per lookup "
                  r"p50 (\d+) p99 (\d+) \(mean ([\d.]+)\)")
HELD = re.compile(r"held: (\d+) lookups for an announce a live node held, success ([\d.]+)%")
STORED = re.compile(r"announces: \d+, stored on \d+ to \d+ nodes, (\d+) on none")
PLACED = re.compile(r"placement: of the (\d+) nodes closest to an announce's info-hash, (\d+) to \d+ hold it")
LOST = re.compile(r"after churn: announces held by \d+ to \d+ live nodes, (\d+) by none")
FORMED = re.compile(r"formed in ([\d.]+) s, (\d+) queries per node, RSS ([\d.]+) KiB per node")
COLS = ["nodes", "churn_percent", "killed", "lookups", "success_percent", "rounds_p50", "rounds_p99", "latency_p50_ms",
        "latency_p99_ms", "latency_max_ms", "queries_per_lookup_mean", "formed_s", "rss_kib_per_node",
        "announces_lost", "success_held_percent", "placement_min"]


def main():
    sim = os.path.join(ex.build_dir, "bench", "dht", "dht-sim")
    mctest.check(os.access(sim, os.X_OK), f"{sim} is not built")
    rows = []
    for n in SIZES:
        for churn in (CHURN if n <= 1000 else CHURN_LARGE):
            seed = ex.rnd.randrange(1, 2**31)
            p = subprocess.run([sim, "--nodes", str(n), "--churn", str(churn), "--lookups", str(LOOKUPS),
                                "--announces", str(min(ANNOUNCES, n)), "--seed", str(seed)],
                               capture_output=True, text=True, timeout=900)
            os.makedirs(os.path.join(ex.dir, "raw"), exist_ok=True)
            with open(os.path.join(ex.dir, "raw", f"dht-sim-{n}-churn{churn}.txt"), "w") as out:
                out.write(f"# {' '.join(p.args)}\n# exit {p.returncode}\n{p.stdout}{p.stderr}")
            m, f = LINE.search(p.stdout), FORMED.search(p.stdout)
            h, lost, unstored = HELD.search(p.stdout), LOST.search(p.stdout), STORED.search(p.stdout)
            placed = PLACED.search(p.stdout)
            if p.returncode != 0 or not all((m, h, lost, unstored, placed)):
                ex.check(False, f"dht-sim {n} nodes {churn} %: exit {p.returncode}: {p.stdout[-300:]}{p.stderr[-300:]}")
                continue
            g = m.groups()
            row = [n, churn, int(g[1]), int(g[2]), float(g[3]), int(g[4]), int(g[5]), float(g[7]), float(g[8]),
                   float(g[9]), float(g[12]), float(f.group(1)) if f else None, float(f.group(3)) if f else None,
                   int(lost.group(1)), float(h.group(2)), int(placed.group(2))]
            ex.log(" ".join(f"{c}={exp.fmt(v)}" for c, v in zip(COLS, row)))
            rows.append(row)
            # A miss names its announce, how many nodes took it and how many of those are alive
            # (dht-sim's lines), so that a failed check in a log that outlives the results folder
            # still says where the peer was lost.
            misses = [ln for ln in p.stdout.splitlines()
                      if ln.startswith(("announces:", "placement:", "after churn:", "lookup "))][:10]
            # Churn may take an announce's holders; nothing may keep an announce from being stored.
            ex.check(unstored.group(1) == "0", f"{n} nodes, {churn} % churn: {unstored.group(1)} announces stored on no node")
            ex.check(int(h.group(1)) > 0 and float(h.group(2)) >= 99.0,
                     f"{n} nodes, {churn} % churn: success {h.group(2)} % of the {h.group(1)} lookups for an announce "
                     f"a live node held, below 99 % (all lookups: {row[4]} %)" + "".join(f"\n  {ln}" for ln in misses))
    ex.table("DHT lookups (dht-sim)", COLS, rows)
    ex.csv("discovery.csv", COLS, rows)
    fig, (a1, a2) = ex.figure(1, 2, figsize=(10, 3.8))
    for i, churn in enumerate(CHURN):     # one colour per churn: p50 solid, p99 dashed
        rs = [r for r in rows if r[1] == churn]
        a1.plot([r[0] for r in rs], [r[7] for r in rs], "o-", color=f"C{i}", label=f"p50, {churn} % churn")
        a1.plot([r[0] for r in rs], [r[8] for r in rs], "x--", color=f"C{i}", label=f"p99, {churn} % churn")
        a2.plot([r[0] for r in rs], [r[4] for r in rs], "o-", color=f"C{i}", label=f"{churn} % churn")
    a1.axhline(5, color="0.6", ls=":", lw=0.8, label="5 ms (the original's target)")
    for a in (a1, a2):
        a.set_xscale("log")
        a.set_xlabel("nodes")
        a.legend(fontsize=6)
    a1.set_yscale("log")
    a1.set_ylabel("lookup latency (ms)")
    a2.set_ylabel("lookups that found the peer (%)")
    a2.set_ylim(90, 100.5)
    ex.save(fig, "discovery.png")
    return ex.finish({"rows": [dict(zip(COLS, r)) for r in rows]})


exp.run(main)
