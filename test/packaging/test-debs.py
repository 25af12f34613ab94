#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The Debian packages (debian/, tools/build-debs), built from this tree and installed for real.

tools/build-debs builds mc-control, mc-agent, mc-seeder and mc-tools; `dpkg-deb -c` lists the paths
each must ship; lintian reports no error. Then a Debian 12 machine with systemd as PID 1
(systemd-nspawn -b, a debootstrap root cached in /var/cache/mc-test/, a private network) gets them with
apt-get, which fetches nothing but the packages' real dependencies (downloaded into the root before it
boots: the machine has no route to the archive): users and tmpfiles are created, every unit is enabled
and none is started (ConditionPathExists= on its configuration file). With the example control.conf, a
database and a token, mc-control starts from its socket and answers, over HTTP and on the system bus
(the policy is where dbus-daemon reads it); an exec-driver agent registers. A newer version installed
with dpkg -i restarts both; purge removes configuration and state, and the users stay.

The remote install (the top-level Makefile, tools/remote-install): three such machines on one private
network, a control and two exec-driver agents installed over ssh from nothing, the seed's sample task run
on node-b with mcctl, then an upgrade with a task running there, which the restarted agent adopts.

Besides, for this build's own prefix: each installed unit waits for the configuration file its daemon
reads (one sysconfdir for both)."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import mctest
from mctest import check, defer, run, tmpdir, wait_until

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "control"))
import controltest  # noqa: E402

PACKAGES = ("mc-control", "mc-agent", "mc-seeder", "mc-tools")

# What each package must ship (dpkg-deb -c, without the leading "."), and must not.
SHIPS = {
    "mc-control": ["/usr/bin/mc-control", "/lib/systemd/system/mc-control.service",
                   "/lib/systemd/system/mc-control.socket", "/usr/lib/sysusers.d/mc-control.conf",
                   "/usr/lib/tmpfiles.d/mc-control.conf", "/usr/share/dbus-1/system.d/org.mutualcloud.Control1.conf",
                   "/usr/share/doc/mc/examples/control.conf", "/usr/share/doc/mc/examples/tokens",
                   "/usr/share/man/man8/mc-control.8.gz"],
    "mc-agent": ["/usr/bin/mc-agent", "/usr/libexec/mc/mc-fence-keeper", "/usr/libexec/mc/mc-fence-init",
                 "/usr/libexec/mc/mc-exec-supervisor", "/lib/systemd/system/mc-agent.service",
                 "/lib/systemd/system/mc-agent.socket", "/lib/systemd/system/mc-agent-dht.socket",
                 "/lib/systemd/system/mc-fence-keeper.service", "/usr/lib/sysusers.d/mc-agent.conf",
                 "/usr/lib/tmpfiles.d/mc-agent.conf", "/usr/share/dbus-1/system.d/org.mutualcloud.Agent1.conf",
                 "/usr/share/doc/mc/examples/agent.conf", "/usr/share/man/man8/mc-agent.8.gz",
                 "/usr/share/man/man8/mc-fence-init.8.gz"],
    "mc-seeder": ["/usr/bin/mc-seeder", "/lib/systemd/system/mc-seeder.service",
                  "/lib/systemd/system/mc-seeder.socket", "/usr/lib/sysusers.d/mc-seeder.conf",
                  "/usr/lib/tmpfiles.d/mc-seeder.conf", "/usr/share/dbus-1/system.d/org.mutualcloud.Seeder1.conf",
                  "/usr/share/doc/mc/examples/seeder.conf", "/usr/share/man/man8/mc-seeder.8.gz"],
    "mc-tools": ["/usr/bin/mc-dhtget", "/usr/bin/mc-certs", "/usr/lib/systemd/catalog/mc.catalog",
                 "/usr/share/doc/mc/events.md", "/usr/share/doc/mc/api.md", "/usr/share/doc/mc/openapi.yaml",
                 "/usr/bin/mcctl",
                 "/usr/share/man/man1/mcctl.1.gz", "/usr/share/man/man7/mc-api.7.gz", "/usr/share/man/man5/mc.conf.5.gz",
                 "/usr/share/bash-completion/completions/mcctl"],
}
NEVER = re.compile(r"^/usr/local/|^/etc/|^/usr/lib/debug/")

UNITS = ("mc-control.socket", "mc-control.service", "mc-agent.socket", "mc-agent.service",
         "mc-fence-keeper.service", "mc-seeder.socket", "mc-seeder.service")
# Shipped, not enabled: an operator who wants the agent's DHT node on a fixed UDP port enables it.
DISABLED_UNITS = ("mc-agent-dht.socket",)

