#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lease rules (docs/architecture.md, "Leases"), driven over HTTP by the test acting as agents. Times are compared
on the database's clock, never the test's: the test asserts order, not speed."""

import time

import mctest
from mctest import Postgres, check, wait_until
from controltest import Control, input_bytes_metrics, start_cluster

# Generous enough that a test renewing every TTL/3 survives a stalled, shared machine: the renewals
# here are the test's own, and a lost one would fail it for reasons that are not the control's.
TTL_MS, GRACE_MS = 3000, 2000
FAST = ["--lease-ttl-ms", TTL_MS, "--lease-grace-ms", GRACE_MS, "--sweep-interval-ms", 100]


def db_time(pg, expr):
    return float(pg.psql(f"SELECT extract(epoch FROM {expr})")[0][0])


def test_claim_respects_target_node_and_capacity():
    pg, (c,) = start_cluster()
    a = c.agent("node-a", nano_cpus=1_000_000_000, memory_bytes=1 << 30)
    b = c.agent("node-b", nano_cpus=4_000_000_000, memory_bytes=8 << 30)
    a.register()
    b.register()

    t1 = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-b"},
                 "resources": {"nano_cpus": 500_000_000}}).json()["id"]
    check(a.claim_task() is None, "node-a must not get a task targeted at node-b")
    got = b.claim_task()
    check(got and got[0]["id"] == t1, f"node-b claims its task: {got}")

    t2 = c.push({"image": "i", "cmd": ["x"], "resources": {"nano_cpus": 2_000_000_000}}).json()["id"]
    check(a.claim_task() is None, "node-a (1 CPU) must not get a 2-CPU task")
    got = b.claim_task()
    check(got and got[0]["id"] == t2, f"node-b takes the 2-CPU task: {got}")
    t2_token = got[1]

    t3 = c.push({"image": "i", "cmd": ["x"], "resources": {"nano_cpus": 2_000_000_000}}).json()["id"]
    check(b.claim_task() is None, "node-b has 1.5 CPUs free: the next 2-CPU task must wait")
    check(b.finish(t2, t2_token).status == 200, "finish t2")
    got = b.claim_task()
    check(got and got[0]["id"] == t3, f"after t2 finished, node-b takes t3: {got}")

    # Memory counts as well as CPU.
    t4 = c.push({"image": "i", "cmd": ["x"], "resources": {"memory_bytes": 2 << 30}}).json()["id"]
    check(a.claim_task() is None, "node-a (1 GiB) must not get a 2 GiB task")
    check(b.claim_task()[0]["id"] == t4, "node-b takes the 2 GiB task")

    big = c.push({"image": "i", "cmd": ["x"], "resources": {"nano_cpus": 16_000_000_000}}).json()["id"]
    check(a.claim_task() is None and b.claim_task() is None, "nobody can take a 16-CPU task")
    wait_until(lambda: c.task(big)["pending_reason"], msg="pending_reason for the oversized task")
    reason = c.task(big)["pending_reason"]
    check("no node is large enough" in reason and "16000000000" in reason, reason)
    check(c.task(big)["status"] == "queued", "it stays queued")


def test_default_ttl():
    """The default lease TTL is 5 s (experiments/failure-ratio: no false recall at 3 and 5 s with 100
    loaded agents), and a node without leases is told to heartbeat every third of it."""
    pg = Postgres().start()
    c = Control(pg, lease_ttl_ms=None).start()
    reg = c.agent("node-a").register()
    check(reg["lease_ttl_ms"] == 5000 and reg["heartbeat_interval_ms"] == 5000 // 3, reg)


def test_heartbeat_extends_and_expiry_requeues_only_after_the_grace():
    pg, (c,) = start_cluster(args=FAST)
    a = c.agent("node-a")
    a.register()
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    task, token = a.claim_task()
    check(task["status"] == "leased" and task["attempt"] == 1 and token >= 1, task)
    first = db_time(pg, f"(SELECT lease_expires_at FROM tasks WHERE id = '{tid}')")

    # Renewing for longer than several TTLs keeps the lease.
    deadline = time.monotonic() + 3 * TTL_MS / 1000
    while time.monotonic() < deadline:
        hb = a.heartbeat([(tid, token)])
        check(hb["renewed"] == [tid] and hb["revoked"] == [], f"heartbeat: {hb}")
        check(hb["lease_ttl_ms"] == TTL_MS, hb)
        time.sleep(TTL_MS / 3000)
    check(c.task(tid)["status"] == "leased", "still leased while renewed")
    last = db_time(pg, f"(SELECT lease_expires_at FROM tasks WHERE id = '{tid}')")
    check(last > first + TTL_MS / 1000, f"the deadline moved forward: {first} -> {last}")

    # Stop renewing: the task goes back to the queue, but not before deadline + grace.
    wait_until(lambda: c.task(tid)["status"] == "queued", timeout=30, msg="re-queued after expiry")
    requeued = db_time(pg, f"(SELECT updated_at FROM tasks WHERE id = '{tid}')")
    last = db_time(pg, f"(SELECT ended_at FROM attempts WHERE task_id = '{tid}' AND attempt = 1)")
    expires = db_time(pg, f"(SELECT leased_at FROM attempts WHERE task_id = '{tid}' AND attempt = 1)")
    check(requeued >= last, "attempt ended when re-queued")
    t = c.task(tid)
    check(t["attempt"] == 1 and t["attempts"][0]["status"] == "expired", t)
    check(pg.psql(f"SELECT lease_expires_at FROM tasks WHERE id = '{tid}'")[0][0] is None, "lease cleared")
    check(expires < requeued, "leased before re-queued")

    # A late heartbeat for the expired lease is told so.
    hb = a.heartbeat([(tid, token)])
    check(hb["renewed"] == [] and hb["revoked"] == [{"task_id": tid, "lease_token": token, "reason": "expired"}], hb)

    task2, token2 = a.claim_task()
    check(task2["id"] == tid and task2["attempt"] == 2 and token2 > token, f"second lease: {task2} {token2}")


def test_requeue_waits_for_deadline_plus_grace():
    """The sweep's condition, checked on the database's own clock: no task is re-queued before its
    deadline plus the grace."""
    pg, (c,) = start_cluster(args=["--lease-ttl-ms", 1000, "--lease-grace-ms", 2000, "--sweep-interval-ms", 50])
    a = c.agent("node-a")
    a.register()
    ids = [c.push({"image": "i", "cmd": ["x"]}).json()["id"] for _ in range(5)]
    deadlines = {}
    for _ in ids:
        task, token = a.claim_task()
        # On a slow machine a task may expire and be claimed again before the loop ends: key by attempt.
        deadlines[task["id"], task["attempt"]] = db_time(
            pg, f"(SELECT lease_expires_at FROM tasks WHERE id = '{task['id']}')")
    wait_until(lambda: all(c.task(t)["status"] == "queued" for t in ids), timeout=60, msg="all re-queued")
    for (t, attempt), deadline in deadlines.items():
        requeued = db_time(pg, f"(SELECT ended_at FROM attempts WHERE task_id = '{t}' AND attempt = {attempt})")
        check(requeued >= deadline + 2.0, f"{t} attempt {attempt} re-queued {requeued - deadline:.3f}s after its deadline")


def test_stale_tokens_get_409_and_change_nothing():
    pg, (c,) = start_cluster(args=FAST)
    a, b = c.agent("node-a"), c.agent("node-b")
    a.register()
    b.register()
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, old = a.claim_task()
    wait_until(lambda: c.task(tid)["status"] == "queued", timeout=30, msg="re-queued")
    task, new = b.claim_task()
    check(task["id"] == tid and new > old, "node-b holds the new lease")

    before = pg.psql(f"SELECT t::text FROM tasks t WHERE id = '{tid}'")
    r = a.started(tid, old)
    check(r.status == 409 and r.json()["field"] == "lease_token", f"stale started: {r.status} {r.text}")
    r = a.finish(tid, old, status="succeeded", exit_code=0, output="from a zombie")
    check(r.status == 409, f"stale finish: {r.status} {r.text}")
    hb = a.heartbeat([(tid, old)])
    check(hb["revoked"] == [{"task_id": tid, "lease_token": old, "reason": "superseded"}], hb)
    # node-b presenting node-a's old token is just as stale.
    check(b.started(tid, old).status == 409, "old token from the new node")
    check(pg.psql(f"SELECT t::text FROM tasks t WHERE id = '{tid}'") == before, "the stale calls changed the task")

    check(b.started(tid, new).status == 200, "current started")
    check(c.task(tid)["status"] == "running", "running")
    r = b.finish(tid, new, status="failed", exit_code=3, reason="exit status 3")
    check(r.status == 200 and r.json()["status"] == "failed", f"finish: {r.status} {r.text}")
    check(b.finish(tid, new).status == 409, "a second finish is refused")
    check(b.started(tid, new).status == 409, "started after finish is refused")
    t = c.task(tid)
    check(t["status"] == "failed" and t["result"]["exit_code"] == 3, t)
    check([x["status"] for x in t["attempts"]] == ["expired", "failed"], t["attempts"])
    check(pg.psql(f"SELECT count(*) FROM task_output WHERE task_id = '{tid}'")[0][0] == "0", "zombie output stored")


def claim_when_there(agent):
    """The next claim that gets a task: a claim that asks once (wait_ms=0) may find the only queued
    row locked by the control's housekeeping for a moment, and is answered 204."""
    return wait_until(agent.claim_task, 30, interval=0.2, msg=f"a task for {agent.node}")


