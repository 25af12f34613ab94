# SPDX-License-Identifier: LGPL-2.1-or-later
"""What every experiment shares: its command line (--quick, --out, --seed, --build-dir), its results
folder (a table printed, CSV files, PNG plots, settings.json with the settings, the machine and the
seed), a cluster of real daemons through the test fixtures (test/lib/mctest.py), exec agents each in a
cgroup of its own so that a node can die at once, the task workload that records its own starts, and
the ground-truth metrics computed from those records and the database.

Figures come from what happened, not from what the control believes: a task's run starts when its
command writes its start record; two copies alive at once are seen by the kernel (each copy takes a
non-blocking flock(2) on a file of its task; the lock is held by every process of the copy and freed
only when the last of them dies); a node dies when every process of its cgroup is SIGKILLed."""

import argparse
import csv
import datetime
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
for _d in ("test/control", "test/agent", "test/lib"):
    sys.path.insert(0, os.path.join(TOP, _d))
os.environ.setdefault("MC_SOURCE_DIR", TOP)
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
sys.dont_write_bytecode = True

FINAL = ("succeeded", "failed", "timed_out", "cancelled")

# Every agent of an experiment reaches the control from 127.0.0.1, where a real cluster has an
# address per node: the per-address connection cap (64 by default) would refuse all but the first
# agents. And a control (and PostgreSQL) serving a thousand agents needs descriptors for them.
CONTROL_ENV = {"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "1000000"}
try:
    import resource
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, 1 << 20)), _hard))
except (ValueError, OSError):
    pass
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------
# Small statistics

def pct(values, p):
    """The p-th percentile (nearest rank); None for no values."""
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))]


def fmt(x, digits=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


# ---------------------------------------------------------------------------------------------------
# The machine

def machine():
    def read(path, default=None):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return default
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        layout = "unified (cgroup v2)"
    elif os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        layout = "hybrid (cgroup v1 controllers, v2 at /sys/fs/cgroup/unified)"
    else:
        layout = "legacy (cgroup v1)"
    mem = {}
    for line in (read("/proc/meminfo", "") or "").splitlines():
        k, _, v = line.partition(":")
        if k in ("MemTotal", "MemAvailable"):
            mem[k] = int(v.split()[0]) * 1024
    cpu_model = None
    for line in (read("/proc/cpuinfo", "") or "").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "cgroup_layout": layout,
        "loadavg": read("/proc/loadavg"),
        "mem_total_bytes": mem.get("MemTotal"),
        "mem_available_bytes": mem.get("MemAvailable"),
        "python": platform.python_version(),
        # Every agent of an experiment is root's, and each holds one inotify instance for as long
        # as it runs: see host_limits().
        "inotify_max_user_instances": read("/proc/sys/fs/inotify/max_user_instances"),
        "pid_max": read("/proc/sys/kernel/pid_max"),
        # Removed ones not yet freed included: see settle_host().
        "memory_cgroups": memory_cgroups(),
    }


