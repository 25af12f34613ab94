#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Announcing only to someone waiting (functions.sql, src/control/awaits.h): a change of a task is
NOTIFYed only while some replica has a claim or a watch waiting for it, and a replica that starts to
wait misses nothing committed around that moment."""

import os
import subprocess
import time

import mctest
from mctest import background, check, http, wait_until
from controltest import (USER_TOKEN, Events, Transaction, awaits_held, blocked_await, metric, start_cluster,
                         wait_awaiting)


class Listener:
    """A psql session LISTENing on mc_events, as another replica would. psql prints the notifications
    it got after each command; notifications() runs one and returns their payloads so far."""

    def __init__(self, pg, application_name="psql"):
        self.proc = subprocess.Popen([os.path.join(pg.bindir, "psql"), "-X", "-q", "-At", "-h", pg.dir, "-p",
                                      str(pg.port), "-U", "postgres", "-d", "postgres"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PGAPPNAME=application_name))
        mctest.defer(lambda: self.proc.poll() is None and self.proc.kill())
        self.n = 0
        self.payloads = []
        self.notifications()
        self._send("LISTEN mc_events;")

    def _send(self, sql):
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()

    def notifications(self):
        self.n += 1
        marker = f"marker-{self.n}"
        self._send(f"SELECT '{marker}';")
        while True:
            line = self.proc.stdout.readline()
            check(line, "psql ended")
            line = line.strip()
            if line == marker:
                return self.payloads
            prefix = 'Asynchronous notification "mc_events" with payload "'
            if line.startswith(prefix):
                self.payloads.append(line[len(prefix):].rsplit('" received from server process', 1)[0])


def announced(listener, task_id):
    return any(f'"{task_id}"' in p for p in listener.notifications())


def test_announced_only_while_a_claim_waits():
    pg, (c,) = start_cluster(nodes=("node-a",))
    listener = Listener(pg)
    agent = c.agent("node-a")
    agent.register()

    # Nobody waits: the task is stored, and nobody is told.
    quiet = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    # The same statement is announced once a claim waits (below); so that "nothing came" is not read
    # too early, the listener looks after a statement known to have committed after the push.
    check(not announced(listener, quiet), f"{quiet} was announced with nobody waiting: {listener.payloads}")

    claim = background(agent.claim, 30000, 90)
    wait_until(lambda: metric(c, "mc_claims_waiting") == 1, 60, msg="the claim waits")
    wait_awaiting(pg, "queued")
    # For another node: the waiting claim stays, the task is announced.
    loud = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    wait_until(lambda: announced(listener, loud), 60, msg=f"{loud} announced while a claim waits")
    check(not announced(listener, quiet), "the first task was announced after all")

    # And the claim is woken by a task it can take.
    mine = c.push({"image": "i", "cmd": ["x"]}).json()["id"]
    r = claim.get(90)
    check(r.status == 200 and r.json()["task"]["id"] == mine, f"the waiting claim got {r.status} {r.text}; pushed {mine}")


def test_watch_makes_changes_announced():
    pg, (c,) = start_cluster(nodes=("node-a",))
    listener = Listener(pg)
    tid = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    check(not announced(listener, tid), "announced with nobody waiting")
    # A long poll on the task: its cancel is announced, and the poll answers with it.
    poll = background(http, "GET", f"{c.url}/api/tasks/{tid}?wait=30", token=USER_TOKEN, timeout=90)
    wait_awaiting(pg, "events")
    r = c.cancel(tid)
    check(r.status == 200, f"cancel: {r.status} {r.text}")
    r = poll.get(90)
    check(r.status == 200 and r.json()["status"] == "cancelled", f"the long poll: {r.status} {r.text}")
    wait_until(lambda: announced(listener, tid), 60, msg="the cancel announced while a watch waits")


def test_a_stream_gets_what_follows_its_start():
    """An event stream on a replica where nothing else waits begins (its headers and first line) only
    once the database announces every change to it: a task pushed as soon as it began is in it. To
    see the order, a transaction that changed a task is held open first, so that the replica's
    mc_await() waits for it: the stream does not begin before it ends."""
    pg, (c,) = start_cluster(nodes=("node-a",))
    spec = '{"image": "i", "cmd": ["x"], "resources": {"nano_cpus": 0, "memory_bytes": 0}}'
    tx = Transaction(pg, "INSERT INTO tasks (id, spec, labels, target_node) VALUES ('held-task', "
                         f"'{spec}'::jsonb, '{{}}', 'node-z'); SELECT 'locked';")
    opening = background(Events, c)
    wait_until(lambda: blocked_await(pg, "%events%"), 60,
               msg="the listening connection's mc_await() waiting for the open transaction")
    check(not opening.done, "the stream began before the database announced every change to its replica")
    tx.commit()
    events = opening.get(60)
    check(events.resp.status == 200, f"the stream: {events.resp.status}")
    tid = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    wait_until(lambda: any(tid in line for line in events.lines), 60, msg="the push in the stream")
    events.conn.close()

    # And with nothing held up, after the replica let go.
    wait_until(lambda: awaits_held(pg) == 0, 120, msg="nothing waited for")
    events = Events(c)
    check(events.resp.status == 200, f"the stream: {events.resp.status}")
    tid = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    wait_until(lambda: any(tid in line for line in events.lines), 60, msg="the push in the second stream")


def test_a_change_committed_while_the_replica_starts_to_wait_is_seen():
    """A transaction that queued a task while nobody waited (so announced nothing) and is still open
    when a claim starts to wait: the control's mc_await() waits for it to end, then the claim looks
    again and takes the task. Without that wait the claim would look before the commit, never be told,
    and answer 204 at the end of its wait."""
    pg, (c,) = start_cluster(nodes=("node-a",))
    agent = c.agent("node-a")
    agent.register()
    spec = '{"image": "i", "cmd": ["x"], "resources": {"nano_cpus": 0, "memory_bytes": 0}}'
    tx = Transaction(pg, "INSERT INTO tasks (id, spec, labels) VALUES ('held-task', "
                         f"'{spec}'::jsonb, '{{}}'); SELECT 'locked';")

    claim = background(agent.claim, 30000, 90)
    # The claim found nothing (the row is not committed), waits, and its control's mc_await() waits
    # for the open transaction (the guard lock it holds in share mode).
    wait_until(lambda: blocked_await(pg), 60, msg="the listening connection's mc_await() waiting for the open transaction")
    started = blocked_await(pg)
    check(not claim.done, "the claim answered before the task was committed")
    # Meanwhile the others' changes do not wait: they announce rather than queue behind the guard. The
    # push is answered while that same mc_await() still waits (one that queued behind it would be
    # answered only after it gave up at its statement timeout, and a retry would start anew).
    other = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}})
    check(other.status == 201, f"a push while a replica starts to wait: {other.status} {other.text}")
    check(blocked_await(pg) == started, "the push waited for the replica that starts to wait")
    tx.commit()
    r = claim.get(90)
    check(r.status == 200 and r.json()["task"]["id"] == "held-task",
          f"the waiting claim got {r.status} {r.text} (a 204: the task committed as it began to wait was missed)")


def test_lets_go_when_nobody_waits():
    """Once no claim waits (and the linger passed), the listening connection holds nothing: the
    database announces to nobody again."""
    pg, (c,) = start_cluster(nodes=("node-a",))
    agent = c.agent("node-a")
    agent.register()
    r = agent.claim(wait_ms=200)
    check(r.status == 204, f"an empty claim: {r.status} {r.text}")
    wait_until(lambda: awaits_held(pg) > 0, 60, msg="the lock taken for the claim")
    wait_until(lambda: metric(c, 'mc_notifications_awaited{kind="queued"}') == 1, 60, msg="the metric saying so")
    check(metric(c, 'mc_notifications_awaited{kind="events"}') == 0, "events awaited with nothing watched")
    start = time.monotonic()
    wait_until(lambda: awaits_held(pg) == 0, 120, msg="the lock let go after the claim")
    wait_until(lambda: metric(c, 'mc_notifications_awaited{kind="queued"}') == 0, 60, msg="the metric saying so")
    print(f"  let go {time.monotonic() - start:.1f}s after the claim ended")


def test_an_older_control_listening_hears_everything():
    """A control from before announcing on demand listens without holding any lock: while one does,
    the controls that know announce every change on its behalf, and stop once it is gone."""
    pg, (c,) = start_cluster(nodes=("node-a",))
    check(pg.psql("SELECT mc_unaware_listeners()")[0][0] == "0", "the control's own listener counted as an older one")
    older = Listener(pg, application_name="mc-control-listener")
    wait_until(lambda: pg.psql("SELECT mc_unaware_listeners()")[0][0] == "1", 60, msg="the older listener seen")
    wait_awaiting(pg, "queued")
    wait_awaiting(pg, "events")
    tid = c.push({"image": "i", "cmd": ["x"], "labels": {"target_node": "node-z"}}).json()["id"]
    wait_until(lambda: announced(older, tid), 60, msg="a push announced to the older control")

    older.proc.kill()
    older.proc.wait(60)
    wait_until(lambda: awaits_held(pg) == 0, 120, msg="the locks let go once the older control is gone")


mctest.main()