def test_late_result_taken_until_another_lease():
    """A result that comes after its lease expired is taken while nobody has held the task since:
    its run ended within the lease (an agent sends none otherwise), and taking it spares a second
    run. The attempt gets the result's status and keeps when it expired. Once another lease is
    handed out, or the expiry was the last attempt's, it is refused."""
    pg, (c,) = start_cluster(args=FAST)
    a, b = c.agent("node-a"), c.agent("node-b")
    a.register()
    b.register()
    tid = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-a"}}).json()["id"]
    _, token = claim_when_there(a)
    check(a.started(tid, token).status == 200, "started")
    wait_until(lambda: c.task(tid)["status"] == "queued", timeout=30, msg="re-queued after expiry")
    check(b.finish(tid, token, status="succeeded", exit_code=0).status == 409, "another node's late result")
    r = a.finish(tid, token, status="succeeded", exit_code=0, output="late but whole")
    check(r.status == 200 and r.json()["status"] == "succeeded", f"late finish: {r.status} {r.text}")
    t = c.task(tid)
    check(t["status"] == "succeeded" and t["attempt"] == 1 and t["result"]["exit_code"] == 0, t)
    (att,) = t["attempts"]
    check(att["status"] == "succeeded" and att["expired_at"] is not None and att["ended_at"] >= att["expired_at"], att)
    check(a.finish(tid, token).status == 409, "a second finish is refused")
    hb = a.heartbeat([(tid, token)])
    check(hb["revoked"] == [{"task_id": tid, "lease_token": token, "reason": "finished"}], hb)
    check(a.claim_task() is None, "nothing left to claim")

    # Claimed again meanwhile: the new holder's run counts, the late result does not.
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, old = claim_when_there(a)
    wait_until(lambda: c.task(tid)["status"] == "queued", timeout=30, msg="re-queued after expiry")
    _, new = claim_when_there(b)
    check(new > old, "node-b holds a new lease")
    check(a.finish(tid, old, status="succeeded", exit_code=0).status == 409, "late result after another lease")
    t = c.task(tid)
    check(t["status"] != "succeeded" and t["attempt"] == 2 and t["attempts"][0]["status"] == "expired", t)
    check(c.cancel(tid).status == 200, "cancel")    # out of the way of the next claims

    # The last attempt's expiry failed the task: it stays failed.
    tid = c.push({"image": "i", "cmd": ["x"], "max_attempts": 1, "labels": {"target_node": "node-a"}}).json()["id"]
    _, token = claim_when_there(a)
    wait_until(lambda: c.task(tid)["status"] == "failed", timeout=30, msg="failed after its only lease expired")
    check(a.finish(tid, token, status="succeeded", exit_code=0).status == 409, "late result of a lost task")
    t = c.task(tid)
    check(t["status"] == "failed" and t["result"]["reason"] == "lost", t)