def build_info(build_dir):
    info = {"build_dir": build_dir}
    try:
        with open(os.path.join(build_dir, "meson-info", "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
        info["buildtype"] = opts.get("buildtype")
        info["b_sanitize"] = opts.get("b_sanitize")
    except (OSError, ValueError, KeyError):
        pass
    p = subprocess.run(["git", "-C", TOP, "rev-parse", "HEAD"], capture_output=True, text=True)
    if p.returncode == 0:
        info["commit"] = p.stdout.strip()
    p = subprocess.run(["git", "-C", TOP, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                       text=True)
    if p.returncode == 0:
        info["tree_dirty"] = bool(p.stdout.strip())
    return info


# ---------------------------------------------------------------------------------------------------
# An experiment: its command line and its results folder

def parse_params(given, error):
    """The --param KEY=JSON arguments as a dict; error(message) (which does not return) on a bad one."""
    params = {}
    for kv in given:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            error(f"--param wants KEY=JSON, not {kv!r}")
        try:
            params[k] = json.loads(v)
        except ValueError as e:
            error(f"--param {k}: {v!r} is not JSON: {e}")
    return params


def same_kind(v, like):
    """v has like's JSON type; an integer stands for a float, but a boolean is no number."""
    if isinstance(like, float) and type(v) is int:
        return True
    return type(v) is type(like)


# Checks of a parameter's value (Experiment.param's valid): (predicate, what it wants).
AT_LEAST_0 = (lambda v: v >= 0, "a number of at least 0")
AT_LEAST_1 = (lambda v: v >= 1, "a number of at least 1")
ALL_AT_LEAST_0 = (lambda v: all(x >= 0 for x in v), "numbers of at least 0")
ALL_AT_LEAST_1 = (lambda v: all(x >= 1 for x in v), "numbers of at least 1")
# mc-control's LEASE_TTL_MS range
LEASE_TTL = (lambda v: 300 <= v <= 3600000, "a lease TTL from 300 to 3600000 ms")
ALL_LEASE_TTLS = (lambda v: all(300 <= x <= 3600000 for x in v), "lease TTLs from 300 to 3600000 ms")
DURATION_RANGE = (lambda v: len(v) == 2 and 0 < v[0] <= v[1], "[shortest, longest] seconds, 0 < shortest <= longest")


def kill_shares(n_agents):
    """Shares of n_agents agents to kill (node_death_run kills round(share * n)) that leave one alive
    to run the tasks."""
    return (lambda v: all(0 <= s and round(s * n_agents) < n_agents for s in (v if isinstance(v, list) else [v])),
            f"shares of the {n_agents} agents from 0 that leave at least one of them alive")


class Experiment:
    """Parses the command line, makes the results folder, and writes what the run produced there.

        ex = Experiment("control-outage", "...")
        ex.settings.update(agents=10)
        ex.table("title", ["a", "b"], rows); ex.csv("x.csv", ["a", "b"], rows); ex.save(fig, "x.png")
        ex.finish(summary)          # settings.json; exit status 1 when a check failed"""

    def __init__(self, name, description):
        p = argparse.ArgumentParser(prog=f"experiments/run {name}", description=description)
        p.add_argument("--quick", action="store_true", help="a few tasks and agents, well under a minute")
        p.add_argument("--out", help="put the results in OUT/NAME (default experiments/results/DATE-NAME)")
        p.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
        p.add_argument("--build-dir", type=os.path.abspath, default=os.environ.get("MC_BUILD_DIR"),
                       help="the build whose daemons run (default $MC_BUILD_DIR)")
        p.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                       help="override one of the experiment's parameters (its settings.json lists them), "
                            "e.g. --param 'sizes=[500,1000]'")
        # experiments/run's check of every --param before anything runs: read the parameters, print
        # the keys this experiment has as JSON and exit 0 (check_params), or exit 2 naming a bad value.
        p.add_argument("--check-params", action="store_true", help=argparse.SUPPRESS)
        self.args = p.parse_args()
        self.name = name
        self.quick = self.args.quick
        self.params = parse_params(self.args.param, p.error)
        self._params_used = set()
        self.checking_params = self.args.check_params
        if self.checking_params:
            return
        if not self.args.build_dir:
            p.error("no build: give --build-dir or set MC_BUILD_DIR (experiments/run does)")
        self.build_dir = os.path.abspath(self.args.build_dir)
        os.environ["MC_BUILD_DIR"] = self.build_dir
        self.seed = self.args.seed if self.args.seed is not None else int(time.time()) % 1000000
        self.rnd = random.Random(self.seed)
        stamp = datetime.datetime.now(datetime.timezone.utc)
        if self.args.out:
            self.dir = os.path.join(os.path.abspath(self.args.out), name)
        else:
            self.dir = os.path.join(TOP, "experiments", "results", f"{stamp:%Y%m%d-%H%M%S}-{name}")
        os.makedirs(self.dir, exist_ok=True)
        self.settings = {}
        self.failed_checks = []
        self.files = []
        self.started = stamp
        self.t0 = time.monotonic()
        self.machine_start = machine()
        print(f"# experiment {name}{' (quick)' if self.quick else ''}, seed {self.seed}, results in {self.dir}",
              flush=True)

    def param(self, key, default, valid=None):
        """A parameter of the experiment: default, or what --param KEY=JSON gave. A value given must be
        of the default's type (a float may be given as an integer), a list must not be empty and its
        items must be of the type of the default's, and valid, (predicate, what it wants), must hold:
        a bad value ends the experiment with exit status 2 naming it, before anything has run."""
        self._params_used.add(key)
        if key not in self.params:
            return default
        v = self.params[key]
        if not same_kind(v, default):
            self._bad_param(key, v, f"a {type(default).__name__} like {json.dumps(default)}")
        if isinstance(default, list):
            if not v:
                self._bad_param(key, v, f"a list that is not empty, like {json.dumps(default)}")
            if default and not all(same_kind(x, default[0]) for x in v):
                self._bad_param(key, v, f"a list of {type(default[0]).__name__}s like {json.dumps(default)}")
        if valid and not valid[0](v):
            self._bad_param(key, v, valid[1])
        return v

    def _bad_param(self, key, v, wants):
        print(f"experiments/run {self.name}: --param {key} wants {wants}, not {json.dumps(v)}", file=sys.stderr)
        sys.exit(2)

    def check_params(self):
        """Every --param given names a parameter of this experiment (call once all were read). With
        --check-params: prints the keys it has as JSON and exits 0 instead; so every experiment calls
        it right after reading its parameters, before it starts anything (one that did not would run
        for real under experiments/run's check)."""
        if self.checking_params:
            print(json.dumps(sorted(self._params_used)))
            sys.exit(0)
        unknown = sorted(set(self.params) - self._params_used)
        if unknown:
            known = ", ".join(sorted(self._params_used)) or "none (it has no parameters)"
            print(f"experiments/run {self.name}: unknown --param {', '.join(unknown)}; known: {known}",
                  file=sys.stderr)
            sys.exit(2)
        self.settings["params_given"] = self.params

    def log(self, msg):
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", flush=True)

    def check(self, cond, what):
        """An invariant of the run; a failed one is reported and makes the exit status 1."""
        if not cond:
            self.failed_checks.append(what)
            print(f"CHECK FAILED: {what}", flush=True)
        return cond

    def table(self, title, header, rows):
        cells = [[fmt(c) for c in r] for r in rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
        print(f"\n## {title}")
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for r in cells:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        print(flush=True)

    def csv(self, fname, header, rows):
        path = os.path.join(self.dir, fname)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in rows:
                w.writerow(["" if c is None else (f"{c:.6g}" if isinstance(c, float) else c) for c in r])
        self.files.append(fname)
        return path

    def figure(self, *a, **kw):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(*a, figsize=kw.pop("figsize", (6.4, 4.0)), **kw)
        return fig, ax

    def save(self, fig, fname):
        import matplotlib.pyplot as plt
        fig.tight_layout()
        fig.savefig(os.path.join(self.dir, fname), dpi=kw_dpi())
        plt.close(fig)
        self.files.append(fname)

    def finish(self, summary=None):
        info = {
            "experiment": self.name,
            "quick": self.quick,
            "seed": self.seed,
            "settings": self.settings,
            "started_utc": self.started.isoformat(),
            "seconds": round(time.monotonic() - self.t0, 1),
            "machine": self.machine_start,
            "loadavg_end": machine()["loadavg"],
            "build": build_info(self.build_dir),
            "files": self.files,
            "summary": summary or {},
            "failed_checks": self.failed_checks,
        }
        with open(os.path.join(self.dir, "settings.json"), "w") as f:
            json.dump(info, f, indent=2, default=str)
            f.write("\n")
        print(f"# {self.name}: {len(self.files)} files and settings.json in {self.dir}; "
              f"{'all checks held' if not self.failed_checks else 'FAILED: ' + '; '.join(self.failed_checks)}",
              flush=True)
        return not self.failed_checks


def kw_dpi():
    return 90


def run(main):
    """Runs main() with the fixtures' cleanups, then exits 0 (every check held) or 1."""
    import mctest
    ok = False
    try:
        ok = main()
    except BaseException:  # noqa: B902 - reported, cleaned up, exit 1
        import traceback
        traceback.print_exc()
        ok = False
    errors = mctest._close_all_scopes()
    for e in errors:
        print(f"cleanup: {e}", flush=True)
    sys.stdout.flush()
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------------------------------------------
# CPU and memory of the control replicas and of PostgreSQL, from /proc

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 (1-based) of the whole line: 12-15 after ")".
    return int(fields[1]), [int(x) for x in fields[11:15]]


def _children(pid):
    """The pid's children: the kernel's list of each of its threads' (one read per thread, where a
    walk of /proc reads every process's stat: at 1 000 agents, 3 000 files a second from the sampler,
    on a runner that then fell minutes behind its own schedule); the walk only without that list."""
    try:
        kids = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
        return kids
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return []
    except (OSError, ValueError):
        return []
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if _stat(int(d))[0] == pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _proc_kib_field(pid, name, key):
    """A "Key:  N kB" line of /proc/PID/<name>, in bytes; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _pss(pid):
    return _proc_kib_field(pid, "smaps_rollup", "Pss")


def _rss(pid):
    return _proc_kib_field(pid, "status", "VmRSS")


class CostSampler:
    """CPU seconds and memory of processes while the run lasts. A process group is a pid and, for
    PostgreSQL, its children (the backends): CPU counts the postmaster's own, its reaped children's
    (cutime/cstime) and its live children's; memory is the sum of their PSS (shared buffers counted
    once), for a single daemon its RSS. Sampled every second; peak memory kept."""

    def __init__(self, groups):
        self.groups = dict(groups)     # name -> (pid, with_children)
        self.cpu0 = {n: self._cpu(*g) for n, g in self.groups.items()}
        self.cpu = dict(self.cpu0)
        self.peak = {n: 0 for n in self.groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _cpu(self, pid, with_children):
        try:
            _, t = _stat(pid)
        except OSError:
            return None
        total = sum(t)
        if with_children:
            for k in _children(pid):
                try:
                    total += sum(_stat(k)[1][:2])
                except OSError:
                    pass
        return total / CLK_TCK

    def _mem(self, pid, with_children):
        if not with_children:
            return _rss(pid)
        return _pss(pid) + sum(_pss(k) for k in _children(pid))

    def _loop(self):
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self):
        for n, g in self.groups.items():
            c = self._cpu(*g)
            if c is not None:
                self.cpu[n] = c
            self.peak[n] = max(self.peak[n], self._mem(*g))

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()
        return {n: {"cpu_s": (self.cpu[n] - self.cpu0[n]) if self.cpu0[n] is not None else None,
                    "peak_mem_bytes": self.peak[n]} for n in self.groups}


def claim_latency(controls):
    """p50 and p99 of mc_claim_duration_seconds over the replicas' /metrics (bucket upper bounds),
    and the number of claims: (p50 s, p99 s, count)."""
    import mctest
    buckets = {}
    for c in controls:
        try:
            r = mctest.http("GET", c.url + "/metrics", timeout=10)
        except OSError:
            continue
        for line in r.text.splitlines():
            if line.startswith("mc_claim_duration_seconds_bucket{le=\""):
                le = line.split('"')[1]
                b = float("inf") if le == "+Inf" else float(le)
                buckets[b] = buckets.get(b, 0) + int(float(line.split()[-1]))
    if not buckets:
        return None, None, 0
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]

    def q(p):
        for b in bounds:
            if total and buckets[b] >= p * total:
                return b
        return None
    return q(0.5), q(0.99), total


# ---------------------------------------------------------------------------------------------------
# The host's limits for many agents on one machine

INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances"
_raised = {}


def _restore_limits():
    for path, (before, ours) in _raised.items():
        try:
            with open(path) as f:
                now = f.read().strip()
            # Only what is still ours: another run may have raised it further meanwhile.
            if now == ours:
                with open(path, "w") as f:
                    f.write(before)
        except OSError:
            pass
    _raised.clear()


def host_limits(agents):
    """Raises, for this run, the one host limit that many exec agents on one machine exceed: an exec
    agent holds one inotify instance (sd-event's, for its jobs' directories) for as long as it runs,
    and the kernel allows each user 128 by default (fs.inotify.max_user_instances) - shared by every
    process of that user, and every agent here runs as root. On a cluster each node has its own agent
    and its own limit; an operator who runs hundreds of agents on one host must raise it the same way.
    Restored when the experiment ends (unless someone raised it further meanwhile). Returns what it
    set, for settings.json."""
    import atexit
    want = 2 * agents + 1024
    try:
        with open(INOTIFY_INSTANCES) as f:
            before = f.read().strip()
        if int(before) >= want:
            return {"inotify_max_user_instances": before}
        with open(INOTIFY_INSTANCES, "w") as f:
            f.write(str(want))
    except (OSError, ValueError) as e:
        return {"inotify_max_user_instances_error": str(e)}
    if INOTIFY_INSTANCES not in _raised:
        _raised[INOTIFY_INSTANCES] = (before, str(want))
        atexit.register(_restore_limits)
    else:
        _raised[INOTIFY_INSTANCES] = (_raised[INOTIFY_INSTANCES][0], str(want))
    return {"inotify_max_user_instances": str(want), "inotify_max_user_instances_before": _raised[INOTIFY_INSTANCES][0]}


def memory_cgroups():
    """How many memory cgroups the kernel holds, the removed ones it has not freed yet included
    (/proc/cgroups); None when it does not say."""
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                p = line.split()
                if len(p) >= 3 and p[0] == "memory":
                    return int(p[2])
    except (OSError, ValueError):
        pass
    return None


def settle_host():
    """Lets the kernel free the memory cgroups that earlier runs removed. A removed memory cgroup stays
    in the kernel while cached pages are charged to it (every task here writes the workload's record
    file and its own output), so each run at 1 000 agents left about a thousand behind, and on this
    host 7 361 had piled up after a night of runs (327 right after a drop of the page cache). Every
    cgroup operation and statistics walk then has them to go through, so a run's figures depended on
    how many runs came before it. Dropping the clean page cache costs only rereads. Returns the counts
    before and after, for settings.json."""
    before = memory_cgroups()
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError as e:
        return {"memory_cgroups": before, "drop_caches_error": str(e)}
    return {"memory_cgroups_before": before, "memory_cgroups": memory_cgroups()}


# ---------------------------------------------------------------------------------------------------
# Exec nodes: an agent in a cgroup of its own; its death is every process of that cgroup killed

_node_disk = None


def node_disk():
    """One tmpfs, mounted for this run, that holds every simulated node's state and runtime
    directories. An agent rewrites its lease file and its tasks' fence files at every renewal (a new
    file renamed over the old). A real node does that on its own disk; a thousand nodes on this one
    disk made every renewal of every node wait behind the others: 862 of 1 000 agents were found
    blocked in rename(2), the old file's blocks being discarded (an ext4 mounted with `discard`) behind
    the block layer's write throttling. Lazily unmounted when the experiment ends (agents still
    stopping keep what they have open)."""
    global _node_disk
    if _node_disk is None:
        import atexit
        import mctest
        d = mctest.tmpdir("nodes")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711,size=8g", "mc-exp-nodes", d], check=True)
        atexit.register(lambda: subprocess.run(["umount", "-l", d], check=False))
        _node_disk = d
    return _node_disk

def cgroup_base():
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup"
    return "/sys/fs/cgroup/memory"


RUN = f"{os.getpid()}-{int(time.time())}"


class ExecNode:
    """mc-agent with the exec driver, started inside the cgroup <base>/mc.exp-RUN/NODE/agent (its fence
    keeper and exec supervisors inherit it), its jobs under NODE/jobs (CGROUP_PATH). kill() is the
    node's death: every process of NODE's subtree SIGKILLed, until none is left."""

    def __init__(self, controls, node, env=None, nice=0):
        import mctest
        from controltest import agent_token
        self.node = node
        self.rel = f"mc.exp-{RUN}/{node}"
        self.cg = os.path.join(cgroup_base(), self.rel)
        os.makedirs(os.path.join(self.cg, "agent"), exist_ok=True)
        e = {
            "MC_CONTROL_URLS": ",".join(c.url for c in controls),
            "MC_NODE_ID": node,
            "MC_AGENT_TOKEN": agent_token(node),
            "MC_DRIVER": "exec",
            "MC_CAPACITY_NANO_CPUS": str(64_000_000_000),
            "MC_CAPACITY_MEMORY_BYTES": str(64 << 30),
            "MC_STOP_GRACE_SEC": "2",
            "MC_LOG_LEVEL": "info",
            "MC_PEER_PORT": "-1",
            "MC_BUS": "no",
            "MC_CGROUP_PATH": f"{self.rel}/jobs",
            "EXP_AGENT_CGROUP": os.path.join(self.cg, "agent"),
        }
        e.update(env or {})
        # nice: the node's processes (the agent, its keeper, supervisors and tasks inherit it) yield
        # the CPU to the control and PostgreSQL, which a real cluster runs on machines of their own.
        # On cgroup v1, out of the experiment's own cpu cgroup (servers_first()), back to where it
        # ran before (on v2 the node's cgroup is its cpu cgroup too).
        join = 'echo $$ >"$EXP_AGENT_CGROUP/cgroup.procs"'
        if _cpu_home and cgroup_base() != "/sys/fs/cgroup":
            e["EXP_AGENT_CPU_HOME"] = _cpu_home
            join += ' && echo $$ >"$EXP_AGENT_CPU_HOME/cgroup.procs"'
        self.daemon = mctest.Daemon("/bin/sh", ["-c", join + ' && exec "$@"',
                                                "sh"] + (["nice", "-n", str(nice)] if nice else []) +
                                    [mctest.binary("mc-agent")],
                                    env=e, name=f"mc-agent-{node}", notify=False)
        # The exec tasks (EXEC_USER) get through to their work directories in the state directory.
        os.chmod(self.daemon.dir, 0o711)
        # The node's own "disk" (node_disk()).
        d = os.path.join(node_disk(), node)
        self.daemon.state_dir, self.daemon.runtime_dir = os.path.join(d, "state"), os.path.join(d, "run")
        for sub in (d, self.daemon.state_dir, self.daemon.runtime_dir):
            os.makedirs(sub, exist_ok=True)
            os.chmod(sub, 0o711)
        self.daemon.env.update({"STATE_DIRECTORY": self.daemon.state_dir, "RUNTIME_DIRECTORY": self.daemon.runtime_dir})
        self.killed_at = None

    def start(self):
        self.daemon.start()
        return self

    def agent_pids(self):
        """The processes of the node's agent cgroup: the agent, its fence keeper, the exec
        supervisors. Found without listing a directory (see _procs_of())."""
        return _procs_of([os.path.join(self.cg, "agent")])

    def job_pids(self):
        """The processes of the job cgroups the node's lease file names."""
        try:
            with open(os.path.join(self.daemon.state_dir, "leases.json")) as f:
                dirs = [lease["cgroup_dir"] for lease in json.load(f).get("leases", []) if lease.get("cgroup_dir")]
        except (OSError, ValueError, AttributeError, TypeError):
            return []
        return _procs_of(dirs)

    def pids(self):
        out = []
        for dirpath, _, files in os.walk(self.cg):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        out += [int(p) for p in f.read().split()]
                except OSError:
                    pass
        return out

    def remove(self):
        # On cgroup v1 the exec driver makes each job's cgroup in the cpu hierarchy too.
        for top in (self.cg, os.path.join("/sys/fs/cgroup/cpu", self.rel)):
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def _procs_of(cgroup_dirs):
    """The processes of these cgroups, read from their cgroup.procs by known paths. Listing a cgroup
    directory, or looking up a name in it, waits for every cgroup being made or removed there, which
    waits for the kernel's one cgroup lock: at 1 000 agents, a walk of a hundred nodes' trees took
    minutes, and the nodes died that much later than the moment the experiment chose."""
    out = []
    for d in cgroup_dirs:
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def kill_nodes(nodes):
    """The death of these nodes, all at once: SIGKILL to every process of their cgroups, again until
    none is left (a fork in flight). Returns the time (time.time()) of the first signal and how long
    after it the last of their processes was gone: a run that wrote its end record in between
    finished before its node was gone."""
    t = None
    for i in range(200):
        # First what is found at once, every node together: the agents, keepers and supervisors
        # (each job's processes get SIGKILL when their supervisor dies), then the jobs the lease
        # files name; then whatever a walk of their cgroups still finds (a fork in flight).
        find = (ExecNode.agent_pids, ExecNode.job_pids)[i] if i < 2 else ExecNode.pids
        pids = [p for n in nodes for p in find(n)]
        if not pids and i > 1:
            break
        if t is None and pids:
            t = time.time()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    took = time.time() - t if t is not None else 0.0
    for n in nodes:
        if n.daemon.proc is not None:
            n.daemon.returncode = n.daemon.proc.wait()
        n.killed_at = t
    return (t if t is not None else time.time()), took


