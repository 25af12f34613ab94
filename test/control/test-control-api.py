#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The user side of the HTTP API against a real mc-control on a real PostgreSQL: push, get, list with
filters and cursor paging, idempotent pushes, the wake of waiting claims by a push, pushes through a
function's change of result type, logs, nodes, health and metrics."""

import concurrent.futures
import copy
import threading
import time

import mctest
from mctest import check, http
from controltest import SAMPLE_TASK, USER_TOKEN, metric, start_cluster


def test_sample_task_round_trip():
    pg, (c,) = start_cluster()
    r = c.push(SAMPLE_TASK)
    check(r.status == 201, f"push: {r.status} {r.text}")
    created = r.json()
    check(created["status"] == "queued" and created["attempt"] == 0, f"created record: {created}")
    tid = created["id"]
    check(len(tid) == 32, f"generated id: {tid}")

    t = c.task(tid)
    for key, value in SAMPLE_TASK.items():
        check(t[key] == value, f"field {key}: sent {value!r}, got {t.get(key)!r}")
    check(t["status"] == "queued", t)
    check(t["lease"] is None and t["result"] is None and t["attempts"] == [], t)
    check(t["created_at"] == created["created_at"], f"{t['created_at']} != {created['created_at']}")
    # Defaults are filled in and shown.
    check(t["max_attempts"] == 3 and t["env"] == {} and t["inputs"] == [], t)
    # The 201 answer is the same record GET returns (built by the control, not read back), except
    # pending_reason: the housekeeping may explain the wait (no agent here) between the two.
    check(set(created) == set(t), f"201 and GET have other fields: {sorted(created)} vs {sorted(t)}")
    check(created["pending_reason"] is None, f"a task just pushed has no pending_reason yet: {created}")
    check(t["pending_reason"] is None or isinstance(t["pending_reason"], str), t)
    for key in set(created) - {"pending_reason"}:
        check(created[key] == t[key], f"201 and GET differ in {key}: {created[key]!r} vs {t[key]!r}")
    # "POST /api/tasks" is the same as /push.
    r = http("POST", c.url + "/api/tasks", SAMPLE_TASK, token=USER_TOKEN)
    check(r.status == 201, f"POST /api/tasks: {r.status} {r.text}")


def test_every_optional_field_round_trips():
    pg, (c,) = start_cluster()
    inputs = [{"content": c.add_content(b""), "path": "/data/in.txt"}, {"content": c.add_content(b"b"), "path": "/b"}]
    body = {
        "id": "job-42.retry_1",
        "image": "registry.local:5000/team/app@sha256:" + "ab" * 32,
        "command": ["/bin/app", "--flag=1", "ünïcødé ✓", ""],
        "env": {"A": "1", "_B": "x=y", "EMPTY": ""},
        "timeout_sec": 604800,
        "labels": {"job": "nightly", "team.example/owner": "ops", "target_node": "node-a"},
        "resources": {"nano_cpus": 1000000, "memory_bytes": 6 * 1024 * 1024},
        "inputs": inputs,
        "max_attempts": 100,
        "runtime": "kata-runtime",
    }
    r = c.push(body)
    check(r.status == 201, f"push: {r.status} {r.text}")
    t = c.task("job-42.retry_1")
    expect = dict(body)
    expect["cmd"] = expect.pop("command")
    for key, value in expect.items():
        check(t[key] == value, f"field {key}: sent {value!r}, got {t.get(key)!r}")


def test_a_refused_body_does_not_change_the_next_push():
    """json-c keeps the high half of a surrogate pair in its tokener, which the control reuses from one
    body to the next: a body refused right after one left it there, and the next push's first \\u
    escape came out behind a U+FFFD. Every kind of refusal inside an escape, then pushes whose strings
    start with escapes: each must be stored as sent."""
    pg, (c,) = start_cluster()
    headers = {"Content-Type": "application/json"}
    bad = ['{"image": "alpine:3.20", "cmd": ["\\ud800\\u00zz"]}',      # a bad hex digit in the low half
           '{"image": "alpine:3.20", "cmd": ["\\ud83d\\u12"]}',        # the low half cut short
           '{"image": "alpine:3.20", "env": {"\\udbff\\u',                  # the text ends in it
           '{"image": "alpine:3.20", "cmd": ["x"], "labels": {"\\ud800\\uq": "y"}}']
    good = [('"\\u0041\\u00e9"', "A\u00e9"), ('"\\ud83d\\ude00!"', "\U0001f600!"), ('"\\u0008x"', "\bx")]
    for i, text in enumerate(bad):
        r = c.push(text, headers=headers)
        check(r.status == 400, f"bad body {text!r}: {r.status} {r.text}")
        escaped, value = good[i % len(good)]
        r = c.push('{"id": "after-bad-%d", "image": "alpine:3.20", "cmd": [%s], "env": {"E": %s}}'
                   % (i, escaped, escaped), headers=headers)
        check(r.status == 201, f"push after {text!r}: {r.status} {r.text}")
        t = c.task(f"after-bad-{i}")
        check(t["cmd"] == [value] and t["env"] == {"E": value},
              f"after the refused {text!r}, {escaped} was stored as {t['cmd']!r} / {t['env']!r}, not {value!r}")


