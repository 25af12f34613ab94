#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-agent finds its controls in the DHT: a bootstrap node (`mc-dhtget serve`), two mc-control
replicas on one PostgreSQL announcing themselves there, and an agent given only DHT_BOOTSTRAP and
CLUSTER_NAME (exec driver). It registers and runs a task; the replica it uses is stopped and it carries
on through the other. ControlUrls on D-Bus shows the list, with PropertiesChanged. CONTROL_URLS come
first when both are given; a wrong CLUSTER_NAME finds nothing, says so, and keeps looking; neither
CONTROL_URLS nor DHT_BOOTSTRAP is a configuration error."""

import hashlib
import json
import re

import mctest
from mctest import PrivateBus, Postgres, binary, check, http, run, wait_until
import agenttest as at
from controltest import Control, start_bootstrap, udp_port, write_tokens

NAME = "org.mutualcloud.Agent1"
PATH = "/org/mutualcloud/Agent1"
CONTROL_ENV = {"MC_LEASE_TTL_MS": "6000", "MC_LEASE_GRACE_MS": "500", "MC_SWEEP_INTERVAL_MS": "100"}


def announced_ports(boot, cluster):
    """The HTTP ports announced under the cluster's info-hash, as an independent client sees them."""
    ih = hashlib.sha1(f"mc-control:{cluster}".encode()).hexdigest()
    p = run([binary("mc-dhtget"), "--bootstrap", boot, "-4", "--timeout", "10", "--json", "peers", ih],
            check=False, timeout=60)
    if p.returncode != 0:
        return set()
    return {int(peer.rsplit(":", 1)[1]) for peer in json.loads(p.stdout)["peers"]}


def dht_cluster(nodes, cluster, replicas=2):
    """A bootstrap node, and replicas on one PostgreSQL announcing themselves under `cluster`; returns
    once an independent client finds all of them, so that an agent's first lookup can too."""
    boot = start_bootstrap()
    pg = Postgres().start()
    tokens = write_tokens(tuple(nodes))
    controls = [Control(pg, nodes, tokens=tokens, env=CONTROL_ENV, name=f"mc-control-{i}",
                        args=["--dht-port", udp_port(), "--dht-bootstrap", boot, "--cluster-name", cluster]).start()
                for i in range(replicas)]
    wait_until(lambda: announced_ports(boot, cluster) >= {c.port for c in controls}, timeout=60,
               msg="every replica announced in the DHT")
    return boot, pg, controls


def dht_agent(node, boot, cluster, bus=None, control_urls=None):
    """An agent that knows no control, only the DHT (unless control_urls)."""
    a = at.Agent([], node, driver="exec", bus=bus, env={"MC_DHT_BOOTSTRAP": boot, "MC_CLUSTER_NAME": cluster})
    if control_urls:
        a.daemon.env["MC_CONTROL_URLS"] = ",".join(control_urls)
    else:
        del a.daemon.env["MC_CONTROL_URLS"]
    return a


def prop(bus, name):
    return bus.busctl_json("get-property", NAME, PATH, NAME, name)["data"]


def registered(control, node):
    r = http("GET", control.url + "/api/nodes", token=at.USER_TOKEN)
    check(r.status == 200, f"nodes: {r.status} {r.text}")
    return any(n["node_id"] == node for n in r.json()["nodes"])


def body(text):
    return {"image": at.IMAGE, "cmd": ["sh", "-c", f"echo {text}"], "timeout_sec": 60}


def control_urls_changes(mon):
    """The ControlUrls values announced by PropertiesChanged, oldest first."""
    changes = []
    for m in mon.signals("PropertiesChanged", PATH):
        iface, changed = m["payload"]["data"][0], m["payload"]["data"][1]
        if iface == NAME and "ControlUrls" in changed:
            changes.append(changed["ControlUrls"]["data"])
    return changes


