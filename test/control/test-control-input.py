#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Malformed and hostile requests: each gets the right 4xx with {"error", "field"} naming the field,
and the database is exactly as it was before."""

import json
import socket

import mctest
from mctest import check, http
from controltest import SAMPLE_TASK, USER_TOKEN, agent_token, start_cluster

GOOD = {"image": "img", "cmd": ["true"]}


def with_(**kw):
    b = dict(GOOD)
    b.update(kw)
    return b


class RawResponse:
    def __init__(self, status, body):
        self.status, self.text = status, body.decode(errors="replace")

    def json(self):
        return json.loads(self.text)


def raw_request(url, method, path, body, token):
    """For bodies the server refuses before reading them: it answers and closes, so the sender may see
    EPIPE while still sending; read the answer anyway, as curl does."""
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    try:
        s.sendall(head.encode() + body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return RawResponse(int(head.split()[1]), rest)


def db_fingerprint(pg):
    rows = pg.psql("SELECT (SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM tasks t), "
                   "(SELECT md5(coalesce(string_agg(a::text, '|' ORDER BY task_id, attempt), '')) FROM attempts a), "
                   "(SELECT md5(coalesce(string_agg(n.node_id || n.nano_cpus || n.memory_bytes || n.draining, '|' "
                   "ORDER BY node_id), '')) FROM nodes n), "
                   "(SELECT md5(coalesce(string_agg(o::text, '|' ORDER BY task_id), '')) FROM task_output o)")
    return rows[0]


PUSH = "/api/tasks/push"

# (name, method, path, body, token, expected status, expected field or None)
CASES = [
    ("bad json", "POST", PUSH, b'{"image": "img", ', "user", 400, None),
    ("json array", "POST", PUSH, b"[]", "user", 400, None),
    ("json string", "POST", PUSH, b'"task"', "user", 400, None),
    ("empty body", "POST", PUSH, b"", "user", 400, None),
    ("trailing garbage", "POST", PUSH, b'{"image": "img", "cmd": ["true"]} {}', "user", 400, None),
    ("NUL byte in body", "POST", PUSH, b'{"image": "img\x00", "cmd": ["true"]}', "user", 400, None),
    ("escaped NUL in string", "POST", PUSH, b'{"image": "img", "cmd": ["tr\\u0000ue"]}', "user", 400, None),
    ("invalid UTF-8", "POST", PUSH, b'{"image": "img", "cmd": ["\xff\xfe"]}', "user", 400, None),
    ("deep nesting", "POST", PUSH, b'{"image": "img", "cmd": ' + b"[" * 5000 + b"]" * 5000 + b"}", "user", 400, None),
    ("unknown field", "POST", PUSH, with_(priority=5), "user", 400, "priority"),
    ("image missing", "POST", PUSH, {"cmd": ["true"]}, "user", 400, "image"),
    ("image not a string", "POST", PUSH, with_(image=42), "user", 400, "image"),
    ("image with shell", "POST", PUSH, with_(image="img; rm -rf /"), "user", 400, "image"),
    ("image with SQL", "POST", PUSH, with_(image="x'); DROP TABLE tasks; --"), "user", 400, "image"),
    ("image path traversal", "POST", PUSH, with_(image="../../etc/passwd"), "user", 400, "image"),
    ("cmd a string", "POST", PUSH, with_(cmd="echo hi"), "user", 400, "cmd"),
    ("cmd empty", "POST", PUSH, with_(cmd=[]), "user", 400, "cmd"),
    ("cmd number element", "POST", PUSH, with_(cmd=["echo", 1]), "user", 400, "cmd"),
    ("cmd and command", "POST", PUSH, with_(command=["true"]), "user", 400, "command"),
    ("cmd too many", "POST", PUSH, with_(cmd=["x"] * 257), "user", 400, "cmd"),
    ("cmd missing", "POST", PUSH, {"image": "img"}, "user", 400, "cmd"),
    ("env an array", "POST", PUSH, with_(env=["A=1"]), "user", 400, "env"),
    ("env value a number", "POST", PUSH, with_(env={"A": 1}), "user", 400, "env"),
    ("env bad name", "POST", PUSH, with_(env={"1A": "x"}), "user", 400, "env"),
    ("env name with =", "POST", PUSH, with_(env={"A=B": "x"}), "user", 400, "env"),
    ("timeout zero", "POST", PUSH, with_(timeout_sec=0), "user", 400, "timeout_sec"),
    ("timeout negative", "POST", PUSH, with_(timeout_sec=-5), "user", 400, "timeout_sec"),
    ("timeout too large", "POST", PUSH, with_(timeout_sec=604801), "user", 400, "timeout_sec"),
    ("timeout fractional", "POST", PUSH, with_(timeout_sec=1.5), "user", 400, "timeout_sec"),
    ("timeout a string", "POST", PUSH, with_(timeout_sec="60"), "user", 400, "timeout_sec"),
    ("timeout a boolean", "POST", PUSH, with_(timeout_sec=True), "user", 400, "timeout_sec"),
    ("timeout beyond int64", "POST", PUSH, b'{"image": "img", "cmd": ["true"], "timeout_sec": 99999999999999999999999}', "user", 400, "timeout_sec"),
    ("timeout below int64", "POST", PUSH, b'{"image": "img", "cmd": ["true"], "timeout_sec": -99999999999999999999999}', "user", 400, "timeout_sec"),
    ("labels value a number", "POST", PUSH, with_(labels={"job": 1}), "user", 400, "labels"),
    ("labels bad key", "POST", PUSH, with_(labels={"bad key": "x"}), "user", 400, "labels"),
    ("labels too many", "POST", PUSH, with_(labels={f"k{i}": "v" for i in range(65)}), "user", 400, "labels"),
    ("target_node traversal", "POST", PUSH, with_(labels={"target_node": "../etc"}), "user", 400, "labels.target_node"),
    ("memory too small", "POST", PUSH, with_(resources={"memory_bytes": 1024}), "user", 400, "resources.memory_bytes"),
    ("memory huge", "POST", PUSH, with_(resources={"memory_bytes": 2 ** 62}), "user", 400, "resources.memory_bytes"),
    ("cpus too small", "POST", PUSH, with_(resources={"nano_cpus": 1}), "user", 400, "resources.nano_cpus"),
    ("cpus negative", "POST", PUSH, with_(resources={"nano_cpus": -1000000000}), "user", 400, "resources.nano_cpus"),
    ("resources unknown knob", "POST", PUSH, with_(resources={"gpus": 1}), "user", 400, "resources.gpus"),
    ("resources a list", "POST", PUSH, with_(resources=[1, 2]), "user", 400, "resources"),
    ("max_attempts zero", "POST", PUSH, with_(max_attempts=0), "user", 400, "max_attempts"),
    ("max_attempts too many", "POST", PUSH, with_(max_attempts=101), "user", 400, "max_attempts"),
    ("input path traversal", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/data/../etc/passwd"}]), "user", 400, "inputs[0].path"),
    ("input relative path", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "etc/passwd"}]), "user", 400, "inputs[0].path"),
    ("input dot component", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/a/./b"}]), "user", 400, "inputs[0].path"),
    ("input under /proc", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/proc/self/mem"}]), "user", 400, "inputs[0].path"),
    ("input content not hex", "POST", PUSH, with_(inputs=[{"content": "z" * 64, "path": "/a"}]), "user", 400, "inputs[0].content"),
    ("input content unknown", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/a"}]), "user", 400, "inputs[0].content"),
    ("input unknown field", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/a", "mode": 7}]), "user", 400, "inputs[0].mode"),
    ("input same path twice", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/a"}, {"content": "b" * 64, "path": "/a"}]), "user", 400, "inputs[1].path"),
    ("input inside another", "POST", PUSH, with_(inputs=[{"content": "a" * 64, "path": "/a/b"}, {"content": "b" * 64, "path": "/a"}]), "user", 400, "inputs[1].path"),
    ("runtime with slash", "POST", PUSH, with_(runtime="../../bin/sh"), "user", 400, "runtime"),
    ("id with slash", "POST", PUSH, with_(id="a/b"), "user", 400, "id"),
    ("id dot-dot", "POST", PUSH, with_(id=".."), "user", 400, "id"),
    ("id with SQL", "POST", PUSH, with_(id="x'; DROP TABLE tasks; --"), "user", 400, "id"),
    ("id too long", "POST", PUSH, with_(id="a" * 129), "user", 400, "id"),
    ("id empty", "POST", PUSH, with_(id=""), "user", 400, "id"),
    ("2 MiB body", "POST", PUSH, with_(env={"BIG": "x" * (2 << 20)}), "user", 413, None),
    ("5 MiB agent report", "POST", "/api/tasks/LEASED/finish", {"node_id": "node-a", "lease_token": 1, "status": "failed", "output": "x" * (5 << 20)}, "agent-a", 413, None),
    ("missing token", "POST", PUSH, GOOD, None, 401, None),
    ("unknown token", "POST", PUSH, GOOD, "not-a-token", 401, None),
    ("basic auth", "POST", PUSH, GOOD, "basic", 401, None),
    ("agent token pushes", "POST", PUSH, GOOD, "agent-a", 403, None),
    ("agent token lists", "GET", "/api/tasks", None, "agent-a", 403, None),
    ("user token claims", "POST", "/api/agents/claim", {"node_id": "node-a"}, "user", 403, None),
    ("other node claims", "POST", "/api/agents/claim", {"node_id": "node-b"}, "agent-a", 403, "node_id"),
    ("other node heartbeats", "POST", "/api/agents/heartbeat", {"node_id": "node-b", "leases": []}, "agent-a", 403, "node_id"),
    ("other node registers", "POST", "/api/agents/register", {"node_id": "node-b", "capacity": {"nano_cpus": 1, "memory_bytes": 1}}, "agent-a", 403, "node_id"),
    ("other node finishes", "POST", "/api/tasks/LEASED/finish", {"node_id": "node-b", "lease_token": 1, "status": "succeeded"}, "agent-a", 403, "node_id"),
    ("finish bad status", "POST", "/api/tasks/LEASED/finish", {"node_id": "node-a", "lease_token": 1, "status": "exploded"}, "agent-a", 400, "status"),
    ("finish exit code 300", "POST", "/api/tasks/LEASED/finish", {"node_id": "node-a", "lease_token": 1, "status": "failed", "exit_code": 300}, "agent-a", 400, "exit_code"),
    ("finish unknown field", "POST", "/api/tasks/LEASED/finish", {"node_id": "node-a", "lease_token": 1, "status": "failed", "rm": "-rf"}, "agent-a", 400, "rm"),
    ("started token zero", "POST", "/api/tasks/LEASED/started", {"node_id": "node-a", "lease_token": 0}, "agent-a", 400, "lease_token"),
    ("heartbeat leases not a list", "POST", "/api/agents/heartbeat", {"node_id": "node-a", "leases": {"a": 1}}, "agent-a", 400, "leases"),
    ("heartbeat lease bad id", "POST", "/api/agents/heartbeat", {"node_id": "node-a", "leases": [{"task_id": "../x", "lease_token": 1}]}, "agent-a", 400, "leases"),
    ("claim wait too long", "POST", "/api/agents/claim", {"node_id": "node-a", "wait_ms": 10 ** 9}, "agent-a", 400, "wait_ms"),
    ("register without capacity", "POST", "/api/agents/register", {"node_id": "node-a"}, "agent-a", 400, "capacity"),
    ("register negative memory", "POST", "/api/agents/register", {"node_id": "node-a", "capacity": {"nano_cpus": 1, "memory_bytes": -1}}, "agent-a", 400, "memory_bytes"),
    ("register bad driver", "POST", "/api/agents/register", {"node_id": "node-a", "capacity": {"nano_cpus": 1, "memory_bytes": 1}, "driver": "qemu"}, "agent-a", 400, "driver"),
    ("path traversal in id", "GET", "/api/tasks/..%2F..%2Fetc%2Fpasswd", None, "user", 400, "id"),
    ("dot-dot id", "GET", "/api/tasks/..", None, "user", 400, "id"),
    ("NUL in id", "GET", "/api/tasks/a%00b", None, "user", 400, "id"),
    ("SQL in id", "GET", "/api/tasks/x'%20OR%20'1'='1", None, "user", 400, "id"),
    ("cancel SQL id", "POST", "/api/tasks/x';DELETE%20FROM%20tasks;--/cancel", None, "user", 400, "id"),
    ("unknown task", "GET", "/api/tasks/no-such-task", None, "user", 404, "id"),
    ("cancel unknown task", "POST", "/api/tasks/no-such-task/cancel", None, "user", 404, "id"),
    ("list bad status", "GET", "/api/tasks?status=bogus", None, "user", 400, "status"),
    ("list limit zero", "GET", "/api/tasks?limit=0", None, "user", 400, "limit"),
    ("list limit huge", "GET", "/api/tasks?limit=1001", None, "user", 400, "limit"),
    ("list limit text", "GET", "/api/tasks?limit=ten", None, "user", 400, "limit"),
    ("list cursor negative", "GET", "/api/tasks?after=-1", None, "user", 400, "after"),
    ("list cursor SQL", "GET", "/api/tasks?after=1;DROP%20TABLE%20tasks", None, "user", 400, "after"),
    ("list label without value", "GET", "/api/tasks?label=job", None, "user", 400, "label"),
    ("list unknown parameter", "GET", "/api/tasks?sort=desc", None, "user", 400, "sort"),
    ("wrong method", "PATCH", "/api/tasks/LEASED", None, "user", 405, None),
    ("delete a task that has not ended", "DELETE", "/api/tasks/LEASED", None, "user", 409, "id"),
    ("GET on push", "GET", PUSH, None, "user", 405, None),
    ("unknown endpoint", "GET", "/api/secrets", None, "user", 404, None),
    ("unknown action", "POST", "/api/tasks/LEASED/explode", None, "user", 404, None),
]


def test_hostile_requests_are_refused_and_change_nothing():
    check(len(CASES) >= 40, "at least 40 cases")
    # A lease long enough that the sweep cannot legitimately change anything while the cases run.
    pg, (c,) = start_cluster(args=["--lease-ttl-ms", 3600000])
    a = c.agent("node-a")
    a.register()
    queued = c.push(SAMPLE_TASK).json()["id"]
    leased = c.push({"image": "img", "cmd": ["true"]}).json()["id"]
    got = a.claim_task()
    check(got is not None, "claim")
    # The claim takes the oldest queued task it may take (SAMPLE_TASK targets node-b).
    check(got[0]["id"] == leased, f"claimed {got[0]['id']}")

    # Housekeeping explains why the queued task waits (node-b is not registered); let that happen
    # first, since it is a legitimate change of the database.
    mctest.wait_until(lambda: c.task(queued)["pending_reason"], msg="pending_reason set")

    tokens = {"user": USER_TOKEN, "agent-a": agent_token("node-a"), None: None}
    before = db_fingerprint(pg)
    failures = []
    for name, method, path, body, who, status, field in CASES:
        path = path.replace("LEASED", leased)
        headers = {}
        if who == "basic":
            headers["Authorization"] = "Basic dXNlcjpwYXNz"
            token = None
        else:
            token = tokens[who] if who in tokens else who
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if status == 413:
            r = raw_request(c.url, method, path, body, token)
        else:
            r = http(method, c.url + path, body, token=token, headers=headers)
        problem = None
        if r.status != status:
            problem = f"status {r.status}, wanted {status}: {r.text[:200]}"
        else:
            try:
                j = r.json()
            except ValueError:
                j = None
            if not isinstance(j, dict) or not isinstance(j.get("error"), str) or not j["error"]:
                problem = f"no JSON error body: {r.text[:200]!r}"
            elif field is not None and j.get("field") != field:
                problem = f"field {j.get('field')!r}, wanted {field!r}: {j['error']}"
        after = db_fingerprint(pg)
        if after != before:
            problem = (problem + "; " if problem else "") + "the database changed"
            before = after
        if problem:
            failures.append(f"{name}: {problem}")
        else:
            print(f"  refused as expected: {name} -> {status}")
    check(not failures, "\n".join(failures))

    # The stored tasks are intact and the control still serves.
    check(c.task(queued)["cmd"] == SAMPLE_TASK["cmd"], "queued task intact")
    check(c.task(leased)["status"] == "leased", "leased task intact")
    check(http("GET", c.url + "/api/health").status == 200, "still healthy")


def test_sql_metacharacters_are_data():
    pg, (c,) = start_cluster()
    nasty = ["'; DROP TABLE tasks; --", '"); DELETE FROM nodes; --', "\\'", "$1", "%s%n", "' OR '1'='1", "E'\\x00'"]
    body = {"image": "img", "cmd": ["sh", "-c"] + nasty, "env": {f"V{i}": s for i, s in enumerate(nasty)},
            "labels": {f"l{i}": s for i, s in enumerate(nasty)}, "id": "nasty"}
    r = c.push(body)
    check(r.status == 201, f"push: {r.status} {r.text}")
    t = c.task("nasty")
    check(t["cmd"] == body["cmd"] and t["env"] == body["env"] and t["labels"] == body["labels"], t)
    r = c.list("?label=l0=" + "%27%3B%20DROP%20TABLE%20tasks%3B%20--")
    check(r.status == 200 and [x["id"] for x in r.json()["tasks"]] == ["nasty"], f"label filter: {r.text[:300]}")
    check(pg.psql("SELECT count(*) FROM tasks")[0][0] == "1", "tasks table intact")


mctest.main()