def test_idempotent_push():
    pg, (c,) = start_cluster()
    body = dict(SAMPLE_TASK, id="once")
    r1 = c.push(body)
    check(r1.status == 201, f"first: {r1.status} {r1.text}")
    r2 = c.push(body)
    check(r2.status == 200, f"same body again: {r2.status} {r2.text}")
    check(r2.json()["id"] == "once" and r2.json()["created_at"] == r1.json()["created_at"], r2.text)
    # Key order does not matter; content does.
    r3 = c.push(dict(reversed(list(body.items()))))
    check(r3.status == 200, f"same body, other key order: {r3.status} {r3.text}")
    other = copy.deepcopy(body)
    other["cmd"] = ["true"]
    r4 = c.push(other)
    check(r4.status == 409 and r4.json()["field"] == "id", f"different body: {r4.status} {r4.text}")
    check(c.task("once")["cmd"] == SAMPLE_TASK["cmd"], "the stored task changed")

    # Many clients pushing one id at once: exactly one 201, the rest 200, one row.
    body = dict(SAMPLE_TASK, id="raced")
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(lambda _: c.push(body).status, range(32)))
    check(codes.count(201) == 1 and codes.count(200) == 31, f"codes: {codes}")
    check(pg.psql("SELECT count(*) FROM tasks WHERE id = 'raced'")[0][0] == "1", "rows for raced")


def test_push_wakes_waiting_claims():
    """A push alone is one INSERT that also wakes the claims waiting on every replica: for an untargeted
    task any node's, for a targeted one its node's. Without that wake a claim waits out its wait_ms
    (nothing else looks again) and answers 204."""
    pg, (c,) = start_cluster()
    a = c.agent("node-a")
    a.register()
    for labels in ({}, {"target_node": "node-a"}):
        answer = {}
        waiter = threading.Thread(target=lambda: answer.update(r=a.claim(wait_ms=30000, timeout=120)))
        waiter.start()
        # Not a sample: only so that the claim is most likely waiting when the task comes. Should it
        # come first, the claim finds it at once and this passes without testing the wake.
        time.sleep(1)
        r = c.push(dict(SAMPLE_TASK, labels=labels))
        check(r.status == 201, f"push: {r.status} {r.text}")
        waiter.join(120)
        got = answer.get("r")
        check(got is not None and got.status == 200 and got.json()["task"]["id"] == r.json()["id"],
              f"the waiting claim of node-a (labels {labels}): {got and got.status} {got and got.text}")

    # Pushes at once go in batches (one INSERT of several tasks), which wake as many claims as they
    # queued untargeted tasks.
    b = c.agent("node-b")
    b.register()
    answers = [None] * 6
    claimers = [threading.Thread(target=lambda i=i: answers.__setitem__(i, (a, b)[i % 2].claim(wait_ms=30000, timeout=120)))
                for i in range(6)]
    for t in claimers:
        t.start()
    time.sleep(1)  # as above
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        pushed = list(ex.map(lambda _: c.push(dict(SAMPLE_TASK, labels={})), range(6)))
    check([r.status for r in pushed] == [201] * 6, f"pushes: {[r.status for r in pushed]}")
    for t in claimers:
        t.join(120)
    check(all(r is not None and r.status == 200 for r in answers), f"claims: {[r and r.status for r in answers]}")
    check(sorted(r.json()["task"]["id"] for r in answers) == sorted(r.json()["id"] for r in pushed), "claimed tasks")


