#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Task inputs between the real daemons, on loopback: mc-seeder to mc-agent, and a peer nobody here
wrote (libtorrent) to mc-agent.

- test_seeder_to_tasks: `mc-seeder add` of a 64 MiB random file on a seeder registered with the
  control (PUT /api/contents/{id}); a task with it as input at /data/in on a Docker agent, and one on
  an exec agent ($MC_INPUTS/data/in), each print the file's SHA-256; every byte came from the seeder
  (the agent's inputs_fetched and the seeder's BytesServed).
- test_libtorrent_to_task: python3-libtorrent 2.0.8 seeds a content (uTP off on its side) and is the
  agent's only seeder (SEEDERS=its listen port); the task sees the right bytes.

What is compared is statuses, digests and event fields and D-Bus counters, never the daemons'
sentences; conditions are waited for with generous deadlines."""

import os
import sys

import mctest
from mctest import PrivateBus, check, tmpdir, wait_until

from p2ptest import MIB, make_input, memdir

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "agent"))
sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "seeder"))
import agenttest as at  # noqa: E402
import seedertest as st  # noqa: E402

try:
    import libtorrent as lt
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")


def task_body(node, content, path, cmd):
    return {"image": at.IMAGE, "cmd": cmd, "timeout_sec": 300, "labels": {"target_node": node},
            "inputs": [{"content": content, "path": path}]}


def fetched_event(agent, tid):
    ev = [e for e in at.events(agent.log(), "inputs_fetched") if e.get("TASK_ID") == tid]
    check(len(ev) == 1, f"inputs_fetched of {tid}: {ev}\n{agent.daemon.log_tail()}")
    return ev[0]


def test_seeder_to_tasks():
    nd, ne = at.node_name("sa-docker"), at.node_name("sa-exec")
    pg, (c,) = at.cluster([nd, ne])
    bus = PrivateBus()
    store = st.Store(bus, env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": at.USER_TOKEN}, directory=memdir("store"))
    seeder = store.daemon().start()
    seeder.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    path, digest = make_input(memdir("input"), 64 * MIB, seed=11)
    cid = store.add(path)
    wait_until(lambda: any(e["id"] == cid and e["registration"] == "registered" for e in st.bus_list(bus)), 60,
               msg=f"{cid} registered with the control: {st.bus_list(bus)}")
    addr = f"127.0.0.1:{st.bus_property(bus, 'PeerPort')}"

    docker = at.Agent([c], nd, driver="docker", env={"MC_SEEDERS": addr}).start()
    exe = at.Agent([c], ne, driver="exec", env={"MC_SEEDERS": addr}).start()
    tids = {docker: at.push(c, task_body(nd, cid, "/data/in", ["sh", "-c", "sha256sum /data/in"])),
            exe: at.push(c, task_body(ne, cid, "/data/in", ["sh", "-c", 'sha256sum "$MC_INPUTS/data/in"']))}
    for a, tid in tids.items():
        t = at.wait_final(c, tid, 300)
        check(t["status"] == "succeeded", f"{a.driver} task: {t}\n{a.daemon.log_tail()}")
        check(t["result"]["stdout_tail"].split()[0] == digest, f"{a.driver} task's output: {t['result']}")
        check(t["attempts"][-1]["inputs_bytes"] == 64 * MIB, f"{a.driver} attempt: {t['attempts'][-1]}")
        e = fetched_event(a, tid)
        check(e["CONTENT_ID"] == cid and e["MC_SOURCE"] == "peers", f"{a.driver}: {e}")
        check(int(e["MC_BYTES_SEEDERS"]) >= 64 * MIB and e["MC_BYTES_AGENTS"] == "0", f"{a.driver}: {e}")
        check(e["MC_PEER_BYTES"].startswith(addr + "="), f"{a.driver}: the seeder is the only peer: {e}")
    # Two agents, one content each time: the seeder sent it twice, at least.
    wait_until(lambda: st.bus_property(bus, "BytesServed") >= 2 * 64 * MIB, 30,
               msg=f"the seeder's BytesServed: {st.bus_property(bus, 'BytesServed')}")
    check(st.bus_property(bus, "PeerViolations") == 0, "the agents broke no rule of the seeder's")
    seeder.stop()


def test_libtorrent_to_task():
    node = at.node_name("sa-lt")
    pg, (c,) = at.cluster([node])
    size = 32 * MIB + 12345             # a short last piece, a short last block
    d = tmpdir("lt-seed")
    path, digest = make_input(d, size, seed=12)
    torrent = os.path.join(d, "input.torrent")
    mctest.run([mctest.binary("mc-torrent-tool"), "torrent", path, torrent])
    h = st.content_hash(path)
    with open(torrent, "rb") as f:
        data = f.read()
    r = c.put_content(h["id"], data)
    check(r.status in (200, 201), f"PUT content: {r.status} {r.text}")

    # libtorrent checks the file against our .torrent (named as the manifest names it) and seeds it.
    sess = st.LtSession()
    save = tmpdir("lt-save")
    os.link(path, os.path.join(save, h["root"]))
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(lt.bdecode(data))
    atp.save_path = save
    lh = sess.s.add_torrent(atp)
    wait_until(lambda: lh.status().is_seeding, 120,
               msg=f"libtorrent seeding (state {lh.status().state}, errors {sess.errors()})")
    addr = f"127.0.0.1:{sess.s.listen_port()}"

    a = at.Agent([c], node, driver="exec", env={"MC_SEEDERS": addr}).start()
    tid = at.push(c, task_body(node, h["id"], "/in", ["sh", "-c", 'sha256sum "$MC_INPUTS/in"']))
    t = at.wait_final(c, tid, 300)
    check(t["status"] == "succeeded", f"task: {t}\n{a.daemon.log_tail()}")
    check(t["result"]["stdout_tail"].split()[0] == digest, f"task's output: {t['result']}")
    e = fetched_event(a, tid)
    check(int(e["MC_BYTES_SEEDERS"]) >= size and e["MC_PEER_BYTES"].startswith(addr + "="),
          f"everything from libtorrent: {e}")
    check(int(lh.status().total_payload_upload) >= size, f"libtorrent uploaded {lh.status().total_payload_upload}")


mctest.main()