def test_started_sent_again_counts_its_inputs_once():
    """An agent whose answer to started was lost sends it again and gets 200 again; the start and its
    inputs' bytes (mc_input_bytes_total) count once, on the replica that recorded it and on another
    that is sent the copy. A started of the next attempt counts again."""
    pg, (c, d) = start_cluster(replicas=2)
    a = c.agent("node-a")
    a.register()
    inputs = {"inputs_bytes": 107, "inputs_bytes_seeders": 100, "inputs_bytes_cache": 7, "inputs_ready_usec": 1}
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, token = claim_when_there(a)
    for control, sent in ((c, "first"), (c, "again"), (d, "again, to the other replica")):
        r = control.agent("node-a").started(tid, token, **inputs)
        check(r.status == 200 and r.json()["status"] == "running", f"started ({sent}): {r.status} {r.text}")
    m = input_bytes_metrics(c)
    check(m == {"seeders": 100, "agents": 0, "cache": 7}, f"the recording replica: {m}")
    m = input_bytes_metrics(d)
    check(m == {"seeders": 0, "agents": 0, "cache": 0}, f"the replica sent the copy: {m}")
    (att,) = c.task(tid)["attempts"]
    check(att["inputs_bytes"] == 107 and att["status"] == "running", att)

    # The next attempt's start is another start.
    check(a.release(tid, token, code="disk_full").status == 200, "release")
    _, token2 = claim_when_there(a)
    check(a.started(tid, token2, **inputs).status == 200, "the second attempt's start")
    m = input_bytes_metrics(c)
    check(m == {"seeders": 200, "agents": 0, "cache": 14}, f"after two starts: {m}")


