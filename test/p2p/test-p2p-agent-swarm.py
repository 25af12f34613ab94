#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Eight real agents fetch one 256 MiB input at once from one real seeder: each mc-agent (exec driver)
in a host of its own (a network namespace, entered alone so that the driver keeps this machine's
cgroups) with its uplink shaped (tbf), mc-seeder in another host shaped the same, mc-control and a DHT
bootstrap node in a third (PostgreSQL over its unix socket). The agents know the seeder (SEEDERS) and
find each other in the DHT, where each announces what it holds (the seeder too), as in a cluster
(docs/architecture.md, "How agents and seeders find each other").

The eight tasks, one pinned to each node (label target_node), are pushed before the agents start, and
the agents are started together: each claims its task at once, so the downloads overlap. (Were one
done before another started, the later ones would fetch from it all the same: the assertions hold
either way; they are on bytes and digests, never on time.)

- every task succeeds and prints the input's SHA-256;
- the seeder uploaded at most 2.5 times the content: its BytesServed (D-Bus) and what its link sent;
- the agents served each other the rest: the inputs_fetched events' MC_BYTES_AGENTS add up to at
  least (8 - 2.5) contents, and MC_PEER_BYTES name other agents' peer ports.

The shaping makes the seeder's uplink no better than any agent's, as in a cluster, and slow enough
that this machine's cores (a loaded 2-core one) keep up with the network: with one source, the
seeder would send 8 times the content. (MC_TEST_SWARM_RATE=200mbit and MC_TEST_LOG_LEVEL=debug in the
environment change the shaping and the agents' log level, for experiments.)"""

import os
import sys

import mctest
from mctest import Postgres, PrivateBus, check, wait_until

from p2ptest import MIB, HostControl, make_input, memdir

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "agent"))
sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "seeder"))
import agenttest as at  # noqa: E402
import seedertest as st  # noqa: E402

N = 8
SIZE = 256 * MIB
RATE = os.environ.get("MC_TEST_SWARM_RATE", "100mbit")
BOUND = 2.5             # the seeder's upload, in contents
SEEDER_PORT = 6881
PEER_PORT = 6882
DHT_PORT = 6881
DEADLINE = 600          # for all tasks


def test_agents_swarm():
    d = memdir("swarm")
    path, digest = make_input(d, SIZE, seed=21)
    nodes = [at.node_name(f"sw{i + 1}") for i in range(N)]

    net = mctest.Network()
    ctl_host = net.add_host("control", net_only=True)
    seeder_host = net.add_host("seeder", net_only=True)
    agent_hosts = [net.add_host(f"a{i + 1}", net_only=True) for i in range(N)]
    for h in [seeder_host] + agent_hosts:
        h.shape(RATE, burst="256kb", latency="50ms")

    pg = Postgres().start()
    c = HostControl(pg, ctl_host, nodes, env={"MC_LEASE_TTL_MS": "20000", "MC_LEASE_GRACE_MS": "500",
                                              "MC_SWEEP_INTERVAL_MS": "100"}).start()
    boot = mctest.Daemon("mc-dhtget", ["serve", "--port", DHT_PORT, "--bind", ctl_host.address, "-4"],
                         host=ctl_host, name="dht-bootstrap").start()
    boot.wait_ready()
    boot_addr = f"{ctl_host.address}:{DHT_PORT}"

    bus = PrivateBus()
    store = st.Store(bus, env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": c.token, "MC_DHT_BOOTSTRAP": boot_addr},
                     directory=memdir("store"))
    seeder = store.daemon(host=seeder_host, port=SEEDER_PORT).start()
    seeder.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    cid = store.add(path)
    wait_until(lambda: any(e["id"] == cid and e["registration"] == "registered" for e in st.bus_list(bus)), 60,
               msg=f"{cid} registered with the control: {st.bus_list(bus)}")
    seeder_addr = f"{seeder_host.address}:{SEEDER_PORT}"

    cmd = ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']
    tids = [at.push(c, {"image": at.IMAGE, "cmd": cmd, "timeout_sec": 600, "labels": {"target_node": n},
                        "inputs": [{"content": cid, "path": "/in"}]}) for n in nodes]
    agents = [at.Agent([c], n, driver="exec", host=h, env={
        "MC_SEEDERS": seeder_addr, "MC_DHT_BOOTSTRAP": boot_addr, "MC_PEER_PORT": PEER_PORT,
        "MC_INPUT_CACHE_DIR": memdir(f"cache-{h.name}"),
        "MC_LOG_LEVEL": os.environ.get("MC_TEST_LOG_LEVEL", "info")}) for n, h in zip(nodes, agent_hosts)]
    served0 = st.bus_property(bus, "BytesServed")
    tx0, _ = seeder_host.link_bytes()
    for a in agents:
        a.daemon.start()
    for a in agents:
        a.daemon.wait_ready()

    for a, tid in zip(agents, tids):
        t = at.wait_final(c, tid, DEADLINE)
        check(t["status"] == "succeeded", f"task on {a.node}: {t}\n{a.daemon.log_tail()}")
        check(t["result"]["stdout_tail"].split()[0] == digest, f"task on {a.node}: {t['result']}")
    served = st.bus_property(bus, "BytesServed") - served0
    tx1, _ = seeder_host.link_bytes()

    ev = []
    for a, tid in zip(agents, tids):
        e = [x for x in at.events(a.log(), "inputs_fetched") if x.get("TASK_ID") == tid]
        check(len(e) == 1 and e[0]["CONTENT_ID"] == cid and e[0]["MC_SOURCE"] == "peers",
              f"inputs_fetched on {a.node}: {e}")
        ev.append(e[0])
    from_seeder = sum(int(e["MC_BYTES_SEEDERS"]) for e in ev)
    from_agents = sum(int(e["MC_BYTES_AGENTS"]) for e in ev)
    agent_addrs = {f"{h.address}:{PEER_PORT}" for h in agent_hosts}
    # Which agents each one got bytes from (MC_PEER_BYTES: ADDRESS=BYTES,...).
    sources = [{p.rsplit("=", 1)[0] for p in e["MC_PEER_BYTES"].split(",") if p} for e in ev]
    report = (f"seeder: {served / SIZE:.2f} F served (payload), {(tx1 - tx0) / SIZE:.2f} F sent on its link; "
              f"agents got {from_seeder / SIZE:.2f} F from it and {from_agents / SIZE:.2f} F from each other; "
              f"seconds {[e['MC_SECONDS'] for e in ev]}; agents each fetched from "
              f"{[len(s & agent_addrs) for s in sources]} other agents")
    print("# " + report, flush=True)
    check(served <= BOUND * SIZE, f"the seeder served more than {BOUND} F: {report}")
    check(tx1 - tx0 <= BOUND * SIZE, f"the seeder's link sent more than {BOUND} F: {report}")
    check(from_seeder <= served, f"the agents say they got more from the seeder than it served: {report}")
    check(from_agents >= (N - BOUND) * SIZE, f"the agents did not serve each other: {report}")
    check(all(s <= agent_addrs | {seeder_addr} for s in sources), f"unknown peers: {sources}")
    for a in agents:
        a.stop()
    seeder.stop()


mctest.main()