def test_lease_answer_says_how_long_the_claim_was_held():
    """A lease's answer carries held_ms: how long the control held the claim before the statement that
    granted the lease began. The agent counts its lease's deadline from its send plus held_ms, so
    held_ms must never exceed the real hold (the answer's round trip bounds it from above) and must
    count the wait for the push (bounded from below by the time the claim was seen waiting before the
    push). The register answer names the longest wait a claim may ask for."""
    pg, (c,) = start_cluster(env={"MC_CLAIM_WAIT_MAX_MS": "120000"})
    a = c.agent("node-a")
    check(a.register().get("claim_wait_max_ms") == 120000, "register answer: claim_wait_max_ms")

    # A task already queued: granted by the claim's first statement.
    tid = c.push(dict(SAMPLE_TASK, labels={"target_node": "node-a"})).json()["id"]
    t0 = time.monotonic()
    r = a.claim(wait_ms=0)
    rtt_ms = (time.monotonic() - t0) * 1000
    check(r.status == 200 and r.json()["task"]["id"] == tid, f"claim: {r.status} {r.text}")
    held = r.json().get("held_ms")
    check(isinstance(held, int) and 0 <= held <= rtt_ms + 1, f"held_ms {held!r} within the round trip {rtt_ms:.0f} ms")

    # A claim that waits for the push.
    answer = {}
    t0 = time.monotonic()
    waiter = threading.Thread(target=lambda: answer.update(r=a.claim(wait_ms=60000, timeout=120),
                                                           t=time.monotonic()))
    waiter.start()
    mctest.wait_until(lambda: metric(c, "mc_claims_waiting") == 1, 60, msg="the claim waiting")
    seen_waiting = time.monotonic()
    # Not a sample: a hold of at least this long, which held_ms must count.
    time.sleep(1.5)
    pushed_at = time.monotonic()
    r = c.push(dict(SAMPLE_TASK, labels={"target_node": "node-a"}))
    check(r.status == 201, f"push: {r.status} {r.text}")
    waiter.join(120)
    got = answer.get("r")
    check(got is not None and got.status == 200 and got.json()["task"]["id"] == r.json()["id"],
          f"the waiting claim: {got and got.status} {got and got.text}")
    held = got.json().get("held_ms")
    low = int((pushed_at - seen_waiting) * 1000) - 1
    high = (answer["t"] - t0) * 1000 + 1
    check(isinstance(held, int) and low <= held <= high, f"held_ms {held!r} not within [{low}, {high:.0f}]")


def test_prepared_push_follows_a_changed_function():
    """Pushes are prepared statements, planned once per database connection. When a function one calls
    returns another type (a newer control replacing it), the server refuses the kept plan; the control
    prepares again and runs the push again: the client sees nothing of it."""
    pg, (c,) = start_cluster()

    def push_many(prefix):
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda i: c.push(dict(SAMPLE_TASK, id=f"{prefix}-{i}")), range(40)))
        check([r.status for r in rs] == [201] * 40, f"{prefix}: {[(r.status, r.text[:80]) for r in rs if r.status != 201]}")
        for r in rs[:3]:
            check(r.json()["created_at"] == c.task(r.json()["id"])["created_at"], f"{prefix}: created_at")
        # Again: mc_push's statement (which tells an existing task) is prepared too.
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            again = list(ex.map(lambda i: c.push(dict(SAMPLE_TASK, id=f"{prefix}-{i}")).status, range(40)))
        check(again == [200] * 40, f"{prefix} again: {again}")

    ts = "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    push_many("before")
    pg.psql(f"DROP FUNCTION mc_ts(timestamptz); CREATE FUNCTION mc_ts(t timestamptz) RETURNS varchar "
            f"LANGUAGE sql STABLE AS $$ {ts}::varchar $$")
    push_many("varchar")
    pg.psql(f"DROP FUNCTION mc_ts(timestamptz); CREATE FUNCTION mc_ts(t timestamptz) RETURNS text "
            f"LANGUAGE sql STABLE AS $$ {ts} $$")
    push_many("text")
    m = http("GET", c.url + "/metrics").text
    check("mc_db_errors_total 0" in m, "database errors counted")


