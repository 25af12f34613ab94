#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Task inputs, end to end: real mc-control and PostgreSQL, real agents (Docker and exec drivers),
seeders serving contents over BitTorrent v2 (test/torrent/mc-swarm-tool seed: the swarm engine's own
server, which mc-seeder embeds; it can also serve a partial content), and the DHT between agents.
The real mc-seeder in front of agents: test/p2p/test-p2p-seeder-agent.py.

- a task with a 64 MiB input at /data/in sees exactly that file (its SHA-256), in Docker and with the
  exec driver ($MC_INPUTS/data/in); the attempt records when the inputs were ready and their size,
  and the agent logs inputs_fetched;
- a second agent fetches the content from the first, found in the DHT;
- no peer: the lease goes back with inputs_unavailable, and after max_attempts the task fails with it;
  a cache smaller than the input: disk_full;
- an agent killed (-9) in the middle of a download resumes it, fetching only what was missing (plus at
  most a piece per peer in flight);
- eviction under the cache limit never takes an input a running task uses;
- a peer serving wrong bytes is banned, and the task still gets the right file.

Conditions are waited for (generous deadlines); what is compared is statuses, codes and event fields,
never the daemon's sentences."""

import hashlib
import os
import re
import signal
import sys

import agenttest as at
import mctest
from mctest import check, wait_until

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "torrent"))
from swarmtest import KIB, MIB, Seeder, make_file  # noqa: E402

import controltest  # noqa: E402


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def register(control, seeder):
    with open(seeder.torrent, "rb") as f:
        r = control.put_content(seeder.id, f.read())
    check(r.status in (200, 201), f"PUT content: {r.status} {r.text}")


FIELD_RE = re.compile(r"\b([A-Z][A-Z0-9_]*)=(\S*)")


def events(log, name):
    """The agent's events of that name, as {FIELD: value} (console lines end with the fields)."""
    out = []
    for line in log.splitlines():
        if f"MC_EVENT={name} " in line or line.endswith(f"MC_EVENT={name}"):
            out.append(dict(FIELD_RE.findall(line)))
    return out


def task_body(node, content, path, cmd, **extra):
    body = {"image": at.IMAGE, "cmd": cmd, "timeout_sec": 300, "labels": {"target_node": node},
            "inputs": [{"content": content, "path": path}]}
    body.update(extra)
    return body


def cache_dir(agent):
    return os.path.join(agent.state_dir, "inputs")


def peer_port(agent):
    m = wait_until(lambda: re.search(r"on peer port (\d+)", agent.log()), 30, msg="the agent's peer port")
    return int(m.group(1))


def check_fetched(agent, tid, content, length, **want):
    ev = [e for e in events(agent.log(), "inputs_fetched") if e.get("TASK_ID") == tid]
    check(ev, f"no inputs_fetched for {tid}:\n{agent.daemon.log_tail()}")
    e = ev[-1]
    check(e["CONTENT_ID"] == content, f"event {e}")
    for k, v in want.items():
        check(v(e[k]) if callable(v) else e[k] == str(v), f"{k} in {e}")
    return e


def run_one(driver, cmd):
    node = at.node_name(f"inp-{driver}")
    pg, (c,) = at.cluster([node])
    path = make_file(64 * MIB, 1)
    s = Seeder(path)
    register(c, s)
    a = at.Agent([c], node, driver=driver, env={"MC_SEEDERS": s.addr}).start()
    tid = at.push(c, task_body(node, s.id, "/data/in", cmd))
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded", f"task: {t}\n{a.daemon.log_tail()}")
    check(sha256(path) in t["result"]["stdout_tail"], f"output: {t['result']}")
    att = t["attempts"][-1]
    check(att["inputs_ready_at"] is not None and att["inputs_bytes"] == 64 * MIB, f"attempt: {att}")
    e = check_fetched(a, tid, s.id, 64 * MIB, MC_SOURCE="peers", MC_PEERS=1,
                      MC_BYTES=lambda v: int(v) >= 64 * MIB,
                      MC_BYTES_SEEDERS=lambda v: int(v) >= 64 * MIB, MC_BYTES_AGENTS=0)
    check(s.addr in e["MC_PEER_BYTES"], f"peers of the fetch: {e}")
    # The cache: the file, read-only, its manifest, nothing half-written.
    d = cache_dir(a)
    check(sorted(os.listdir(d)) == sorted([s.id, s.id + ".torrent"]), f"cache: {os.listdir(d)}")
    check(os.stat(os.path.join(d, s.id)).st_mode & 0o777 == 0o444, "the cache file is not 0444")
    # The same content again: from the cache, fetched once.
    tid2 = at.push(c, task_body(node, s.id, "/other/place", [cmd[0], cmd[1], cmd[2].replace("/data/in", "/other/place")]))
    t2 = at.wait_final(c, tid2, 300)
    check(t2["status"] == "succeeded" and sha256(path) in t2["result"]["stdout_tail"], f"second task: {t2}")
    check_fetched(a, tid2, s.id, 64 * MIB, MC_SOURCE="cache", MC_BYTES=0)
    # /metrics by source: the first task's bytes from the seeder, the second's from the cache.
    m = controltest.input_bytes_metrics(c)
    check(m["seeders"] >= 64 * MIB and m["agents"] == 0 and m["cache"] == 64 * MIB, f"mc_input_bytes_total: {m}")
    return c, a, s