def test_max_attempts_then_failed_lost():
    pg, (c,) = start_cluster(args=FAST)
    a = c.agent("node-a")
    a.register()
    tid = c.push({"image": "i", "cmd": ["x"], "max_attempts": 2}).json()["id"]
    for attempt in (1, 2):
        got = a.claim_task(wait_ms=10000)
        check(got and got[0]["id"] == tid and got[0]["attempt"] == attempt, f"attempt {attempt}: {got}")
        wait_until(lambda: c.task(tid)["status"] != "leased", timeout=30, msg=f"lease {attempt} expires")
    t = c.task(tid)
    check(t["status"] == "failed" and t["result"]["reason"] == "lost", t)
    check([x["status"] for x in t["attempts"]] == ["expired", "expired"], t["attempts"])
    check(t["finished_at"] is not None, t)
    check(a.claim_task() is None, "a lost task is not claimed again")


def test_cancel():
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    a.register()
    queued = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    r = c.cancel(queued)
    check(r.status == 200 and r.json()["status"] == "cancelled", f"cancel queued: {r.status} {r.text}")
    check(c.cancel(queued).status == 409, "cancelling twice")

    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, token = a.claim_task()
    check(a.started(tid, token).status == 200, "started")
    r = c.cancel(tid)
    check(r.status == 200 and r.json()["status"] == "cancelled", f"cancel running: {r.status} {r.text}")
    hb = a.heartbeat([(tid, token)])
    check(hb["renewed"] == [] and hb["revoked"] == [{"task_id": tid, "lease_token": token, "reason": "cancelled"}], hb)
    # The agent stops the container and reports; the result is kept, the status stays cancelled.
    r = a.finish(tid, token, status="cancelled", exit_code=137, reason="stopped: cancelled", output="partial\n")
    check(r.status == 200 and r.json()["status"] == "cancelled", f"finish after cancel: {r.status} {r.text}")
    t = c.task(tid)
    check(t["status"] == "cancelled" and t["result"]["exit_code"] == 137, t)
    check(a.finish(tid, token, status="cancelled").status == 409, "only one report")
    check(a.claim_task() is None, "a cancelled task is not claimed")