# The machine's root: debootstrap's minbase with systemd, D-Bus, PostgreSQL (mc-control recommends it),
# curl, and sshd for the remote install. Built once per machine (about 2 minutes) and kept as a tarball; each run unpacks a copy.
ROOT_INCLUDE = "systemd,systemd-sysv,dbus,curl,ca-certificates,postgresql,iproute2,openssh-server,openssl"
ROOT_CACHE = "/var/cache/mc-test"
MIRROR = "http://deb.debian.org/debian"

USER_TOKEN = "packaging-test-user-token-0123456789abcdef"
AGENT_TOKEN = "packaging-test-agent-token-0123456789abcdef"

DEBS = {}          # package -> path of its .deb, from test_build


def deb_paths(deb, files_only=False):
    """The paths dpkg-deb -c lists (without the leading "."); with files_only, no directories."""
    out = run(["dpkg-deb", "-c", deb]).stdout
    paths = set()
    for line in out.splitlines():
        # "-rwxr-xr-x root/root 12345 2026-01-01 00:00 ./usr/bin/x" (a link adds " -> target")
        fields = line.split(None, 5)
        if len(fields) < 6 or (files_only and fields[0].startswith("d")):
            continue
        paths.add(fields[5].split(" -> ")[0][1:].rstrip("/"))
    return paths


def test_build():
    out = tmpdir("debs")
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(mctest.source_dir(), "tools", "build-debs"), "--out", out],
                       env=env, capture_output=True, text=True, timeout=900)
    check(p.returncode == 0, f"tools/build-debs exited with {p.returncode}:\n{p.stderr[-4000:]}")
    check(p.stdout.strip().splitlines()[-1] == out, f"build-debs names its output directory last: {p.stdout!r}")
    print(f"# built in {time.monotonic() - t0:.0f}s")
    for pkg in PACKAGES:
        found = [f for f in os.listdir(out) if f.startswith(pkg + "_") and f.endswith(".deb")]
        check(len(found) == 1, f"one {pkg} package in {out}: {os.listdir(out)}")
        DEBS[pkg] = os.path.join(out, found[0])


def need_debs():
    check(len(DEBS) == len(PACKAGES), "the packages were not built (test_build failed)")


def test_contents():
    need_debs()
    for pkg, deb in DEBS.items():
        paths = deb_paths(deb)
        missing = [p for p in SHIPS[pkg] if p not in paths]
        check(not missing, f"{pkg} does not ship {missing}; it ships {sorted(paths)}")
        stray = sorted(p for p in paths if NEVER.search(p))
        check(not stray, f"{pkg} ships {stray}")
        fields = json.loads(run(["dpkg-deb", "--showformat",
                                 '{"depends": "${Depends}", "recommends": "${Recommends}"}', "-W", deb]).stdout)
        # shlibs:Depends filled in (libc at least), misc:Depends (systemd-sysusers) where users are made.
        check("libc6" in fields["depends"], f"{pkg} Depends: {fields['depends']}")
        if pkg != "mc-tools":
            check("systemd" in fields["depends"], f"{pkg} Depends: {fields['depends']}")
        if pkg == "mc-agent":
            check("docker.io" in fields["recommends"], f"mc-agent Recommends: {fields['recommends']}")
        if pkg == "mc-control":
            check("postgresql" in fields["recommends"], f"mc-control Recommends: {fields['recommends']}")
    # No two packages ship one file (dpkg would refuse the second).
    owners = {}
    for pkg, deb in DEBS.items():
        for p in deb_paths(deb, files_only=True):
            owners.setdefault(p, []).append(pkg)
    shared = {p: pk for p, pk in owners.items() if len(pk) > 1}
    check(not shared, f"files in several packages: {shared}")


def test_lintian():
    need_debs()
    p = run(["lintian", "--tag-display-limit", "0", *DEBS.values()], check=False, timeout=600)
    lines = (p.stdout + p.stderr).splitlines()
    errors = [line for line in lines if line.startswith("E:")]
    check(not errors, "lintian errors:\n" + "\n".join(errors))
    print(f"# lintian: {sum(1 for line in lines if line.startswith('W:'))} warnings, no error")


def test_paths_agree_for_this_prefix():
    """The units installed by this build (its prefix, whatever it is) wait for the very file the daemon
    reads, and run the binary where it is installed."""
    units = os.path.join(mctest.build_dir(), "units")
    for daemon, unit in (("mc-control", "mc-control.service"), ("mc-agent", "mc-agent.service"),
                         ("mc-seeder", "mc-seeder.service")):
        with open(os.path.join(units, unit)) as f:
            text = f.read()
        m = re.search(r"^ConditionPathExists=(\S+)$", text, re.M)
        check(m, f"{unit} has a ConditionPathExists=")
        helptext = run([mctest.binary(daemon), "--help"]).stdout
        check(f"KEY=value line in {m.group(1)}," in helptext,
              f"{daemon} reads another file than {unit} waits for ({m.group(1)}): {helptext.splitlines()[:6]}")


