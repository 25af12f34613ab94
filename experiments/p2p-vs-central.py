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
# (fetchers, size MiB, uplink Mbit/s)
CONFIGS = [(2, 16, 100), (3, 16, 100)] if Q else [(8, 2048, 400), (16, 512, 400)]
DATA_DIR = "/dev/shm" if Q else "/var/tmp"
ex.settings.update(configs=[{"fetchers": n, "size_mib": s, "uplink_mbit": u} for n, s, u in CONFIGS],
                   data_dir=DATA_DIR, tool="bench/p2p/swarm-bench (mc-swarm-tool seed/fetch; nginx + curl)",
                   downlinks="unshaped", tbf_burst="256kb", tbf_latency="50ms")
COLS = ["fetchers", "size_mib", "uplink_mbit", "swarm_last_s", "F/U_s", "swarm_x_F/U", "central_last_s", "N*F/U_s",
        "central_x_N*F/U", "central/swarm", "seeder_sent_x_F"]


def main():
    rows, downloads = [], []
    for n, size, rate in CONFIGS:
        need = (n + 2) * size * MIB
        free = shutil.disk_usage(DATA_DIR).free
        if free < need:
            ex.check(False, f"{n} fetchers x {size} MiB: {free >> 20} MiB free in {DATA_DIR}, {need >> 20} needed")
            continue
        res = os.path.join(ex.dir, "raw", f"n{n}-{size}mib")
        ex.log(f"{n} fetchers, {size} MiB, uplinks {rate} Mbit/s")
        p = subprocess.run(["/usr/bin/python3", os.path.join(exp.TOP, "bench", "p2p", "swarm-bench"), "--fetchers", str(n),
                            "--size-mib", str(size), "--rate-mbit", str(rate), "--results", res, "--data-dir", DATA_DIR,
                            "--build-dir", ex.build_dir, "--no-build"],
                           capture_output=True, text=True, timeout=3600)
        with open(os.path.join(res if os.path.isdir(res) else ex.dir, f"swarm-bench-n{n}.log"), "w") as f:
            f.write(p.stdout + p.stderr)
        if p.returncode != 0:
            ex.check(False, f"swarm-bench {n} fetchers exited {p.returncode}: {(p.stdout + p.stderr)[-500:]}")
            continue
        with open(os.path.join(res, "swarm-bench.csv")) as f:
            recs = list(csv.DictReader(f))
        run = {r["run"]: r for r in recs if r["kind"] == "run"}
        for r in recs:
            if r["kind"] == "download":
                downloads.append((n, size, rate, r["run"], r["host"], float(r["seconds"]), r["sha256_ok"]))
                ex.check(r["sha256_ok"] == "1", f"{n} fetchers: {r['run']} {r['host']} got the input right")
        fu = size * MIB * 8 / (rate * 1e6)
        a, b = float(run["A"]["seconds"]), float(run["B"]["seconds"])
        pay = run["A"].get("seeder_payload_bytes")
        rows.append([n, size, rate, a, fu, a / fu, b, n * fu, b / (n * fu), b / a,
                     int(pay) / (size * MIB) if pay else None])
        ex.log("  ".join(f"{c}={exp.fmt(v)}" for c, v in zip(COLS, rows[-1])))
    ex.table("one input to N hosts: swarm (A) against one HTTP server (B)", COLS, rows)
    ex.csv("p2p-vs-central.csv", COLS, rows)
    ex.csv("p2p-vs-central-downloads.csv", ["fetchers", "size_mib", "uplink_mbit", "run", "host", "seconds", "sha256_ok"],
           downloads)
    fig, ax = ex.figure()
    labels = [f"N={r[0]}\n{r[1]} MiB" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r[3] for r in rows], width=0.4, label="swarm: last done")
    ax.bar([x + 0.2 for x in xs], [r[6] for r in rows], width=0.4, label="central HTTP: last done")
    ax.scatter([x - 0.2 for x in xs], [r[4] for r in rows], marker="_", s=400, color="k", label="F/U (bound)", zorder=3)
    ax.scatter([x + 0.2 for x in xs], [r[7] for r in rows], marker="_", s=400, color="C3", label="N*F/U", zorder=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels)
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.set_title(f"uplinks {CONFIGS[0][2]} Mbit/s each", fontsize=9)
    ax.legend(fontsize=7)
    ex.save(fig, "p2p-vs-central.png")
    return ex.finish({"rows": [dict(zip(COLS, r)) for r in rows]})


exp.run(main)