def test_agent_finds_controls_and_fails_over():
    node = at.node_name("node-dht")
    cluster = f"dht-test-{at.RUN}"
    boot, pg, (c0, c1) = dht_cluster([node], cluster)
    bus = PrivateBus()
    mon = bus.monitor()
    a = dht_agent(node, boot, cluster, bus=bus).start()
    bus.wait_name(NAME)

    # Both replicas, each once, in the list the agent fails over in.
    urls = wait_until(lambda: (lambda u: u if sorted(u) == sorted([c0.url, c1.url]) else None)(prop(bus, "ControlUrls")),
                      timeout=120, msg="both replicas in ControlUrls")
    wait_until(lambda: registered(c0, node), timeout=60, msg="the agent registered")
    tid = at.push(c0, body("first-via-dht"))
    t = at.wait_final(c0, tid)
    check(t["status"] == "succeeded" and "first-via-dht" in t["result"]["stdout_tail"], t)

    log = a.log()
    check("MC_EVENT=controls_found" in log and f"CLUSTER_NAME={cluster}" in log, "controls_found in the log")
    found = re.findall(r"MC_EVENT=controls_found.*", log)
    check(any(c0.url in f and c1.url in f for f in found), f"both URLs in a controls_found line: {found}")

    # Stop the replica it talks to; the other one carries it on.
    current = prop(bus, "CurrentControlUrl")
    check(current in urls, f"CurrentControlUrl {current!r} in {urls}")
    used, other = (c0, c1) if current == c0.url else (c1, c0)
    used.stop()
    tid2 = at.push(other, body("second-via-other"))
    t2 = at.wait_final(other, tid2)
    check(t2["status"] == "succeeded" and "second-via-other" in t2["result"]["stdout_tail"], t2)
    check(prop(bus, "CurrentControlUrl") == other.url, "the agent now talks to the other replica")
    check(a.daemon.running, "the agent is still running")

    # The list only grew (the stopped replica is still announced, so it stays, last in line).
    changes = control_urls_changes(mon)
    check(changes and sorted(changes[-1]) == sorted(urls), f"PropertiesChanged for ControlUrls: {changes}")
    a.stop()


def test_configured_urls_come_first():
    """CONTROL_URLS and DHT_BOOTSTRAP together: the configured replica first, the DHT's after it, each once."""
    node = at.node_name("node-both")
    cluster = f"dht-both-{at.RUN}"
    boot, pg, (c0, c1) = dht_cluster([node], cluster)
    bus = PrivateBus()
    dht_agent(node, boot, cluster, bus=bus, control_urls=[c1.url + "/"]).start()
    bus.wait_name(NAME)
    wait_until(lambda: prop(bus, "ControlUrls") == [c1.url, c0.url], timeout=120,
               msg="ControlUrls: the configured replica, then the other one")
    wait_until(lambda: registered(c1, node), timeout=60, msg="the agent registered")
    check(prop(bus, "CurrentControlUrl") == c1.url, "the configured replica is used first")


def test_wrong_cluster_name_finds_nothing():
    node = at.node_name("node-lost")
    boot, pg, (c,) = dht_cluster([node], f"right-{at.RUN}", replicas=1)
    wrong = f"wrong-{at.RUN}"
    a = dht_agent(node, boot, wrong).start()
    # It says so, and keeps looking (the later lookups log at debug level).
    a.daemon.wait_log(f'no control replica is announced for cluster "{wrong}"', timeout=60)
    wait_until(lambda: a.log().count(f'DHT: looking for the controls of cluster "{wrong}"') >= 3, timeout=60,
               msg="the agent looks again")
    log = a.log()
    check("MC_EVENT=controls_not_found" in log and f"CLUSTER_NAME={wrong}" in log, "controls_not_found fields")
    check("check that CLUSTER_NAME is the controls' one" in log, "the message points at CLUSTER_NAME")
    check("registering once the DHT names one" in log, "registration waits for a control")
    check(a.daemon.running, "the agent keeps running")
    check(not registered(c, node), "registered nowhere")
    a.stop()


def test_no_control_and_no_bootstrap_is_a_config_error():
    a = at.Agent([], at.node_name("node-none"), driver="exec")
    del a.daemon.env["MC_CONTROL_URLS"]
    a.daemon.start()
    rc = a.daemon.wait()
    check(rc != 0, f"exit status {rc}")
    log = a.log()
    check("No control to talk to" in log and "DHT_BOOTSTRAP" in log and "CONTROL_URLS" in log, log)


mctest.main()
