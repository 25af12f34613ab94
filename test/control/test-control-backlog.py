#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A claim's cost does not grow with the backlog (schema version 7): with many queued tasks a node cannot
take (targeted at another node, or too large for it) at the head of the queue, a claim still finds the one
task for it, and the claim's statements read a few buffers, not the backlog. Counted by EXPLAIN (ANALYZE,
BUFFERS) of the function itself, which sums what its statements read: deterministic, no timing. A status
no task has is listed likewise. Exactly-once under concurrent claims stays with test-control-replicas and
test-control-leases."""

import json

import mctest
from mctest import check
from controltest import start_cluster

BACKLOG = 20000
CPU = 1_000_000_000
GIB = 1 << 30
# What a claim that walked the backlog read: at least one index entry and heap tuple per task. A claim
# that does not reads tens of buffers (the node, its leases, a few index pages, the row it takes).
MAX_BUFFERS = 300


def insert_backlog(pg, target, nano_cpus, memory_bytes, n=BACKLOG):
    """n queued tasks, oldest first, in one statement."""
    spec = {"image": "i", "cmd": ["x"], "labels": {"target_node": target} if target else {},
            "resources": {"nano_cpus": nano_cpus, "memory_bytes": memory_bytes}}
    labels = json.dumps(spec["labels"])
    pg.psql("INSERT INTO tasks (id, spec, target_node, nano_cpus, memory_bytes, labels) "
            f"SELECT 'backlog-' || lpad(g::text, 6, '0'), '{json.dumps(spec)}'::jsonb, "
            f"{'NULL' if target is None else repr(target)}, {nano_cpus}, {memory_bytes}, '{labels}'::jsonb "
            f"FROM generate_series(1, {n}) g")
    # As autovacuum would after such an insert: the planner knows the backlog is there.
    pg.psql("VACUUM ANALYZE tasks")


def explain_buffers(pg, before, statement):
    """Runs `before`, then EXPLAIN (ANALYZE, BUFFERS) of statement, in one session (so that its plans are
    made by then) and one transaction; returns (buffers read or hit, rows)."""
    out = pg.psql(f"{before}; EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}")
    # psql prints the result of each statement: the plan is the last, the only text starting a line with "[".
    text = "\n" + out[-1][-1]
    plan = json.loads(text[text.rindex("\n["):])[0]["Plan"]
    return plan["Shared Hit Blocks"] + plan["Shared Read Blocks"], plan["Actual Rows"]


def check_claim_reads_little(pg, node, expect_rows):
    # The warm-up claims the same way first, so that every statement of the claim is planned.
    buffers, rows = explain_buffers(pg, f"SELECT count(*) FROM mc_claim('{node}', 60000)",
                                    f"SELECT * FROM mc_claim('{node}', 60000)")
    check(rows == expect_rows, f"{node}'s claim: {rows} rows, expected {expect_rows}")
    check(buffers <= MAX_BUFFERS, f"{node}'s claim read {buffers} buffers with {BACKLOG} queued tasks it cannot take")
    return buffers


def pushed(c, body):
    r = c.push(body)
    check(r.status == 201, f"push: {r.status} {r.text}")
    return r.json()["id"]


def test_claim_finds_its_task_behind_a_backlog_for_another_node():
    pg, (c,) = start_cluster()
    a = c.agent("node-a", nano_cpus=4 * CPU, memory_bytes=8 * GIB)
    b = c.agent("node-b", nano_cpus=4 * CPU, memory_bytes=8 * GIB)
    a.register()
    b.register()
    insert_backlog(pg, "node-a", CPU // 2, GIB // 4)

    check(b.claim_task() is None, "nothing for node-b among node-a's tasks")
    check_claim_reads_little(pg, "node-b", 0)

    tid = pushed(c, {"image": "i", "cmd": ["x"], "labels": {"target_node": "node-b"},
                     "resources": {"nano_cpus": CPU // 2, "memory_bytes": GIB // 4}})
    got = b.claim_task()
    check(got and got[0]["id"] == tid, f"node-b claims the one task for it, behind {BACKLOG}: {got}")
    untargeted = pushed(c, {"image": "i", "cmd": ["x"], "resources": {"nano_cpus": CPU // 2}})
    got = b.claim_task()
    check(got and got[0]["id"] == untargeted, f"node-b claims the untargeted task: {got}")

    # node-a takes its own, oldest first.
    for i in (1, 2):
        got = a.claim_task()
        check(got and got[0]["id"] == f"backlog-{i:06d}", f"node-a's claim {i}: {got and got[0]['id']}")

    # The same through SQL, counting what the claim reads: one task for node-b behind the backlog,
    # claimed after a warm-up claim of another.
    pg.psql("INSERT INTO tasks (id, spec, target_node, nano_cpus, memory_bytes) VALUES "
            "('for-b-1', '{}', 'node-b', 0, 0), ('for-b-2', '{}', 'node-b', 0, 0)")
    buffers, rows = explain_buffers(pg, "SELECT count(*) FROM mc_claim('node-b', 60000)",
                                    "SELECT * FROM mc_claim('node-b', 60000)")
    check(rows == 1 and buffers <= MAX_BUFFERS, f"node-b's claim of its task: {rows} rows, {buffers} buffers")
    check(pg.psql("SELECT string_agg(id, ',' ORDER BY id) FROM tasks WHERE lease_node = 'node-b' "
                  "AND id LIKE 'for-b-%'")[0][0] == "for-b-1,for-b-2", "both taken, once each")


def test_claim_steps_over_tasks_too_large_for_it():
    pg, (c,) = start_cluster()
    small = c.agent("node-a", nano_cpus=4 * CPU, memory_bytes=8 * GIB)
    big = c.agent("node-b", nano_cpus=32 * CPU, memory_bytes=64 * GIB)
    small.register()
    big.register()
    # Half too many CPUs for node-a, half too much memory (with the CPUs node-a has).
    insert_backlog(pg, None, 16 * CPU, GIB, n=BACKLOG // 2)
    pg.psql("UPDATE tasks SET id = 'cpu-' || id")
    insert_backlog(pg, None, CPU, 16 * GIB, n=BACKLOG // 2)

    check(small.claim_task() is None, "node-a can take none of them")
    check_claim_reads_little(pg, "node-a", 0)

    tid = pushed(c, {"image": "i", "cmd": ["x"], "resources": {"nano_cpus": CPU, "memory_bytes": GIB}})
    got = small.claim_task()
    check(got and got[0]["id"] == tid, f"node-a claims the one task that fits: {got}")

    # node-b takes the oldest, whatever its shape.
    got = big.claim_task()
    check(got and got[0]["id"] == "cpu-backlog-000001", f"node-b takes the oldest: {got and got[0]['id']}")


def test_claim_takes_the_oldest_task_that_fits_among_shapes():
    """The shapes are walked by CPU, then memory; the answer is still the oldest that fits the free
    capacity, and the capacity the node's leases hold counts."""
    pg, (c,) = start_cluster()
    a = c.agent("node-a", nano_cpus=4 * CPU, memory_bytes=8 * GIB)
    a.register()

    def push(cpus, mem, target=None):
        body = {"image": "i", "cmd": ["x"], "resources": {"nano_cpus": cpus, "memory_bytes": mem}}
        if target:
            body["labels"] = {"target_node": target}
        return pushed(c, body)

    push(8 * CPU, GIB)                      # too many CPUs
    push(CPU, 16 * GIB)                     # too much memory
    t3 = push(2 * CPU, 2 * GIB)
    t4 = push(CPU // 2, GIB // 2, "node-a")
    push(CPU, 9 * GIB, "node-a")            # too much memory, the node's own
    t6 = push(CPU, GIB)
    t7 = push(CPU // 2, 4 * GIB)
    order = []
    while (got := a.claim_task()) is not None:
        order.append(got[0]["id"])
    # 2 + 0.5 + 1 = 3.5 CPUs and 3.5 GiB leased: t7 (0.5 CPU, 4 GiB) fits the CPUs left and the memory.
    check(order == [t3, t4, t6, t7], f"claimed {order}, expected {[t3, t4, t6, t7]}")
    t8 = push(CPU // 2, GIB // 4)
    check(a.claim_task() is None, f"no CPU left for {t8}")


def test_list_by_a_status_no_task_has_reads_little():
    pg, (c,) = start_cluster()
    insert_backlog(pg, None, CPU, GIB)
    r = c.list("?status=failed&limit=50")
    check(r.status == 200 and r.json()["tasks"] == [] and r.json()["next"] is None, f"{r.status} {r.text}")
    buffers, _ = explain_buffers(pg, "SELECT mc_list('failed', NULL, 50, NULL)",
                                 "SELECT mc_list('failed', NULL, 50, NULL)")
    check(buffers <= MAX_BUFFERS, f"list ?status=failed read {buffers} buffers with {BACKLOG} queued tasks")
    # The page and the cursor still work, with a status and with one after the cursor.
    r = c.list("?status=queued&limit=3")
    page = r.json()
    check([t["id"] for t in page["tasks"]] == ["backlog-020000", "backlog-019999", "backlog-019998"], page)
    r = c.list(f"?status=queued&limit=2&after={page['next']}")
    check([t["id"] for t in r.json()["tasks"]] == ["backlog-019997", "backlog-019996"], r.text)
    listing = f"SELECT mc_list('queued', NULL, 50, {page['next']})"
    buffers, _ = explain_buffers(pg, listing, listing)
    check(buffers <= MAX_BUFFERS, f"a page after the cursor read {buffers} buffers")


mctest.main()
