#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Two control replicas on one database: a claim waiting on one is answered by a push on the other
(PostgreSQL NOTIFY), and many agents claiming through both get every task exactly once."""

import collections
import concurrent.futures
import threading

import mctest
from mctest import background, check, wait_until
from controltest import metric, start_cluster


def waiting_claims(c):
    return metric(c, "mc_claims_waiting")


def test_claim_waiting_on_b_gets_task_pushed_to_a():
    pg, (a_ctl, b_ctl) = start_cluster(replicas=2)
    agent = b_ctl.agent("node-a")
    agent.register()
    for round_ in range(3):
        claim = background(agent.claim, 25000, 60)
        wait_until(lambda: waiting_claims(b_ctl) == 1, msg="the claim waits on replica B")
        tid = a_ctl.push({"image": "i", "cmd": ["x"], "labels": {"round": str(round_)}}).json()["id"]
        r = claim.get(60)
        check(r.status == 200, f"round {round_}: claim answered {r.status} {r.text} (a 204 means it timed out)")
        check(r.json()["task"]["id"] == tid, f"round {round_}: got {r.json()['task']['id']}, pushed {tid}")
        check(waiting_claims(b_ctl) == 0, "no claim left waiting")

    # Targeted at another node: the waiting claim is not given it, and keeps waiting.
    claim = background(agent.claim, 3000, 60)
    wait_until(lambda: waiting_claims(b_ctl) == 1, msg="waits again")
    a_ctl.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-b"}})
    r = claim.get(60)
    check(r.status == 204, f"a task for node-b must not go to node-a: {r.status} {r.text}")


def test_20_agents_500_tasks_through_both_replicas_exactly_once():
    nodes = [f"node-{i}" for i in range(20)]
    pg, controls = start_cluster(nodes=nodes, replicas=2)
    agents = [controls[i % 2].agent(n) for i, n in enumerate(nodes)]
    for a in agents:
        a.register()

    claimed = collections.defaultdict(list)
    lock = threading.Lock()
    pushed_all = threading.Event()

    def work(a):
        idle = 0
        while True:
            r = a.claim(wait_ms=1000)
            check(r.status in (200, 204), f"{a.node} claim: {r.status} {r.text}")
            if r.status == 204:
                if pushed_all.is_set():
                    idle += 1
                    if idle >= 2:
                        return
                continue
            idle = 0
            j = r.json()
            tid, token = j["task"]["id"], j["lease_token"]
            with lock:
                claimed[tid].append(a.node)
            f = a.finish(tid, token)
            check(f.status == 200, f"{a.node} finish {tid}: {f.status} {f.text}")

    with concurrent.futures.ThreadPoolExecutor(len(agents)) as ex:
        # The agents are already waiting when the tasks come.
        futures = [ex.submit(work, a) for a in agents]
        ids = []
        with concurrent.futures.ThreadPoolExecutor(4) as pushers:
            for r in pushers.map(lambda i: controls[i % 2].push({"image": "i", "cmd": ["x"], "labels": {"n": str(i)}}),
                                 range(500)):
                check(r.status == 201, f"push: {r.status} {r.text}")
                ids.append(r.json()["id"])
        pushed_all.set()
        for f in futures:
            f.result(timeout=300)

    dupes = {t: n for t, n in claimed.items() if len(n) > 1}
    check(not dupes, f"tasks claimed more than once: {list(dupes.items())[:5]}")
    check(set(claimed) == set(ids), f"claimed {len(claimed)} of {len(ids)}")
    rows = pg.psql("SELECT status, attempt, count(*) FROM tasks GROUP BY 1, 2")
    check(rows == [("succeeded", "1", "500")], f"database: {rows}")
    per_node = collections.Counter(n[0] for n in claimed.values())
    print(f"  tasks per node: {sorted(per_node.values())}")
    check(len(per_node) >= 10, f"work spread over only {len(per_node)} nodes")


mctest.main()