def test_docker_end_to_end():
    c, a, s = run_one("docker", ["sh", "-c", "sha256sum /data/in"])
    # Read-only in the container, whoever the task runs as.
    node = a.node
    tid = at.push(c, task_body(node, s.id, "/data/in", [
        "sh", "-c", "if echo x >> /data/in; then echo input-writable; else echo input-refused; fi"]))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "succeeded" and "input-refused" in t["result"]["stdout_tail"], f"write to the input: {t['result']}")


def test_exec_end_to_end():
    c, a, s = run_one("exec", ["sh", "-c", 'sha256sum "$MC_INPUTS/data/in"'])
    # The job's directory (and its link) went with the job; the cache file stays.
    check(os.path.exists(os.path.join(cache_dir(a), s.id)), "the cache file went with the job")
    # Readable, but neither writable nor removable by the task's user (EXEC_USER), though the
    # directory around it is its own.
    tid = at.push(c, task_body(a.node, s.id, "/data/in", [
        "sh", "-c", 'if echo x >> "$MC_INPUTS/data/in"; then echo input-writable; else echo input-refused; fi; '
                    'if rm -f "$MC_INPUTS/data/in" 2>/dev/null; then echo input-removed; else echo input-kept; fi; '
                    'head -c 1 "$MC_INPUTS/data/in" >/dev/null && echo input-readable']))
    t = at.wait_final(c, tid, 120)
    out = t["result"]["stdout_tail"].split()
    check(t["status"] == "succeeded" and out == ["input-refused", "input-kept", "input-readable"],
          f"the task and its input: {t['result']}")


def test_several_inputs():
    """Three inputs of one task, two downloads at a time (INPUT_FETCHES=2), in nested directories."""
    node = at.node_name("inp-many")
    pg, (c,) = at.cluster([node])
    files = [make_file((i + 1) * MIB, 20 + i) for i in range(3)]
    seeders = [Seeder(p) for p in files]
    for s in seeders:
        register(c, s)
    a = at.Agent([c], node, driver="docker", env={
        "MC_SEEDERS": ",".join(s.addr for s in seeders), "MC_INPUT_FETCHES": "2"}).start()
    paths = ["/a", "/b/c", "/d/e/f"]
    body = task_body(node, seeders[0].id, "/a", ["sh", "-c", "sha256sum " + " ".join(paths)])
    body["inputs"] = [{"content": s.id, "path": p} for s, p in zip(seeders, paths)]
    tid = at.push(c, body)
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded", f"task: {t}")
    for f in files:
        check(sha256(f) in t["result"]["stdout_tail"], f"{f} in {t['result']}")
    check(t["attempts"][-1]["inputs_bytes"] == 6 * MIB, f"attempt: {t['attempts'][-1]}")
    ev = [e for e in events(a.log(), "inputs_fetched") if e.get("TASK_ID") == tid]
    check(sorted(e["INPUT_PATH"] for e in ev) == paths, f"events: {ev}")


