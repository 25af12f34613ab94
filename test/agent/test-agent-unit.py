#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""units/mc-agent.service in a real systemd manager (a private `systemd --user` with its own journald,
loading the unit the build made for the tests): Type=notify start, watchdog, the journal fields, and
what the unit promises about restarts: a SIGKILL of the agent (Restart=on-failure) and a
`systemctl restart` leave the running task alone (KillMode=process); it finishes once. The same with
the exec driver, whose jobs' supervisors must outlive the agent in the unit's cgroup. And
units/mc-fence-keeper.service: started again whenever it is killed (Restart=always), and staying while
no agent runs (--persistent)."""

import os
import shutil
import time

import mctest
from mctest import SystemdNamespace, check, wait_until
import agenttest as at

UNIT = "mc-agent.service"


def unit_text():
    path = os.path.join(mctest.build_dir(), "units", "test", UNIT)
    with open(path) as f:
        return f.read()


def test_unit_verifies():
    p = mctest.run(["systemd-analyze", "verify", os.path.join(mctest.build_dir(), "units", "test", UNIT)],
                   check=False)
    check(p.returncode == 0 and p.stderr.strip() == "", f"systemd-analyze verify: {p.returncode} {p.stderr}")
    text = unit_text()
    for line in ("Type=notify", "WatchdogSec=", "Wants=docker.socket", "After=docker.service network-online.target",
                 "Restart=on-failure", "StateDirectory=mc-agent", "KillMode=process"):
        check(line in text, f"{line} in the unit")
    # A host without a docker group (an exec-driver node) must be able to start the unit.
    check(not any(line.startswith(("SupplementaryGroups=", "Group=")) for line in text.splitlines()),
          "the unit names a group, which a host may not have")


# The exposure systemd-analyze computes from the unit file alone (--offline: deterministic), on its
# 0-100 scale (28: the "2.8" it prints). Not to go up unnoticed.
EXPOSURE_MAX = {UNIT: 28, "mc-fence-keeper.service": 27}


def test_unit_security_exposure():
    for unit, bound in EXPOSURE_MAX.items():
        path = os.path.join(mctest.build_dir(), "units", "test", unit)
        p = mctest.run(["systemd-analyze", "security", "--offline=yes", f"--threshold={bound}", "--no-pager", path],
                       check=False)
        overall = [line for line in p.stdout.splitlines() if "Overall exposure" in line]
        check(p.returncode == 0, f"{unit}: exposure above {bound / 10}: {overall}")


def unit_runs_and_restarts(driver):
    node = at.node_name(f"node-unit-{driver}")
    mctest.defer(at.cleanup_node_containers, node)
    pg, (c,) = at.cluster([node], lease_ttl_ms=10000)
    ns = SystemdNamespace()
    mctest.make_inaccessible_nodes()
    # Not under /tmp, like /var/lib/mc-agent: a restart gives the unit a new PrivateTmp= and systemd
    # empties the old one, where the exec supervisors that outlive the agent (in its old mount
    # namespace) would then no longer find their job directories. Exec tasks run as another user
    # (EXEC_USER): the way to their work directories must let them by.
    state = f"/var/lib/mc-test-unit-{driver}-{at.RUN}"
    os.makedirs(state, mode=0o711)
    os.chmod(state, 0o711)
    mctest.defer(shutil.rmtree, state, ignore_errors=True)
    # An exec task's runs each leave a line (there are no Docker events to count them by); a container
    # cannot reach the file. Written by the task's user.
    runs_dir = mctest.tmpdir("unit-runs")
    os.chmod(runs_dir, 0o777)
    runs = os.path.join(runs_dir, "runs")
    ns.add_unit(UNIT, unit_text())
    os.makedirs(os.path.join(ns.unit_dir, UNIT + ".d"))
    # The test's settings, and the state directory one of ours (a user manager would put it in
    # ~/.local/state). Every sandboxing setting of the unit stays as shipped: what lies under /tmp
    # (hidden by PrivateTmp=) and the test needs is bound in.
    ns.add_unit(UNIT + ".d/test.conf", f"""[Service]