# ---------------------------------------------------------------------------------------------------
# A Debian 12 machine booted with systemd-nspawn

def nspawn_argv(root, *args):
    """systemd-nspawn as this machine allows it: its PID 1 is not systemd, so no registration, and a
    private /run/systemd/nspawn (a mount namespace of its own)."""
    inner = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", root, *args]
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && exec "$@"', "sh", *inner]


def cached_root():
    """The root tarball, made once with debootstrap (the include list names the cache file)."""
    key = hashlib.sha256(f"{MIRROR} bookworm minbase {ROOT_INCLUDE}".encode()).hexdigest()[:16]
    tarball = os.path.join(ROOT_CACHE, f"bookworm-minbase-{key}.tar")
    if os.path.exists(tarball):
        return tarball
    os.makedirs(ROOT_CACHE, exist_ok=True)
    root = tmpdir("debootstrap")
    p = subprocess.run(["debootstrap", "--variant=minbase", f"--include={ROOT_INCLUDE}", "bookworm", root, MIRROR],
                       capture_output=True, text=True, timeout=900)
    check(p.returncode == 0, f"debootstrap failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    run(["tar", "-C", root, "-cf", tarball + ".new", "."], timeout=600)
    os.rename(tarball + ".new", tarball)
    shutil.rmtree(root, ignore_errors=True)
    return tarball


class Machine:
    def __init__(self, name="mcpkg", template=None):
        """A machine called name (its hostname) from the cached root, or from a copy of template's
        root (prepared already: its packages and their dependencies come along)."""
        self.name = name
        self.root = tmpdir("machine")
        if template:
            run(["cp", "-a", "--reflink=auto", template.root + "/.", self.root], timeout=600)
        else:
            run(["tar", "-C", self.root, "-xf", cached_root()], timeout=600)
        self.proc = None

    def prepare(self, debs):
        """Copies the packages in and downloads their dependencies into the root's apt cache, with the
        host's network (the booted machine has none)."""
        os.makedirs(os.path.join(self.root, "debs"))
        for d in debs:
            shutil.copy(d, os.path.join(self.root, "debs"))
        script = ("apt-get install -y -q --download-only --no-install-recommends /debs/*.deb || "
                  "{ apt-get update -q && apt-get install -y -q --download-only --no-install-recommends /debs/*.deb; }")
        p = subprocess.run(nspawn_argv(self.root, "--resolv-conf=copy-host", "--pipe", "sh", "-c", script),
                           capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        check(p.returncode == 0, f"downloading the dependencies failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")

    def boot(self, netns=None):
        """Boots the machine: with netns, in that network namespace (/run/netns/NAME), else with a
        private network of its own (loopback only)."""
        self.start(netns)
        self.wait_booted()

    def start(self, netns=None):
        """Starts booting (several machines boot at once: start each, then wait_booted())."""
        self.log = open(os.path.join(self.root, "..", "nspawn.log"), "w")
        net = [f"--network-namespace-path=/run/netns/{netns}"] if netns else ["--private-network"]
        self.proc = subprocess.Popen(nspawn_argv(self.root, "-M", self.name, "-b", *net),
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        defer(self.stop)

    def wait_booted(self):
        def leader():
            check(self.proc.poll() is None, f"systemd-nspawn exited with {self.proc.returncode}")
            p = subprocess.run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"], capture_output=True, text=True)
            return p.stdout.split()[0] if p.returncode == 0 else None
        self.leader = wait_until(leader, 120, msg="the machine's systemd")
        # Until its manager answers, systemctl says nothing (it cannot connect); then --wait waits for
        # the boot to finish.
        def booted():
            p = self.sh("systemctl is-system-running --wait", check=False, timeout=180)
            return p.stdout.strip() in ("running", "degraded") or None
        wait_until(booted, 180, interval=0.5, msg="the machine to boot (systemctl is-system-running)")

    def sh(self, script, check=True, timeout=120):
        """Runs a shell script in the booted machine (all of its namespaces), as root."""
        return run(["nsenter", "-t", self.leader, "-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8", "sh", "-ec", script], check=check, timeout=timeout)

    def writable_cgroups(self):
        """The machine's cgroup v1 controllers, which systemd-nspawn mounts read-only, made writable (a
        bind remount: the tree itself is writable, in the machine's cgroup namespace), as a real
        host's are to its root: the exec driver makes its tasks' memory and cpu cgroups there. Before
        the agent starts, whose namespace copies the mounts."""
        self.sh("for c in memory cpu cpuacct; do if mountpoint -q /sys/fs/cgroup/$c; then "
                "mount -o remount,bind,rw /sys/fs/cgroup/$c; fi; done; "
                "[ -w /sys/fs/cgroup/memory/cgroup.procs ] || [ -e /sys/fs/cgroup/cgroup.controllers ]")

    def show(self, unit, *props):
        out = self.sh(f"systemctl show -p {','.join(props)} {unit}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def api(self, path, token=USER_TOKEN):
        p = self.sh(f"curl -sS -f -H 'Authorization: Bearer {token}' http://127.0.0.1:8080{path}", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)           # nspawn shuts the machine down in order
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


def repack_newer(deb, out):
    """The same package with a higher version (VERSION.1), as a newer build would be."""
    d = tmpdir("repack")
    run(["dpkg-deb", "-R", deb, d])
    control = os.path.join(d, "DEBIAN", "control")
    with open(control) as f:
        text = f.read()
    text = re.sub(r"^Version: (.*)$", r"Version: \1.1", text, flags=re.M)
    with open(control, "w") as f:
        f.write(text)
    run(["dpkg-deb", "-b", d, out])
    shutil.rmtree(d)


def test_install_upgrade_purge():
    need_debs()
    m = Machine()
    newer = tmpdir("newer")
    for deb in DEBS.values():
        repack_newer(deb, newer)
    m.prepare(list(DEBS.values()) + [os.path.join(newer, f) for f in os.listdir(newer)])
    m.boot()

    # Installed with apt-get, offline: every dependency is one the packages name.
    m.sh("apt-get install -y -q --no-install-recommends "
         + " ".join(f"/debs/{os.path.basename(d)}" for d in DEBS.values()), timeout=300)

    # Users (sysusers.d), directories and modes (tmpfiles.d).
    # mc-task: the exec driver's tasks run as it (EXEC_USER). No docker group: the agent, root, needs none.
    ids = m.sh("getent passwd mc-control mc-seeder mc-task | cut -d: -f1; getent group mc | cut -d: -f1").stdout.split()
    check(ids == ["mc-control", "mc-seeder", "mc-task", "mc"], f"users and groups: {ids}")
    modes = m.sh("stat -c '%n %a %U' /etc/mc; stat -c '%n %a %U %G' /etc/mc/tokens; "
                 "stat -c '%n %a %U' /etc/mc/seeder-token /var/lib/mc-control "
                 "/var/lib/mc-agent /var/lib/mc-seeder").stdout.splitlines()
    check(modes == ["/etc/mc 755 root", "/etc/mc/tokens 640 root mc-control", "/etc/mc/seeder-token 600 root",
                    "/var/lib/mc-control 700 mc-control", "/var/lib/mc-agent 711 root",
                    "/var/lib/mc-seeder 750 mc-seeder"], f"paths: {modes}")

    # Every unit enabled; none started: postinst tried (ConditionResult=no), the condition held it.
    for unit in UNITS:
        s = m.show(unit, "UnitFileState", "ActiveState", "ConditionResult", "FragmentPath")
        check(s == {"UnitFileState": "enabled", "ActiveState": "inactive", "ConditionResult": "no",
                    "FragmentPath": f"/lib/systemd/system/{unit}"}, f"{unit} after installation: {s}")
    for unit in DISABLED_UNITS:
        s = m.show(unit, "UnitFileState", "ActiveState")
        check(s == {"UnitFileState": "disabled", "ActiveState": "inactive"}, f"{unit} after installation: {s}")
    check(m.show("mc-control.service", "ExecStart")["ExecStart"].startswith("{ path=/usr/bin/mc-control "),
          "mc-control.service runs /usr/bin/mc-control")
    # The installed units as systemd reads them there (verify exits 0 on warnings: its stderr counts).
    p = m.sh("systemd-analyze verify " + " ".join(f"/lib/systemd/system/{u}" for u in UNITS + DISABLED_UNITS),
             check=False)
    check(p.returncode == 0 and not p.stderr.strip(), f"systemd-analyze verify: {p.returncode} {p.stderr}")

    # Configured: a database, the example control.conf (it names that database), a user token.
    m.sh("runuser -u postgres -- createuser mc-control && runuser -u postgres -- createdb -O mc-control mc")
    m.sh("cp /usr/share/doc/mc/examples/control.conf /etc/mc/control.conf && "
         f"echo 'user alice {USER_TOKEN}' >> /etc/mc/tokens && systemctl start mc-control.socket")
    health = wait_until(lambda: (lambda h: h if h and h.get("status") == "ok" else None)(m.api("/api/health")),
                        120, msg="mc-control to answer /api/health with status ok")
    check(m.show("mc-control.service", "ActiveState")["ActiveState"] == "active", "mc-control.service is active")
    print(f"# health: {health}")
    # The system bus reads the policy: mc-control owns its name and answers (root may call it).
    q = m.sh("busctl get-property org.mutualcloud.Control1 /org/mutualcloud/Control1 "
             "org.mutualcloud.Control1 TasksQueued").stdout.split()
    check(q == ["u", "0"], f"TasksQueued over D-Bus: {q}")

    # A reload works (ExecReload= is procps's /bin/kill, a dependency).
    m.sh("systemctl reload mc-control.service")
    # An agent (exec driver: the machine has no Docker): its token, and the node registers. The service
    # reads the tokens file itself: a reload (same process) is enough for the new token.
    pid = m.show("mc-control.service", "MainPID")["MainPID"]
    m.sh(f"echo 'agent node-a {AGENT_TOKEN}' >> /etc/mc/tokens && systemctl reload mc-control.service")

    def agent_token_known():
        code = m.sh(f"curl -sS -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {AGENT_TOKEN}' "
                    "http://127.0.0.1:8080/api/tasks", check=False).stdout.strip()
        return code not in ("", "000", "401") and code
    code = wait_until(agent_token_known, 120, msg="the agent's token to be known after the reload")
    print(f"# the agent's token after the reload: {code}")
    check(m.show("mc-control.service", "MainPID")["MainPID"] == pid, "the reload restarted mc-control")
    m.sh(f"printf 'CONTROL_URLS=http://127.0.0.1:8080\\nNODE_ID=node-a\\nAGENT_TOKEN={AGENT_TOKEN}\\nDRIVER=exec\\n' "
         "> /etc/mc/agent.conf && chmod 600 /etc/mc/agent.conf && systemctl start mc-agent.service")

    def node_ready():
        nodes = m.api("/api/nodes")
        return nodes and [n for n in nodes["nodes"] if n["node_id"] == "node-a" and n["state"] == "ready"]
    try:
        wait_until(node_ready, 120, msg="node-a to register")
    except AssertionError:
        print(m.sh("systemctl status --no-pager mc-agent.service mc-control.service; "
                   "journalctl --no-pager -n 40 -u mc-agent -u mc-control", check=False).stdout)
        raise
    check(m.show("mc-fence-keeper.service", "ActiveState")["ActiveState"] == "active", "the fence keeper runs")
    # Starting the agent started its metrics socket (Wants=), and the agent serves on the socket passed.
    check(m.show("mc-agent.socket", "ActiveState")["ActiveState"] == "active", "mc-agent.socket is active")
    metrics = m.sh("curl -sS -f http://127.0.0.1:6884/metrics").stdout
    check('mc_build_info{program="mc-agent"' in metrics, f"the agent's metrics on 127.0.0.1:6884: {metrics[:300]}")

    # Upgrade: dpkg -i of a newer version restarts what runs (the agent: KillMode=process, its tasks
    # stay for the next agent to adopt) and starts nothing unconfigured.
    before = {u: m.show(u, "MainPID")["MainPID"] for u in ("mc-control.service", "mc-agent.service")}
    m.sh("dpkg -i " + " ".join(f"/debs/{f}" for f in sorted(os.listdir(newer))), timeout=300)
    versions = m.sh("dpkg-query -W -f '${Version}\\n' " + " ".join(PACKAGES)).stdout.split()
    check(all(v.endswith(".1") for v in versions), f"versions after the upgrade: {versions}")
    for unit, pid in before.items():
        s = wait_until(lambda: (lambda s: s if s["ActiveState"] == "active" and s["MainPID"] not in ("0", pid)
                                else None)(m.show(unit, "ActiveState", "MainPID")),
                       120, msg=f"{unit} restarted by the upgrade")
        print(f"# {unit}: MainPID {pid} -> {s['MainPID']}")
    check(m.show("mc-agent.service", "KillMode")["KillMode"] == "process", "the agent's tasks outlive it")
    wait_until(lambda: m.api("/api/health") and m.api("/api/health")["status"] == "ok", 120,
               msg="the upgraded control to answer")
    wait_until(node_ready, 120, msg="node-a to be ready after the upgrade")
    # The socket was not restarted (it could not bind while the old agent held it): the new agent has it.
    check(m.show("mc-agent.socket", "ActiveState")["ActiveState"] == "active", "mc-agent.socket after the upgrade")
    metrics = m.sh("curl -sS -f http://127.0.0.1:6884/metrics").stdout
    check("mc_agent_tasks" in metrics, f"the agent's metrics after the upgrade: {metrics[:300]}")
    for unit in ("mc-seeder.socket", "mc-seeder.service"):
        check(m.show(unit, "ActiveState")["ActiveState"] == "inactive", f"{unit} stays down, unconfigured")

    # Purge: configuration and state go, the units go, the users stay.
    m.sh("apt-get purge -y -q " + " ".join(PACKAGES), timeout=300)
    left = m.sh("ls -d /etc/mc /etc/mc/* /var/lib/mc-control /var/lib/mc-agent /var/lib/mc-seeder "
                "/lib/systemd/system/mc-* /etc/systemd/system/*/mc-* 2>/dev/null || true").stdout.split()
    check(not left, f"left after purge: {left}")
    running = m.sh("systemctl list-units --no-legend --plain 'mc-*' | grep -v ' inactive ' || true").stdout.strip()
    check(not running, f"units still loaded and active after purge: {running}")
    ids = m.sh("getent passwd mc-control mc-seeder | cut -d: -f1").stdout.split()
    check(ids == ["mc-control", "mc-seeder"], f"users after purge: {ids}")


# ---------------------------------------------------------------------------------------------------
# The Makefile's remote install, over real ssh

SSH_OPTIONS = ("-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
               "-o ConnectTimeout=10")

# The seed's sample task (tools/demo's), targeted at node-b. The exec driver runs its command on the
# node itself and ignores the image.
SAMPLE_TASK = dict(controltest.SAMPLE_TASK, image="mc-test/busybox:latest")


class Cluster:
    """Machines booted at once from one prepared root, each in a network namespace of its own on one
    private network (mctest.Network) and running sshd that takes the test's key; and an operator host
    on that network (a network namespace only) where make, ssh and mcctl run, as on an administrator's
    workstation. No machine has the packages installed: they arrive over ssh."""

    def __init__(self, names, debs):
        self.net = mctest.Network()
        self.operator = self.net.add_host("operator", net_only=True)
        keys = tmpdir("ssh")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(keys, "id")])
        self.ssh = f"ssh -i {keys}/id {SSH_OPTIONS}"
        first = Machine(names[0])
        first.prepare(debs)
        shutil.rmtree(os.path.join(first.root, "debs"))
        os.makedirs(os.path.join(first.root, "root", ".ssh"), mode=0o700, exist_ok=True)
        shutil.copy(os.path.join(keys, "id.pub"), os.path.join(first.root, "root", ".ssh", "authorized_keys"))
        self.machines = [first] + [Machine(n, template=first) for n in names[1:]]
        for m in self.machines:
            # Its own hostname and machine id (the copies would share the root's); the ssh host keys
            # may stay alike.
            machine_id = os.urandom(16).hex() + "\n"
            for f, text in (("etc/hostname", m.name + "\n"), ("etc/machine-id", machine_id),
                            ("var/lib/dbus/machine-id", machine_id)):
                path = os.path.join(m.root, f)
                if os.path.lexists(path):
                    os.remove(path)
                with open(path, "w") as fd:
                    fd.write(text)
            m.host = self.net.add_host(m.name)
            m.address = m.host.address
            m.start(netns=m.host.netns)
        for m in self.machines:
            m.wait_booted()
            wait_until(lambda: self.operator.run(self.ssh.split() + [f"root@{m.address}", "true"], check=False,
                                                 timeout=30).returncode == 0,
                       120, interval=0.5, msg=f"sshd on {m.name}")

    def __getitem__(self, name):
        return next(m for m in self.machines if m.name == name)

    def make(self, target, debs, fails=False, **vars):
        """make TARGET VAR=value... in the source tree, run on the operator host: its output; with
        fails, it must fail, and its error output is returned."""
        argv = ["make", "-s", "-C", mctest.source_dir(), target] + [f"{k}={v}" for k, v in vars.items()]
        env = dict(os.environ, SSH=self.ssh, DEBS=debs, APT_OPTIONS="--no-install-recommends")
        p = subprocess.run(self.operator.wrap(argv), env=env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        check((p.returncode != 0) == fails,
              f"make {target} exited with {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        return p.stderr if fails else p.stdout

    def mcctl(self, url, token, *args, check_rc=True, timeout=120):
        """The build's mcctl on the operator host, against the control at url."""
        return self.operator.run([mctest.binary("mcctl"), *args], env={"MC_URL": url, "MC_TOKEN": token},
                                 check=check_rc, timeout=timeout)

    def api(self, url, token, path):
        r = self.operator.http("GET", url + path, token=token)
        check(r.status == 200, f"GET {path}: {r.status} {r.text[:300]}")
        return r.json()


def test_remote_install():
    """make install-control on one machine and install-agent on two others (exec driver: no Docker),
    over real ssh from a fourth host, each machine running sshd and systemd as PID 1: from nothing to
    healthy and registered, the agents reaching the control at its address; the seed's sample task
    run on node-b, its output read back; every target again, and nothing restarts; then newer
    packages while a task runs on node-b: the agent restarts, adopts the task, which ends once and
    succeeds; agent-restart, logs-agent, install-seeder and status."""
    need_debs()
    newer = tmpdir("newer")
    for deb in DEBS.values():
        repack_newer(deb, newer)
    t0 = time.monotonic()
    c = Cluster(("control", "node-a", "node-b"),
                list(DEBS.values()) + [os.path.join(newer, f) for f in os.listdir(newer)])
    ctl, nodes = c["control"], (c["node-a"], c["node-b"])
    b = c["node-b"]
    print(f"# three machines booted in {time.monotonic() - t0:.0f}s")
    old = os.path.dirname(next(iter(DEBS.values())))
    url = f"http://{ctl.address}:8080"
    control = dict(HOST=f"root@{ctl.address}", PORT="8080", TIMEOUT="120")
    agents = {m.name: dict(HOST=f"root@{m.address}", CONTROL_URL=url, NODE_ID=m.name, DRIVER="exec",
                           TIMEOUT="120") for m in nodes}

    # A driver the agent does not have: refused before anything is done on the node.
    err = c.make("install-agent", old, fails=True, **dict(agents["node-b"], DRIVER="podman"))
    check("DRIVER" in err and "podman" in err, f"install-agent DRIVER=podman: {err}")
    check(b.sh("test ! -e /var/cache/mc-install && echo untouched").stdout.strip() == "untouched",
          "install-agent with a bad DRIVER did something on the node")

    out = c.make("install-control", old, **control)
    check("healthy" in out, f"install-control: {out}")
    for m in nodes:
        m.writable_cgroups()
        out = c.make("install-agent", old, **agents[m.name])
        check("registered" in out, f"install-agent on {m.name}: {out}")
        conf = m.sh("cat /etc/mc/agent.conf").stdout
        check(f"CONTROL_URLS={url}\n" in conf and "DRIVER=exec\n" in conf, f"{m.name}'s agent.conf: {conf}")
    token = ctl.sh("awk '$1 == \"user\" && $2 == \"mc-install\" { print $3 }' /etc/mc/tokens").stdout.strip()
    check(token, "install-control made the mc-install user token")

    def nodes_ready():
        ready = {n["node_id"] for n in c.api(url, token, "/api/nodes")["nodes"] if n["state"] == "ready"}
        return ready >= {"node-a", "node-b"} or None
    wait_until(nodes_ready, 120, msg="node-a and node-b ready on the control")

    # The sample task, pushed from the operator's host with mcctl, runs on node-b.
    t1 = time.monotonic()
    task_file = os.path.join(tmpdir("task"), "sample.json")
    with open(task_file, "w") as f:
        json.dump(SAMPLE_TASK, f)
    task_id = c.mcctl(url, token, "push", "-f", task_file).stdout.strip()
    p = c.mcctl(url, token, "watch", task_id, check_rc=False)
    task = c.api(url, token, f"/api/tasks/{task_id}")
    check(p.returncode == 0 and task["status"] == "succeeded" and task["attempts"][-1]["node_id"] == "node-b",
          f"the sample task: watch exited {p.returncode} ({p.stderr.strip()}); {task}")
    lines = c.mcctl(url, token, "logs", task_id).stdout.splitlines()
    check("hi-from-A" in lines and any(line.startswith("Linux node-b ") for line in lines),
          f"the sample task's output: {lines}")
    print(f"# the sample task ran on node-b in {time.monotonic() - t1:.1f}s: {lines}")

    pids = {(m.name, u): m.show(u, "MainPID")["MainPID"]
            for m, u in [(ctl, "mc-control.service")] + [(m, "mc-agent.service") for m in nodes]}
    tokens = ctl.sh("cat /etc/mc/tokens").stdout
    for n in ("node-a", "node-b"):
        check(tokens.count(f"agent {n} ") == 1, f"one token for {n}: {tokens}")

    # Again: nothing changes, nothing restarts.
    c.make("install-control", old, **control)
    for m in nodes:
        c.make("install-agent", old, **agents[m.name])
    now = {(m.name, u): m.show(u, "MainPID")["MainPID"]
           for m, u in [(ctl, "mc-control.service")] + [(m, "mc-agent.service") for m in nodes]}
    check(now == pids, f"a second run restarted a daemon: {pids} -> {now}")
    check(ctl.sh("cat /etc/mc/tokens").stdout == tokens, "a second run changed the tokens")
    mode = b.sh("stat -c '%a %U' /etc/mc/agent.conf").stdout.strip()
    check(mode == "600 root", f"agent.conf: {mode}")

    # Newer packages with a task running on node-b. The task counts its starts in a file on node-b
    # (/dev/shm: the machine's, shared by every agent's namespace, where the task's user may write)
    # and runs until the test opens its gate, whatever the upgrade takes.
    starts, gate = "/dev/shm/mc-upgrade-starts", "/dev/shm/mc-upgrade-gate"
    long_task = {"image": "mc-test/busybox:latest", "timeout_sec": 900, "labels": {"target_node": "node-b"},
                 "cmd": ["sh", "-c", f"echo upgrade-task-start; echo $$ >> {starts}; "
                                     f"while [ ! -e {gate} ]; do sleep 0.2; done; echo upgrade-task-end"]}
    with open(task_file, "w") as f:
        json.dump(long_task, f)
    long_id = c.mcctl(url, token, "push", "-f", task_file).stdout.strip()
    wait_until(lambda: c.api(url, token, f"/api/tasks/{long_id}")["status"] == "running" and
               b.sh(f"cat {starts} 2>/dev/null || true").stdout.strip() != "",
               120, msg="the long task to run on node-b")
    agent_pid = b.show("mc-agent.service", "MainPID")["MainPID"]

    t2 = time.monotonic()
    out = c.make("install-agent", newer, **agents["node-b"])
    check("registered" in out, f"install-agent (upgrade): {out}")
    out = c.make("install-control", newer, **control)
    check("healthy" in out, f"install-control (upgrade): {out}")
    print(f"# node-b and the control upgraded in {time.monotonic() - t2:.0f}s")
    for m, pkgs in ((ctl, "mc-control mc-tools"), (b, "mc-agent mc-tools")):
        versions = m.sh(f"dpkg-query -W -f '${{Version}}\\n' {pkgs}").stdout.split()
        check(len(versions) == 2 and all(v.endswith(".1") for v in versions),
              f"versions on {m.name} after the upgrade: {versions}")
    new_pid = b.show("mc-agent.service", "MainPID")["MainPID"]
    check(new_pid not in ("0", agent_pid), f"the upgrade restarted node-b's agent: MainPID {agent_pid} -> {new_pid}")
    check(c.api(url, token, f"/api/tasks/{long_id}")["status"] == "running", "the long task runs through the upgrade")
    wait_until(lambda: b.sh(f"journalctl -q -o cat MC_EVENT=container_adopted TASK_ID={long_id} _PID={new_pid}"
                            ).stdout.strip() != "", 120, msg="the new agent to adopt the long task")

    b.sh(f"touch {gate}")
    p = c.mcctl(url, token, "watch", long_id, check_rc=False, timeout=180)
    task = c.api(url, token, f"/api/tasks/{long_id}")
    check(p.returncode == 0 and task["status"] == "succeeded", f"the long task: watch {p.returncode}; {task}")
    check(task["attempt"] == 1 and len(task["attempts"]) == 1 and task["attempts"][0]["node_id"] == "node-b",
          f"the long task ran once, on node-b: {task['attempt']} {task['attempts']}")
    ran = b.sh(f"cat {starts}").stdout.splitlines()
    check(len(ran) == 1, f"the long task started once: {ran}")
    lines = c.mcctl(url, token, "logs", long_id).stdout.splitlines()
    check(lines == ["upgrade-task-start", "upgrade-task-end"], f"the long task's output: {lines}")

    before = c["node-a"].show("mc-agent.service", "MainPID")["MainPID"]
    c.make("agent-restart", newer, HOST=f"root@{c['node-a'].address}")
    check(c["node-a"].show("mc-agent.service", "MainPID")["MainPID"] != before, "agent-restart restarted the agent")
    logs = c.make("logs-agent", newer, HOST=f"root@{b.address}")
    check("mc-agent" in logs, f"logs-agent: {logs[-500:]}")
    # A seeder on the control's machine: configured, its socket listening.
    out = c.make("install-seeder", newer, HOST=f"root@{ctl.address}", CONTROL_URL=url, TIMEOUT="120")
    check(ctl.show("mc-seeder.socket", "ActiveState")["ActiveState"] == "active", f"install-seeder: {out}")
    status = c.make("status", newer, HOST=f"root@{b.address}")
    check("mc-agent.service" in status and "mc-fence-keeper.service" in status, f"status: {status}")
    print(f"# test_remote_install: {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    mctest.main()
