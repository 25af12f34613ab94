#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""P2P against central: one large input to 8 and to 16 hosts, each a network namespace whose uplink
is shaped to the same rate U (tc tbf), by bench/p2p/swarm-bench: run A, the swarm (a seeder running
the engine mc-seeder embeds, SwarmServer, and N fetchers serving each other as they download); run B,
one central nginx behind the same uplink and N curl downloads. Time until the last host has the
whole, verified input, against the lower bounds F/U (any schedule: the seeder must send every byte
once) and N*F/U (one server's uplink carries every copy)."""

import csv
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import exp  # noqa: E402

ex = exp.Experiment("p2p-vs-central", __doc__)
Q = ex.quick
MIB = 1 << 20
# (fetchers, size MiB, uplink Mbit/s, runs): both runs of each N with one 2 GiB input. The central
# server's time is N*F/U, 344 s for 2 GiB to 8 hosts at 400 Mbit/s and 687 s to 16: the full run takes
# about 25 minutes. --param 'configs=[[8,2048,400,"A"],[8,256,400,"B"]]' measures a run at another size;
# the table then scales the central server's measured ratio to the swarm's size (its time is N*F/U at
# any size: 1.04-1.05 x in every run of bench/p2p).
CONFIG_OK = (lambda v: all(len(c) == 4 and all(type(x) is int and x > 0 for x in c[:3]) and c[3] in ("A", "B", "AB")
                           for c in v),
             'entries [fetchers, size MiB, uplink Mbit/s, "A"|"B"|"AB"], the numbers integers above 0')
CONFIGS = [tuple(c) for c in ex.param("configs", [[2, 16, 100, "AB"], [3, 16, 100, "AB"]] if Q else
                                      [[8, 2048, 400, "AB"], [16, 2048, 400, "AB"]], CONFIG_OK)]
ex.check_params()
DATA_DIR = "/dev/shm" if Q else "/var/tmp"
ex.settings.update(configs=[{"fetchers": n, "size_mib": s, "uplink_mbit": u, "runs": r} for n, s, u, r in CONFIGS],
                   data_dir=DATA_DIR, tool="bench/p2p/swarm-bench (mc-swarm-tool seed/fetch; nginx + curl)",
                   downlinks="unshaped", tbf_burst="256kb", tbf_latency="50ms")
COLS = ["fetchers", "uplink_mbit", "swarm_size_mib", "swarm_last_s", "F/U_s", "swarm_x_F/U", "seeder_sent_x_F",
        "central_size_mib", "central_last_s", "central_N*F/U_s", "central_x_N*F/U", "central_at_swarm_size_s",
        "central/swarm"]


def main():
    runs, downloads = {}, []
    for n, size, rate, which in CONFIGS:
        need = (n + 2) * size * MIB
        free = shutil.disk_usage(DATA_DIR).free
        if free < need:
            ex.check(False, f"{n} fetchers x {size} MiB: {free >> 20} MiB free in {DATA_DIR}, {need >> 20} needed")
            continue
        res = os.path.join(ex.dir, "raw", f"n{n}-{size}mib-{which}")
        ex.log(f"{n} fetchers, {size} MiB, uplinks {rate} Mbit/s, runs {which}")
        p = subprocess.run(["/usr/bin/python3", os.path.join(exp.TOP, "bench", "p2p", "swarm-bench"), "--fetchers", str(n),
                            "--size-mib", str(size), "--rate-mbit", str(rate), "--results", res, "--data-dir", DATA_DIR,
                            "--build-dir", ex.build_dir, "--no-build", "--runs", which],
                           capture_output=True, text=True, timeout=3600)
        os.makedirs(res, exist_ok=True)
        with open(os.path.join(res, "swarm-bench.log"), "w") as f:
            f.write(p.stdout + p.stderr)
        if p.returncode != 0:
            ex.check(False, f"swarm-bench {n} fetchers exited {p.returncode}: {(p.stdout + p.stderr)[-500:]}")
            continue
        with open(os.path.join(res, "swarm-bench.csv")) as f:
            recs = list(csv.DictReader(f))
        for r in recs:
            if r["kind"] == "download":
                downloads.append((n, size, rate, r["run"], r["host"], float(r["seconds"]), r["sha256_ok"]))
                ex.check(r["sha256_ok"] == "1", f"{n} fetchers: {r['run']} {r['host']} got the input right")
            else:
                runs[(n, rate, r["run"])] = (size, float(r["seconds"]), r.get("seeder_payload_bytes"))
    rows = []
    for n, rate in sorted({(k[0], k[1]) for k in runs}):
        a, b = runs.get((n, rate, "A")), runs.get((n, rate, "B"))
        row = [n, rate] + [None] * (len(COLS) - 2)
        if a:
            fu = a[0] * MIB * 8 / (rate * 1e6)
            row[2:7] = [a[0], a[1], fu, a[1] / fu, int(a[2]) / (a[0] * MIB) if a[2] else None]
        if b:
            nfu = n * b[0] * MIB * 8 / (rate * 1e6)
            row[7:11] = [b[0], b[1], nfu, b[1] / nfu]
            if a:
                at = b[1] / nfu * n * a[0] * MIB * 8 / (rate * 1e6)
                row[11:13] = [at, at / a[1]]
        rows.append(row)
        ex.log("  ".join(f"{c}={exp.fmt(v)}" for c, v in zip(COLS, row)))
    ex.table("one input to N hosts: swarm (A) against one HTTP server (B)", COLS, rows)
    ex.csv("p2p-vs-central.csv", COLS, rows)
    ex.csv("p2p-vs-central-downloads.csv", ["fetchers", "size_mib", "uplink_mbit", "run", "host", "seconds", "sha256_ok"],
           downloads)
    fig, ax = ex.figure()
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[3] or 0 for r in rows], width=0.4, label="swarm: last host done")
    ax.bar([x + 0.2 for x in xs], [r[11] if r[11] is not None else (r[8] or 0) for r in rows], width=0.4,
           label="central HTTP: last host done" + ("" if all(r[2] == r[7] for r in rows) else " (measured ratio x N*F/U)"))
    ax.scatter([x + 0.2 for x in xs], [r[9] * r[2] / r[7] if r[9] and r[2] and r[7] else 0 for r in rows], marker="_", s=400,
               color="0.4", label="N*F/U (one server's bound)", zorder=3)
    ax.scatter([x - 0.2 for x in xs], [r[4] or 0 for r in rows], marker="_", s=400, color="k", label="F/U (bound)", zorder=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"N={r[0]}, {r[2]} MiB" for r in rows])
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.set_title(f"one input to N hosts, uplinks {rows[0][1] if rows else '?'} Mbit/s each", fontsize=9)
    ax.legend(fontsize=7)
    ex.save(fig, "p2p-vs-central.png")
    return ex.finish({"rows": [dict(zip(COLS, r)) for r in rows]})


exp.run(main)
