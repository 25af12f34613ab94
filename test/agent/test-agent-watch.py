#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Watching a task a real agent runs (exec or docker driver: the first argument), across two control
replicas: the agent talks to the first, the user watches on the second. Live output while the task runs (GET /logs), followed
(?follow=1) until the end, the long poll (?wait=) and the event stream (GET /api/events); and a drain
from the control, which the agent learns in its heartbeat."""

import http.client
import json
import sys
import threading
import urllib.parse

import mctest
from mctest import check, http as request, wait_until
import agenttest as at
from agenttest import USER_TOKEN

DRIVER = "exec"
if len(sys.argv) > 1 and sys.argv[1] in ("docker", "exec"):
    DRIVER = sys.argv.pop(1)


class Stream:
    """A GET whose answer is read line by line on a thread, as it comes."""

    def __init__(self, url, headers=None):
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        h = {"Authorization": f"Bearer {USER_TOKEN}"}
        h.update(headers or {})
        self.conn.request("GET", u.path + ("?" + u.query if u.query else ""), headers=h)
        self.resp = self.conn.getresponse()
        self.lines = []
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                self.lines.append(line.decode())
        except (OSError, AttributeError, ValueError):
            pass        # closed by the test (http.client drops its socket under the reader)
        finally:
            self.ended.set()

    def text(self):
        return "".join(self.lines)

    def close(self):
        self.conn.close()

    def events(self, tid):
        """The task events of tid so far, as (id, data) of each server-sent event."""
        out, eid = [], None
        for line in list(self.lines):
            if line.startswith("id: "):
                eid = line[4:].strip()
            elif line.startswith("data: "):
                e = json.loads(line[6:])
                if e["id"] == tid:
                    out.append((eid, e))
        return out


def get(c, path):
    r = request("GET", c.url + path, token=USER_TOKEN)
    check(r.status == 200, f"GET {path}: {r.status} {r.text}")
    return r


def test_watch_across_replicas():
    node = at.node_name("node-watch")
    pg, (c0, c1) = at.cluster([node], replicas=2)
    mctest.defer(at.cleanup_node_containers, node)
    a = at.Agent([c0], node, driver=DRIVER).start()
    events = Stream(c1.url + "/api/events")
    check(events.resp.status == 200 and events.resp.getheader("Content-Type") == "text/event-stream",
          f"events: {events.resp.status} {events.resp.getheader('Content-Type')}")
    wait_until(lambda: events.lines, 60, msg="the event stream's first line")

    marker = f"watch-{at.RUN}"
    tid = at.push(c0, {"image": at.IMAGE, "cmd": ["sh", "-c", "echo first; " + at.held_cmd(marker, "echo second")],
                       "timeout_sec": 300, "labels": {"target_node": node}})
    # A long poll named the state it knows: it answers once the task is past it.
    r = request("GET", f"{c1.url}/api/tasks/{tid}?wait=60&since=queued", token=USER_TOKEN, timeout=90)
    check(r.status == 200 and r.json()["status"] != "queued", f"wait past queued: {r.status} {r.text}")

    # While it runs (held), the line printed before is there, on the other replica.
    wait_until(lambda: get(c1, f"/api/tasks/{tid}/logs").text == "first\n", 60, msg="the live output")
    running = at.wait_status(c1, tid, "running")
    check(running["result"] is None, "still running")

    follow = Stream(f"{c1.url}/api/tasks/{tid}/logs?follow=1")
    check(follow.resp.status == 200, f"follow: {follow.resp.status}")
    wait_until(lambda: follow.text() == "first\n", 60, msg="the followed output's first line")

    # A long poll from the running state's version answers when the task ends.
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=request(
        "GET", f"{c1.url}/api/tasks/{tid}?wait=120&since={urllib.parse.quote(running['updated_at'])}",
        token=USER_TOKEN, timeout=150)))
    t.start()
    at.release(marker)
    t.join(150)
    r = answer["r"]
    check(r.status == 200 and r.json()["status"] == "succeeded", f"wait past running: {r.status} {r.text}")

    check(follow.ended.wait(60), "the followed output ends with the task")
    check(follow.text() == "first\nsecond\n", f"followed: {follow.text()!r}")
    check(get(c1, f"/api/tasks/{tid}/logs").text == "first\nsecond\n", "the final output")

    # The event stream saw every transition, although they happened on the other replica.
    def transitions():
        seen = [e["status"] for _, e in events.events(tid)]
        return seen if seen and seen[-1] == "succeeded" else None
    seen = wait_until(transitions, 60, msg="the task's events")
    check(seen == ["queued", "leased", "running", "succeeded"], f"events: {seen}")

    # The deadline of a long poll: the current record, unchanged.
    r = request("GET", f"{c1.url}/api/tasks/{tid}?wait=1&since=succeeded", token=USER_TOKEN, timeout=60)
    check(r.status == 200 and r.json()["status"] == "succeeded", f"wait to the deadline: {r.status} {r.text}")
    # Resuming from an event's id: the tasks changed since, in their state now.
    first_id = events.events(tid)[0][0]
    again = Stream(f"{c0.url}/api/events?task={tid}", headers={"Last-Event-ID": first_id})
    wait_until(lambda: [e["status"] for _, e in again.events(tid)] == ["succeeded"], 60, msg="the catch-up")
    again.close()
    events.close()
    a.stop()


def test_drain_from_control():
    node = at.node_name("node-drain")
    pg, (c0, c1) = at.cluster([node], replicas=2)
    mctest.defer(at.cleanup_node_containers, node)
    a = at.Agent([c0], node, driver=DRIVER).start()
    wait_until(lambda: any(n["node_id"] == node for n in get(c1, "/api/nodes").json()["nodes"]), 60,
               msg="the node to register")
    r = request("POST", f"{c1.url}/api/nodes/{node}/drain", token=USER_TOKEN)
    check(r.status == 200 and r.json()["drained"] is True, f"drain: {r.status} {r.text}")
    wait_until(lambda: any(e.get("MC_REASON") == "control" for e in at.events(a.log(), "node_draining")), 60,
               msg="the agent to learn of the drain")
    tid = at.push(c0, {"image": at.IMAGE, "cmd": ["true"], "timeout_sec": 60, "labels": {"target_node": node}})

    # Two heartbeats later, still queued: a drained node claims nothing.
    def heartbeat():
        return [n["last_heartbeat"] for n in get(c0, "/api/nodes").json()["nodes"] if n["node_id"] == node][0]
    first = heartbeat()
    second = wait_until(lambda: (lambda h: h if h != first else None)(heartbeat()), 60, msg="a heartbeat")
    wait_until(lambda: heartbeat() != second, 60, msg="another heartbeat")
    check(at.task_of(c0, tid)["status"] == "queued", "not claimed while drained")

    r = request("POST", f"{c1.url}/api/nodes/{node}/undrain", token=USER_TOKEN)
    check(r.status == 200 and r.json()["drained"] is False, f"undrain: {r.status} {r.text}")
    check(at.wait_final(c0, tid)["status"] == "succeeded", "runs once undrained")
    a.stop()


mctest.main()
