#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""What survives: every push answered 201 is in the database after mc-control is killed with SIGKILL
in the middle of a burst; with PostgreSQL gone the control answers 503 at once and recovers by itself;
a control started before its database waits for it."""

import concurrent.futures
import glob
import os
import threading
import time

import mctest
from mctest import Postgres, background, check, http, wait_until
from controltest import Control, Transaction, metric, start_cluster, task_count, wait_awaiting

# The schema's migrations (src/control/sql/NNN-name.sql), which the control applies in order.
MIGRATIONS = sorted(glob.glob(os.path.join(mctest.source_dir(), "src/control/sql/[0-9]*-*.sql")))
LATEST_MIGRATION = int(os.path.basename(MIGRATIONS[-1]).split("-")[0])


def test_kill9_during_push_burst_loses_no_acknowledged_push():
    pg, (c,) = start_cluster()
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()

    def pusher(n):
        i = 0
        while not stop.is_set():
            try:
                r = c.push({"image": "i", "cmd": ["x"], "labels": {"pusher": str(n), "i": str(i)}}, timeout=10)
            except OSError:
                time.sleep(0.01)  # the control is down
                continue
            if r.status == 201:
                with lock:
                    acknowledged.append(r.json()["id"])
            i += 1

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futures = [ex.submit(pusher, n) for n in range(8)]
        wait_until(lambda: len(acknowledged) >= 300, timeout=60, msg="pushes flowing")
        c.kill()
        before_restart = len(acknowledged)
        time.sleep(0.3)  # pushes fail while nothing listens
        c.daemon.start()
        c.daemon.wait_ready()
        wait_until(lambda: len(acknowledged) >= before_restart + 100, timeout=60, msg="pushes flow again")
        stop.set()
        for f in futures:
            f.result(timeout=60)

    stored = {row[0] for row in pg.psql("SELECT id FROM tasks")}
    missing = [t for t in acknowledged if t not in stored]
    check(not missing, f"{len(missing)} of {len(acknowledged)} acknowledged pushes are missing: {missing[:5]}")
    print(f"  {len(acknowledged)} acknowledged, {len(stored)} stored (the rest were committed but unanswered)")


def test_pushes_on_the_listening_connection_survive_its_loss():
    """A push's statement runs on the connection that listens for the database's notifications, so
    that the push's own notification comes back with its result: a claim waiting on the same control
    is woken by it (nothing else wakes a waiting claim). That connection's server process terminated
    in the middle of a burst of pushes: no acknowledged push is lost, pushes go on, the control
    listens again, and a waiting claim is woken by a push as before."""
    pg, (c,) = start_cluster(nodes=("node-a",))
    agent = c.agent("node-a")
    agent.register()

    def claim_woken_by_a_push(label):
        claim = background(agent.claim, 25000, 60)
        wait_until(lambda: metric(c, "mc_claims_waiting") == 1, 60, msg=f"{label}: the claim waits")
        # The claim made the control ask for queued tasks' announcements (awaits.h) on that
        # connection; the push takes it once it is idle again.
        wait_awaiting(pg, "queued")
        tid = c.push({"image": "i", "cmd": ["x"], "labels": {"round": label}}).json()["id"]
        r = claim.get(60)
        check(r.status == 200 and r.json()["task"]["id"] == tid,
              f"{label}: the waiting claim got {r.status} {r.text} (a 204: it was never woken); pushed {tid}")

    def listener_pid():
        rows = pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'mc-control-listener'")
        return rows[0][0] if len(rows) == 1 else None

    claim_woken_by_a_push("before")
    old = listener_pid()
    check(old is not None, "one listening connection")
    last = pg.psql(f"SELECT query FROM pg_stat_activity WHERE pid = {old}")[0][0]
    check("INSERT INTO tasks" in last, f"the push ran on the listening connection; its last statement: {last[:200]}")

    acknowledged, others, lock, stop = [], [], threading.Lock(), threading.Event()

    def pusher(n):
        i = 0
        while not stop.is_set():
            # For a node that is not there, so that the claim below finds only its own task.
            r = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z", "pusher": str(n), "i": str(i)}},
                       timeout=60)
            with lock:
                if r.status == 201:
                    acknowledged.append(r.json()["id"])
                else:
                    others.append(r.status)
            i += 1

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futures = [ex.submit(pusher, n) for n in range(4)]
        wait_until(lambda: len(acknowledged) >= 200, 60, msg="pushes flowing")
        pg.psql(f"SELECT pg_terminate_backend({old})")
        before = len(acknowledged)
        wait_until(lambda: listener_pid() not in (None, old), 60, msg="the control listening again")
        wait_until(lambda: len(acknowledged) >= before + 200, 60, msg="pushes flow on")
        stop.set()
        for f in futures:
            f.result(timeout=120)

    # The push whose statement ran on the terminated connection is answered 503 (stored or not: a
    # retry with its id tells); nothing else fails.
    check(set(others) <= {503}, f"answers other than 201 and 503: {others[:5]}")
    stored = {row[0] for row in pg.psql("SELECT id FROM tasks")}
    missing = [t for t in acknowledged if t not in stored]
    check(not missing, f"{len(missing)} of {len(acknowledged)} acknowledged pushes are missing: {missing[:5]}")
    print(f"  {len(acknowledged)} acknowledged, {len(others)} answered 503")
    claim_woken_by_a_push("after")


def test_pushes_that_wait_share_the_next_commit():
    """Pushes that arrive while a push statement runs wait for it and then go together, in one
    transaction, each answered only after that commit (group commit). Here the first push's INSERT is
    held by a lock on tasks while nine more arrive: none is answered before the lock goes, all are
    stored, and the nine went in one statement (mc_push_batch_size)."""
    pg, (c,) = start_cluster()
    check(c.push({"image": "i", "cmd": ["warm-up"]}).status == 201, "the warm-up push")
    waiting_inserts = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'INSERT INTO tasks%'")
    hold = Transaction(pg, "LOCK TABLE tasks IN SHARE MODE; SELECT 'locked';")
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        pushes = [ex.submit(c.push, {"image": "i", "cmd": ["first"]}, timeout=120)]
        wait_until(lambda: pg.psql(waiting_inserts)[0][0] == "1", 60, msg="the first push's INSERT held by the lock")
        pushes += [ex.submit(c.push, {"image": "i", "cmd": [f"then-{i}"]}, timeout=120) for i in range(9)]
        wait_until(lambda: metric(c, "mc_pushes_queued") == 9, 60, msg="nine pushes waiting for the statement")
        check(not any(f.done() for f in pushes), "a push answered before its commit")
        hold.commit()
        codes = [f.result(timeout=120).status for f in pushes]
    check(codes == [201] * 10, f"answers: {codes}")
    check(task_count(pg) == 11, f"stored: {task_count(pg)}")
    check(metric(c, "mc_pushes_queued") == 0, "nothing left waiting")
    # The warm-up and the first went alone, the nine together.
    batches, tasks = metric(c, "mc_push_batch_size_count"), metric(c, "mc_push_batch_size_sum")
    check((batches, tasks) == (3, 11), f"push statements and their tasks: {batches}, {tasks}")


def test_database_stopped_gives_503_then_recovers():
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    a.register()
    check(c.push({"image": "i", "cmd": ["x"]}).status == 201, "push before")
    waiting = background(a.claim, 20000, 60)  # takes the task at once
    check(waiting.get().status == 200, "claim before")

    pg.stop()
    r = c.push({"image": "i", "cmd": ["x"]}, timeout=15)
    check(r.status == 503 and "error" in r.json(), f"push with the database down: {r.status} {r.text}")
    check(http("GET", c.url + "/api/health").status == 503, "health says so")
    check(c.list().status == 503, "reads too")
    check(a.claim(0).status == 503, "claims too")
    check(a.call("/api/agents/heartbeat", {"node_id": "node-a", "leases": []}).status == 503, "heartbeats too")
    metrics = http("GET", c.url + "/metrics").text
    check("mc_db_available 0" in metrics, "metrics show it")

    pg.start()
    wait_until(lambda: c.push({"image": "i", "cmd": ["x"], "labels": {"after": "yes"}}).status == 201, timeout=60,
               msg="pushes work again without a restart")
    # Pushes need one pooled connection; health also waits for the LISTEN connection.
    wait_until(lambda: http("GET", c.url + "/api/health").status == 200, timeout=60, msg="healthy again")
    # The listener came back too: a waiting claim is woken by a push.
    claim = background(a.claim, 20000, 60)
    r = claim.get()
    check(r.status == 200, f"claim after recovery: {r.status} {r.text}")
    check(task_count(pg) >= 2, "data intact")


def test_control_started_before_its_database():
    pg = Postgres()  # not started
    c = Control(pg)
    c.daemon.start()
    c.daemon.wait_ready()
    r = http("POST", c.url + "/api/tasks/push", {"image": "i", "cmd": ["x"]}, token="user-token-0123456789abcdef")
    check(r.status == 503, f"push before the database exists: {r.status} {r.text}")
    pg.start()
    wait_until(lambda: c.push({"image": "i", "cmd": ["x"]}).status == 201, timeout=60,
               msg="schema applied and pushes accepted once the database is up")
    check(pg.psql("SELECT max(version) FROM mc_schema")[0][0] == str(LATEST_MIGRATION), "schema version recorded")


def test_two_replicas_start_together_on_an_empty_database():
    pg = Postgres().start()
    cs = [Control(pg, name=f"mc-control-{i}") for i in range(4)]
    for c in cs:
        c.daemon.start()
    for c in cs:
        c.daemon.wait_ready()
        wait_until(lambda: http("GET", c.url + "/api/health").status == 200, msg="healthy")
    check(pg.psql("SELECT count(*) FROM mc_schema")[0][0] == str(len(MIGRATIONS)), "each migration ran once")
    for c in cs:
        check(c.push({"image": "i", "cmd": ["x"]}).status == 201, "every replica serves")


mctest.main()
