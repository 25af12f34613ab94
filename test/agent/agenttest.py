# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers for the mc-agent tests: a control cluster (test/control/controltest.py) plus real agents,
the real dockerd, and what Docker's own event stream says about the containers of each task."""

import json
import os
import re
import select
import signal
import sys
import threading
import time
import urllib.parse

import mctest
from mctest import Daemon, Dockerd, check, docker_api, wait_until

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "control"))
import controltest  # noqa: E402
from controltest import USER_TOKEN, agent_token, start_cluster  # noqa: E402,F401

IMAGE = mctest.TEST_IMAGE
FINAL = ("succeeded", "failed", "timed_out", "cancelled")

SAMPLE_TASK = dict(controltest.SAMPLE_TASK, image=IMAGE)

# A node id unique to this run: containers of other runs (or other tests) never look like ours.
RUN = f"{os.getpid()}-{int(time.time())}"


class Agent:
    """mc-agent with its own state directory. node is the node id (the tokens file must know it)."""

    def __init__(self, controls, node, driver="docker", env=None, args=(), bus=None, lease_ttl_ms=None,
                 name=None, host=None):
        """host: a mctest Network Host to run in (net_only for the exec driver, which needs this
        machine's /sys/fs/cgroup)."""
        urls = ",".join(c.url for c in controls)
        self.node = node
        self.driver = driver
        e = {
            "MC_CONTROL_URLS": urls,
            "MC_NODE_ID": node,
            "MC_AGENT_TOKEN": agent_token(node),
            "MC_DRIVER": driver,
            "MC_CAPACITY_NANO_CPUS": str(4_000_000_000),
            "MC_CAPACITY_MEMORY_BYTES": str(4 << 30),
            "MC_STOP_GRACE_SEC": "2",
            "MC_LOG_LEVEL": "debug",
            # Agents of parallel tests share the machine: each serves its inputs on a port of its own.
            "MC_PEER_PORT": "0",
        }
        if driver == "exec":
            e["MC_CGROUP_PATH"] = f"mc.test/agent-{node}-{RUN}"
        if lease_ttl_ms:
            e["MC_LEASE_TTL_MS"] = str(lease_ttl_ms)
        if bus is not None:
            e.update(bus.env())
        else:
            e["MC_BUS"] = "no"
        e.update(env or {})
        self.daemon = Daemon("mc-agent", list(args), env=e, name=name or f"mc-agent-{node}",
                             watchdog_usec=None, host=host)
        if driver == "exec":
            # Exec tasks run as another user (EXEC_USER), who must get through to their work
            # directories in the state directory (mkdtemp made the daemon's directory 0700).
            os.chmod(self.daemon.dir, 0o711)

    def start(self):
        self.daemon.start()
        self.daemon.wait_ready()
        return self

    def stop(self, **kw):
        return self.daemon.stop(**kw)

    def kill(self):
        self.daemon.kill()

    @property
    def state_dir(self):
        return self.daemon.state_dir

    def outbox(self):
        d = os.path.join(self.state_dir, "outbox")
        return sorted(f for f in os.listdir(d) if not f.startswith(".")) if os.path.isdir(d) else []

    def log(self):
        return self.daemon.log_text()

    def fence_usec(self, tid):
        """The fence time (CLOCK_MONOTONIC, µs) the agent last saved for tid's lease."""
        with open(os.path.join(self.state_dir, "leases.json")) as f:
            leases = json.load(f)["leases"]
        return next(x["fence_usec"] for x in leases if x["task_id"] == tid)


def bus_tasks(bus):
    """The agent's ListTasks() over D-Bus, parsed."""
    return json.loads(bus.busctl_json("call", "org.mutualcloud.Agent1", "/org/mutualcloud/Agent1",
                                      "org.mutualcloud.Agent1", "ListTasks")["data"][0])


def bus_task(bus, tid):
    """tid's entry in ListTasks(), or None once the agent has let it go."""
    return next((t for t in bus_tasks(bus) if t["id"] == tid), None)


