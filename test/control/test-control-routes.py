#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The router of mc-control (docs/api.md): a known path with a method it does not take gets 405 with
an Allow header naming exactly the methods it does take, before any token is asked for; a JSON body
sent with another Content-Type gets 415; a created task's 201 carries Location: /api/tasks/<id>.
None of the refusals changes the database."""

import json

import mctest
from mctest import check, http
from controltest import USER_TOKEN, agent_token, start_cluster

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

# path -> (the methods it takes, who may call it: "user", "agent", "any" (either token) or None for
# anyone; or a dict method -> one of those)
ENDPOINTS = {
    "/api/health": ({"GET", "HEAD"}, None),
    "/metrics": ({"GET", "HEAD"}, None),
    "/api/tasks/push": ({"POST"}, "user"),
    "/api/tasks": ({"GET", "HEAD", "POST"}, "user"),
    "/api/tasks/TASK": ({"GET", "HEAD", "DELETE"}, "user"),
    "/api/tasks/TASK/logs": ({"GET", "HEAD"}, "user"),
    "/api/tasks/TASK/cancel": ({"POST"}, "user"),
    "/api/tasks/TASK/started": ({"POST"}, "agent"),
    "/api/tasks/TASK/finish": ({"POST"}, "agent"),
    "/api/tasks/TASK/output": ({"POST"}, "agent"),
    "/api/events": ({"GET", "HEAD"}, "user"),
    "/api/contents": ({"GET", "HEAD"}, "user"),
    "/api/contents/CONTENT": ({"GET", "HEAD", "PUT"}, {"GET": "any", "HEAD": "any", "PUT": "user"}),
    "/api/nodes": ({"GET", "HEAD"}, "user"),
    "/api/nodes/NODE": ({"DELETE"}, "user"),
    "/api/nodes/NODE/drain": ({"POST"}, "user"),
    "/api/nodes/NODE/undrain": ({"POST"}, "user"),
    "/api/agents/register": ({"POST"}, "agent"),
    "/api/agents/claim": ({"POST"}, "agent"),
    "/api/agents/heartbeat": ({"POST"}, "agent"),
}

REGISTER = {"node_id": "node-a", "capacity": {"nano_cpus": 1_000_000_000, "memory_bytes": 1 << 30}}
TASK = {"image": "img", "cmd": ["true"]}
CONTENT = "0123456789abcdef" * 4       # a content id no content has


def db_fingerprint(pg):
    """Every row of every table the API writes, as digests (timestamps of nodes left out: reading
    the node list does not touch them, but heartbeats would)."""
    return pg.psql("SELECT (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM tasks t), "
                   "(SELECT md5(coalesce(string_agg(a::text, '|' ORDER BY task_id, attempt), '')) FROM attempts a), "
                   "(SELECT md5(coalesce(string_agg(n.node_id || n.nano_cpus || n.memory_bytes || n.draining, '|' "
                   "ORDER BY node_id), '')) FROM nodes n), "
                   "(SELECT md5(coalesce(string_agg(o::text, '|' ORDER BY task_id), '')) FROM task_output o)")[0]


def quiet_cluster():
    """A control whose database nothing changes by itself while a test runs: one task, leased by
    node-a for an hour, so that neither the sweep nor the explanation of queued tasks writes."""
    pg, (c,) = start_cluster(args=["--lease-ttl-ms", 3600000])
    a = c.agent("node-a")
    a.register()
    r = c.push(TASK)
    check(r.status == 201, f"push: {r.status} {r.text}")
    got = a.claim_task()
    check(got is not None, "claim")
    return pg, c, got[0]["id"]


def allow_of(r):
    return {m.strip() for m in (r.headers.get("Allow") or "").split(",") if m.strip()}


def is_error_body(r):
    try:
        j = r.json()
    except AssertionError:
        return False
    return isinstance(j, dict) and isinstance(j.get("error"), str) and j["error"] != ""


def test_405_names_every_method_of_the_path():
    pg, c, task = quiet_cluster()
    before = db_fingerprint(pg)
    failures = []
    for pattern, (allowed, _) in ENDPOINTS.items():
        path = pattern.replace("TASK", task).replace("CONTENT", CONTENT).replace("NODE", "node-a")
        for method in METHODS:
            if method in allowed:
                continue
            # No token: the method is refused before anyone is asked who they are.
            r = http(method, c.url + path, b"" if method in ("POST", "PUT", "PATCH") else None)
            if r.status != 405:
                failures.append(f"{method} {pattern}: {r.status}, wanted 405")
            elif allow_of(r) != allowed:
                failures.append(f"{method} {pattern}: Allow {r.headers.get('Allow')!r}, wanted {sorted(allowed)}")
            elif method != "HEAD" and not is_error_body(r):
                failures.append(f"{method} {pattern}: no JSON error body: {r.text[:200]!r}")
    # With a token and a task that POST would take: PUT still creates nothing.
    r = http("PUT", c.url + "/api/tasks", TASK, token=USER_TOKEN)
    if r.status != 405 or allow_of(r) != {"GET", "HEAD", "POST"}:
        failures.append(f"PUT /api/tasks with a task: {r.status}, Allow {r.headers.get('Allow')!r}")
    check(not failures, "\n".join(failures))
    check(db_fingerprint(pg) == before, "the database changed")


def test_allow_is_true():
    """Every method an Allow header names passes the router: with a token of the wrong kind it gets
    403 (without a token, where any token would do: 401), which is only ever answered after the route
    (path and method) was found."""
    pg, c, task = quiet_cluster()
    wrong_token = {"user": agent_token("node-a"), "agent": USER_TOKEN}
    before = db_fingerprint(pg)
    failures = []
    for pattern, (allowed, whom) in ENDPOINTS.items():
        path = pattern.replace("TASK", task).replace("CONTENT", CONTENT).replace("NODE", "node-a")
        for method in sorted(allowed):
            who = whom.get(method) if isinstance(whom, dict) else whom
            if who is None:
                r = http(method, c.url + path)
                want = 200
            elif who == "any":
                r = http(method, c.url + path)
                want = 401
            else:
                body = b"{}" if method == "POST" else None
                r = http(method, c.url + path, body, token=wrong_token[who])
                want = 403
            if r.status != want:
                failures.append(f"{method} {pattern}: {r.status}, wanted {want}")
    check(not failures, "\n".join(failures))
    check(db_fingerprint(pg) == before, "the database changed")


def test_unknown_paths_are_404():
    pg, c, task = quiet_cluster()
    before = db_fingerprint(pg)
    for path in ("/api/secrets", "/api/tasks/push/x", f"/api/tasks/{task}/explode", f"/api/tasks/{task}/logs/x",
                 "/api/agents/", "/api/agents/drain", "/metrics/x", "/"):
        for method in ("GET", "POST"):
            r = http(method, c.url + path, b"" if method == "POST" else None, token=USER_TOKEN)
            check(r.status == 404 and is_error_body(r), f"{method} {path}: {r.status} {r.text[:200]}")
            check(r.headers.get("Allow") is None, f"{method} {path}: Allow on a 404")
    check(db_fingerprint(pg) == before, "the database changed")


def test_415_for_a_json_body_of_another_type():
    pg, c, task = quiet_cluster()
    # (path, token, a body the endpoint would take as JSON)
    calls = [
        ("/api/tasks/push", USER_TOKEN, TASK),
        ("/api/tasks", USER_TOKEN, TASK),
        ("/api/agents/register", agent_token("node-a"), REGISTER),
        ("/api/agents/claim", agent_token("node-a"), {"node_id": "node-a"}),
        ("/api/agents/heartbeat", agent_token("node-a"), {"node_id": "node-a", "leases": []}),
        (f"/api/tasks/{task}/started", agent_token("node-a"), {"node_id": "node-a", "lease_token": 1}),
        (f"/api/tasks/{task}/finish", agent_token("node-a"),
         {"node_id": "node-a", "lease_token": 1, "status": "succeeded", "exit_code": 0}),
    ]
    # What curl -d sends unless told otherwise, and a few other ways of getting it wrong.
    types = ["application/x-www-form-urlencoded", "text/plain", "text/json", "application/jsonl",
             "multipart/form-data; boundary=x", "", "application/x-bittorrent"]
    before = db_fingerprint(pg)
    failures = []
    for path, token, body in calls:
        for ctype in types:
            r = http("POST", c.url + path, json.dumps(body).encode(), token=token, headers={"Content-Type": ctype})
            if r.status != 415 or not is_error_body(r):
                failures.append(f"POST {path} as {ctype!r}: {r.status} {r.text[:200]}")
    check(not failures, "\n".join(failures))
    check(db_fingerprint(pg) == before, "the database changed")

    # The token is checked first: a wrong type from someone unknown is a 401.
    r = http("POST", c.url + "/api/tasks/push", json.dumps(TASK).encode(), headers={"Content-Type": "text/plain"})
    check(r.status == 401, f"no token, text/plain: {r.status}")

    # application/json in any case and with parameters is JSON; so is a body with no type at all.
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "Application/JSON; charset=utf-8"},
                    {}):
        r = http("POST", c.url + "/api/tasks/push", json.dumps(TASK).encode(), token=USER_TOKEN, headers=headers)
        check(r.status == 201, f"push with {headers}: {r.status} {r.text[:200]}")
    r = http("POST", c.url + "/api/agents/register", json.dumps(REGISTER).encode(), token=agent_token("node-a"),
             headers={"Content-Type": "application/json; charset=utf-8"})
    check(r.status == 200, f"register with a charset: {r.status} {r.text[:200]}")

    # Endpoints that read no body do not care what it was said to be.
    r = http("POST", c.url + f"/api/tasks/{task}/cancel", b"x=1", token=USER_TOKEN,
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    check(r.status == 200 and r.json()["status"] == "cancelled", f"cancel: {r.status} {r.text[:200]}")


def test_201_carries_location():
    pg, (c,) = start_cluster()
    for path, body in (("/api/tasks/push", TASK), ("/api/tasks", TASK),
                       ("/api/tasks/push", dict(TASK, id="given-id.1")), ("/api/tasks", dict(TASK, id="given-id.2"))):
        r = http("POST", c.url + path, body, token=USER_TOKEN)
        check(r.status == 201, f"POST {path}: {r.status} {r.text[:200]}")
        tid = r.json()["id"]
        check("id" not in body or tid == body["id"], f"id {tid}")
        location = r.headers.get("Location")
        check(location == f"/api/tasks/{tid}", f"POST {path}: Location {location!r} for task {tid}")
        got = http("GET", c.url + location, token=USER_TOKEN)
        check(got.status == 200 and got.json()["id"] == tid, f"GET {location}: {got.status} {got.text[:200]}")
    # An idempotent repeat created nothing; its 200 is the stored record.
    r = http("POST", c.url + "/api/tasks/push", dict(TASK, id="given-id.1"), token=USER_TOKEN)
    check(r.status == 200 and r.json()["id"] == "given-id.1", f"repeat: {r.status} {r.text[:200]}")


mctest.main()
