#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""PostgreSQL fails over under load (docs/postgresql-ha.md). A primary with a synchronous streaming
standby (pg_basebackup -R, synchronous_standby_names='*'), one mc-control given both hosts
(host=a,b target_session_attrs=read-write), a real mc-agent (exec driver) running long tasks, and
clients pushing a burst. The primary is killed with SIGKILL (postmaster and backends) mid-burst and the
standby promoted at once; nothing is done to mc. Then the old primary is re-created as a standby of
the new one, and the new one killed in turn, promoted only once the agent's heartbeats have been
refused. Then: every push answered 201 (or 200 to a retry) is on the last primary; every answer was
201, 200 or 503 (never 500), and none was accepted while no server was read-write; /api/health said
so meanwhile and the control reconnected by itself, naming each new primary in database_available;
the running tasks kept their lease (same attempt, same lease token, no lease expired, each started
once) and finished succeeded; new work runs. The time from each kill to the first accepted push is
printed (a figure, not a check).

Also: a planned switchover (fast shutdown of the primary) is answered the same way; a primary whose
host is cut off from the network (nothing reset, network namespaces) is given up at the control's
deadlines; a first host that accepts and never answers is skipped; a DSN libpq cannot parse stops the
control at start; and a commit the server confirms without the synchronous standby (its wait
cancelled, as pg_cancel_backend() does) is answered 503, not 201: a failover then could lose it."""

import concurrent.futures
import os
import signal
import sys
import threading
import time

import mctest
from mctest import Daemon, Postgres, background, check, http, wait_until

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "agent"))
import agenttest as at  # noqa: E402
from controltest import Control, USER_TOKEN, write_tokens  # noqa: E402,F401

# Long enough that an agent on a loaded machine renews through the failover (it fences itself a TTL
# less the margin after the last renewal that got through, and renews every third of the TTL).
TTL_MS = 60000
N_HELD = 3
N_PUSHERS = 4


def primary_and_standby():
    primary = Postgres(settings={"synchronous_standby_names": "*", "synchronous_commit": "on"}).start()
    standby = Postgres(standby_of=primary).start()
    wait_for_sync_standby(primary)
    return primary, standby


def wait_for_sync_standby(primary):
    wait_until(lambda: primary.psql("SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'")
               == [("sync",)], 60, msg="the standby streaming, synchronous")


def multi_host_dsn(*servers):
    return (f"host={','.join(s.host for s in servers)} port={','.join(str(s.port) for s in servers)} "
            "user=postgres dbname=postgres target_session_attrs=read-write")


def health(c):
    r = http("GET", c.url + "/api/health", timeout=10)
    return r.status, r.json()


class Burst:
    """Pushers that each push tasks with ids of their own, retrying an id after a 503 as a client
    should (a retry of a push that did commit answers 200). No node may take these tasks."""

    def __init__(self, push, n):
        self.push = push        # push(body, timeout) -> Response
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.acked = []         # (id, sent, answered) on time.monotonic()
        self.unavailable = []   # (sent, answered) of 503s
        self.other = []         # (id, status, text) of anything else
        self.ex = concurrent.futures.ThreadPoolExecutor(n)
        self.futures = [self.ex.submit(self._run, i) for i in range(n)]

    def _run(self, n):
        i = 0
        while not self.stop.is_set():
            tid = f"burst-{n}-{i}"
            sent = time.monotonic()
            try:
                r = self.push({"id": tid, "image": at.IMAGE, "cmd": ["true"],
                                 "labels": {"target_node": "nowhere"}}, timeout=30)
            except OSError as e:
                with self.lock:
                    self.other.append((tid, "exception", repr(e)))
                time.sleep(0.05)
                continue
            answered = time.monotonic()
            with self.lock:
                if r.status in (200, 201):
                    self.acked.append((tid, sent, answered))
                    i += 1
                elif r.status == 503:
                    self.unavailable.append((sent, answered))
                    time.sleep(0.02)
                else:
                    self.other.append((tid, r.status, r.text))
                    i += 1

    def n_acked(self):
        for f in self.futures:
            if f.done():
                f.result()  # a pusher that died raises here
        with self.lock:
            return len(self.acked)

    def finish(self):
        self.stop.set()
        for f in self.futures:
            f.result(timeout=120)
        self.ex.shutdown()


def refused_heartbeats(c):
    for line in http("GET", c.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('mc_http_requests_total{endpoint="heartbeat",code="503"} '):
            return int(line.split()[-1])
    return 0


def fail_over(c, burst, old, new, hold=None, what=None):
    """Kills the primary old (SIGKILL to the postmaster and every backend), waits for hold() if given
    (the operator taking their time), promotes the standby new, and waits until pushes are accepted
    again; nothing is done to mc. Prints the figures."""
    old.kill()
    killed = time.monotonic()
    # The control notices at once (its connections break) and says so; the daemon itself is fine.
    wait_until(lambda: health(c)[0] == 503, 60, msg="/api/health to say the database is unavailable")
    status, body = health(c)
    check(body.get("database") == "unavailable" and body.get("status") == "degraded", f"health: {status} {body}")
    if hold:
        wait_until(hold, 120, msg=what)
    promote_start = time.monotonic()
    new.promote()
    promoted = time.monotonic()
    check(not new.in_recovery(), "the standby is a primary now")

    def accepted_since_promotion():
        with burst.lock:
            return sum(1 for _, sent, _ in burst.acked if sent > promoted)
    wait_until(lambda: accepted_since_promotion() >= 50, 120, msg="pushes accepted again after the promotion")
    wait_until(lambda: health(c)[0] == 200, 60, msg="/api/health to be ok again")

    with burst.lock:
        acked, refused = list(burst.acked), list(burst.unavailable)
    early = [(tid, answered - killed) for tid, sent, answered in acked if sent > killed and answered < promote_start]
    check(not early, f"pushes acknowledged while no server was read-write: {early[:5]}")
    first_ok = min(answered for _, sent, answered in acked if sent > killed)
    during = [answered - sent for sent, answered in refused if killed < sent < promoted]
    print(f"  failover: kill -> promoted {promoted - killed:.2f} s (pg_ctl promote {promoted - promote_start:.2f} s); "
          f"pg_ctl promote started -> first accepted push {first_ok - promote_start:.2f} s; kill -> first accepted push "
          f"{first_ok - killed:.2f} s; {len(during)} pushes answered 503 meanwhile"
          + (f", the slowest in {max(during) * 1000:.0f} ms" if during else ""))


def test_failover_loses_no_push_and_no_lease():
    node = at.node_name("failover")
    a_pg, b_pg = primary_and_standby()
    c = Control(a_pg, nodes=(node,), env={
        "MC_DB_DSN": multi_host_dsn(a_pg, b_pg),
        "MC_LEASE_TTL_MS": str(TTL_MS), "MC_LEASE_GRACE_MS": "1000", "MC_SWEEP_INTERVAL_MS": "100",
        "MC_DB_TIMEOUT_MS": "10000"}).start()
    agent = at.Agent([c], node, driver="exec").start()

    # Long tasks, held until the test lets them go; each run records its start first.
    runs = os.path.join(at.task_dir("failover-runs"), "runs")
    held = {}
    for i in range(N_HELD):
        marker = f"held-failover-{i}-{at.RUN}"
        tid = at.push(c, {"image": at.IMAGE, "timeout_sec": 600, "max_attempts": 3, "cmd": [
            "sh", "-c", f"echo start $MC_TASK_ID $MC_ATTEMPT $$ >> {runs}; " + at.held_cmd(marker, "echo done")]})
        held[tid] = marker
    before = {}
    for tid, marker in held.items():
        t = at.wait_status(c, tid, "running", 120)
        wait_until(lambda: at.trapping_pids(marker, signal.SIGUSR1), 60, msg=f"the shell of task {tid}")
        before[tid] = (t["attempt"], t["lease"]["lease_token"])

    burst = Burst(c.push, N_PUSHERS)
    wait_until(lambda: burst.n_acked() >= 150, 120, msg="pushes flowing")

    # Round 1: the standby is promoted at once: the figure of mc's part.
    print("# round 1: A killed, B promoted at once")
    fail_over(c, burst, a_pg, b_pg)

    # The operator makes the old primary a standby of the new one (never a primary again), and the
    # new primary synchronous again.
    a_pg.rebuild_as_standby_of(b_pg)
    b_pg.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
    b_pg.psql("SELECT pg_reload_conf()")
    wait_for_sync_standby(b_pg)

    # Round 2: the promotion waits until the agent's heartbeats have been refused: the outage spans
    # renewals that could not be made, and the leases must hold all the same.
    print("# round 2: B killed, A promoted once the agent's heartbeats have been refused")
    refused = refused_heartbeats(c)
    fail_over(c, burst, b_pg, a_pg, hold=lambda: refused_heartbeats(c) >= refused + 2,
              what="the agent's heartbeats refused during the outage")
    burst.finish()

    print(f"  {len(burst.acked)} pushes acknowledged, {len(burst.unavailable)} answered 503")
    check(not burst.other, f"answers other than 201, 200 and 503: {burst.other[:5]}")
    stored = {row[0] for row in a_pg.psql("SELECT id FROM tasks WHERE id LIKE 'burst-%'")}
    missing = [tid for tid, _, _ in burst.acked if tid not in stored]
    check(not missing, f"{len(missing)} of {len(burst.acked)} acknowledged pushes are not on the last primary: "
          f"{missing[:5]}")

    # The running tasks never left their node: same lease, and none expired.
    for tid in held:
        t = c.task(tid)
        check(t["status"] == "running" and (t["attempt"], t["lease"]["lease_token"]) == before[tid],
              f"task {tid} after the failovers: {t['status']} attempt {t['attempt']} lease {t['lease']}, "
              f"before {before[tid]}")
    for marker in held.values():
        at.release(marker)
    for tid in held:
        t = at.wait_final(c, tid, 120)
        check(t["status"] == "succeeded" and t["attempt"] == before[tid][0] and len(t["attempts"]) == 1,
              f"task {tid}: {t['status']}, attempts {t['attempts']}")
    with open(runs) as f:
        starts = [line.split()[1] for line in f if line.startswith("start ")]
    check(sorted(starts) == sorted(held), f"each held task started once: {starts}")

    # And new work flows: the agent's claim (woken through LISTEN on the last primary) takes a task.
    t = at.wait_final(c, at.push(c, {"image": at.IMAGE, "cmd": ["true"]}), 120)
    check(t["status"] == "succeeded", f"a task pushed after the failovers: {t['status']}")

    log = c.daemon.log_text()
    check(not at.events(log, "lease_expired"), "no lease expired")
    check(len(at.events(log, "database_unavailable")) == 2, "database_unavailable logged once per outage")
    back = at.events(log, "database_available")
    check(len(back) == 3 and back[1].get("DB_HOST") == b_pg.host and back[2].get("DB_HOST") == a_pg.host
          and "DB_OUTAGE_USEC" in back[2], f"database_available names each new primary: {back}")
    check(agent.daemon.running, "the agent ran throughout")


def test_switchover_answers_503_never_500():
    """A planned switchover: the primary is shut down (fast: its backends end their sessions with
    57P01 admin_shutdown, which pushes in flight get as an error) and the standby promoted."""
    primary, standby = primary_and_standby()
    c = Control(primary, env={"MC_DB_DSN": multi_host_dsn(primary, standby)}).start()
    burst = Burst(c.push, N_PUSHERS)
    wait_until(lambda: burst.n_acked() >= 150, 120, msg="pushes flowing")
    primary.stop()
    standby.promote()
    acked = burst.n_acked()
    wait_until(lambda: burst.n_acked() >= acked + 100, 120, msg="pushes accepted again after the promotion")
    burst.finish()
    check(not burst.other, f"answers other than 201, 200 and 503: {burst.other[:5]}")
    stored = {row[0] for row in standby.psql("SELECT id FROM tasks WHERE id LIKE 'burst-%'")}
    missing = [tid for tid, _, _ in burst.acked if tid not in stored]
    check(not missing, f"{len(missing)} acknowledged pushes are not on the new primary: {missing[:5]}")


def test_host_that_never_answers_is_skipped():
    """The first host of the DSN takes the connection and never answers (a host that is off and whose
    packets are dropped looks the same to libpq, which in nonblocking mode would wait on it as long as
    TCP does): the control gives the attempt up after connect_timeout and tries the next host first."""
    pg = Postgres().start()
    hole = mctest.listen_socket()
    dsn = (f"host=127.0.0.1,{pg.host} port={hole.getsockname()[1]},{pg.port} user=postgres dbname=postgres "
           "connect_timeout=2")
    c = Control(pg, env={"MC_DB_DSN": dsn}).start()
    check(c.push({"image": at.IMAGE, "cmd": ["true"]}).status == 201, "the control serves from the second host")
    hole.close()


def test_primary_host_cut_off():
    """The primary's host vanishes: its cable is cut (packets dropped, nothing reset) and it dies. The
    control's connections to it hang instead of breaking, and connecting to it hangs too; the control
    gives them up at its deadlines and finds the promoted standby, second in a DSN that does not even
    say target_session_attrs (the control asks for read-write by default)."""
    net = mctest.Network()
    ha, hb, hc = net.add_host("pg-a"), net.add_host("pg-b"), net.add_host("control")
    primary = Postgres(net_host=ha, settings={"synchronous_standby_names": "*"}).start()
    standby = Postgres(standby_of=primary, net_host=hb).start()
    wait_for_sync_standby(primary)
    port = 8080
    d = Daemon("mc-control", ["--port", port, "--listen-address", hc.address, "--tokens-file", write_tokens(()),
                              "--no-bus"],
               env={"MC_DB_DSN": f"host={ha.address},{hb.address} port={primary.port} user=postgres dbname=postgres",
                    "MC_DB_TIMEOUT_MS": "3000"}, host=hc, name="mc-control").start()
    d.wait_ready()
    url = f"http://{hc.address}:{port}"
    wait_until(lambda: hc.http("GET", url + "/api/health").status == 200, 60, msg="control healthy")
    burst = Burst(lambda body, timeout: hc.http("POST", url + "/api/tasks/push", body=body, token=USER_TOKEN,
                                                timeout=timeout), N_PUSHERS)
    wait_until(lambda: burst.n_acked() >= 150, 120, msg="pushes flowing")

    ha.set_link(False)
    primary.kill()
    killed = time.monotonic()
    promote_start = time.monotonic()
    standby.promote()
    promoted = time.monotonic()

    def accepted_since_promotion():
        with burst.lock:
            return sum(1 for _, sent, _ in burst.acked if sent > promoted)
    wait_until(lambda: accepted_since_promotion() >= 50, 120, msg="pushes accepted again after the promotion")
    wait_until(lambda: hc.http("GET", url + "/api/health").status == 200, 60, msg="/api/health to be ok again")
    burst.finish()
    first_ok = min(answered for _, sent, answered in burst.acked if sent > killed)
    print(f"  host cut off: kill -> promoted {promoted - killed:.2f} s; pg_ctl promote started -> first accepted push "
          f"{first_ok - promote_start:.2f} s; kill -> first accepted push {first_ok - killed:.2f} s (DB_TIMEOUT_MS=3000)")
    check(not burst.other, f"answers other than 201, 200 and 503: {burst.other[:5]}")
    stored = {row[0] for row in standby.psql("SELECT id FROM tasks WHERE id LIKE 'burst-%'")}
    missing = [tid for tid, _, _ in burst.acked if tid not in stored]
    check(not missing, f"{len(missing)} acknowledged pushes are not on the new primary: {missing[:5]}")


def test_invalid_dsn_refused_at_start():
    """A DSN libpq cannot parse stops the control at start with a message naming the setting, rather
    than a control that retries for ever."""
    tokens = write_tokens(())
    for dsn in ("host=pg-a,pg-b port", "postgresql://pg-a:5432,pg-b:x/mc?nosuchoption=1", "nosuchkeyword=1"):
        p = mctest.run([mctest.binary("mc-control"), "--port", "0", "--tokens-file", tokens, "--no-bus"],
                       env=dict(os.environ, MC_DB_DSN=dsn), check=False)
        check(p.returncode != 0 and "DB_DSN" in p.stderr, f"{dsn!r}: {p.returncode} {p.stderr}")


def test_commit_not_confirmed_by_the_standby_is_not_acknowledged():
    primary, standby = primary_and_standby()
    c = Control(primary, env={"MC_DB_DSN": multi_host_dsn(primary, standby), "MC_DB_TIMEOUT_MS": "60000"}).start()

    # With the standby gone, a commit waits for it; someone cancels the wait (pg_cancel_backend):
    # PostgreSQL then confirms the commit with only a warning, though the standby never got it.
    standby.stop()
    body = {"id": "unconfirmed", "image": at.IMAGE, "cmd": ["true"]}
    answer = background(c.push, body, timeout=90)
    # Housekeeping's commits wait too: cancel every wait of the control's until the push is answered.
    cancel = ("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
              "WHERE application_name LIKE 'mc-control%' AND wait_event = 'SyncRep'")
    wait_until(lambda: primary.psql(cancel) is not None and answer.done, 60, interval=0.2,
               msg="the push's commit waiting for the standby, cancelled")
    r = answer.get(60)
    check(r.status == 503, f"a commit the standby does not have is not acknowledged: {r.status} {r.text}")
    check(primary.psql("SELECT count(*) FROM tasks WHERE id = 'unconfirmed'") == [("1",)],
          "(it did commit on the primary: the case is real)")

    # The client retries with the same id once the standby is back: the stored task is confirmed.
    standby.start()
    wait_for_sync_standby(primary)
    r = c.push(body, timeout=60)
    check(r.status == 200 and r.json()["id"] == "unconfirmed", f"retry: {r.status} {r.text}")
    check(c.push({"image": at.IMAGE, "cmd": ["true"]}).status == 201, "pushes go on")


mctest.main()
