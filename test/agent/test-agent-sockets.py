#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-agent started through its socket units in a real systemd manager (a private `systemd --user`
with its own journald, loading units/mc-agent.{socket,service} and units/mc-agent-dht.socket as the
build made them for the tests, with drop-ins for the test's ports and settings):

- the first scrape of the metrics socket systemd holds starts the agent, which answers it on that
  socket, not on the METRICS_PORT its configuration names (that disagreement is logged:
  MC_EVENT=passed_socket_overrides_config); its DHT node answers a ping on the UDP socket passed as
  "dht", not on DHT_PORT;
- the metrics keep answering across the agent's stop, start and restart (the socket stays, a scrape
  waits in the backlog and starts the agent again), and the DHT node keeps its port;
- stopping the socket leaves the running agent (and so its tasks' leases) alone, and restarting the
  agent brings the socket back (Wants=);
- sockets of the wrong kind under the agent's names, and one under a name it does not know, are
  rejected (MC_EVENT=passed_socket_rejected with FD_NAME= and REASON=), closed rather than kept, and
  the agent runs on with the rest."""

import os
import shutil
import socket
import urllib.error
import urllib.request

import mctest
from mctest import SystemdNamespace, check, free_port, wait_until
import agenttest as at

SERVICE = "mc-agent.service"
SOCKET = "mc-agent.socket"
DHT_SOCKET = "mc-agent-dht.socket"


def unit_text(name):
    with open(os.path.join(mctest.build_dir(), "units", "test", name)) as f:
        return f.read()


def agent_units(ns, node, env=""):
    """The agent's service unit with the test's settings (the exec driver, no control answering: the
    sockets need none), everything else as shipped; as test-agent-unit does."""
    mctest.make_inaccessible_nodes()
    state = f"/var/lib/mc-test-sockets-{at.RUN}-{node}"
    os.makedirs(state, mode=0o711)
    os.chmod(state, 0o711)
    mctest.defer(shutil.rmtree, state, ignore_errors=True)
    ns.add_unit(SERVICE, unit_text(SERVICE))
    os.makedirs(os.path.join(ns.unit_dir, SERVICE + ".d"))
    ns.add_unit(SERVICE + ".d/test.conf", f"""# The test starts the agent more often than systemd's default start limit lets a unit (5 in 10 s).
[Unit]
StartLimitIntervalSec=0

[Service]
Environment=MC_CONTROL_URLS=http://127.0.0.1:{free_port()} MC_NODE_ID={node} MC_AGENT_TOKEN=t MC_BUS=no
Environment=MC_CAPACITY_NANO_CPUS=1000000000 MC_CAPACITY_MEMORY_BYTES=1073741824 MC_LOG_LEVEL=debug
Environment=MC_DRIVER=exec MC_CGROUP_PATH=mc.test/agent-{node} MC_PEER_PORT=0
{env}
StateDirectory=
RuntimeDirectory=
Environment=STATE_DIRECTORY={state}
BindPaths={state}
# As in test-agent-unit.py: the manager's notify socket and the journal's sockets are on the test's
# own tmpfs'es, which the unit's namespace does not get; the build tree may be under /tmp.
BindReadOnlyPaths={ns.runtime_dir}/systemd/notify
BindReadOnlyPaths=/run/systemd/journal
BindReadOnlyPaths={mctest.build_dir()}
Environment=ASAN_OPTIONS=detect_leaks=0
""")
    mctest.defer(ns.systemctl, "stop", SERVICE, check=False)


def socket_unit(ns, name, dropin):
    """A shipped socket unit with its listening lines replaced by the drop-in's."""
    ns.add_unit(name, unit_text(name))
    os.makedirs(os.path.join(ns.unit_dir, name + ".d"))
    ns.add_unit(name + ".d/test.conf", "[Socket]\n" + dropin)


def unit_log(ns):
    log = "\n".join(str(e.get("MESSAGE")) for e in ns.journal(unit=SERVICE))
    st = ns.systemctl("status", SERVICE, SOCKET, check=False).stdout
    return f"{log[-4000:]}\n{st}\n{open(ns.logfile, errors='replace').read()[-2000:]}"


def scrape(port, timeout=120):
    """GET /metrics; the connection may wait in the backlog while systemd starts the agent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        check(r.status == 200, f"/metrics: {r.status}")
        return r.read().decode()


def check_metrics(text):
    check('mc_build_info{program="mc-agent"' in text and "mc_agent_tasks{" in text, f"agent metrics: {text[:300]}")


def dht_ping(port, timeout=60):
    """A KRPC ping (BEP 5) to 127.0.0.1:port; returns the answering node's id."""
    query = b"d1:ad2:id20:" + os.urandom(20) + b"e1:q4:ping1:t2:pq1:y1:qe"

    def answered():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(query, ("127.0.0.1", port))
            try:
                data, _ = s.recvfrom(1500)
            except socket.timeout:
                return None
        return data if b"1:y1:r" in data and b"2:id20:" in data else None
    data = wait_until(answered, timeout, msg=f"a DHT node to answer a ping on UDP port {port}")
    i = data.index(b"2:id20:") + len(b"2:id20:")
    return data[i:i + 20]


def socket_inodes(proto, port):
    """Inodes of the listening TCP (or the UDP) sockets bound to port on any address (/proc/net/tcp,
    udp and their IPv6 files); not connections."""
    inodes = set()
    for name in (proto, proto + "6"):
        with open(f"/proc/net/{name}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0"
                        and (proto == "udp" or fields[3] == "0A")):
                    inodes.add(fields[9])
    return inodes


def fd_inodes(pid):
    """The socket inodes process pid holds."""
    out = set()
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def main_pid(ns):
    return int(ns.show(SERVICE, "MainPID"))


def connect_refused(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_units_verify():
    d = os.path.join(mctest.build_dir(), "units", "test")
    p = mctest.run(["systemd-analyze", "verify"] + [os.path.join(d, u) for u in (SOCKET, DHT_SOCKET, SERVICE)],
                   check=False)
    check(p.returncode == 0 and p.stderr.strip() == "", f"systemd-analyze verify: {p.returncode} {p.stderr}")
    sock, dht, service = unit_text(SOCKET), unit_text(DHT_SOCKET), unit_text(SERVICE)
    for line in ("ListenStream=127.0.0.1:6884", "FileDescriptorName=metrics", "WantedBy=sockets.target"):
        check(line in sock, f"{line} in {SOCKET}")
    for line in ("ListenDatagram=0.0.0.0:6883", "FileDescriptorName=dht", "BindIPv6Only=ipv6-only",
                 "Service=mc-agent.service"):
        check(line in dht, f"{line} in {DHT_SOCKET}")
    # Wanted, never required: a socket that fails or is stopped must not stop the agent and its tasks.
    lines = service.splitlines()
    check("Wants=mc-agent.socket" in lines and "Also=mc-agent.socket" in lines, "the service wants its socket")
    check(not any(line.startswith(("Requires=", "BindsTo=", "PartOf=", "Requisite=")) and "socket" in line
                  for line in lines), "the service is tied to a socket unit")


def test_socket_activation():
    node = at.node_name("node-sockets")
    ns = SystemdNamespace()
    mport, dport = free_port(), free_port(socket.SOCK_DGRAM)
    conf_mport, conf_dport = free_port(), free_port(socket.SOCK_DGRAM)
    # Ports of its own in the configuration, which the passed sockets override.
    agent_units(ns, node, f"Environment=MC_METRICS_PORT={conf_mport} MC_DHT_PORT={conf_dport}")
    socket_unit(ns, SOCKET, f"ListenStream=\nListenStream=127.0.0.1:{mport}\n")
    socket_unit(ns, DHT_SOCKET, f"ListenDatagram=\nListenDatagram=127.0.0.1:{dport}\n")
    ns.daemon_reload()

    ns.systemctl("start", SOCKET, DHT_SOCKET)
    check(ns.show(SOCKET, "Listen") == f"127.0.0.1:{mport} (Stream)", ns.show(SOCKET, "Listen"))
    check(ns.show(SERVICE, "ActiveState") == "inactive", "the agent started before any connection")

    # The first scrape starts the agent (Type=notify), which answers it on the socket systemd passed.
    try:
        check_metrics(scrape(mport))
    except (AssertionError, OSError) as e:
        raise AssertionError(f"{e}\n{unit_log(ns)}")
    check(ns.show(SERVICE, "ActiveState") == "active", "the agent is active")
    check(set(ns.show(SERVICE, "TriggeredBy").split()) == {SOCKET, DHT_SOCKET}, ns.show(SERVICE, "TriggeredBy"))
    pid = main_pid(ns)

    # The configured ports are not opened; the disagreement is logged, once per socket.
    for name, key, value in (("metrics", "METRICS_PORT", conf_mport), ("dht", "DHT_PORT", conf_dport)):
        e = ns.wait_journal(unit=SERVICE, MC_EVENT="passed_socket_overrides_config", FD_NAME=name)
        check(e[0].get("CONFIG_KEY") == key and e[0].get("CONFIG_VALUE") == str(value), e[0])
    check(connect_refused(conf_mport), f"the agent listens on METRICS_PORT={conf_mport} as well")
    check(not socket_inodes("udp", conf_dport), f"a socket on DHT_PORT={conf_dport}")
    check(not ns.journal(unit=SERVICE, MC_EVENT="passed_socket_rejected"), "a passed socket was rejected")

    # The DHT node is on the passed UDP port: it answers there (systemd would not), with its id.
    node_id = dht_ping(dport)
    held = fd_inodes(pid)
    check(socket_inodes("tcp", mport) <= held and socket_inodes("udp", dport) <= held,
          "the agent holds the sockets systemd passed")

    # Stopped, the agent leaves the sockets to systemd; the next scrape waits and starts it again.
    ns.systemctl("stop", SERVICE)
    check(ns.show(SOCKET, "ActiveState") == "active" and ns.show(DHT_SOCKET, "ActiveState") == "active",
          "the sockets went with the agent")
    check_metrics(scrape(mport))
    check(main_pid(ns) not in (0, pid), "a new agent answered")
    pid = main_pid(ns)
    # A restart the same way; the DHT node comes back on the same port, with the same id (its state).
    ns.systemctl("restart", SERVICE)
    check_metrics(scrape(mport))
    check(main_pid(ns) not in (0, pid), "restarted")
    check(dht_ping(dport) == node_id, "the DHT node after the restart")

    # Stopping the socket does not stop the agent, which goes on serving on the socket it holds.
    pid = main_pid(ns)
    ns.systemctl("stop", SOCKET, DHT_SOCKET)
    check(ns.show(SERVICE, "ActiveState") == "active" and main_pid(ns) == pid, "stopping the sockets stopped the agent")
    check_metrics(scrape(mport))
    dht_ping(dport)
    # Restarted, the agent (Wants=) starts its metrics socket again, once the old agent let go of the
    # address, and takes it; the DHT socket, not wanted, stays down: the agent binds DHT_PORT itself.
    ns.systemctl("restart", SERVICE)
    check(ns.show(SOCKET, "ActiveState") == "active", "restarting the agent started its socket")
    check(main_pid(ns) not in (0, pid), "restarted")
    check_metrics(scrape(mport))
    check(socket_inodes("tcp", mport) <= fd_inodes(main_pid(ns)), "the new agent holds the metrics socket")
    wait_until(lambda: socket_inodes("udp", conf_dport) <= fd_inodes(main_pid(ns)) and socket_inodes("udp", conf_dport),
               60, msg=f"the agent to bind DHT_PORT={conf_dport} with no DHT socket passed")
    ns.systemctl("stop", SERVICE, SOCKET, DHT_SOCKET)


def test_without_sockets():
    """Started alone (no socket unit running), the agent opens what its configuration says."""
    node = at.node_name("node-nosock")
    ns = SystemdNamespace()
    conf_mport = free_port()
    agent_units(ns, node, f"Environment=MC_METRICS_PORT={conf_mport}")
    ns.daemon_reload()
    ns.systemctl("start", SERVICE)
    check_metrics(scrape(conf_mport))
    check(not ns.journal(unit=SERVICE, MC_EVENT="passed_socket_overrides_config"), "a socket was passed")


def test_wrong_sockets():
    """Sockets of the wrong kind under "metrics" and "dht" (a stream; a dual-stack IPv6 datagram
    socket), and one under a name the agent does not know: each rejected with its reason and closed;
    the agent runs on, serving the right one."""
    node = at.node_name("node-wrongsock")
    ns = SystemdNamespace()
    mport, wrong_mport, wrong_dport, bogus_port = (free_port(), free_port(socket.SOCK_DGRAM), free_port(),
                                                   free_port())
    dual_port = free_port(socket.SOCK_DGRAM)
    agent_units(ns, node)
    socket_unit(ns, SOCKET, f"ListenStream=\nListenStream=127.0.0.1:{mport}\n")
    # Socket units of an operator's, passing their sockets to the agent under its names.
    # (IPv6 on every address, IPv4 too — BindIPv6Only=default — as dht: the DHT would file IPv4 nodes
    # in its IPv6 table.)
    for unit, listen, name in (("mc-agent-wrong-metrics.socket", f"ListenDatagram=127.0.0.1:{wrong_mport}", "metrics"),
                               ("mc-agent-wrong-dht.socket", f"ListenStream=127.0.0.1:{wrong_dport}", "dht"),
                               ("mc-agent-dual-dht.socket", f"ListenDatagram=[::]:{dual_port}", "dht"),
                               ("mc-agent-bogus.socket", f"ListenStream=127.0.0.1:{bogus_port}", "bogus")):
        ns.add_unit(unit, f"[Socket]\n{listen}\nFileDescriptorName={name}\nService={SERVICE}\n")
    ns.daemon_reload()
    ns.systemctl("start", SOCKET, "mc-agent-wrong-metrics.socket", "mc-agent-wrong-dht.socket",
                 "mc-agent-dual-dht.socket", "mc-agent-bogus.socket")
    ns.systemctl("start", SERVICE)

    try:
        rejected = ns.wait_journal(unit=SERVICE, MC_EVENT="passed_socket_rejected", count=4)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{unit_log(ns)}")
    got = sorted((e.get("FD_NAME"), e.get("REASON"), e.get("SOCKET"), e.get("PRIORITY")) for e in rejected)
    want = sorted([("bogus", "unknown_name", f"TCP listening socket on 127.0.0.1:{bogus_port}", "3"),
                   ("dht", "wrong_type", f"TCP listening socket on 127.0.0.1:{wrong_dport}", "3"),
                   ("dht", "wrong_type", f"UDP socket on [::]:{dual_port}", "3"),
                   ("metrics", "wrong_type", f"UDP socket on 127.0.0.1:{wrong_mport}", "3")])
    check(got == want, f"rejected: {got}")
    check_metrics(scrape(mport))
    check(ns.show(SERVICE, "ActiveState") == "active", "the agent runs on")
    # Closed, not kept: the agent holds the metrics socket and none of the rejected ones (systemd does).
    held = fd_inodes(main_pid(ns))
    check(socket_inodes("tcp", mport) <= held, "the agent holds its metrics socket")
    for proto, port in (("udp", wrong_mport), ("tcp", wrong_dport), ("tcp", bogus_port), ("udp", dual_port)):
        inodes = socket_inodes(proto, port)
        check(inodes and not inodes & held, f"the agent kept the rejected {proto} socket on port {port}")
    # "dht" rejected, and nothing configured: no DHT node.
    check(not ns.journal(unit=SERVICE, MC_EVENT="passed_socket_overrides_config"), "an override was logged")


mctest.main()