def teardown_nodes(nodes):
    kill_nodes(nodes)
    for n in nodes:
        n.remove()
    for base in (cgroup_base(), "/sys/fs/cgroup/cpu"):
        try:
            os.rmdir(os.path.join(base, f"mc.exp-{RUN}"))
        except OSError:
            pass


_cpu_home = None   # the cpu cgroup the experiment ran in before servers_first() moved it


def servers_first(pids):
    """Gives the control and PostgreSQL (pids: the control's and the postmaster's; the backends,
    forked later, follow the postmaster) the CPU before the simulated nodes, as a real cluster does by
    running them on machines of their own; and the experiment itself, which must push, sample and
    kill nodes on time (the agents it starts afterwards go back to where it ran: ExecNode).

    The agents' niceness does not do it alone on a host with cgroup v1 and the kernel's autogroups
    (kernel.sched_autogroup_enabled): there every session in the cpu hierarchy's root is one
    scheduling entity whatever its nice, and every fence keeper and exec supervisor is a session of
    its own (setsid). Measured from /proc/PID/schedstat at 1 000 agents before this: PostgreSQL's
    processes waited 3-4 s in the run queue per second they ran, the control (which shared the
    experiment's session with the 1 000 agents) 4-5 s, and the experiment killed its nodes minutes
    after the moment it waited for. Here they go into a cpu cgroup whose weight is the largest there
    is; they use what they need (well under a core) and leave the rest to the nodes. Returns the
    settings made, for the run's record."""
    import mctest
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        top, weight_file, weight = "/sys/fs/cgroup", "cpu.weight", "10000"
        with open(os.path.join(top, "cgroup.subtree_control")) as f:
            if "cpu" not in f.read().split():
                return {"servers_cpu": "not set: the cpu controller is not enabled at the root"}
    elif os.path.isdir("/sys/fs/cgroup/cpu"):
        top, weight_file, weight = "/sys/fs/cgroup/cpu", "cpu.shares", "262144"
    else:
        return {"servers_cpu": "not set: no cpu controller"}
    cg = os.path.join(top, f"mc.exp-{RUN}-servers")
    os.makedirs(cg, exist_ok=True)

    def release():
        # Whatever is still there (this process too) goes back where the experiment ran, so the
        # cgroup can go now, whichever of the control, PostgreSQL and this is cleaned up first.
        for _ in range(3):
            try:
                with open(os.path.join(cg, "cgroup.procs")) as f:
                    left = f.read().split()
            except OSError:
                return
            for pid in left:
                try:
                    with open(os.path.join(_cpu_home or top, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            try:
                os.rmdir(cg)
                return
            except OSError:
                time.sleep(0.1)

    mctest.defer(release)
    with open(os.path.join(cg, weight_file), "w") as f:
        f.write(weight)
    global _cpu_home
    if _cpu_home is None:
        with open("/proc/self/cgroup") as f:
            for line in f:
                hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
                if ("cpu" in controllers.split(",")) if top != "/sys/fs/cgroup" else hierarchy == "0":
                    _cpu_home = os.path.join(top, path.lstrip("/"))
    for pid in list(pids) + [os.getpid()]:
        for p in [pid] + _children(pid):
            try:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(p))
            except OSError:
                pass    # gone already
    return {"servers_cpu": f"{cg} {weight_file}={weight}"}


def wait_registered(pg, count, timeout=300):
    import mctest
    mctest.wait_until(lambda: int(pg.psql("SELECT count(*) FROM nodes")[0][0]) >= count, timeout, interval=0.5,
                      msg=f"{count} agents registered")


# ---------------------------------------------------------------------------------------------------
# The workload: a task that records its own start and end, and sees a copy of itself alive

class Workload:
    """Task commands (exec driver: MC_TASK_ID and MC_ATTEMPT in the environment; the Docker driver:
    the same given in the command) that append 'start TASK ATTEMPT WALL OVERLAP' when they begin and
    'end TASK ATTEMPT WALL' when they are done to one file. OVERLAP is 1 when another copy of the task
    held the task's lock at that moment: a copy alive at once, by the kernel's account."""

    def __init__(self):
        import mctest
        # Exec tasks run as EXEC_USER (mc-task, or nobody), not as root: the records and the locks
        # must be theirs to write.
        self.dir = mctest.tmpdir("workload")
        os.chmod(self.dir, 0o755)
        self.records = os.path.join(self.dir, "records")
        self.locks = os.path.join(self.dir, "locks")
        os.makedirs(self.locks)
        os.chmod(self.locks, 0o777)
        open(self.records, "a").close()
        os.chmod(self.records, 0o666)

    def cmd(self, seconds):
        return ["sh", "-c",
                f'exec 9>>"{self.locks}/$MC_TASK_ID"; o=0; flock -n 9 || o=1; '
                f'echo "start $MC_TASK_ID $MC_ATTEMPT $(date +%s.%N) $o" >>"{self.records}"; '
                f'sleep {seconds:.3f}; '
                f'echo "end $MC_TASK_ID $MC_ATTEMPT $(date +%s.%N)" >>"{self.records}"']

    def read(self):
        """{task: {"starts": [(attempt, wall, overlap)], "ends": [(attempt, wall)]}}"""
        out = {}
        with open(self.records) as f:
            for line in f:
                p = line.split()
                try:
                    if p[0] == "start" and len(p) == 5:
                        out.setdefault(p[1], {"starts": [], "ends": []})["starts"].append(
                            (int(p[2]), float(p[3]), p[4] == "1"))
                    elif p[0] == "end" and len(p) == 4:
                        out.setdefault(p[1], {"starts": [], "ends": []})["ends"].append((int(p[2]), float(p[3])))
                except (ValueError, IndexError):
                    continue
        return out


def push_many(control, bodies, threads=8):
    """Pushes every body (each with its own "id"), from a few threads; returns the ids."""
    import mctest
    ids = [b["id"] for b in bodies]
    chunks = [bodies[i::threads] for i in range(threads)]
    errors = []

    def work(chunk):
        for b in chunk:
            for _ in range(50):
                try:
                    r = control.push(b, timeout=60)
                except OSError:
                    time.sleep(0.2)
                    continue
                if r.status in (200, 201):
                    break
                if r.status != 503:
                    errors.append(f"{r.status} {r.text[:200]}")
                    break
                time.sleep(0.2)
            else:
                errors.append("push: no answer")
    ts = [threading.Thread(target=work, args=(c,), daemon=True) for c in chunks if c]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    mctest.check(not errors, f"pushes failed: {errors[:3]}")
    return ids


def task_rows(pg, ids_like):
    """{id: (status, attempt)} of the tasks whose id starts with ids_like."""
    rows = pg.psql(f"SELECT id, status, attempt FROM tasks WHERE id LIKE '{ids_like}%'")
    return {r[0]: (r[1], int(r[2])) for r in rows}


def attempt_rows(pg, ids_like):
    """[(task, attempt, node, status, reason)] from the attempts table. An attempt whose lease expired
    is "expired" here even when its result came afterwards and was taken (the control keeps the expiry
    in expired_at and gives the attempt the result's status): the task was recalled all the same, and
    the reason says what came of it."""
    rows = pg.psql("SELECT task_id, attempt, node_id, "
                   "CASE WHEN expired_at IS NOT NULL THEN 'expired' ELSE status END, "
                   "CASE WHEN expired_at IS NOT NULL AND status <> 'expired' "
                   "THEN 'lease expired; its result (' || status || ') taken after' ELSE reason END "
                   f"FROM attempts WHERE task_id LIKE '{ids_like}%'")
    return [(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows]


def late_results_taken(pg, ids_like):
    """How many expired attempts' results the control took after the expiry: the expiry is kept in
    expired_at, the status is the result's."""
    return int(pg.psql("SELECT count(*) FROM attempts WHERE expired_at IS NOT NULL AND status <> 'expired' "
                       f"AND task_id LIKE '{ids_like}%'")[0][0])


def write_attempts_csv(pg, ids_like, attempts, path):
    """The attempts (attempt_rows()) as CSV, with the database's times of each (leased, started,
    ended: Unix seconds, empty when not reached; an expired attempt's end is its expiry)."""
    times = {(r[0], int(r[1])): r[2:] for r in pg.psql(
        "SELECT task_id, attempt, extract(epoch FROM leased_at), extract(epoch FROM started_at), "
        f"extract(epoch FROM ended_at) FROM attempts WHERE task_id LIKE '{ids_like}%'")}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "attempt", "node", "status", "reason", "leased_at", "started_at", "ended_at"])
        for a in attempts:
            w.writerow(list(a) + list(times.get((a[0], a[1]), ("", "", ""))))
    return times


