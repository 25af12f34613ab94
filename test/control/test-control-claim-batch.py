#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Group commit of claims (mc_claim_batch): many nodes claiming at once, each its own thread with its own
token, have their claims answered by shared transactions, and still every task goes exactly once to a
node it fits: its target, its resources within the node's free capacity (two claimers of one node
share that capacity, and a batch may hold both of them), never to a drained node. The queue mixes
untargeted tasks, tasks targeted at a node, tasks too large for the small nodes, and tasks no node may
ever take (targeted at the drained node, or targeted at a node too small for them), which must stay
queued. That batches of several claims did form is read from mc_claim_batch_size."""

import collections
import re
import threading

import mctest
from mctest import check, http
from controltest import USER_TOKEN, Transaction, metric, post_and_leave_open, start_cluster

CPU = 1_000_000_000
MIB = 1 << 20
SMALL_NODES = [f"small-{i:02d}" for i in range(16)]       # 4 CPUs, 8 GiB
BIG_NODES = [f"big-{i:02d}" for i in range(4)]            # 16 CPUs, 64 GiB
DRAINED = "drained-0"
NODES = SMALL_NODES + BIG_NODES + [DRAINED]
CAPACITY = {n: (16 * CPU, 64 << 30) if n in BIG_NODES else (4 * CPU, 8 << 30) for n in NODES}
CLAIMERS_PER_NODE = 2       # two threads of each node: one node twice in a batch
HOLD = 3                    # leases a thread keeps before it finishes its oldest


def task(name, cpus, memory, target=None):
    labels = {"job": "batch"}
    if target:
        labels["target_node"] = target
    return {"id": name, "image": "i", "cmd": ["x"], "labels": labels,
            "resources": {"nano_cpus": cpus, "memory_bytes": memory}}


def queue():
    """(tasks every one of which some node can take, tasks no node may take)."""
    takeable, never = [], []
    for i in range(240):
        takeable.append(task(f"any-{i:04d}", CPU, 512 * MIB))
    for i in range(40):
        # Too large for the small nodes (4 CPUs): only the big ones may take them.
        takeable.append(task(f"large-{i:04d}", 8 * CPU, 4 << 30))
    for i, n in enumerate((SMALL_NODES + BIG_NODES) * 4):
        takeable.append(task(f"for-{n}-{i:04d}", CPU // 2, 256 * MIB, target=n))
    for i in range(10):
        never.append(task(f"drained-{i:04d}", CPU // 2, 256 * MIB, target=DRAINED))
        never.append(task(f"toolarge-{i:04d}", 8 * CPU, 1 << 30, target=SMALL_NODES[i]))
    return takeable, never


def claim_batch_histogram(c):
    text = http("GET", c.url + "/metrics").text
    buckets = {m.group(1): float(m.group(2))
               for m in re.finditer(r'^mc_claim_batch_size_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
    return buckets


def test_concurrent_claims_each_task_once_to_a_node_it_fits():
    # 42 claimers on one address, a new connection per request: over the default cap of 64 at times.
    pg, (c,) = start_cluster(nodes=NODES, env={"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "4096"})
    takeable, never = queue()
    specs = {t["id"]: t for t in takeable + never}
    for t in takeable + never:
        r = c.push(t)
        check(r.status == 201, f"push {t['id']}: {r.status} {r.text}")
    agents = {n: c.agent(n, nano_cpus=CAPACITY[n][0], memory_bytes=CAPACITY[n][1]) for n in NODES}
    for a in agents.values():
        a.register()
    r = http("POST", f"{c.url}/api/nodes/{DRAINED}/drain", {}, token=USER_TOKEN)
    check(r.status == 200, f"drain: {r.status} {r.text}")

    lock = threading.Lock()
    claimed = []                                    # (task id, node)
    held = collections.defaultdict(dict)            # node -> {task id: (cpus, memory)}
    problems = []

    def claimer(node):
        agent = agents[node]
        mine = []                                   # (task id, token), oldest first
        while True:
            r = agent.claim()
            if r.status == 204:
                if not mine:
                    return
                # Nothing fits while it holds its leases: finish one and ask again.
                tid, token = mine.pop(0)
            elif r.status != 200:
                with lock:
                    problems.append(f"{node}: claim answered {r.status} {r.text}")
                return
            else:
                j = r.json()
                t = j["task"]
                spec = specs.get(t["id"])
                cpus, memory = t["resources"]["nano_cpus"], t["resources"]["memory_bytes"]
                with lock:
                    claimed.append((t["id"], node))
                    if spec is None or spec in never:
                        problems.append(f"{node} claimed {t['id']}, which no node may take")
                    target = t["labels"].get("target_node")
                    if target is not None and target != node:
                        problems.append(f"{node} claimed {t['id']}, targeted at {target}")
                    if node == DRAINED:
                        problems.append(f"the drained node claimed {t['id']}")
                    if t["lease"]["node_id"] != node or j["attempt"] != 1 or j["lease_token"] != 1:
                        problems.append(f"{node}: lease of {t['id']}: {j}")
                    # What this node's threads hold by now (a lease is forgotten before its finish is
                    # sent, so this may count less than the database, never more): within capacity.
                    held[node][t["id"]] = (cpus, memory)
                    used = [sum(v[k] for v in held[node].values()) for k in (0, 1)]
                    if used[0] > CAPACITY[node][0] or used[1] > CAPACITY[node][1]:
                        problems.append(f"{node} holds {used} over its capacity {CAPACITY[node]}")
                mine.append((t["id"], j["lease_token"]))
                if len(mine) <= HOLD:
                    continue
                tid, token = mine.pop(0)
            with lock:
                held[node].pop(tid, None)
            f = agent.finish(tid, token)
            if f.status != 200:
                with lock:
                    problems.append(f"{node}: finish {tid}: {f.status} {f.text}")
                return

    threads = [threading.Thread(target=claimer, args=(n,)) for n in NODES for _ in range(CLAIMERS_PER_NODE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    check(not any(t.is_alive() for t in threads), "claimers still running after 300 s")
    check(not problems, "; ".join(problems[:10]))

    ids = [tid for tid, _ in claimed]
    check(len(ids) == len(set(ids)), f"claimed twice: {[k for k, v in collections.Counter(ids).items() if v > 1][:10]}")
    check(set(ids) == {t["id"] for t in takeable},
          f"not claimed: {sorted({t['id'] for t in takeable} - set(ids))[:10]}")
    rows = pg.psql("SELECT t.id, t.status, t.attempt, count(a.*) FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id "
                   "GROUP BY t.id, t.status, t.attempt")
    for tid, status, attempt, n_attempts in rows:
        if tid in {t["id"] for t in never}:
            check((status, attempt, n_attempts) == ("queued", "0", "0"), f"{tid}: {status} attempt {attempt}")
        else:
            check(attempt == "1" and n_attempts == "1", f"{tid}: attempt {attempt}, {n_attempts} attempt rows")
    # The large tasks went to the big nodes only.
    for tid, node in claimed:
        if tid.startswith("large-"):
            check(node in BIG_NODES, f"{tid} went to {node}")

    # The claims did share transactions (42 threads claiming at once, two statements in flight at most).
    h = claim_batch_histogram(c)
    check(h and h["+Inf"] > h["1"], f"no claim batch of more than one claim: {h}")


def test_batch_of_unknown_and_known_nodes():
    """mc_claim_batch itself: one statement for several nodes, an unknown node's claim answers 404, a
    node named twice gets two tasks, and a drained node none."""
    pg, (c,) = start_cluster(nodes=("n-1", "n-2", "n-3"))
    for n in ("n-1", "n-2", "n-3"):
        c.agent(n).register()
    r = http("POST", f"{c.url}/api/nodes/n-3/drain", {}, token=USER_TOKEN)
    check(r.status == 200, f"drain: {r.status} {r.text}")
    for i in range(3):
        check(c.push(task(f"t-{i}", CPU, 512 * MIB)).status == 201, "push")
    rows = pg.psql("SELECT r_i, r_code, r_task, r_token, r_attempt, r_body->'task'->>'id' "
                   "FROM mc_claim_batch(ARRAY['n-1', 'nobody', 'n-1', 'n-3', 'n-2', 'n-2'], 60000, false) ORDER BY r_i")
    got = {int(r[0]): r for r in rows}
    check(sorted(got) == [1, 2, 3, 5], f"rows {rows}")
    check(got[2][1] == "404", f"unknown node: {got[2]}")
    leased = [got[i][2] for i in (1, 3, 5)]
    check(sorted(leased) == ["t-0", "t-1", "t-2"], f"leased {leased}")
    check(all(got[i][1] == "200" and got[i][3] == "1" and got[i][4] == "1" and got[i][5] == got[i][2]
              for i in (1, 3, 5)), f"rows {rows}")
    check(int(pg.psql("SELECT count(*) FROM tasks WHERE lease_node = 'n-1'")[0][0]) == 2, "n-1's two leases")


def test_claim_of_a_client_that_gave_up_takes_no_lease():
    """A claim whose agent closed the connection (gave up waiting) before the claim reached the database
    is dropped: a lease granted then would go to a node that never hears of it, and the task would sit
    leased to nobody until the lease expired. Two claims of node n-a are held in the database (their
    node's claim lock taken by the test), so that n-b's claim waits in the control's queue while its
    client leaves."""
    pg, (c,) = start_cluster(nodes=("n-a", "n-b"))
    for n in ("n-a", "n-b"):
        c.agent(n).register()
    check(c.push(task("for-b", CPU, 512 * MIB, target="n-b")).status == 201, "push")
    # The test holds n-a's claim lock.
    holder = Transaction(pg, "SELECT pg_advisory_xact_lock(hashtext('mc-claim:n-a')); SELECT 'locked';")

    # Two claims of n-a: the control's two claim statements, both waiting for the lock.
    a = c.agent("n-a")
    held = [threading.Thread(target=a.claim, kwargs={"timeout": 120}) for _ in range(2)]
    for t in held:
        t.start()
    mctest.wait_until(lambda: pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0] == "2",
                      60, msg="both claim statements of n-a waiting for its lock")

    # n-b's claim, sent by hand; the client leaves once the control has it queued.
    sock = post_and_leave_open(c, "/api/agents/claim", "n-b", {"node_id": "n-b", "wait_ms": 0})
    mctest.wait_until(lambda: metric(c, "mc_claims_waiting") == 3, 60, msg="n-b's claim queued behind n-a's")
    sock.close()

    holder.commit()
    for t in held:
        t.join(120)

    mctest.wait_until(lambda: metric(c, "mc_claims_abandoned_total") == 1, 60, msg="n-b's claim counted as abandoned")
    check(pg.psql("SELECT status, attempt FROM tasks WHERE id = 'for-b'") == [("queued", "0")],
          f"the task n-b's abandoned claim would have taken: {pg.psql('SELECT status, attempt FROM tasks')}")
    got = c.agent("n-b").claim_task()
    check(got is not None and got[0]["id"] == "for-b" and got[1] == 1, f"n-b's next claim takes it: {got}")


def test_a_claim_behind_a_stuck_batch_goes_after_a_short_wait():
    """While one claim statement runs, a second goes with half as many claims as the running one has,
    or once the first claim waiting for it has waited a few milliseconds (claim.c, may_send), so that
    a statement held up by a lock holds the claims behind it no longer. Here the running statement is
    a batch of three claims whose nodes' rows of node_reserved the test keeps locked, and one claim
    comes: it must be answered while the three still wait."""
    nodes = ("n-a", "n-b", "n-c", "n-d", "n-x", "n-y")
    pg, (c,) = start_cluster(nodes=nodes)
    for n in nodes:
        c.agent(n).register()
        check(c.push(task(f"for-{n}", CPU, 512 * MIB, target=n)).status == 201, f"push for {n}")

    def lock(names):
        rows = ", ".join(f"'{n}'" for n in names)
        return Transaction(pg, f"SELECT count(*) FROM (SELECT 1 FROM node_reserved WHERE node_id IN ({rows}) "
                               "FOR UPDATE) l; SELECT 'locked';")

    def waiting_on_locks():
        """Claim statements waiting for a lock (not the housekeeping's, should it come to wait too)."""
        return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND query LIKE '%mc_claim_batch(%'")[0][0])

    answers, threads = {}, {}

    def start(n):
        threads[n] = threading.Thread(target=lambda: answers.__setitem__(n, c.agent(n).claim(timeout=120)))
        threads[n].start()

    def answered(n):
        threads[n].join(60)
        check(not threads[n].is_alive(), f"{n}'s claim unanswered")
        r = answers[n]
        check(r.status == 200 and r.json()["task"]["id"] == f"for-{n}", f"{n}'s claim: {r.status} {r.text}")

    tx, ty, tabc = lock(["n-x"]), lock(["n-y"]), lock(["n-a", "n-b", "n-c"])
    # Both statements held: n-x's, then n-y's (half of one claim is one).
    start("n-x")
    mctest.wait_until(lambda: waiting_on_locks() == 1, 60, msg="n-x's statement waiting for its row")
    start("n-y")
    mctest.wait_until(lambda: waiting_on_locks() == 2, 60, msg="n-y's statement waiting for its row")
    for n in ("n-a", "n-b", "n-c"):
        start(n)
    mctest.wait_until(lambda: metric(c, "mc_claims_waiting") == 5, 60, msg="three claims behind the two statements")
    # n-y's statement returns; the three behind it go as one batch, which waits for n-a's row.
    ty.commit()
    answered("n-y")
    mctest.wait_until(lambda: waiting_on_locks() == 2, 60, msg="the batch of three waiting for its rows")
    h = claim_batch_histogram(c)
    check(h["4"] - h["2"] == 1, f"one batch of three claims: {h}")
    # n-x's returns: the batch of three is the one statement running, and one claim comes.
    tx.commit()
    answered("n-x")
    start("n-d")
    answered("n-d")
    check(all(threads[n].is_alive() for n in ("n-a", "n-b", "n-c")), "the batch of three is still waiting")
    tabc.commit()
    for n in ("n-a", "n-b", "n-c"):
        answered(n)


mctest.main()