def test_second_agent_fetches_from_the_first():
    na, nb = at.node_name("inp-a"), at.node_name("inp-b")
    pg, (c,) = at.cluster([na, nb])
    boot = controltest.start_bootstrap()
    path = make_file(16 * MIB, 2)
    s = Seeder(path)
    register(c, s)
    dht = {"MC_DHT_BOOTSTRAP": boot}
    a = at.Agent([c], na, driver="exec", env=dict(dht, MC_SEEDERS=s.addr)).start()
    b = at.Agent([c], nb, driver="exec", env=dict(dht)).start()
    cmd = ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']
    t = at.wait_final(c, at.push(c, task_body(na, s.id, "/in", cmd)), 300)
    check(t["status"] == "succeeded", f"task on A: {t}")
    # B knows no seeder: only the DHT can name A, which announced the content.
    tid = at.push(c, task_body(nb, s.id, "/in", cmd))
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded" and sha256(path) in t["result"]["stdout_tail"], f"task on B: {t}\n{b.daemon.log_tail()}")
    e = check_fetched(b, tid, s.id, 16 * MIB, MC_BYTES_AGENTS=lambda v: int(v) >= 16 * MIB, MC_BYTES_SEEDERS=0)
    check(f":{peer_port(a)}=" in e["MC_PEER_BYTES"], f"B's peers {e['MC_PEER_BYTES']}, A's port {peer_port(a)}")
    m = controltest.input_bytes_metrics(c)
    check(m["seeders"] >= 16 * MIB and m["agents"] >= 16 * MIB and m["cache"] == 0, f"mc_input_bytes_total: {m}")


def test_no_peer_releases_then_fails():
    node = at.node_name("inp-none")
    pg, (c,) = at.cluster([node])
    s = Seeder(make_file(1 * MIB, 3))
    register(c, s)
    s.stop()
    a = at.Agent([c], node, driver="exec", env={"MC_INPUT_FETCH_TIMEOUT_SEC": "2"}).start()
    tid = at.push(c, task_body(node, s.id, "/in", ["true"], max_attempts=2))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "failed" and t["result"]["reason"].startswith("inputs_unavailable"), f"task: {t}")
    check([x["status"] for x in t["attempts"]] == ["released", "released"], f"attempts: {t['attempts']}")
    ev = [e for e in events(a.log(), "inputs_failed") if e.get("TASK_ID") == tid]
    check(len(ev) == 2 and all(e["MC_CODE"] == "inputs_unavailable" for e in ev), f"events: {ev}")


def test_disk_full():
    node = at.node_name("inp-full")
    pg, (c,) = at.cluster([node])
    s = Seeder(make_file(2 * MIB, 4))
    register(c, s)
    a = at.Agent([c], node, driver="exec", env={"MC_SEEDERS": s.addr, "MC_CACHE_MAX_BYTES": str(1 * MIB)}).start()
    tid = at.push(c, task_body(node, s.id, "/in", ["true"], max_attempts=1))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "failed" and t["result"]["reason"].startswith("disk_full"), f"task: {t}")
    check([x["status"] for x in t["attempts"]] == ["released"], f"attempts: {t['attempts']}")
    ev = [e for e in events(a.log(), "inputs_failed") if e.get("TASK_ID") == tid]
    check(ev and ev[0]["MC_CODE"] == "disk_full", f"events: {ev}")
    check(not [f for f in os.listdir(cache_dir(a)) if not f.endswith(".torrent")], "something was written")


def durable_pieces(state_path):
    try:
        with open(state_path) as f:
            have = next(x for x in f.read().splitlines() if x.startswith("have "))[5:]
    except (OSError, StopIteration):
        return 0
    return sum(bin(int(ch, 16)).count("1") for ch in have)