Environment=MC_CONTROL_URLS={c.url} MC_NODE_ID={node} MC_AGENT_TOKEN={at.agent_token(node)} MC_BUS=no
Environment=MC_CAPACITY_NANO_CPUS=2000000000 MC_CAPACITY_MEMORY_BYTES=2147483648 MC_LOG_LEVEL=debug
StateDirectory=
RuntimeDirectory=
Environment=STATE_DIRECTORY={state}
BindPaths={state} {runs_dir}
# The manager's notify socket is under its runtime directory, which PrivateTmp= hides (a system
# manager's /run/systemd/notify is not); the build-tree binaries too, where the checkout is under /tmp.
BindReadOnlyPaths={ns.runtime_dir}/systemd/notify
# The journal's sockets are on the test's own tmpfs over /run/systemd, which the unit's namespace does
# not get with ProtectKernelTunables= (it sees the host's /run): without them the agent would log plain
# text to stdout, with no MC_EVENT= fields. A system manager's are in /run itself. The same for the
# test's dockerd's socket (a connect to a socket on a read-only mount works).
BindReadOnlyPaths=/run/systemd/journal
{"BindReadOnlyPaths=" + os.path.realpath(mctest.DOCKER_SOCKET) if driver == "docker" else ""}
BindReadOnlyPaths={mctest.build_dir()}
# LeakSanitizer stops the world with ptrace at exit, which the unit's system call filter forbids: it
# would spin until TimeoutStopSec. Leaks are checked by every other agent test.
Environment=ASAN_OPTIONS=detect_leaks=0
Environment=MC_DRIVER={driver} MC_CGROUP_PATH=mc.test/agent-{node} MC_PEER_PORT=0
""")
    ns.daemon_reload()

    def unit_log():
        log = "\n".join(e.get("MESSAGE", "") if isinstance(e.get("MESSAGE"), str) else str(e.get("MESSAGE"))
                        for e in ns.journal(unit=UNIT) + ns.journal(f"USER_UNIT={UNIT}") + ns.journal(f"UNIT={UNIT}"))
        st = ns.systemctl("status", UNIT, check=False).stdout
        mlog = open(ns.logfile, errors="replace").read()[-3000:]
        return f"{log[-3000:]}\n{st}\n{mlog}"

    p = ns.systemctl("start", UNIT, check=False)     # Type=notify: returns once READY=1 came
    if p.returncode != 0:
        raise AssertionError(f"systemctl start: {p.stderr}\n{unit_log()}")
    check(ns.show(UNIT, "ActiveState") == "active", "active")
    check(ns.show(UNIT, "WatchdogUSec") == "30s", ns.show(UNIT, "WatchdogUSec"))
    try:
        ns.wait_journal(unit=UNIT, MC_EVENT="node_registered")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{unit_log()}")

    since = time.time()
    # Held running until released after the restarts (a 6 s sleep could end before, on a slow machine).
    marker = f"unit-{driver}-{at.RUN}"
    cmd = (f"echo run >> {runs}; " if driver == "exec" else "") + at.held_cmd(marker, "echo unit-ok")
    tid = at.push(c, {"image": at.IMAGE, "cmd": ["sh", "-c", cmd], "timeout_sec": 60})
    try:
        at.wait_status(c, tid, "running")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{c.task(tid)}\n{unit_log()}")
    entries = ns.wait_journal(unit=UNIT, MC_EVENT="container_started")
    check(entries[0].get("TASK_ID") == tid and entries[0].get("NODE_ID") == node, entries[0])

    pid = int(ns.show(UNIT, "MainPID"))
    ns.systemctl("kill", "-s", "SIGKILL", "--kill-who=main", UNIT)
    wait_until(lambda: ns.show(UNIT, "ActiveState") == "active" and int(ns.show(UNIT, "MainPID")) not in (0, pid),
               60, msg="restarted after SIGKILL")
    ns.systemctl("restart", UNIT)
    at.release(marker)
    t = at.wait_final(c, tid, 120)
    if t["attempt"] != 1:
        print("\n".join(f'{int(e["__REALTIME_TIMESTAMP"]) / 1e6:.3f} {e.get("MESSAGE")}'
                        for e in sorted(ns.journal(unit=UNIT) + ns.journal(f"USER_UNIT={UNIT}"),
                                        key=lambda e: int(e["__REALTIME_TIMESTAMP"]))))
    check(t["status"] == "succeeded" and t["attempt"] == 1 and "unit-ok" in t["result"]["stdout_tail"], t)
    if driver == "exec":
        with open(runs) as f:
            check(f.read() == "run\n", "the command ran once")
    else:
        starts = [e for e in at.task_events(tid, since) if e[1] == "start"]
        check(len(starts) == 1, f"one container: {at.task_events(tid, since)}")
    # journald files what it is sent when it gets to it: waited for, not sampled.
    ns.wait_journal(unit=UNIT, MC_EVENT="container_adopted", timeout=60)
    ns.systemctl("stop", UNIT)


KEEPER = "mc-fence-keeper.service"


def test_keeper_unit_restarts():
    path = os.path.join(mctest.build_dir(), "units", "test", KEEPER)
    p = mctest.run(["systemd-analyze", "verify", path], check=False)
    check(p.returncode == 0 and p.stderr.strip() == "", f"systemd-analyze verify: {p.returncode} {p.stderr}")
    with open(path) as f:
        text = f.read()
    for line in ("Restart=always", "--persistent", "/var/lib/mc-agent/leases.json",
                 "/var/lib/mc-agent/fence-keeper.pid"):
        check(line in text, f"{line} in the unit")
    check(not any(line.startswith(("PartOf=", "BindsTo=", "Requisite=")) for line in text.splitlines()),
          "not tied to the agent's unit")
    check(f"Wants=docker.socket network-online.target {KEEPER}" in unit_text(), "the agent's unit wants it")

    ns = SystemdNamespace()
    state = mctest.tmpdir("keeper-state")
    exe = text.split("ExecStart=", 1)[1].split()[0]
    ns.add_unit(KEEPER, text)
    os.makedirs(os.path.join(ns.unit_dir, KEEPER + ".d"))
    # Its files in a directory of the test's, and without the sandboxing (systemd-analyze checks those
    # lines above; unit_runs_and_restarts runs the agent's unit with all of its own).
    ns.add_unit(KEEPER + ".d/test.conf", f"""[Service]