class ThreadStall:
    """Holds one thread of a process still (ptrace: only that thread stops) until release(). The
    tracer is the calling thread: release() must come from the same one."""
    PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT, WALL = 17, 0x4206, 0x4207, 0x40000000

    def __init__(self, pid, comm):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

        def comm_of(tid):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                return f.read().strip()
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if comm_of(t) == comm]
        check(len(tids) == 1, f"one thread named {comm} in {pid}: {tids}")
        self.tid = tids[0]
        for req in (self.PTRACE_SEIZE, self.PTRACE_INTERRUPT):
            if self.libc.ptrace(req, self.tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace({req:#x}, {self.tid})")
        _, status = os.waitpid(self.tid, self.WALL)
        check(os.WIFSTOPPED(status), f"thread {self.tid} stopped: {status:#x}")

    def release(self):
        if self.tid and self.libc.ptrace(self.PTRACE_DETACH, self.tid, None, None) != 0:
            raise OSError(0, f"cannot detach from {self.tid}")
        self.tid = None


_FIELD_RE = re.compile(r"\b([A-Z][A-Z0-9_]*)=(\S*)")


def events(log, name):
    """The events of that name in a daemon's console output, each as {FIELD: value} (console lines
    end with the event's fields)."""
    out = []
    for line in log.splitlines():
        if f"MC_EVENT={name} " in line or line.endswith(f"MC_EVENT={name}"):
            out.append(dict(_FIELD_RE.findall(line)))
    return out


def task_dir(name):
    """A directory of the test's that exec tasks may write in: they run as another user (EXEC_USER,
    nobody where there is no mc-task), and mkdtemp makes directories only root may enter."""
    d = mctest.tmpdir(name)
    os.chmod(d, 0o777)
    return d


def node_name(base):
    """Node ids must be in the control's tokens file: tests use fixed names, made unique per run."""
    return f"{base}-{RUN}"


def cluster(nodes, replicas=1, control_env=None, lease_ttl_ms=10000, grace_ms=500, bus=None, pg_env=None):
    """PostgreSQL and control replicas that know the agent tokens of `nodes`. Tests of expiry and
    fencing pass a short lease_ttl_ms; the default is long so that a stalled, shared machine does not
    make an agent fence itself (correctly) in a test about something else."""
    Dockerd.ensure()
    env = {"MC_LEASE_TTL_MS": str(lease_ttl_ms), "MC_LEASE_GRACE_MS": str(grace_ms), "MC_SWEEP_INTERVAL_MS": "100"}
    env.update(control_env or {})
    return start_cluster(nodes=tuple(nodes), env=env, replicas=replicas, bus=bus, pg_env=pg_env)


def push(control, body, **kw):
    r = control.push(body, **kw)
    check(r.status in (200, 201), f"push: {r.status} {r.text}")
    return r.json()["id"]


def task_of(control, tid):
    return control.task(tid)


def wait_final(control, tid, timeout=120):
    return wait_until(lambda: (lambda t: t if t["status"] in FINAL else None)(control.task(tid)), timeout,
                      msg=f"task {tid} to finish")


def wait_status(control, tid, statuses, timeout=60):
    if isinstance(statuses, str):
        statuses = (statuses,)
    return wait_until(lambda: (lambda t: t if t["status"] in statuses else None)(control.task(tid)), timeout,
                      msg=f"task {tid} to be {'/'.join(statuses)}")


def containers_of(tid):
    """Every container (running or not) labelled with this task."""
    q = urllib.parse.urlencode({"all": "1", "filters": json.dumps({"label": [f"mc.task_id={tid}"]})})
    r = docker_api("GET", "/containers/json?" + q)
    check(r.status == 200, f"docker list: {r.status} {r.text}")
    return r.json()


def inspect(cid):
    r = docker_api("GET", f"/containers/{cid}/json")
    return r.json() if r.status == 200 else None


def trapping_pids(marker, sig=signal.SIGTERM):
    """The pids of the shells whose command line holds marker and which have set a trap for sig, as
    the kernel shows it (SigCgt). Task processes of both drivers are visible in this PID namespace
    (a container's too). A fixed sleep before a signal loses the race on a loaded machine: the shell
    dies without its trap."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:") and int(line.split()[1], 16) & (1 << (sig - 1)):
                        pids.append(int(pid))
        except OSError:
            continue
    return pids


def term_trapped(marker):
    """True once a shell whose command line holds marker has set its SIGTERM trap."""
    return bool(trapping_pids(marker, signal.SIGTERM))


def held_cmd(marker, then="true"):
    """A task command that runs until release(marker) lets it go, then runs `then` and exits with its
    status: a task that must still run when the test looks at it (running, its container, its
    limits) waits for the test, not for a fixed sleep that a slow machine outlasts."""
    return f"trap '{then}; exit $?' USR1; : {marker}; sleep 600 & wait"


def release(marker, timeout=60):
    """Lets a held_cmd(marker) task go on (SIGUSR1 to its shell, once its trap is set)."""
    def shells():
        pids = trapping_pids(marker, signal.SIGUSR1)
        # Not a child the shell is forking for `sleep &`, which has its trap for a moment.
        return [p for p in pids if _ppid(p) not in pids]
    for pid in wait_until(shells, timeout, msg=f"the shell of the task held by {marker} to set its trap"):
        os.kill(pid, signal.SIGUSR1)


# ------------------------------------------------------------------------------------------------
# Processes, as /proc and pidfds tell them (the ground truth of what runs on this machine)


def cmdline(pid):
    """The raw command line of pid (NUL-separated), or b"" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(marker, exclude_exe=None):
    """Every process whose command line holds marker (but for those running exclude_exe), and all
    their descendants."""
    procs = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    found = {p for p in procs if marker.encode() in cmdline(p) and (not exclude_exe or exe_name(p) != exclude_exe)}
    grew = True
    while grew:
        grew = False
        for p in procs:
            if p not in found and _ppid(p) in found:
                found.add(p)
                grew = True
    return sorted(found)


def describe_process(pid):
    """pid, state, parent and command line, as /proc has them now (for a failure's message)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        line = cmdline(pid).replace(b"\0", b" ").decode(errors="replace")[:200]
        return f"{pid} state {state} ppid {ppid}: {line}"
    except (OSError, IndexError) as e:
        return f"{pid}: {e}"


class DeathWatch:
    """The end of each process, as the kernel reports it through a pidfd (stamped once poll() says so,
    so never earlier than the truth)."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.ends = {}
        self.fds = {}
        for p in self.pids:
            try:
                self.fds[os.pidfd_open(p)] = p
            except ProcessLookupError:
                self.ends[p] = time.time_ns()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        poll = select.poll()
        for fd in self.fds:
            poll.register(fd, select.POLLIN)
        left = set(self.fds)
        while left:
            for fd, _ in poll.poll(1000):
                self.ends[self.fds[fd]] = time.time_ns()
                poll.unregister(fd)
                left.discard(fd)
                os.close(fd)

    def alive(self):
        return [p for p in self.pids if p not in self.ends]

    def all_ended(self):
        """True once every process ended; otherwise raises, naming those left (wait_until() reports
        the last such error when it times out)."""
        left = self.alive()
        if left:
            raise AssertionError("still there: " + "; ".join(describe_process(p) for p in left))
        return True


def kill_matching(*paths):
    """After a failed test: SIGKILL to whatever still runs with one of paths in its command line (the
    supervisors name the agent's state directory, the commands the test's directory)."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid != os.getpid() and any(p.encode() in cmdline(pid) for p in paths):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class EventRecorder:
    """Docker's container events, followed live from now on. (The engine answers a query for past
    events from a ring of its last 256, which a busy test overflows.)"""

    def __init__(self, filters=None):
        q = urllib.parse.urlencode({"filters": json.dumps(filters or {"type": ["container"]})})
        self.events = []
        self._lock = threading.Lock()
        self._conn = mctest.UnixHTTPConnection(mctest.DOCKER_SOCKET, timeout=None)
        self._conn.request("GET", "/events?" + q)
        self._resp = self._conn.getresponse()      # the subscription is in place from here on
        check(self._resp.status == 200, f"docker events: {self._resp.status}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        mctest.defer(self.stop)

    def _read(self):
        try:
            for line in self._resp:
                if line.strip():
                    e = json.loads(line)
                    with self._lock:
                        self.events.append(e)
        except Exception:  # noqa: BLE001 - the connection closed under us by stop()
            pass

    def stop(self):
        try:
            self._conn.sock.shutdown(2)
        except OSError:
            pass
        self._conn.close()

    def of_task(self, tid):
        """[(time_ns, action, container_id)] of the task's containers, oldest first."""
        with self._lock:
            ev = list(self.events)
        return [(e["timeNano"], e["Action"], e["id"]) for e in ev
                if e.get("Actor", {}).get("Attributes", {}).get("mc.task_id") == tid]


_recorder = None


def record_events():
    """Starts following Docker's events for the current test (task_events() then reads from it)."""
    global _recorder
    _recorder = EventRecorder({"type": ["container"], "label": ["mc.task_id"]})

    def forget():
        global _recorder
        _recorder = None
    mctest.defer(forget)
    return _recorder


def task_events(tid, since, until=None):
    """Docker's container events for a task: [(time_ns, action, container_id)], oldest first. From
    the live recorder when the test started one (record_events()), else from the engine's memory."""
    if _recorder is not None:
        ev = _recorder.of_task(tid)
        lo = since * 1e9
        hi = until * 1e9 if until is not None else float("inf")
        return [e for e in ev if lo <= e[0] <= hi]
    ev = mctest.docker_events({"type": ["container"], "label": [f"mc.task_id={tid}"]}, since=since, until=until)
    return [(e["timeNano"], e["Action"], e["id"]) for e in ev]


def run_intervals(events):
    """From start/die events: {container: [start_ns, end_ns or None]}."""
    iv = {}
    for t, action, cid in events:
        if action == "start":
            iv.setdefault(cid, [t, None])
        elif action == "die" and cid in iv:
            iv[cid][1] = t
    return iv


def check_no_overlap(tid, since, until=None):
    """No two containers of the task ran at the same time, by Docker's own clock."""
    iv = sorted(run_intervals(task_events(tid, since, until)).values())
    for (s1, e1), (s2, e2) in zip(iv, iv[1:]):
        check(e1 is not None and e1 <= s2, f"task {tid}: containers overlap: {iv}")
    return iv


def cleanup_node_containers(node):
    """Removes containers a (killed) test agent left behind."""
    q = urllib.parse.urlencode({"all": "1", "filters": json.dumps({"label": [f"mc.node={node}"]})})
    r = docker_api("GET", "/containers/json?" + q)
    for c in r.json() if r.status == 200 else []:
        docker_api("DELETE", f"/containers/{c['Id']}?force=1")
