# SPDX-License-Identifier: LGPL-2.1-or-later
"""CPU time of processes, from /proc, for the benchmarks: a difference of two readings is what a
process (or the PostgreSQL server with all its backends) used in between. Steadier than a rate on a
shared machine, as it does not depend on the share of the cores the processes get."""

import os

TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """The fields of /proc/PID/stat after the command's name, numbers as ints (fields[1] is the
    parent, fields[11:15] utime, stime, cutime, cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        return [int(x) if x.lstrip("-").isdigit() else x for x in f.read().rsplit(")", 1)[1].split()]


def proc_cpu_seconds(pid):
    """User and system time of one process (its threads included)."""
    s = _stat(pid)
    return (s[11] + s[12]) / TCK


def postgres_cpu_seconds(postmaster):
    """CPU time of the PostgreSQL server: the postmaster with its reaped children (backends that ended),
    plus the backends alive now. A backend reaped during the scan would be missed or counted twice, so
    the scan is repeated until the postmaster's count of reaped children's time did not change across
    it."""
    for _ in range(100):
        before = _stat(postmaster)
        children = 0
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == postmaster:
                continue
            try:
                fields = _stat(p)
            except OSError:
                continue
            if fields[1] == postmaster:
                children += fields[11] + fields[12]
        after = _stat(postmaster)
        if before[13:15] == after[13:15]:
            return (sum(after[11:15]) + children) / TCK
    raise AssertionError("cannot read PostgreSQL's CPU time: backends keep ending")
