#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the control does for watching and cleaning up, against a real PostgreSQL with scripted agents:
live output chunks and their fencing, drain and undrain of a node from the control, removing a lost
node, deleting a finished task, and retention."""

import re

import mctest
from mctest import check, http, wait_until
from controltest import USER_TOKEN, Events, agent_token, start_cluster

TASK = {"image": "alpine:3.20", "cmd": ["true"], "timeout_sec": 60}


def output(c, agent, tid, token, offset, data, as_token=None):
    return http("POST", f"{c.url}/api/tasks/{tid}/output",
                {"node_id": agent.node, "lease_token": token, "offset": offset, "data": data},
                token=as_token or agent.token)


def logs(c, tid):
    r = http("GET", f"{c.url}/api/tasks/{tid}/logs", token=USER_TOKEN)
    check(r.status == 200, f"logs: {r.status} {r.text}")
    return r.text


def push(c, body):
    r = c.push(body)
    check(r.status == 201, f"push: {r.status} {r.text}")
    return r.json()["id"]


def test_output_chunks():
    pg, (c,) = start_cluster(nodes=("node-a", "node-b"))
    a = c.agent("node-a")
    a.register()
    tid = push(c, dict(TASK, labels={"target_node": "node-a"}))
    task, token = a.claim_task()
    check(task["id"] == tid, "claimed")
    check(a.started(tid, token).status == 200, "started")

    r = output(c, a, tid, token, 0, "first\n")
    check(r.status == 200 and r.json()["stored"] == 6, f"chunk: {r.status} {r.text}")
    # The same chunk again (a lost answer): stored once.
    r = output(c, a, tid, token, 0, "first\n")
    check(r.status == 200 and r.json()["stored"] == 6, f"again: {r.status} {r.text}")
    check(logs(c, tid) == "first\n", "live log")
    r = output(c, a, tid, token, 100, "x")
    check(r.status == 400 and r.json()["field"] == "offset", f"gap: {r.status} {r.text}")
    # Only the agent of the node, with an agent token.
    r = output(c, a, tid, token, 6, "x", as_token=USER_TOKEN)
    check(r.status == 403, f"user token: {r.status}")
    r = output(c, a, tid, token, 6, "x", as_token=agent_token("node-b"))
    check(r.status == 403, f"other node's token: {r.status}")
    r = output(c, a, tid, token, 6, "x" * (64 * 1024 + 1))
    check(r.status == 400 and r.json()["field"] == "data", f"chunk too large: {r.status}")

    # A new lease: the old one's chunks are refused, and the log shows the new lease's.
    check(a.release(tid, token).status == 200, "release")
    task, token2 = a.claim_task()
    check(token2 == token + 1, "second lease")
    r = output(c, a, tid, token, 6, "late\n")
    check(r.status == 409 and r.json()["field"] == "lease_token", f"stale lease: {r.status} {r.text}")
    check(output(c, a, tid, token2, 0, "second lease\n").status == 200, "chunk of lease 2")
    check(logs(c, tid) == "second lease\n", "live log of lease 2")

    # The result's output is the authority; the chunks go.
    check(a.finish(tid, token2, output="all of it\n").status == 200, "finish")
    check(logs(c, tid) == "all of it\n", "final log")
    rows = pg.psql(f"SELECT count(*) FROM task_output_chunks WHERE task_id = '{tid}'")
    check(rows == [("0",)], f"chunks left: {rows}")


def test_live_output_cap():
    pg, (c,) = start_cluster(nodes=("node-a",), env={"MC_LIVE_OUTPUT_MAX_BYTES": "10"})
    a = c.agent("node-a")
    a.register()
    tid = push(c, TASK)
    _, token = a.claim_task()
    check(output(c, a, tid, token, 0, "0123456789ab").status == 200, "first chunk (may pass the cap once)")
    r = output(c, a, tid, token, 12, "more")
    check(r.status == 413 and r.json()["field"] == "data", f"over the cap: {r.status} {r.text}")


def test_drain_from_control():
    pg, (c, c2) = start_cluster(nodes=("node-a",), replicas=2)
    a = c.agent("node-a")
    a.register()
    r = http("POST", f"{c2.url}/api/nodes/node-a/drain", token=USER_TOKEN)
    check(r.status == 200 and r.json()["state"] == "draining" and r.json()["drained"] is True, f"drain: {r.status} {r.text}")
    r = http("POST", f"{c.url}/api/nodes/node-a/drain", token=agent_token("node-a"))
    check(r.status == 403, f"agent token may not drain: {r.status}")
    r = http("POST", f"{c.url}/api/nodes/nope/drain", token=USER_TOKEN)
    check(r.status == 404, f"unknown node: {r.status}")
    # The heartbeat tells the agent; its own "draining": false does not undo the control's drain.
    hb = a.heartbeat([], draining=False)
    check(hb["drain"] is True, f"heartbeat: {hb}")
    tid = push(c, dict(TASK, labels={"target_node": "node-a"}))
    check(a.claim_task() is None, "a drained node claims nothing")
    nodes = http("GET", f"{c.url}/api/nodes", token=USER_TOKEN).json()["nodes"]
    check(nodes[0]["state"] == "draining", f"nodes: {nodes}")
    # A claim waiting while the node is undrained gets the task.
    r = http("POST", f"{c2.url}/api/nodes/node-a/undrain", token=USER_TOKEN)
    check(r.status == 200 and r.json()["drained"] is False and r.json()["state"] == "ready", f"undrain: {r.status} {r.text}")
    check(a.heartbeat([])["drain"] is False, "heartbeat after undrain")
    got = a.claim_task(wait_ms=10000)
    check(got and got[0]["id"] == tid, f"claimed after undrain: {got}")


def test_delete_node():
    pg, (c,) = start_cluster(nodes=("node-a", "node-b", "node-c"))
    a, b = c.agent("node-a"), c.agent("node-b")
    a.register()
    b.register()
    r = http("DELETE", f"{c.url}/api/nodes/node-a", token=USER_TOKEN)
    check(r.status == 409 and r.json()["field"] == "id", f"a live node: {r.status} {r.text}")
    r = http("DELETE", f"{c.url}/api/nodes/node-c", token=USER_TOKEN)
    check(r.status == 404, f"unknown node: {r.status}")
    r = http("DELETE", f"{c.url}/api/nodes/node-a", token=agent_token("node-a"))
    check(r.status == 403, f"agent token: {r.status}")
    # node-b holds a lease; both stop heartbeating (their last heartbeat set an hour back).
    push(c, dict(TASK, labels={"target_node": "node-b"}))
    check(b.claim_task() is not None, "node-b leases")
    pg.psql("UPDATE nodes SET last_heartbeat = now() - interval '1 hour'")
    r = http("DELETE", f"{c.url}/api/nodes/node-b", token=USER_TOKEN)
    check(r.status == 409 and "lease" in r.json()["error"], f"a node with a lease: {r.status} {r.text}")
    r = http("DELETE", f"{c.url}/api/nodes/node-a", token=USER_TOKEN)
    check(r.status == 204 and r.body == b"", f"a lost node: {r.status} {r.text}")
    ids = [n["node_id"] for n in http("GET", f"{c.url}/api/nodes", token=USER_TOKEN).json()["nodes"]]
    check(ids == ["node-b"], f"nodes left: {ids}")


def test_delete_task():
    pg, (c,) = start_cluster(nodes=("node-a",))
    a = c.agent("node-a")
    a.register()
    done = push(c, TASK)
    _, token = a.claim_task()
    check(a.finish(done, token, output="out\n").status == 200, "finish")
    queued = push(c, TASK)
    r = http("DELETE", f"{c.url}/api/tasks/{queued}", token=USER_TOKEN)
    check(r.status == 409 and r.json()["field"] == "id", f"a queued task: {r.status} {r.text}")
    r = http("DELETE", f"{c.url}/api/tasks/no-such-task", token=USER_TOKEN)
    check(r.status == 404, f"unknown task: {r.status}")
    r = http("DELETE", f"{c.url}/api/tasks/{done}", token=agent_token("node-a"))
    check(r.status == 403, f"agent token: {r.status}")
    r = http("DELETE", f"{c.url}/api/tasks/{done}", token=USER_TOKEN)
    check(r.status == 204, f"a finished task: {r.status} {r.text}")
    check(c.get(done).status == 404, "gone")
    check(http("GET", f"{c.url}/api/tasks/{done}/logs", token=USER_TOKEN).status == 404, "its logs gone")
    rows = pg.psql(f"SELECT (SELECT count(*) FROM task_output WHERE task_id = '{done}') + "
                   f"(SELECT count(*) FROM attempts WHERE task_id = '{done}')")
    check(rows == [("0",)], f"output and attempts left: {rows}")
    check(c.get(queued).status == 200, "the queued task stays")


def test_retention():
    pg, (c,) = start_cluster(nodes=("node-a",), env={"MC_RETENTION_SEC": "3600"})
    a = c.agent("node-a")
    a.register()
    old, recent = push(c, TASK), push(c, TASK)
    for tid in (old, recent):
        task, token = a.claim_task()
        check(a.finish(task["id"], token, output="x\n").status == 200, "finish")
    running = push(c, TASK)
    _, token = a.claim_task()
    check(a.started(running, token).status == 200, "started")
    queued = push(c, TASK)
    # Ended two hours ago; and a running task whose finished_at were old must stay all the same.
    pg.psql(f"UPDATE tasks SET finished_at = now() - interval '2 hours' WHERE id IN ('{old}', '{running}')")
    wait_until(lambda: c.get(old).status == 404, 60, msg="the old finished task deleted by retention")
    for tid in (recent, running, queued):
        check(c.get(tid).status == 200, f"task {tid} kept")
    rows = pg.psql(f"SELECT count(*) FROM task_output WHERE task_id = '{old}'")
    check(rows == [("0",)], f"its output: {rows}")
    check("MC_EVENT=tasks_deleted" in c.daemon.log_text(), "tasks_deleted logged")



def streams_open(c):
    m = re.search(r"^mc_http_streams (\d+)$", http("GET", c.url + "/metrics").text, re.M)
    return int(m.group(1))


def test_streams_are_capped_and_outlive_the_deadlines():
    # Every deadline at a second: a stream outlives them all, and the idle rule does not cut it.
    pg, (c,) = start_cluster(nodes=("node-a",), env={
        "MC_HTTP_MAX_STREAMS": "2", "MC_HTTP_HEADER_TIMEOUT_SEC": "1", "MC_HTTP_BODY_TIMEOUT_SEC": "1",
        "MC_HTTP_IDLE_TIMEOUT_SEC": "1"})
    e1, e2 = Events(c), Events(c)
    check(e1.resp.status == 200 and e2.resp.status == 200, "two streams")
    third = Events(c)
    check(third.resp.status == 503 and third.resp.getheader("Retry-After") == "1", f"third: {third.resp.status}")
    r = http("GET", f"{c.url}/api/tasks/x?wait=5", token=USER_TOKEN)
    check(r.status == 503, f"a long poll counts too: {r.status}")
    check(streams_open(c) == 2, "mc_http_streams")
    # The keep-alive comment comes every 10 s: by then the stream lived far past every deadline.
    wait_until(lambda: ":\n" in e1.lines, 60, msg="a keep-alive comment")
    tid = push(c, TASK)
    wait_until(lambda: any(tid in line for line in e1.lines), 60, msg="the event after the deadlines")
    # A client that leaves is noticed (within the 10 s round) and its stream no longer counts.
    e2.conn.close()
    wait_until(lambda: streams_open(c) == 1, 60, msg="the closed stream to end")
    check(Events(c).resp.status == 200, "room again")


mctest.main()