def test_replica_start_waits_one_ttl_before_requeuing():
    """Leases whose TTL ran out while no control was up: the outage does not count against them. The
    result an agent kept in its outbox is still accepted after the control comes back, a holder that
    renews keeps its lease, and re-queuing the others waits a TTL after the start."""
    pg, (c,) = start_cluster(args=["--lease-ttl-ms", 5000, "--lease-grace-ms", 0, "--sweep-interval-ms", 50])
    a = c.agent("node-a")
    a.register()
    done = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    lost = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    kept = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, done_token = a.claim_task()
    a.claim_task()
    _, kept_token = a.claim_task()
    c.kill()
    wait_until(lambda: pg.psql("SELECT bool_and(lease_expires_at < now()) FROM tasks")[0][0] == "t", timeout=30,
               msg="both leases expire while no control runs")
    started = db_time(pg, "now()")
    c.daemon.start()
    c.daemon.wait_ready()
    r = a.finish(done, done_token, output="kept in the outbox\n")
    check(r.status == 200 and r.json()["status"] == "succeeded", f"late result: {r.status} {r.text}")
    check(c.task(done)["attempt"] == 1, "one attempt")
    hb = a.heartbeat([(kept, kept_token)])
    check(hb["renewed"] == [kept] and hb["revoked"] == [], f"a renewal after the outage: {hb}")
    wait_until(lambda: c.task(lost)["status"] == "queued", timeout=30, msg="the other task is re-queued")
    requeued = db_time(pg, f"(SELECT ended_at FROM attempts WHERE task_id = '{lost}')")
    check(requeued >= started + 5.0, f"re-queued {requeued - started:.3f}s after the control started")


def test_database_clock_steps_neither_expire_nor_keep_leases():
    """Expiry follows missed renewals, not the database's wall clock (libfaketime, mctest.FakeClock): a
    lease renewed on time survives the clock a minute ahead, and one no longer renewed expires a TTL
    plus the grace later although the clock went a minute back."""
    clock = mctest.FakeClock()
    pg, (c,) = start_cluster(args=FAST, pg_env=clock.env())
    a = c.agent("node-a")
    a.register()
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    task, token = a.claim_task()
    check(task["lease"]["renewals"] == 0 and task["lease"]["ttl_ms"] == TTL_MS, task["lease"])

    clock.step(60)
    check(db_time(pg, "now()") > time.time() + 50, "the database's clock is a minute ahead")
    deadline = time.monotonic() + 2 * (TTL_MS + GRACE_MS) / 1000
    renewals = 0
    while time.monotonic() < deadline:
        last = time.monotonic()
        hb = a.heartbeat([(tid, token)])
        check(hb["renewed"] == [tid] and hb["revoked"] == [], f"heartbeat after the step: {hb}")
        renewals += 1
        time.sleep(TTL_MS / 3000)
    t = c.task(tid)
    check(t["status"] == "leased" and t["attempt"] == 1 and t["lease"]["renewals"] == renewals, t)

    clock.step(-120)
    check(db_time(pg, "now()") < time.time() - 50, "the database's clock is a minute behind")
    # (The old rule, a deadline on the database's clock, kept it a minute longer.)
    wait_until(lambda: c.task(tid)["status"] == "queued", timeout=40, msg="re-queued once renewals stopped")
    waited = time.monotonic() - last
    check(waited >= (TTL_MS + GRACE_MS) / 1000, f"re-queued {waited:.1f}s after the last renewal")
    check([x["status"] for x in c.task(tid)["attempts"]] == ["expired"], c.task(tid)["attempts"])
    hb = a.heartbeat([(tid, token)])
    check(hb["revoked"] == [{"task_id": tid, "lease_token": token, "reason": "expired"}], hb)