def test_list_filters_and_paging_over_1000_tasks():
    pg, (c,) = start_cluster()

    def push(i):
        r = c.push({"image": "img", "cmd": ["true"], "labels": {"job": "a" if i % 2 else "b", "n": str(i)}})
        check(r.status == 201, f"push {i}: {r.status} {r.text}")
        return r.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        ids = list(ex.map(push, range(1000)))
    check(len(set(ids)) == 1000, "ids are unique")
    cancelled = set(ids[:100:3])
    for tid in cancelled:
        check(c.cancel(tid).status == 200, f"cancel {tid}")

    def collect(query, limit):
        seen, after, pages = [], None, 0
        while True:
            q = f"?limit={limit}{query}" + (f"&after={after}" if after else "")
            r = c.list(q)
            check(r.status == 200, f"list {q}: {r.status} {r.text}")
            j = r.json()
            check(len(j["tasks"]) <= limit, f"page larger than limit: {len(j['tasks'])}")
            seen += [t["id"] for t in j["tasks"]]
            pages += 1
            after = j["next"]
            if not after:
                return seen, pages
            check(pages < 2000, "paging does not end")

    everything, pages = collect("", 37)
    check(len(everything) == 1000 and set(everything) == set(ids), f"all: {len(everything)}, {len(set(everything))} unique")
    check(pages == 28, f"pages of 37 over 1000: {pages}")
    check(everything == list(reversed(ids)) or len(set(everything)) == 1000, "newest first")

    job_a, _ = collect("&label=job=a", 100)
    expect_a = {t for i, t in enumerate(ids) if i % 2}
    check(set(job_a) == expect_a and len(job_a) == len(expect_a), f"label filter: {len(job_a)} vs {len(expect_a)}")

    queued_a, _ = collect("&status=queued&label=job=a", 1000)
    check(set(queued_a) == expect_a - cancelled, f"status+label: {len(queued_a)}")

    got_cancelled, _ = collect("&status=cancelled", 7)
    check(set(got_cancelled) == cancelled, f"status=cancelled: {len(got_cancelled)} vs {len(cancelled)}")

    one, _ = collect("&label=job=a&label=n=7", 10)
    check(one == [ids[7]], f"two label filters: {one}")

    # An exact page boundary: the last page says there is no next.
    r = c.list("?limit=1000")
    check(r.json()["next"] is None and len(r.json()["tasks"]) == 1000, "limit=1000 has everything, no next")


def test_logs_nodes_health_and_metrics():
    pg, (c,) = start_cluster()
    a = c.agent("node-a", nano_cpus=2_000_000_000, memory_bytes=1 << 30)
    a.register()
    r = c.push({"image": "img", "cmd": ["echo", "hi"], "resources": {"nano_cpus": 500000000, "memory_bytes": 1 << 28}})
    tid = r.json()["id"]
    check(http("GET", f"{c.url}/api/tasks/{tid}/logs", token=USER_TOKEN).text == "", "no logs before the task ran")

    task, token = a.claim_task()
    nodes = http("GET", c.url + "/api/nodes", token=USER_TOKEN).json()["nodes"]
    check(len(nodes) == 1 and nodes[0]["node_id"] == "node-a" and nodes[0]["state"] == "ready", nodes)
    check(nodes[0]["capacity"] == {"nano_cpus": 2_000_000_000, "memory_bytes": 1 << 30}, nodes)
    check(nodes[0]["reserved"] == {"nano_cpus": 500000000, "memory_bytes": 1 << 28}, nodes)

    output = "line one\nline two ✓\n" * 100
    r = a.finish(tid, token, stdout_tail="line two ✓\n", stderr_tail="", output=output)
    check(r.status == 200, f"finish: {r.status} {r.text}")
    logs = http("GET", f"{c.url}/api/tasks/{tid}/logs", token=USER_TOKEN)
    check(logs.status == 200 and logs.text == output, f"logs: {logs.status} {logs.text[:80]!r}")
    check(logs.headers.get("Content-Type", "").startswith("text/plain"), logs.headers)
    t = c.task(tid)
    check(t["result"]["stdout_tail"] == "line two ✓\n" and t["result"]["exit_code"] == 0, t["result"])

    h = http("GET", c.url + "/api/health")
    check(h.status == 200 and h.json()["database"] == "ok" and h.json()["schema_version"] >= 1, h.text)

    def metrics():
        return http("GET", c.url + "/metrics").text

    mctest.wait_until(lambda: 'mc_tasks{status="succeeded"} 1' in metrics(), msg="task counts in /metrics")
    m = metrics()
    for needle in ['mc_http_requests_total{endpoint="push",code="201"} 1',
                   'mc_http_requests_total{endpoint="claim",code="200"} 1',
                   "mc_claim_duration_seconds_count 1",
                   "mc_db_errors_total 0",
                   "mc_db_available 1",
                   "mc_nodes_ready 1",
                   'mc_http_request_duration_seconds_count{endpoint="push"} 1',
                   'mc_build_info{program="mc-control",version="',
                   "process_resident_memory_bytes ", "process_cpu_seconds_total ", "process_open_fds ",
                   "process_max_fds ", "process_start_time_seconds "]:
        check(needle in m, f"{needle!r} not in /metrics:\n{m}")
    mctest.check_prometheus_text(m)


mctest.main()
