#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Each node's reserved capacity is kept in node_reserved (schema version 8) by the triggers on tasks,
not summed at every claim: after every path that leases a task or ends a lease (claim, start, result,
failure, release, release on the last attempt, cancel of a leased and of a running task, the result
of a cancelled task, expiry, expiry on the last attempt, deletion, a node's removal), and after a run
of concurrent claims, results, releases, cancels and expiries through two replicas, its row equals the
sums recomputed from the leases, GET /api/nodes shows it, and no node holds more than its size. A
database of schema version 7 with leases in it is upgraded with the rows filled from them; one of
version 9 gets the status's domain (version 10) with its triggers as they were."""

import glob
import json
import os
import random
import threading
import time

import mctest
from mctest import Postgres, check, http, wait_until
from controltest import USER_TOKEN, Control, metric, start_cluster

CPU = 1_000_000_000
MIB = 1 << 20

# The row and the sums recomputed from the leases, per registered node, in one snapshot.
RESERVED_VS_LEASES = """
SELECT n.node_id, n.nano_cpus, n.memory_bytes,
       coalesce(r.nano_cpus, 0), coalesce(r.memory_bytes, 0), coalesce(r.leases, 0),
       coalesce(s.cpus, 0), coalesce(s.mem, 0), coalesce(s.n, 0)
  FROM nodes n
  LEFT JOIN node_reserved r ON r.node_id = n.node_id
  LEFT JOIN (SELECT lease_node, sum(nano_cpus) AS cpus, sum(memory_bytes) AS mem, count(*) AS n
               FROM tasks WHERE status IN ('leased', 'running') GROUP BY lease_node) s ON s.lease_node = n.node_id
 ORDER BY n.node_id
"""


def reserved(pg):
    """{node: (reserved cpus, memory, leases)}, after checking each against the leases."""
    out = {}
    for row in pg.psql(RESERVED_VS_LEASES):
        node = row[0]
        size_cpus, size_mem, cpus, mem, n, want_cpus, want_mem, want_n = (int(x) for x in row[1:])
        check((cpus, mem, n) == (want_cpus, want_mem, want_n),
              f"{node}: node_reserved says {cpus} nano_cpus, {mem} bytes, {n} leases; "
              f"its leases sum to {want_cpus}, {want_mem}, {want_n}")
        check(cpus <= size_cpus and mem <= size_mem, f"{node} holds {cpus}/{mem} of {size_cpus}/{size_mem}")
        out[node] = (cpus, mem, n)
    orphans = pg.psql("SELECT count(*) FROM tasks t WHERE t.status IN ('leased', 'running') "
                      "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = t.lease_node)")[0][0]
    check(orphans == "0", f"{orphans} leases of nodes not registered")
    return out


def check_nodes_api(c, want):
    r = http("GET", c.url + "/api/nodes", token=USER_TOKEN)
    check(r.status == 200, f"GET /api/nodes: {r.status} {r.text}")
    for n in r.json()["nodes"]:
        got = (n["reserved"]["nano_cpus"], n["reserved"]["memory_bytes"], n["running_tasks"])
        check(got == want.get(n["node_id"], (0, 0, 0)), f"GET /api/nodes {n['node_id']}: {got}, wanted {want}")


def push(c, cpus=CPU // 2, memory=256 * MIB, **extra):
    body = {"image": "i", "cmd": ["x"], "resources": {"nano_cpus": cpus, "memory_bytes": memory}}
    body.update(extra)
    r = c.push(body)
    check(r.status == 201, f"push: {r.status} {r.text}")
    return r.json()["id"]


def claim(agent, want=None):
    got = agent.claim_task()
    check(got is not None, f"{agent.node} claims")
    if want is not None:
        check(got[0]["id"] == want, f"{agent.node} claimed {got[0]['id']}, wanted {want}")
    return got[0]["id"], got[1]


def ok(r, what):
    check(r.status == 200, f"{what}: {r.status} {r.text}")


def test_every_lease_path_keeps_the_row():
    args = ["--lease-ttl-ms", 1500, "--lease-grace-ms", 0, "--sweep-interval-ms", 50]
    pg, (c,) = start_cluster(nodes=("node-a", "node-b", "node-c"), args=args)
    a = c.agent("node-a", nano_cpus=4 * CPU, memory_bytes=4 << 30)
    b = c.agent("node-b", nano_cpus=2 * CPU, memory_bytes=2 << 30)
    gone = c.agent("node-c", nano_cpus=CPU, memory_bytes=1 << 30)
    for x in (a, b, gone):
        x.register()
    check(reserved(pg) == {"node-a": (0, 0, 0), "node-b": (0, 0, 0), "node-c": (0, 0, 0)},
          "a row per registered node, at zero")

    # Claims, of tasks of different sizes; a start changes nothing.
    t1 = push(c, CPU, 512 * MIB)
    t2 = push(c, 2 * CPU, 1 << 30)
    t3 = push(c, CPU // 2, 256 * MIB)
    l1, l2, l3 = claim(a, t1), claim(a, t2), claim(b, t3)
    check(reserved(pg)["node-a"] == (3 * CPU, 1536 * MIB, 2), "two claims of node-a")
    ok(a.started(*l1), "started")
    check(reserved(pg)["node-a"] == (3 * CPU, 1536 * MIB, 2), "a start changes nothing")
    check_nodes_api(c, reserved(pg))

    # A node's size bounds what it claims, by the row: node-a has 1 CPU free.
    t4 = push(c, 2 * CPU, 256 * MIB)
    check(a.claim_task() is None, "node-a (1 CPU free) must not get a 2-CPU task")

    # A result, a failure.
    ok(a.finish(*l1), "finish")
    check(reserved(pg)["node-a"] == (2 * CPU, 1 << 30, 1), "after a result")
    l4 = claim(a, t4)
    ok(a.finish(*l4, status="failed", exit_code=3), "finish failed")
    ok(a.finish(*l2, status="timed_out", exit_code=137), "finish timed_out")
    check(reserved(pg)["node-a"] == (0, 0, 0), "after a failure and a timeout")

    # A release queues the task again; on its last attempt it fails.
    t5 = push(c, CPU, 128 * MIB, max_attempts=2)
    l5 = claim(a, t5)
    ok(a.release(*l5), "release")
    check(reserved(pg)["node-a"] == (0, 0, 0) and c.task(t5)["status"] == "queued", "released")
    l5 = claim(a, t5)
    check(reserved(pg)["node-a"] == (CPU, 128 * MIB, 1), "claimed again")
    ok(a.release(*l5), "release on the last attempt")
    check(reserved(pg)["node-a"] == (0, 0, 0) and c.task(t5)["status"] == "failed", "failed by its release")

    # Cancels of a leased and of a running task free the node; their results and releases then change
    # nothing.
    t6, t7, t8 = push(c), push(c), push(c)
    l6, l7, l8 = claim(a, t6), claim(a, t7), claim(a, t8)
    ok(a.started(*l7), "started")
    for t in (t6, t7):
        ok(c.cancel(t), f"cancel {t}")
    check(reserved(pg)["node-a"] == (CPU // 2, 256 * MIB, 1), "after two cancels")
    ok(a.finish(*l7, status="failed", exit_code=143), "the cancelled task's result")
    ok(a.release(*l6), "release of the cancelled task")
    check(reserved(pg)["node-a"] == (CPU // 2, 256 * MIB, 1), "a cancelled task's result or release changes nothing")
    ok(a.finish(*l8), "finish")

    # Expiry: node-b stops renewing; its lease goes back to the queue, and on the last attempt fails.
    t9 = push(c, CPU, 256 * MIB, max_attempts=1)
    claim(b, t9)
    check(reserved(pg)["node-b"] == (3 * CPU // 2, 512 * MIB, 2), "node-b's two leases")
    wait_until(lambda: c.task(t3)["status"] == "queued" and c.task(t9)["status"] == "failed",
               timeout=60, msg="node-b's leases expire")
    check(reserved(pg)["node-b"] == (0, 0, 0), "after the expiries")
    l3 = claim(b, t3)
    ok(b.finish(*l3), "finish t3")

    # Ended tasks are deleted; node-c, lost and without leases, is removed with its row.
    for t in (t1, t2, t4, t5, t6, t7, t8, t9):
        r = http("DELETE", f"{c.url}/api/tasks/{t}", token=USER_TOKEN)
        check(r.status == 204, f"DELETE {t}: {r.status} {r.text}")
    l10 = claim(gone, push(c, CPU, 256 * MIB))
    ok(gone.finish(*l10), "node-c's result")
    wait_until(lambda: http("DELETE", f"{c.url}/api/nodes/node-c", token=USER_TOKEN).status == 204,
               timeout=60, msg="node-c removed once lost")
    check(pg.psql("SELECT count(*) FROM node_reserved WHERE node_id = 'node-c'")[0][0] == "0", "its row went with it")
    want = reserved(pg)
    check(want == {"node-a": (0, 0, 0), "node-b": (0, 0, 0)}, f"at the end: {want}")
    check_nodes_api(c, want)
    # A lease counted although its row was deleted by hand: the trigger makes the row again.
    pg.psql("DELETE FROM node_reserved WHERE node_id = 'node-b'")
    claim(b, push(c, CPU, 256 * MIB))
    check(reserved(pg)["node-b"] == (CPU, 256 * MIB, 1), "a row made by the trigger")


def test_concurrent_paths_through_two_replicas():
    """Claimers of four nodes, through two replicas, finish, fail, release, start, or drop (to expire)
    each lease at random, while a user cancels tasks: afterwards every row equals its leases."""
    args = ["--lease-ttl-ms", 1000, "--lease-grace-ms", 0, "--sweep-interval-ms", 20]
    nodes = [f"node-{i}" for i in range(4)]
    pg, controls = start_cluster(nodes=nodes, args=args, replicas=2,
                                 env={"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "4096"})
    agents = {n: [c.agent(n, nano_cpus=3 * CPU, memory_bytes=3 << 30) for c in controls] for n in nodes}
    for n in nodes:
        agents[n][0].register()
    ids = []
    for i in range(300):
        ids.append(push(controls[i % 2], random.choice((CPU // 4, CPU // 2, CPU)), random.choice((64, 256, 512)) * MIB,
                        max_attempts=random.choice((1, 3))))
    stop = time.monotonic() + 20
    problems = []

    def claimer(node, seed):
        rnd = random.Random(seed)
        try:
            while time.monotonic() < stop:
                agent = rnd.choice(agents[node])
                r = agent.claim()
                if r.status == 204:
                    time.sleep(0.05)
                    continue
                if r.status != 200:
                    problems.append(f"claim {node}: {r.status} {r.text}")
                    return
                lease = (r.json()["task"]["id"], r.json()["lease_token"])
                agent = rnd.choice(agents[node])
                what = rnd.choice(("finish", "fail", "release", "start", "drop"))
                if what == "start":
                    agent.started(*lease)
                    agent = rnd.choice(agents[node])
                    what = rnd.choice(("finish", "release", "drop"))
                if what == "finish":
                    r = agent.finish(*lease)
                elif what == "fail":
                    r = agent.finish(*lease, status="failed", exit_code=1)
                elif what == "release":
                    r = agent.release(*lease)
                # A 409 is a lease cancelled or expired meanwhile: nothing to check here.
                if what != "drop" and r.status not in (200, 409):
                    problems.append(f"{what} {lease}: {r.status} {r.text}")
        except Exception as e:  # noqa: BLE001 -- reported by the test, not lost in a thread
            problems.append(f"{node}: {e!r}")

    def canceller():
        rnd = random.Random(7)
        while time.monotonic() < stop:
            r = rnd.choice(controls).cancel(rnd.choice(ids))
            if r.status not in (200, 409):
                problems.append(f"cancel: {r.status} {r.text}")
            time.sleep(0.1)

    threads = [threading.Thread(target=claimer, args=(n, i * 10 + k)) for i, n in enumerate(nodes) for k in range(3)]
    threads.append(threading.Thread(target=canceller))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        reserved(pg)                     # consistent at any moment, not only at rest
        time.sleep(0.5)
    for t in threads:
        t.join()
    check(not problems, f"{len(problems)} problems: {problems[:5]}")
    reserved(pg)
    # The dropped leases expire; then nothing is reserved.
    wait_until(lambda: pg.psql("SELECT count(*) FROM tasks WHERE status IN ('leased', 'running')")[0][0] == "0",
               timeout=60, msg="every lease ended")
    want = reserved(pg)
    check(all(v == (0, 0, 0) for v in want.values()), f"at rest: {want}")
    for c in controls:
        check_nodes_api(c, want)
    ended = pg.psql("SELECT count(*) FROM attempts")[0][0]
    check(int(ended) > 100, f"{ended} leases taken")


def database_at(pg, version, functions=False):
    """The tables as the migrations up to `version` leave them, recorded as mc-control records an
    applied migration (src/control/db.c); functions: and functions.sql on them, as a control of that
    version would have left its triggers."""
    sql = os.path.join(mctest.source_dir(), "src/control/sql")
    for path in sorted(glob.glob(os.path.join(sql, "[0-9][0-9][0-9]-*.sql"))):
        if int(os.path.basename(path)[:3]) <= version:
            with open(path) as f:
                pg.psql(f.read())
    pg.psql("CREATE TABLE mc_schema (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now()); "
            f"INSERT INTO mc_schema SELECT v, 'v' || v FROM generate_series(1, {version}) v")
    if functions:
        with open(os.path.join(sql, "functions.sql")) as f:
            pg.psql(f.read())


def test_upgrade_from_schema_version_7_with_leases():
    pg = Postgres().start()
    database_at(pg, 7)
    pg.psql(f"INSERT INTO nodes (node_id, nano_cpus, memory_bytes) VALUES "
            f"('node-a', {8 * CPU}, {8 << 30}), ('node-b', {4 * CPU}, {4 << 30}), ('node-idle', {CPU}, {1 << 30})")
    spec = json.dumps({"image": "i", "cmd": ["x"]})
    rows = [  # id, status, node, cpus, memory: counted when leased or running
        ("a-leased-1", "leased", "node-a", CPU, 256 * MIB),
        ("a-leased-2", "leased", "node-a", 2 * CPU, 512 * MIB),
        ("a-running", "running", "node-a", CPU // 2, 1 << 30),
        ("a-cancelled", "cancelled", "node-a", 4 * CPU, 4 << 30),
        ("a-succeeded", "succeeded", "node-a", 4 * CPU, 4 << 30),
        ("b-running", "running", "node-b", 3 * CPU, 3 << 30),
        ("queued", "queued", None, CPU, 256 * MIB),
    ]
    for tid, status, node, cpus, mem in rows:
        leased = node is not None
        pg.psql(f"INSERT INTO tasks (id, spec, status, nano_cpus, memory_bytes, attempt, lease_token, lease_node, "
                f"lease_ttl_ms) VALUES ('{tid}', '{spec}', '{status}', {cpus}, {mem}, {1 if leased else 0}, "
                f"{1 if leased else 0}, {repr(node) if leased else 'NULL'}, {15000 if leased else 'NULL'})")
        if leased:
            pg.psql(f"INSERT INTO attempts (task_id, attempt, node_id, lease_token, status) "
                    f"VALUES ('{tid}', 1, '{node}', 1, '{status}')")

    c = Control(pg, nodes=("node-a", "node-b", "node-idle")).start()
    check(http("GET", c.url + "/api/health").json()["schema_version"] >= 8, "upgraded")
    want = {"node-a": (7 * CPU // 2, 256 * MIB + 512 * MIB + (1 << 30), 3), "node-b": (3 * CPU, 3 << 30, 1),
            "node-idle": (0, 0, 0)}
    check(reserved(pg) == want, f"filled from the leases: {reserved(pg)}")
    check_nodes_api(c, want)
    check(pg.psql("SELECT count(*) FROM pg_indexes WHERE indexname = 'tasks_lease_node_idx'")[0][0] == "0",
          "the lease node index is gone")

    # The old leases go on: a result frees its share, and what is free is claimed.
    a = c.agent("node-a", nano_cpus=8 * CPU, memory_bytes=8 << 30)
    a.register()
    ok(a.finish("a-leased-2", 1), "the result of a lease from before the upgrade")
    check(reserved(pg)["node-a"] == (3 * CPU // 2, 256 * MIB + (1 << 30), 2), "after its result")
    claim(a, "queued")
    check(reserved(pg)["node-a"] == (5 * CPU // 2, 512 * MIB + (1 << 30), 3), "after a claim")
    b = c.agent("node-b", nano_cpus=4 * CPU, memory_bytes=4 << 30)
    b.register()
    check(b.claim_task() is None, "nothing queued")
    push(c, 2 * CPU, 256 * MIB, labels={"target_node": "node-b"})
    check(b.claim_task() is None, "node-b has 1 CPU free by its row: no 2-CPU task")


def test_upgrade_from_schema_version_9_status_domain():
    """Schema version 10 checks a task's status by its type (the domain mc_task_status) instead of a
    CHECK on the table. The triggers that name the column are dropped and created again by the
    migration: afterwards each is there once and still fires, and a status outside the list is still
    refused, leaving the row as it was."""
    pg = Postgres().start()
    database_at(pg, 9, functions=True)
    pg.psql(f"INSERT INTO nodes (node_id, nano_cpus, memory_bytes) VALUES ('node-a', {8 * CPU}, {8 << 30})")
    spec = json.dumps({"image": "i", "cmd": ["x"]})
    pg.psql(f"INSERT INTO tasks (id, spec, status, nano_cpus, memory_bytes, attempt, lease_token, lease_node, "
            f"lease_ttl_ms) VALUES ('a-leased', '{spec}', 'leased', {CPU}, {256 * MIB}, 1, 1, 'node-a', 15000)")
    pg.psql("INSERT INTO attempts (task_id, attempt, node_id, lease_token, status) "
            "VALUES ('a-leased', 1, 'node-a', 1, 'leased')")
    pg.psql("INSERT INTO node_reserved (node_id, nano_cpus, memory_bytes, leases) "
            f"VALUES ('node-a', {CPU}, {256 * MIB}, 1)")

    c = Control(pg, nodes=("node-a",)).start()
    check(http("GET", c.url + "/api/health").json()["schema_version"] >= 10, "upgraded")
    check(pg.psql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                  "WHERE attrelid = 'tasks'::regclass AND attname = 'status'") == [("mc_task_status",)],
          "the status is of the domain")
    check(pg.psql("SELECT count(*) FROM pg_constraint WHERE conrelid = 'tasks'::regclass AND contype = 'c'")
          == [("0",)], "no CHECK left on tasks")
    triggers = pg.psql("SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                       "WHERE tgrelid = 'tasks'::regclass AND NOT tgisinternal ORDER BY tgname")
    check([t[0] for t in triggers] == ["mc_task_changed", "mc_task_inserted", "mc_task_reserve_delete",
                                       "mc_task_reserve_update"], f"each trigger once: {triggers}")
    defs = dict(triggers)
    check("UPDATE OF status, updated_at" in defs["mc_task_changed"] and "WHEN" in defs["mc_task_changed"],
          f"mc_task_changed as it was: {defs['mc_task_changed']}")
    check("UPDATE OF status, lease_node, nano_cpus, memory_bytes" in defs["mc_task_reserve_update"],
          f"mc_task_reserve_update as it was: {defs['mc_task_reserve_update']}")

    for bad in ("bogus", "", "QUEUED", "expired"):
        try:
            pg.psql(f"UPDATE tasks SET status = '{bad}' WHERE id = 'a-leased'")
            refused = False
        except AssertionError as e:
            refused = "mc_task_status_check" in str(e)
        check(refused, f"status {bad!r} refused by the domain's constraint")
    check(pg.psql("SELECT status FROM tasks WHERE id = 'a-leased'") == [("leased",)], "the row as it was")

    # The triggers fire: the result of the lease from before frees its share (mc_task_reserve_update),
    # and a push wakes a waiting claim (mc_task_inserted's announcement), which leases it.
    a = c.agent("node-a", nano_cpus=8 * CPU, memory_bytes=8 << 30)
    a.register()
    ok(a.finish("a-leased", 1), "the result of a lease from before the upgrade")
    check(reserved(pg)["node-a"] == (0, 0, 0), "its share freed")
    waiting = mctest.background(a.claim, 20000, 60)
    wait_until(lambda: metric(c, "mc_claims_waiting") == 1, 60, msg="the claim waits")
    tid = push(c, CPU, 256 * MIB)
    r = waiting.get()
    check(r.status == 200 and r.json()["task"]["id"] == tid, f"the waiting claim got the push: {r.status} {r.text}")
    check(reserved(pg)["node-a"] == (CPU, 256 * MIB, 1), "its share reserved")


mctest.main()