def test_lease_keeps_the_ttl_its_holder_was_given():
    """Replicas with different TTLs: a lease lasts the longest TTL an answer gave its holder (who may
    not have got a later, shorter one), whichever replica sweeps."""
    pg, (short,) = start_cluster(args=["--lease-ttl-ms", 1000, "--lease-grace-ms", 500, "--sweep-interval-ms", 50])
    long = Control(pg, args=["--lease-ttl-ms", 4000, "--lease-grace-ms", 500, "--sweep-interval-ms", 50],
                   tokens=short.tokens, name="mc-control-long").start()
    a = short.agent("node-a")
    a.register()
    tid = short.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, token = a.claim_task()
    b = long.agent("node-a")
    hb = b.heartbeat([(tid, token)])
    check(hb["renewed"] == [tid] and hb["lease_ttl_ms"] == 4000, hb)
    check(short.task(tid)["lease"]["ttl_ms"] == 4000, short.task(tid)["lease"])
    renewed = db_time(pg, "now()")     # before the last renewal, which is what counts
    hb = a.heartbeat([(tid, token)])
    check(hb["renewed"] == [tid] and hb["lease_ttl_ms"] == 1000, hb)
    check(short.task(tid)["lease"]["ttl_ms"] == 4000, f"the longer TTL stays: {short.task(tid)['lease']}")
    wait_until(lambda: short.task(tid)["status"] == "queued", timeout=30, msg="re-queued")
    ended = db_time(pg, f"(SELECT ended_at FROM attempts WHERE task_id = '{tid}')")
    check(ended >= renewed + 4.5, f"re-queued {ended - renewed:.3f}s after a renewal of 4 s (grace 0.5 s)")


def test_two_replicas_expire_each_lease_once():
    """Both replicas watch every lease on their own clocks and either may expire it: the expiry is
    conditional on the lease they saw, so each lease expires once."""
    args = ["--lease-ttl-ms", 1000, "--lease-grace-ms", 0, "--sweep-interval-ms", 20]
    pg, (c1, c2) = start_cluster(args=args, replicas=2)
    a = c1.agent("node-a")
    a.register()
    ids = [c1.push({"image": "i", "cmd": ["x"]}).json()["id"] for _ in range(20)]
    for _ in ids:
        check(a.claim_task() is not None, "claim")
    wait_until(lambda: all(c1.task(t)["status"] == "queued" for t in ids), timeout=60, msg="all re-queued")
    for t in ids:
        task = c1.task(t)
        check(task["attempt"] == 1 and [x["status"] for x in task["attempts"]] == ["expired"], task)
    events = sum(x.daemon.log_text().count("MC_EVENT=lease_expired") for x in (c1, c2))
    check(events == len(ids), f"{events} lease_expired events for {len(ids)} leases")


