#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Group commit of heartbeats (mc_heartbeat_batch): many nodes heartbeating at once, each its own thread
with its own token, have their heartbeats answered by shared transactions, and each answer is still its
own node's alone: its own leases renewed (each renewal counted once), a lease of a task that does not
exist or that another node holds revoked with the reason, nothing of another node's touched. That
batches of several did form is read from mc_heartbeat_batch_size. Then mc_heartbeat_batch itself: a
node that is not registered answers 404 in the middle of a batch, and a node named twice is renewed
twice. And the database queue's order: renewals before queued work."""

import re
import subprocess
import threading

import mctest
from mctest import check, http
from controltest import Transaction, metric, post_and_leave_open, start_cluster

NODES = [f"hb-{i:02d}" for i in range(24)]
ROUNDS = 15
TASKS_PER_NODE = 2


def task(name, target):
    return {"id": name, "image": "i", "cmd": ["x"], "labels": {"target_node": target},
            "resources": {"nano_cpus": 100_000_000, "memory_bytes": 16 << 20}}


def batch_histogram(c):
    """Batches per bucket of size, and the heartbeats in them all."""
    text = http("GET", c.url + "/metrics").text
    buckets = {m.group(1): float(m.group(2))
               for m in re.finditer(r'^mc_heartbeat_batch_size_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
    total = re.search(r'^mc_heartbeat_batch_size_sum (\S+)$', text, re.M)
    return buckets, float(total.group(1)) if total else None


def test_concurrent_heartbeats_each_answered_for_its_node():
    pg, (c,) = start_cluster(nodes=NODES, env={"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "4096"})
    agents = {n: c.agent(n) for n in NODES}
    leases = {}
    for n, a in agents.items():
        a.register()
        for k in range(TASKS_PER_NODE):
            r = c.push(task(f"{n}-t{k}", n))
            check(r.status == 201, f"push: {r.status} {r.text}")
        leases[n] = []
        for _ in range(TASKS_PER_NODE):
            got = a.claim_task()
            check(got is not None, f"{n} claims its task")
            leases[n].append((got[0]["id"], got[1]))

    problems = []
    lock = threading.Lock()
    NEIGHBOUR = {n: NODES[(i + 1) % len(NODES)] for i, n in enumerate(NODES)}

    def beater(node):
        mine = leases[node]
        stale = (f"{node}-ghost", 1)                             # a task nobody pushed
        theirs = leases[NEIGHBOUR[node]][0]                      # a task another node holds
        for _ in range(ROUNDS):
            j = agents[node].heartbeat(mine + [stale, theirs])
            renewed = sorted(j["renewed"])
            revoked = {(r["task_id"], r["lease_token"]): r["reason"] for r in j["revoked"]}
            want_revoked = {stale: "unknown", theirs: "superseded"}
            with lock:
                if renewed != sorted(t for t, _ in mine):
                    problems.append(f"{node}: renewed {renewed}")
                if revoked != want_revoked:
                    problems.append(f"{node}: revoked {revoked}, want {want_revoked}")

    threads = [threading.Thread(target=beater, args=(n,)) for n in NODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    check(not any(t.is_alive() for t in threads), "heartbeats still running after 300 s")
    check(not problems, "; ".join(problems[:10]))

    # Each lease renewed exactly once per heartbeat of its own node, by nobody else, still its node's.
    rows = pg.psql("SELECT id, lease_node, lease_renewals, lease_token, status FROM tasks")
    check(len(rows) == len(NODES) * TASKS_PER_NODE, f"{len(rows)} tasks")
    for tid, node, renewals, token, status in rows:
        check(tid.startswith(node + "-") and renewals == str(ROUNDS) and token == "1" and status == "leased",
              f"{tid}: node {node}, {renewals} renewals, token {token}, {status}")
    last = pg.psql("SELECT count(*) FROM nodes WHERE last_heartbeat IS NOT NULL AND node_id LIKE 'hb-%'")
    check(last[0][0] == str(len(NODES)), f"nodes with a heartbeat: {last}")

    h, total = batch_histogram(c)
    check(total == len(NODES) * ROUNDS, f"heartbeats in the batches: {total}")
    check(h and h["+Inf"] > h["1"], f"no heartbeat batch of more than one heartbeat: {h}")


def test_batch_function_direct():
    pg, (c,) = start_cluster(nodes=("b-1", "b-2"))
    for n in ("b-1", "b-2"):
        c.agent(n).register()
        r = c.push(task(f"{n}-x", n))
        check(r.status == 201, f"push: {r.status} {r.text}")
        check(c.agent(n).claim_task() is not None, f"{n} claims")
    beats = ('[{"node_id": "b-2", "leases": [{"task_id": "b-2-x", "lease_token": 1}], "draining": true},'
             ' {"node_id": "nobody", "leases": []},'
             ' {"node_id": "b-1", "leases": [{"task_id": "b-1-x", "lease_token": 1}]},'
             ' {"node_id": "b-1", "leases": [{"task_id": "b-1-x", "lease_token": 1}, {"task_id": "b-2-x", "lease_token": 1}]}]')
    rows = pg.psql(f"SELECT r_i, r_code, r_body->'renewed', r_body->'revoked' "
                   f"FROM mc_heartbeat_batch('{beats}'::jsonb, 60000) ORDER BY r_i")
    got = {int(r[0]): r[1:] for r in rows}
    check(sorted(got) == [1, 2, 3, 4], f"rows {rows}")
    check(got[1][0] == "200" and got[1][1] == '["b-2-x"]', f"b-2: {got[1]}")
    check(got[2][0] == "404", f"the node that is not registered: {got[2]}")
    check(got[3][0] == "200" and got[3][1] == '["b-1-x"]', f"b-1: {got[3]}")
    check(got[4][0] == "200" and got[4][1] == '["b-1-x"]' and '"superseded"' in got[4][2], f"b-1 again: {got[4]}")
    counts = dict(pg.psql("SELECT id, lease_renewals FROM tasks"))
    check(counts == {"b-1-x": "2", "b-2-x": "1"}, f"renewals {counts}")
    drain = pg.psql("SELECT node_id, draining FROM nodes ORDER BY node_id")
    check([tuple(r) for r in drain] == [("b-1", "f"), ("b-2", "t")], f"draining {drain}")


def test_heartbeat_of_a_client_that_gave_up_is_dropped():
    """A heartbeat whose agent closed the connection (timed out, and sends another) before the heartbeat
    reached the database is dropped, not committed: under a backlog it would only add work, renewing
    what its successor renews again. The control's two heartbeat statements are held in the database
    (node n-a's row locked by the test), so that n-b's heartbeat waits in the control's queue while its
    client leaves."""
    in_flight = 2  # HEARTBEAT_MAX_IN_FLIGHT
    pg, (c,) = start_cluster(nodes=("n-a", "n-b"))
    for n in ("n-a", "n-b"):
        c.agent(n).register()
    before = pg.psql("SELECT last_heartbeat FROM nodes WHERE node_id = 'n-b'")
    # The test holds n-a's row.
    holder = Transaction(pg, "SELECT 'locked' FROM nodes WHERE node_id = 'n-a' FOR UPDATE;")

    def waiting_statements():
        return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query LIKE '%mc_heartbeat_batch%'")[0][0])

    # n-a's heartbeats one after another, so that each is a statement of its own, all waiting.
    a = c.agent("n-a")
    answers = []
    held = []
    for i in range(in_flight):
        t = threading.Thread(target=lambda: answers.append(a.call("/api/agents/heartbeat", {
            "node_id": "n-a", "leases": [], "draining": False}, timeout=120)))
        t.start()
        held.append(t)
        mctest.wait_until(lambda: waiting_statements() == i + 1, 60, msg=f"{i + 1} heartbeat statements waiting")

    # n-b's heartbeat, sent by hand; the client leaves once the control has queued it.
    sock = post_and_leave_open(c, "/api/agents/heartbeat", "n-b", {"node_id": "n-b", "leases": [], "draining": False})
    mctest.wait_until(lambda: metric(c, "mc_heartbeats_queued") == 1, 60, msg="n-b's heartbeat queued")
    sock.close()

    holder.commit()
    for t in held:
        t.join(120)
    check(len(answers) == in_flight and all(r.status == 200 for r in answers),
          f"n-a's heartbeats: {[(r.status, r.text) for r in answers]}")
    mctest.wait_until(lambda: metric(c, "mc_heartbeats_abandoned_total") == 1, 60,
                      msg="n-b's heartbeat counted as abandoned")
    check(metric(c, "mc_heartbeats_queued") == 0, "nothing left queued")
    check(pg.psql("SELECT last_heartbeat FROM nodes WHERE node_id = 'n-b'") == before,
          "n-b's abandoned heartbeat was committed")
    c.agent("n-b").heartbeat([])
    check(pg.psql("SELECT last_heartbeat FROM nodes WHERE node_id = 'n-b'") != before, "n-b's next heartbeat committed")



def test_renewals_are_served_before_queued_work():
    """The control's database queue serves lease renewals (db_query_urgent, which the heartbeat
    statements use) before whatever else waits, in their own order: on a pool of one connection held
    by a slow query, four ordinary queries and two urgent ones queued in between are answered urgent
    ones first (db-queue-probe, against a real PostgreSQL)."""
    pg = mctest.Postgres().start()
    p = subprocess.run([mctest.binary("db-queue-probe"), pg.dsn], capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"db-queue-probe failed ({p.returncode}): {p.stdout}{p.stderr}")
    order = p.stdout.split()
    check(order == ["slow", "urgent-1", "urgent-2", "normal-1", "normal-2", "normal-3", "normal-4"],
          f"answered in the order {order}")


mctest.main()