def wait_all_final(pg, ids_like, n, timeout, abort=None, stall=None):
    """Waits until n tasks are final. stall: give up when none became final for that many seconds
    (a task held by a live agent that never starts it would otherwise keep the run for its timeout)."""
    import mctest
    last = {"count": -1, "at": time.monotonic()}

    def done():
        c = int(pg.psql(f"SELECT count(*) FROM tasks WHERE id LIKE '{ids_like}%' "
                        f"AND status IN ('succeeded','failed','timed_out','cancelled')")[0][0])
        if c != last["count"]:
            last.update(count=c, at=time.monotonic())
        return c >= n

    def stalled():
        if abort is not None and abort():
            return abort()
        if stall and time.monotonic() - last["at"] > stall:
            left = pg.psql(f"SELECT status, count(*) FROM tasks WHERE id LIKE '{ids_like}%' "
                           f"AND status NOT IN ('succeeded','failed','timed_out','cancelled') GROUP BY 1")
            return f"no task became final for {stall} s; {last['count']} of {n} final, left: {left}"
        return None
    mctest.wait_until(done, timeout, interval=1.0, msg=f"{n} tasks final", abort=stalled)


def ground_truth(workload, tasks, attempts, killed_nodes, kill_took=0.0):
    """The metrics of a run. killed_nodes: {node: kill time (time.time())}; kill_took: how long after
    that the last of their processes was gone (kill_nodes()).
    Returns a dict: success share, overlaps (copies alive at once), tasks re-run (started more than
    once), tasks completed more than once, recovery times (s) of each task hit by a node death,
    false recalls (an attempt expired on a node that was never killed)."""
    rec = workload.read()
    n = len(tasks)
    succeeded = sum(1 for s, _ in tasks.values() if s == "succeeded")
    final = sum(1 for s, _ in tasks.values() if s in FINAL)
    overlaps = sorted(t for t, r in rec.items() if any(o for _, _, o in r["starts"]))
    rerun = sorted(t for t, r in rec.items() if len(r["starts"]) > 1)
    by_attempt = {(t, a): (node, st, reason) for t, a, node, st, reason in attempts}
    # A run that completed on a node that then died before its result left it: the result died
    # with the node, and the task ran again (at least once, as it must be). Completed twice
    # otherwise is a duplicate.
    completed_twice, rerun_after_complete = [], []
    for t, r in rec.items():
        ended = sorted({a: w for a, w in r["ends"]}.items())
        if len(ended) < 2:
            continue
        lost_with_node = all(by_attempt.get((t, a), ("",))[0] in killed_nodes
                             and w <= killed_nodes[by_attempt[(t, a)][0]] + kill_took for a, w in ended[:-1])
        (rerun_after_complete if lost_with_node else completed_twice).append(t)
    completed_twice.sort()
    recovery, unrecovered = [], []
    false_recall = []
    for (t, a), (node, st, reason) in sorted(by_attempt.items()):
        if st != "expired":
            continue
        if node not in killed_nodes:
            false_recall.append((t, a, node))
            continue
        tk = killed_nodes[node]
        later = [w for att, w, _ in rec.get(t, {"starts": []})["starts"] if att > a and w >= tk]
        if later:
            recovery.append(min(later) - tk)
        else:
            unrecovered.append(t)
    return {
        "tasks": n, "final": final, "succeeded": succeeded, "success_share": succeeded / n if n else None,
        "overlaps": overlaps, "rerun": rerun, "completed_twice": completed_twice,
        "rerun_after_complete": sorted(rerun_after_complete),
        "recovery_s": recovery, "unrecovered": unrecovered, "false_recalls": false_recall,
    }