ExecStart=
ExecStart={exe} --fence-keeper {state}/leases.json {state}/fence-keeper.pid --persistent
ReadWritePaths=
ProtectSystem=no
ProtectHome=no
PrivateTmp=no
PrivateNetwork=no
ProtectKernelModules=no
ProtectKernelLogs=no
Environment=ASAN_OPTIONS=detect_leaks=0
""")
    ns.daemon_reload()
    ns.systemctl("start", KEEPER)
    pid = wait_until(lambda: int(ns.show(KEEPER, "MainPID")) or None, 60, msg="the keeper's MainPID")
    pid_file = os.path.join(state, "fence-keeper.pid")
    wait_until(lambda: os.path.exists(pid_file) and open(pid_file).read().strip() == str(pid), 60,
               msg="the keeper's pid file")
    for _ in range(2):
        ns.systemctl("kill", "-s", "SIGKILL", KEEPER)
        wait_until(lambda: ns.show(KEEPER, "ActiveState") == "active" and int(ns.show(KEEPER, "MainPID")) not in (0, pid),
                   60, msg="the keeper started again after SIGKILL")
        pid = int(ns.show(KEEPER, "MainPID"))
        wait_until(lambda: open(pid_file).read().strip() == str(pid), 60, msg="the new keeper's pid file")
    ns.systemctl("stop", KEEPER)


def test_unit_runs_and_restarts():
    unit_runs_and_restarts("docker")


def test_unit_exec_runs_and_restarts():
    unit_runs_and_restarts("exec")


mctest.main()