def test_resume_after_kill():
    node = at.node_name("inp-resume")
    pg, (c,) = at.cluster([node], lease_ttl_ms=4000)
    path = make_file(64 * MIB, 5)      # 2048 pieces of 32 KiB
    half = 1024
    partial = Seeder(path, "--have", f"{half}:{mctest.tmpdir('partial')}")
    register(c, partial)
    full_port = mctest.free_port()
    # Both from the start; the full one only listens once the agent is dead, so that before the kill
    # the agent can have the first half and nothing more.
    a = at.Agent([c], node, driver="exec", env={
        "MC_SEEDERS": f"{partial.addr},127.0.0.1:{full_port}", "MC_INPUT_FETCH_TIMEOUT_SEC": "600"}).start()
    tid = at.push(c, task_body(node, partial.id, "/in", ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']))
    state = os.path.join(cache_dir(a), f".{partial.id}.state")
    wait_until(lambda: durable_pieces(state) == half, 120, msg="the first half on disk")
    a.daemon.kill()
    partial.stop()
    check(not os.path.exists(os.path.join(cache_dir(a), partial.id)), "complete after a half?")

    full = Seeder(path, "--port", str(full_port))
    a.daemon.start()
    a.daemon.wait_ready()
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded" and sha256(path) in t["result"]["stdout_tail"], f"task: {t}\n{a.daemon.log_tail()}")
    piece = 32 * KIB
    e = check_fetched(a, tid, partial.id, 64 * MIB, MC_PIECES_RESUMED=half)
    # Only the missing half, plus at most one piece per peer in flight (one peer here).
    limit = (2048 - half) * piece + 1 * piece
    check(int(e["MC_BYTES"]) <= limit, f"fetched {e['MC_BYTES']} bytes, at most {limit} were needed: {e}")
    os.kill(full.d.pid, signal.SIGUSR1)
    sent = wait_until(lambda: full.stats().get("bytes_sent"), 30, msg="the seeder's stats")
    check(sent <= limit, f"the seeder sent {sent} bytes, at most {limit} were needed")


def test_eviction_spares_inputs_in_use():
    node = at.node_name("inp-evict")
    pg, (c,) = at.cluster([node])
    files = [make_file(2 * MIB, 10 + i) for i in range(3)]
    seeders = [Seeder(p) for p in files]
    for s in seeders:
        register(c, s)
    x, y, z = seeders
    a = at.Agent([c], node, driver="exec", env={
        "MC_SEEDERS": ",".join(s.addr for s in seeders), "MC_CACHE_MAX_BYTES": str(5 * MIB)}).start()
    d = cache_dir(a)
    marker = f"held-{at.RUN}"
    held = at.push(c, task_body(node, x.id, "/x", ["sh", "-c", at.held_cmd(marker, 'sha256sum "$MC_INPUTS/x"')]))
    at.wait_status(c, held, "running", 120)
    t = at.wait_final(c, at.push(c, task_body(node, y.id, "/y", ["true"])), 120)
    check(t["status"] == "succeeded", f"task with y: {t}")
    check(os.path.exists(os.path.join(d, y.id)), "y is not in the cache")
    # x (held, 2 MiB) + y (2 MiB) + z (2 MiB) > 5 MiB: y goes, never x.
    t = at.wait_final(c, at.push(c, task_body(node, z.id, "/z", ["true"])), 120)
    check(t["status"] == "succeeded", f"task with z: {t}")
    names = os.listdir(d)
    check(x.id in names and z.id in names and y.id not in names, f"cache after z: {names}")
    at.release(marker)
    t = at.wait_final(c, held, 120)
    check(t["status"] == "succeeded" and sha256(files[0]) in t["result"]["stdout_tail"], f"held task: {t}")


def agent_prop(bus, name):
    return bus.busctl_json("get-property", "org.mutualcloud.Agent1", "/org/mutualcloud/Agent1",
                           "org.mutualcloud.Agent1", name)["data"]


def test_fetching_state_lease_and_cancel():
    """A fetch that stalls (the only peer has half the content): the task is 'fetching' on D-Bus, its
    lease is renewed meanwhile, and a cancel stops the fetch, reports the task cancelled, and leaves
    the verified half on disk for the next time."""
    node = at.node_name("inp-cancel")
    bus = mctest.PrivateBus()
    pg, (c,) = at.cluster([node], lease_ttl_ms=3000)
    path = make_file(8 * MIB, 7)       # 512 pieces of 16 KiB
    partial = Seeder(path, "--have", f"256:{mctest.tmpdir('partial')}")
    register(c, partial)
    a = at.Agent([c], node, driver="exec", bus=bus, env={
        "MC_SEEDERS": partial.addr, "MC_INPUT_FETCH_TIMEOUT_SEC": "600"}).start()
    bus.wait_name("org.mutualcloud.Agent1")
    tid = at.push(c, task_body(node, partial.id, "/in", ["true"]))
    state = os.path.join(cache_dir(a), f".{partial.id}.state")
    wait_until(lambda: durable_pieces(state) == 256, 120, msg="the half the peer has, on disk")
    check(agent_prop(bus, "FetchingTasks") == 1, "FetchingTasks")
    tasks = at.bus_tasks(bus)
    check(len(tasks) == 1 and tasks[0]["id"] == tid and tasks[0]["state"] == "fetching", f"ListTasks: {tasks}")
    # The lease covers the fetch: renewed while it lasts (its deadline moves on).
    first = c.task(tid)["lease"]["expires_at"]
    wait_until(lambda: c.task(tid)["lease"]["expires_at"] > first, 30, msg="the lease renewed while fetching")
    check(c.task(tid)["status"] == "leased" and c.task(tid)["attempt"] == 1, "the task while fetching")

    r = c.cancel(tid)
    check(r.status == 200, f"cancel: {r.status} {r.text}")
    wait_until(lambda: at.bus_tasks(bus) == [], 60, msg="the agent to let the task go")
    check(agent_prop(bus, "FetchingTasks") == 0, "FetchingTasks after the cancel")
    t = c.task(tid)
    check(t["status"] == "cancelled", f"task: {t}")
    check(durable_pieces(state) == 256 and os.path.exists(os.path.join(cache_dir(a), f".{partial.id}.part")),
          "the verified half did not stay")
    check(not events(a.log(), "inputs_failed"), "a cancel is not a failure")
    # What the agent holds counts against its cache and is served.
    check(agent_prop(bus, "CacheBytes") == 8 * MIB, "CacheBytes")
    check(agent_prop(bus, "PeerPort") == peer_port(a), "PeerPort")


def test_one_download_for_tasks_that_share_a_content():
    node = at.node_name("inp-shared")
    pg, (c,) = at.cluster([node])
    path = make_file(16 * MIB, 8)
    s = Seeder(path)
    register(c, s)
    at.Agent([c], node, driver="exec", env={"MC_SEEDERS": s.addr}).start()
    cmd = ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']
    tids = [at.push(c, task_body(node, s.id, "/in", cmd)) for _ in range(3)]
    for tid in tids:
        t = at.wait_final(c, tid, 300)
        check(t["status"] == "succeeded" and sha256(path) in t["result"]["stdout_tail"], f"task: {t}")
    os.kill(s.d.pid, signal.SIGUSR1)
    sent = wait_until(lambda: s.stats().get("bytes_sent"), 30, msg="the seeder's stats")
    check(sent == 16 * MIB, f"the seeder sent {sent} bytes for three tasks wanting one 16 MiB content")
    # /metrics counts the shared download once (tasks claimed after it ended found it in the cache).
    m = controltest.input_bytes_metrics(c)
    check(m["seeders"] == sent and m["agents"] == 0 and m["cache"] % (16 * MIB) == 0, f"mc_input_bytes_total: {m}")


def test_peer_socket_from_systemd():
    """A socket passed as a socket unit would, named "peer", is the peer port; other agents fetch
    from it."""
    na, nb = at.node_name("inp-sock-a"), at.node_name("inp-sock-b")
    pg, (c,) = at.cluster([na, nb])
    path = make_file(4 * MIB, 9)
    s = Seeder(path)
    register(c, s)
    sock = mctest.listen_socket()
    port = sock.getsockname()[1]
    a = at.Agent([c], na, driver="exec", env={"MC_SEEDERS": s.addr})
    a.daemon.start(listen=[sock], fdnames=["peer"])
    a.daemon.wait_ready()
    check(peer_port(a) == port, f"peer port {peer_port(a)}, passed {port}")
    cmd = ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']
    check(at.wait_final(c, at.push(c, task_body(na, s.id, "/in", cmd)), 120)["status"] == "succeeded", "task on A")
    s.stop()
    b = at.Agent([c], nb, driver="exec", env={"MC_SEEDERS": f"127.0.0.1:{port}"}).start()
    tid = at.push(c, task_body(nb, s.id, "/in", cmd))
    t = at.wait_final(c, tid, 120)
    check(t["status"] == "succeeded" and sha256(path) in t["result"]["stdout_tail"], f"task on B: {t}")
    check_fetched(b, tid, s.id, 4 * MIB, MC_BYTES_SEEDERS=lambda v: int(v) >= 4 * MIB)


def test_hostile_peer_is_banned():
    node = at.node_name("inp-hostile")
    pg, (c,) = at.cluster([node])
    # Large enough that the good seeder cannot be done before the bad one has sent a piece.
    path = make_file(32 * MIB, 6)
    bad = Seeder(path, "--corrupt", "1")
    good = Seeder(path)
    register(c, good)
    a = at.Agent([c], node, driver="exec", env={"MC_SEEDERS": f"{bad.addr},{good.addr}"}).start()
    tid = at.push(c, task_body(node, good.id, "/in", ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']))
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded" and sha256(path) in t["result"]["stdout_tail"], f"task: {t}")
    check_fetched(a, tid, good.id, 32 * MIB, MC_PEERS_BANNED=1)


mctest.main()