def test_release_requeues_at_once_then_fails_after_max_attempts():
    """A node that cannot fetch a task's inputs gives the lease back: queued again at once (no wait for
    the TTL), the attempt ended with the node's reason; after max_attempts the task fails with it."""
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    b = c.agent("node-b")
    a.register()
    b.register()
    tid = c.push({"image": "i", "cmd": ["x"], "max_attempts": 2}).json()["id"]
    before = pg.psql("SELECT count(*) FROM attempts")[0][0]

    _, token = a.claim_task()
    # Refused, changing nothing: another node's token, a stale token, an unknown code, a missing one.
    check(b.release(tid, token).status == 409, "node-b cannot release node-a's lease")
    check(a.release(tid, token + 100).status == 409, "a stale token is refused")
    r = a.release(tid, token, code="bored")
    check(r.status == 400 and r.json().get("field") == "code", f"unknown code: {r.status} {r.text}")
    r = a.call(f"/api/tasks/{tid}/release", {"node_id": "node-a", "lease_token": token})
    check(r.status == 400 and r.json().get("field") == "code", f"missing code: {r.status} {r.text}")
    check(c.task(tid)["status"] == "leased", "still leased after the refusals")

    r = a.release(tid, token, reason="no peer delivered within 60 s")
    check(r.status == 200, f"release: {r.status} {r.text}")
    t = r.json()
    check(t["status"] == "queued" and t["lease"] is None, f"queued again at once: {t}")
    att = t["attempts"][0]
    check(att["status"] == "released" and att["reason"] == "inputs_unavailable: no peer delivered within 60 s"
          and att["ended_at"], f"attempt 1: {att}")
    check(a.release(tid, token).status == 409, "releasing twice is a stale lease")

    # The second (last) attempt: inputs ready recorded with the start, then a full disk.
    task, token2 = b.claim_task()
    check(task["id"] == tid and task["attempt"] == 2 and token2 > token, f"attempt 2: {task}")
    ready = int(time.time() * 1_000_000)
    r = b.started(tid, token2, inputs_ready_usec=ready, inputs_bytes=12345)
    check(r.status == 200, f"started: {r.status} {r.text}")
    att = c.task(tid)["attempts"][1]
    check(att["inputs_bytes"] == 12345 and att["inputs_ready_at"], f"inputs recorded: {att}")
    r = b.started(tid, token2, inputs_bytes=-1)
    check(r.status == 400 and r.json().get("field") == "inputs_bytes", f"negative size: {r.status} {r.text}")
    r = b.release(tid, token2, code="disk_full")
    check(r.status == 200, f"release 2: {r.status} {r.text}")
    t = c.task(tid)
    check(t["status"] == "failed" and t["result"]["reason"] == "disk_full" and t["finished_at"],
          f"failed after max_attempts with the node's reason: {t}")
    check(a.claim_task() is None and b.claim_task() is None, "nothing left to claim")
    check(int(pg.psql("SELECT count(*) FROM attempts")[0][0]) == int(before) + 2, "two attempts in all")


def test_release_of_a_running_task_whose_engine_ended_it():
    """engine_lost: the container engine (a dockerd restarted without live-restore) ended the run, not
    the task. The lease of a running task goes back, and the task is queued again at once."""
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    a.register()
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, token = a.claim_task()
    check(a.started(tid, token).status == 200, "started")
    r = a.release(tid, token, code="engine_lost", reason="the Docker engine ended the container (exit 143)")
    check(r.status == 200, f"release: {r.status} {r.text}")
    t = r.json()
    check(t["status"] == "queued" and t["attempts"][0]["status"] == "released"
          and t["attempts"][0]["reason"].startswith("engine_lost: the Docker engine"), f"queued again: {t}")
    task, token2 = a.claim_task()
    check(task["id"] == tid and task["attempt"] == 2 and token2 > token, f"attempt 2: {task}")


def test_release_of_a_cancelled_task_keeps_it_cancelled():
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    a.register()
    tid = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    _, token = a.claim_task()
    check(c.cancel(tid).status == 200, "cancel")
    r = a.release(tid, token, code="disk_full")
    check(r.status == 200 and r.json()["status"] == "cancelled", f"{r.status} {r.text}")
    check(a.claim_task() is None, "a cancelled task is not queued again")


mctest.main()
