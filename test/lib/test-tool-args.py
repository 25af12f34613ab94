#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The benchmarks' command lines refuse what they cannot run with (argtypes.py): a bad value ends the
command with argparse's exit status 2 and a message naming the option and the value, before it
builds or starts anything."""

import argparse
import math
import os
import subprocess

import mctest
from argtypes import above, at_least, list_of
from mctest import check


def refused(parse, text):
    try:
        parse(text)
    except argparse.ArgumentTypeError as e:
        return str(e)
    return None


def test_types():
    check(at_least(1)("3") == 3 and at_least(0.5, float)("0.5") == 0.5, "at_least refuses a good value")
    for parse, text in ((at_least(1), "0"), (at_least(1), "-2"), (at_least(1), "1.5"), (at_least(1), "x"),
                        (at_least(1.0, float), "nan"), (above(0), "0"), (above(0), "-0.1"), (above(0), "nan")):
        e = refused(parse, text)
        check(e and repr(text) in e, f"{text!r}: {e}")
    check(above(0)("inf") == math.inf, "above(0) refuses inf")
    check(list_of(at_least(1))("1, 8,32") == [1, 8, 32], "list_of")
    check(list_of(None, allowed=("a", "b"))("b,a") == ["b", "a"], "list_of allowed")
    for parse, text, named in ((list_of(at_least(1)), ",", "empty"), (list_of(at_least(1)), "1,0", "'0'"),
                               (list_of(None, allowed=("a", "b")), "a,c", "c")):
        e = refused(parse, text)
        check(e and named in e, f"{text!r}: {e}")


def test_benchmarks_refuse_bad_options():
    top = mctest.source_dir()
    cases = [
        ("bench/control/run", ["--claimers", "0"], "--claimers"),
        ("bench/control/run", ["--agents", "0"], "--agents"),
        ("bench/control/run", ["--clients", "1,x"], "'x'"),
        ("bench/control/run", ["--parts", "push,bogus"], "bogus"),
        ("bench/control/run", ["--duration", "0.5"], "--duration"),
        ("bench/control/run", ["--claim-tasks", "10"], "--claim-tasks 10"),
        ("bench/control/run", ["--rounds", "0"], "--rounds"),
        ("bench/control/claim-cpu", ["--batch", "5"], "--batch 5"),
        ("bench/control/flood", ["--connections", "-1"], "--connections"),
        ("bench/control/push-ab", ["--before", "/nonexistent", "--seconds", "0"], "--seconds"),
        ("bench/control/push-ab", ["--before", "/nonexistent", "--agents", "0"], "--agents"),
        ("bench/control/tls-overhead", ["--duration", "0"], "--duration"),
        ("bench/control/notify-cost", ["--seconds", "0.5"], "--seconds"),
        ("bench/control/notify-cost", ["--clients", "1,0"], "'0'"),
        ("bench/control/journal-cost", ["--seconds", "0"], "--seconds"),
        ("bench/control/journal-cost", ["--clients", "0"], "'0'"),
        ("bench/control/insert-cost", ["--rows", "10"], "--rows"),
        ("bench/control/insert-cost", ["--rounds", "0"], "--rounds"),
        ("bench/p2p/swarm-bench", ["--fetchers", "0"], "--fetchers"),
        ("bench/p2p/swarm-bench", ["--fetchers", "61"], "--fetchers 61"),
        ("bench/p2p/swarm-bench", ["--runs", "C"], "--runs"),
        ("bench/p2p/pwrite-cost", ["--piece-kib", "100"], "--piece-kib"),
        ("bench/seeder/run", ["--paths", "splice,zz"], "zz"),
        ("bench/seeder/run", ["--fetch-reps", "0"], "--fetch-reps"),
    ]
    for script, args, named in cases:
        # A value not refused starts the benchmark, which then runs into the timeout: a failure too.
        p = subprocess.run(["/usr/bin/python3", os.path.join(top, script)] + args, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        check(p.returncode == 2, f"{script} {args}: exit status {p.returncode}, not 2:\n{p.stdout[-800:]}\n{p.stderr[-800:]}")
        check(named in p.stderr, f"{script} {args}: the error does not name {named!r}: {p.stderr}")
        check("Traceback" not in p.stderr, f"{script} {args}: a traceback: {p.stderr}")


def test_dht_sim_refuses_bad_options():
    """dht-sim (C, the options table of config.c): a bad value is an exit status 1 and a message naming
    the option, before a node starts."""
    sim = os.path.join(mctest.build_dir(), "bench", "dht", "dht-sim")
    for args, named in ((["--nodes", "abc"], "NODES"), (["--nodes", "1"], "NODES"), (["--churn", "95"], "CHURN"),
                        (["--lookups", "0"], "LOOKUPS"), (["--seed", "-1"], "SEED"), (["--bogus"], "bogus")):
        p = subprocess.run([sim] + args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        check(p.returncode == 1, f"dht-sim {args}: exit status {p.returncode}, not 1:\n{p.stdout[-800:]}\n{p.stderr[-800:]}")
        check(named in p.stderr, f"dht-sim {args}: the error does not name {named!r}: {p.stderr}")
        check(not p.stdout, f"dht-sim {args}: it ran: {p.stdout[-800:]}")


mctest.main()