def recovery_stats(values):
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99),
            "max": max(values) if values else None}


# ---------------------------------------------------------------------------------------------------
# One run of node deaths: N exec agents, T tasks, a share of the agents killed mid-run

IMAGE = "mc-test/busybox:latest"


def node_death_run(ex, label, n_agents, n_tasks, kill_share, ttl_ms, seconds=(3.0, 6.0), max_tasks=4,
                   kill_after_started=0.3, timeout=600, node_prefix="n", push_first=False, agent_nice=0,
                   servers_cpu=False):
    """Starts PostgreSQL, one control (lease TTL ttl_ms) and n_agents exec agents (MAX_TASKS
    max_tasks), pushes n_tasks tasks of uniform(seconds) s, and once kill_after_started of them have
    started, kills round(kill_share * n_agents) random agents at once (node deaths). Waits for every
    task to end (or timeout s). Returns a row of figures (see the keys), the recovery times and the
    false recalls."""
    from controltest import start_cluster
    import mctest
    t_begin = time.monotonic()
    ex.settings.setdefault("host_limits", {}).update(host_limits(n_agents))
    ex.settings.setdefault("host_settled", {})[label] = settle_host()
    nodes = [f"{node_prefix}{i}" for i in range(n_agents)]
    pg, (control,) = start_cluster(nodes=tuple(nodes), env=dict(CONTROL_ENV, MC_LEASE_TTL_MS=str(ttl_ms)))
    if servers_cpu:
        ex.settings.update(servers_first([control.daemon.pid, pg.proc.pid]))
    agents = [ExecNode([control], n, env={"MC_MAX_TASKS": str(max_tasks)}, nice=agent_nice) for n in nodes]
    mctest.defer(teardown_nodes, agents)
    row = {"label": label, "agents": n_agents, "tasks": n_tasks, "killed_share": kill_share, "lease_ttl_s": ttl_ms / 1000,
           "push_first": push_first}
    wl = Workload()
    prefix = f"{label}-{ex.seed}-"
    bodies = [{"id": f"{prefix}{i:05d}", "image": IMAGE, "cmd": wl.cmd(ex.rnd.uniform(*seconds)),
               "timeout_sec": int(seconds[1] * 10 + 300), "max_attempts": 5} for i in range(n_tasks)]
    if push_first:
        # Every task queued before any agent is up: pushes do not compete with hundreds of claims.
        t_push = time.time()
        push_many(control, bodies)
        row["push_s"] = time.time() - t_push
    for a in agents:
        a.start()
    try:
        wait_registered(pg, n_agents, timeout=max(120, n_agents * 0.5))
    except AssertionError as e:
        row["error"] = f"agents did not register: {e}"
        teardown_nodes(agents)
        return row, [], []
    t_reg = time.monotonic()
    row["start_agents_s"] = t_reg - t_begin
    cost = CostSampler({"control": (control.daemon.pid, False), "postgres": (pg.proc.pid, True)})
    t_cost = time.monotonic()
    if not push_first:
        t_push = time.time()
        push_many(control, bodies)
        row["push_s"] = time.time() - t_push
    victims = ex.rnd.sample(agents, int(round(kill_share * n_agents)))
    killed, kill_took = {}, 0.0
    try:
        mctest.wait_until(lambda: len(wl.read()) >= kill_after_started * n_tasks, timeout, interval=0.2,
                          msg=f"{kill_after_started:.0%} of the tasks started")
        ex.log(f"{label}: {kill_after_started:.0%} of the tasks started, {len(victims)} nodes to kill")
        if victims:
            t_kill, kill_took = kill_nodes(victims)
            ex.log(f"{label}: nodes killed, the last process gone {kill_took:.1f} s after the first signal")
            killed = {v.node: t_kill for v in victims}
            row["kill_at_s"] = t_kill - t_push
        wait_all_final(pg, prefix, n_tasks, timeout, stall=max(45, 6 * ttl_ms / 1000))
        row["complete"] = True
    except AssertionError as e:
        row["complete"] = False
        row["error"] = str(e)[:300]
    row["push_to_all_final_s"] = time.time() - t_push
    c = cost.stop()
    # CPU seconds per second of the run (1.0 = one core busy all along), from the agents' registration
    # to the last task final.
    row["cost_window_s"] = time.monotonic() - t_cost
    for k in ("control", "postgres"):
        if c[k]["cpu_s"] is not None and row["cost_window_s"] > 0:
            row[f"{k}_cores"] = c[k]["cpu_s"] / row["cost_window_s"]
    p50, p99, n_claims = claim_latency([control])
    tasks = task_rows(pg, prefix)
    attempts = attempt_rows(pg, prefix)
    gt = ground_truth(wl, tasks, attempts, killed, kill_took)
    rs = recovery_stats(gt["recovery_s"])
    # The raw ground truth, for a look afterwards: the tasks' records, the attempts, the kills.
    raw = os.path.join(ex.dir, "raw")
    os.makedirs(raw, exist_ok=True)
    shutil.copy(wl.records, os.path.join(raw, f"{label}-records.txt"))
    times = write_attempts_csv(pg, prefix, attempts, os.path.join(raw, f"{label}-attempts.csv"))
    # When the false recalls happened, from the push: in a burst at the start, or all along.
    at = sorted(float(times[(t, a)][2]) - t_push for t, a, _ in gt["false_recalls"]
                if (t, a) in times and times[(t, a)][2])
    if at:
        row.update(false_recall_at_p50_s=at[len(at) // 2], false_recall_at_p95_s=at[int(0.95 * (len(at) - 1))],
                   false_recall_at_max_s=at[-1])
    with open(os.path.join(raw, f"{label}-kills.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["node", "killed_at_wall"])
        w.writerows(sorted(killed.items()))
    row.update({
        "succeeded": gt["succeeded"], "final": gt["final"],
        "stuck_leased_live_node": sum(1 for t, a, node, st, _ in attempts
                                      if st == "leased" and node not in killed and tasks.get(t, ("", 0))[1] == a), "success_share": gt["success_share"],
        "alive_twice": len(gt["overlaps"]),
        "rerun_after_partial": len(gt["rerun"]) - len(gt["rerun_after_complete"]),
        "completed_twice": len(gt["completed_twice"]),
        "rerun_after_complete": len(gt["rerun_after_complete"]), "hit_by_death": rs["n"] + len(gt["unrecovered"]),
        "recovery_p50_s": rs["p50"], "recovery_p95_s": rs["p95"], "recovery_p99_s": rs["p99"],
        "recovery_max_s": rs["max"], "false_recalls": len(gt["false_recalls"]),
        "late_results_taken": late_results_taken(pg, prefix),
        "control_cpu_s": c["control"]["cpu_s"], "control_peak_rss_mib": c["control"]["peak_mem_bytes"] / 2**20,
        "postgres_cpu_s": c["postgres"]["cpu_s"], "postgres_peak_pss_mib": c["postgres"]["peak_mem_bytes"] / 2**20,
        "claims": n_claims, "claim_p50_ms": p50 * 1000 if p50 is not None else None,
        "claim_p99_ms": p99 * 1000 if p99 is not None and p99 != float("inf") else None,
        "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
    })
    row["agents_mem_peak_mib"] = agents_mem_peak() / 2**20
    teardown_nodes(agents)
    control.stop()
    pg.stop()
    return row, gt["recovery_s"], gt["false_recalls"]


def agents_mem_peak():
    """The peak memory of every node of this run together (agents, keepers, supervisors, tasks): the
    run's cgroup's high-water mark (v1 memory.max_usage_in_bytes, v2 memory.peak), 0 if unknown."""
    top = os.path.join(cgroup_base(), f"mc.exp-{RUN}")
    for f in ("memory.max_usage_in_bytes", "memory.peak"):
        try:
            with open(os.path.join(top, f)) as fh:
                return int(fh.read())
        except (OSError, ValueError):
            continue
    return 0
