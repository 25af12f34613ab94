#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""docs/openapi.yaml against the code and a live mc-control (on a real PostgreSQL):

- the document is valid: every schema is JSON Schema 2020-12 (jsonschema's check_schema), every $ref
  resolves, operations, parameters and responses are well formed;
- its routes are the control's: the route table of src/control/api.c (method, pattern, access) is the
  document's (method, path, x-mc-access), and the live control takes exactly the documented methods
  of every documented path (405 with Allow for the others) and nothing else (404);
- every answer of the control to the requests made here, good and bad (wrong token, unknown id,
  conflicting state, body too large, wrong Content-Type, database down, streams over the cap), has a
  status the operation documents, a content type it documents, and a body its schema takes (each
  event of the SSE stream: its data against x-mc-event-data; Prometheus text: the content type); the
  headers it documents as required are there and match their schemas. The request bodies sent as good
  ones pass the document's request schema, and those the control refuses for their shape fail it.
- every status each operation documents was seen, but for 500 (a bug, or out of memory) and 429 (a
  connection-level refusal, the same for every operation: seen on one)."""

import http.client as httpclient
import io
import json
import os
import re
import socket
import urllib.parse

import jsonschema
import yaml
from jsonschema import Draft202012Validator

import mctest
from mctest import check, http
from controltest import USER_TOKEN, Control, agent_token, small_content, start_cluster

DOC_FILE = os.path.join(mctest.source_dir(), "docs", "openapi.yaml")
API_C = os.path.join(mctest.source_dir(), "src", "control", "api.c")
BASE = "urn:mc:openapi"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ACCESS = {"ACCESS_PUBLIC": "public", "ACCESS_USER": "user", "ACCESS_AGENT": "agent", "ACCESS_ANY": "any"}

with open(DOC_FILE) as f:
    DOC = yaml.safe_load(f)

# Valid stand-ins for the path placeholders: something each names that exists or not, as a call wants.
NO_CONTENT = "0123456789abcdef" * 4


# ---------------------------------------------------------------------------------------------------
# The document

def pointer_get(pointer):
    """The value at JSON pointer "#/a/b" of the document."""
    check(pointer.startswith("#/"), f"only local references are used: {pointer}")
    x = DOC
    for part in pointer[2:].split("/"):
        part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
        check(isinstance(x, dict) and part in x or isinstance(x, list) and part.isdigit() and int(part) < len(x),
              f"$ref {pointer}: no {part!r}")
        x = x[int(part)] if isinstance(x, list) else x[part]
    return x


def escape(part):
    return part.replace("~", "~0").replace("/", "~1")


def deref(obj, pointer):
    """Follows a Reference Object to what it names: (the object, its pointer)."""
    while isinstance(obj, dict) and "$ref" in obj:
        pointer = obj["$ref"]
        obj = pointer_get(pointer)
    return obj, pointer


def operations():
    """(path, method, operation, pointer) of every operation."""
    for path, item in DOC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method], f"#/paths/{escape(path)}/{method}"


def make_validator(pointer):
    """A validator of the schema at pointer, its $refs resolved in the document (jsonschema 4.18 and
    later: a referencing registry; Debian 12's 4.10: a RefResolver)."""
    schema = {"$ref": BASE + urllib.parse.quote(pointer, safe="#/~")}
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        resolver = jsonschema.RefResolver(BASE, DOC, store={BASE: DOC})
        return Draft202012Validator(schema, resolver=resolver)
    registry = Registry().with_resource(BASE, Resource(contents=DOC, specification=DRAFT202012))
    return Draft202012Validator(schema, registry=registry)


_validators = {}


def validate(value, pointer, what):
    v = _validators.get(pointer)
    if v is None:
        v = _validators[pointer] = make_validator(pointer)
    errors = sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))
    check(not errors, f"{what}: does not match {pointer}: " +
          "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:5]) +
          f"\n{json.dumps(value)[:2000]}")


def is_valid(value, pointer):
    v = _validators.get(pointer) or make_validator(pointer)
    _validators[pointer] = v
    return v.is_valid(value)


def all_schemas():
    """(pointer, schema) of every schema in the document."""
    for name, s in DOC["components"]["schemas"].items():
        yield f"#/components/schemas/{escape(name)}", s

    def walk(x, pointer):
        if isinstance(x, dict):
            for k, v in x.items():
                p = f"{pointer}/{escape(str(k))}"
                if k in ("schema", "x-mc-event-data") and isinstance(v, dict):
                    yield p, v
                elif k != "schemas":
                    yield from walk(v, p)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from walk(v, f"{pointer}/{i}")
    yield from walk(DOC["paths"], "#/paths")
    yield from walk({k: v for k, v in DOC["components"].items() if k != "schemas"}, "#/components")


def test_document_is_valid():
    check(DOC.get("openapi", "").startswith("3.1."), f"openapi: {DOC.get('openapi')}")
    check(DOC.get("jsonSchemaDialect") == "https://json-schema.org/draft/2020-12/schema", "jsonSchemaDialect")
    check(DOC["info"].get("title") and DOC["info"].get("version"), "info")
    check(set(DOC["components"]["securitySchemes"]) == {"bearer", "agentCertificate"}, "securitySchemes")

    # Every $ref resolves.
    refs = []

    def walk(x):
        if isinstance(x, dict):
            if "$ref" in x:
                refs.append(x["$ref"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(DOC)
    check(len(refs) > 100, f"only {len(refs)} references")
    for r in refs:
        pointer_get(r)

    # Every schema is a 2020-12 schema, and can be compiled with its references.
    n = 0
    for pointer, schema in all_schemas():
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise AssertionError(f"{pointer}: not a valid JSON Schema 2020-12: {e.message}")
        make_validator(pointer).is_valid(None)
        n += 1
    check(n > 50, f"only {n} schemas")

    # Operations.
    ids = set()
    for path, method, op, pointer in operations():
        where = f"{method.upper()} {path}"
        check(op.get("operationId") and op["operationId"] not in ids, f"{where}: operationId missing or repeated")
        ids.add(op["operationId"])
        check(op.get("x-mc-access") in ACCESS.values(), f"{where}: x-mc-access {op.get('x-mc-access')}")
        public = op["x-mc-access"] == "public"
        check((op.get("security") == []) == public, f"{where}: security [] if and only if public")
        for req in op.get("security", []):
            for name in req:
                check(name in DOC["components"]["securitySchemes"], f"{where}: security {name}")
        # Path parameters: every placeholder declared, nothing else.
        declared = set()
        for p in DOC["paths"][path].get("parameters", []) + op.get("parameters", []):
            p, _ = deref(p, None)
            check(p.get("in") in ("path", "query", "header") and p.get("name") and "schema" in p, f"{where}: parameter {p}")
            if p["in"] == "path":
                check(p.get("required") is True, f"{where}: path parameter {p['name']} not required")
                declared.add(p["name"])
        check(declared == set(re.findall(r"\{([^}]+)\}", path)), f"{where}: path parameters {declared}")
        # A body only where the code reads one, and 415 and 413 with it.
        has_body = "requestBody" in op
        responses = op.get("responses")
        check(isinstance(responses, dict) and responses, f"{where}: no responses")
        if has_body:
            check({"413", "415"} <= set(responses), f"{where}: takes a body, but documents no 413 or 415")
        if not public:
            check("401" in responses, f"{where}: needs a token, but documents no 401")
            check(("403" in responses) == (op["x-mc-access"] != "any"), f"{where}: 403")
        for code, resp in responses.items():
            check(re.fullmatch(r"[1-5][0-9][0-9]", code), f"{where}: response code {code}")
            resp, _ = deref(resp, None)
            check(resp.get("description"), f"{where} {code}: no description")
            for media, m in resp.get("content", {}).items():
                check("schema" in m, f"{where} {code} {media}: no schema")
            if code >= "400" and "content" in resp:
                check("application/json" in resp["content"], f"{where} {code}: an error is JSON")
            if code in ("204",):
                check("content" not in resp, f"{where} {code}: has content")


# ---------------------------------------------------------------------------------------------------
# The routes

def source_routes():
    """{(METHOD, pattern): access} of the route table in src/control/api.c."""
    with open(API_C) as f:
        text = f.read()
    m = re.search(r"static const Route routes\[\] = \{(.*?)\n\};", text, re.S)
    check(m, "route table not found in api.c")
    routes = {}
    for method, pattern, access in re.findall(r'\{\s*"([A-Z]+)",\s*"([^"]+)",\s*(ACCESS_[A-Z]+),', m.group(1)):
        routes[(method, pattern)] = ACCESS[access]
    check(len(routes) > 20, f"only {len(routes)} routes parsed from api.c")
    return routes


def documented_routes():
    return {(method.upper(), path): op["x-mc-access"] for path, method, op, _ in operations()}


def concrete(path, task="t-1", node="node-a", content=NO_CONTENT):
    return path.replace("{id}", task).replace("{node}", node).replace("{content}", content)


def test_routes_are_documented():
    src, doc = source_routes(), documented_routes()
    check(set(src) == set(doc), f"routed, not documented: {sorted(set(src) - set(doc))}; "
          f"documented, not routed: {sorted(set(doc) - set(src))}")
    for k in src:
        check(src[k] == doc[k], f"{k}: access {src[k]} in api.c, {doc[k]} in the document")

    # The live control: each documented path takes exactly its documented methods (HEAD with GET).
    pg, (c,) = start_cluster()
    for path, item in DOC["paths"].items():
        want = {m.upper() for m in METHODS if m in item}
        if "GET" in want:
            want.add("HEAD")
        r = http("OPTIONS", c.url + concrete(path), token=USER_TOKEN)
        check(r.status == 405, f"OPTIONS {path}: {r.status} {r.text}")
        allow = {m.strip() for m in (r.headers.get("Allow") or "").split(",") if m.strip()}
        check(allow == want, f"{path}: the control allows {sorted(allow)}, the document {sorted(want)}")
    # And nothing undocumented next to them.
    for path in ("/api", "/api/task", "/api/tasks/t-1/nothing", "/api/nodes/node-a/nothing", "/api/agents",
                 "/api/agents/nothing", "/metrics/x", "/api/contents/" + NO_CONTENT + "/x"):
        r = http("GET", c.url + path, token=USER_TOKEN)
        check(r.status == 404, f"GET {path}: {r.status} {r.text}")


# ---------------------------------------------------------------------------------------------------
# Answers

SEEN = set()    # (operationId, status) of every answer checked


def find_operation(method, path):
    """The documented (template, operation, pointer) of a concrete request path: the template that is
    the path itself, else one whose placeholders match its segments."""
    def matches(template):
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        return re.match(rx, path)
    templates = [t for t in DOC["paths"] if t == path] or [t for t in DOC["paths"] if matches(t)]
    for t in templates:
        if method.lower() in DOC["paths"][t]:
            return t, DOC["paths"][t][method.lower()], f"#/paths/{escape(t)}/{method.lower()}"
    raise AssertionError(f"{method} {path} is not documented")


def check_answer(method, path, status, headers, body, what=None):
    """Checks one answer against the document. Returns the parsed JSON body, if any."""
    template, op, pointer = find_operation(method, path)
    what = what or f"{method} {path}"
    code = str(status)
    check(code in op["responses"], f"{what}: status {code} is not documented ({sorted(op['responses'])}): "
          f"{body[:500]!r}")
    SEEN.add((op["operationId"], code))
    resp, rpointer = deref(op["responses"][code], f"{pointer}/responses/{code}")

    for name, h in resp.get("headers", {}).items():
        h, hpointer = deref(h, f"{rpointer}/headers/{escape(name)}")
        value = headers.get(name)
        check(value is not None or not h.get("required"), f"{what}: no {name} header")
        if value is not None and "schema" in h:
            validate(value, f"{hpointer}/schema", f"{what}: header {name}")

    content = resp.get("content")
    if not content:
        check(body == b"", f"{what}: {code} should have no body: {body[:200]!r}")
        return None
    ctype = headers.get("Content-Type") or ""
    media = ctype.split(";")[0].strip().lower()
    check(media in content, f"{what}: {code} with Content-Type {ctype!r}, documented {sorted(content)}")
    spointer = f"{rpointer}/content/{escape(media)}/schema"
    if media == "application/json":
        try:
            j = json.loads(body)
        except ValueError as e:
            raise AssertionError(f"{what}: not JSON ({e}): {body[:200]!r}")
        validate(j, spointer, f"{what} → {code}")
        return j
    if media.startswith("text/"):
        text = body.decode("utf-8")     # the control promises UTF-8
        validate(text, spointer, f"{what} → {code}")
        return text
    check(len(body) > 0, f"{what}: empty {media}")
    return body


def call(c, method, path, body=None, token=USER_TOKEN, headers=None, expect=None, request_valid=None,
         timeout=60):
    """One request to control c, its answer checked against the document (and against expect, a status
    or a set of them). request_valid: whether the document's request schema must take the JSON body
    (True) or refuse it (False). Returns (status, headers, parsed body)."""
    if request_valid is not None:
        _, op, pointer = find_operation(method, path.split("?")[0])
        rb, rbp = deref(op["requestBody"], f"{pointer}/requestBody")
        sp = f"{rbp}/content/application~1json/schema"
        check(is_valid(body, sp) == request_valid,
              f"{method} {path}: the document's request schema {'refuses' if request_valid else 'takes'} {body!r}")
    r = http(method, c.url + path, body, token=token, headers=headers, timeout=timeout)
    j = check_answer(method, path.split("?")[0], r.status, r.headers, r.body)
    if expect is not None:
        want = {expect} if isinstance(expect, int) else set(expect)
        check(r.status in want, f"{method} {path}: {r.status}, expected {sorted(want)}: {r.text[:500]}")
    return r.status, r.headers, j


def announce_body(c, method, path, size, token=USER_TOKEN):
    """A request that announces a body of size bytes and sends none: the control answers from the
    headers (413 past its 4 MiB). Returns the checked answer's status."""
    u = urllib.parse.urlsplit(c.url)
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest(method, path)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    check_answer(method, path, r.status, r.headers, body)
    return r.status


class EventStream:
    """GET /api/events (or a followed log) read as it comes, each event checked."""

    def __init__(self, c, query="", token=USER_TOKEN, headers=None):
        u = urllib.parse.urlsplit(c.url)
        self.path = "/api/events"
        self.conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=60)
        h = {"Authorization": f"Bearer {token}"}
        h.update(headers or {})
        self.conn.request("GET", self.path + query, headers=h)
        self.r = self.conn.getresponse()
        self.status = self.r.status
        if self.status != 200:
            check_answer("GET", self.path, self.status, self.r.headers, self.r.read())
            return
        check_answer("GET", self.path, 200, self.r.headers, b"")   # checks status and content type
        _, op, pointer = find_operation("GET", self.path)
        self.data_pointer = f"{pointer}/responses/200/content/text~1event-stream/x-mc-event-data"
        self.comment_seen = False

    def next_event(self):
        """The next event's (id, data), data checked against the document."""
        fields = {}
        while True:
            line = self.r.readline()
            check(line, "the event stream ended")
            line = line.decode("utf-8").rstrip("\n")
            if line == "":
                if fields:
                    break
                continue
            if line.startswith(":"):
                self.comment_seen = True
                continue
            k, _, v = line.partition(":")
            fields[k] = v[1:] if v.startswith(" ") else v
        check(set(fields) == {"id", "event", "data"} and fields["event"] == "task", f"event fields: {fields}")
        data = json.loads(fields["data"])
        validate(data, self.data_pointer, "event data")
        check(fields["id"] == data["updated_at"], f"event id {fields['id']} is not its updated_at")
        return fields["id"], data

    def close(self):
        self.conn.close()


TASK = {"image": "alpine:3.20", "cmd": ["sh", "-c", "echo hi"], "labels": {"target_node": "node-a"}}


def push(c, body, path="/api/tasks/push", expect=201, **kw):
    return call(c, "POST", path, body, expect=expect, request_valid=True, **kw)[2]


def claim(c, node="node-a", expect=200):
    _, _, j = call(c, "POST", "/api/agents/claim", {"node_id": node, "wait_ms": 0}, token=agent_token(node),
                   expect=expect, request_valid=True)
    return j


def generic_refusals(c):
    """For every operation: no token, unknown token, the other kind's token, an invalid id in the path,
    a body of another Content-Type, a body over 4 MiB."""
    for path, method, op, _ in operations():
        M, access = method.upper(), op["x-mc-access"]
        p = concrete(path)
        body = {} if "requestBody" in op else None
        if access != "public":
            call(c, M, p, body, token=None, expect=401)
            call(c, M, p, body, token="no-such-token-0123456789", expect=401)
        if access == "user":
            call(c, M, p, body, token=agent_token("node-a"), expect=403)
        if access == "agent":
            call(c, M, p, body, token=USER_TOKEN, expect=403)
        token = agent_token("node-a") if access == "agent" else USER_TOKEN
        if "{" in path:
            call(c, M, concrete(path, task="-bad", node="-bad", content="-bad"), body, token=token, expect=400)
        if "requestBody" in op:
            call(c, M, p, "x", token=token, headers={"Content-Type": "text/plain"}, expect=415)
            check(announce_body(c, M, p, 4 * 1024 * 1024 + 1, token=token) == 413, f"{M} {p}: 4 MiB")


def test_answers_match_document():
    pg, (c,) = start_cluster(nodes=("node-a", "node-b", "node-c"),
                             env={"MC_LIVE_OUTPUT_MAX_BYTES": "16", "MC_HTTP_MAX_STREAMS": "2"})
    call(c, "GET", "/api/health", token=None, expect=200)
    call(c, "GET", "/metrics", token=None, expect=200)
    generic_refusals(c)

    # Contents.
    cid, torrent = small_content(b"some input\n")
    tor = {"Content-Type": "application/x-bittorrent"}
    call(c, "PUT", f"/api/contents/{cid}", torrent, headers=tor, expect=201)
    call(c, "PUT", f"/api/contents/{cid}", torrent, headers=tor, expect=200)
    call(c, "PUT", f"/api/contents/{cid}", b"not bencode", headers=tor, expect=400)
    call(c, "PUT", f"/api/contents/{cid}", b"d" + b"x" * (3 << 20), headers=tor, expect=413)
    # Other bytes stored under an id (no valid manifest does that; written behind the control's back).
    other, other_torrent = small_content(b"other\n")
    pg.psql("INSERT INTO contents (id, torrent, name, length, piece_length, pieces) "
            f"VALUES ('{other}', '\\x00'::bytea, '{'0' * 64}', 0, 16384, 0)")
    call(c, "PUT", f"/api/contents/{other}", other_torrent, headers=tor, expect=409)
    _, h, body = call(c, "GET", f"/api/contents/{cid}", expect=200)
    check(body == torrent, "the manifest comes back as it was put")
    call(c, "GET", f"/api/contents/{cid}", headers={"Accept": "application/json"}, expect=200)
    call(c, "GET", f"/api/contents/{cid}", token=agent_token("node-a"), expect=200)
    call(c, "GET", f"/api/contents/{NO_CONTENT}", expect=404)
    _, _, page = call(c, "GET", "/api/contents?limit=1", expect=200)
    check(page["next"] is not None, f"a next page: {page}")
    call(c, "GET", f"/api/contents?limit=1&after={page['next']}", expect=200)
    call(c, "GET", "/api/contents?limit=0", expect=400)

    # Pushes, both paths.
    for path in ("/api/tasks/push", "/api/tasks"):
        n = path.count("/")
        spec = dict(TASK, id=f"t-{n}", inputs=[{"content": cid, "path": "/data/in"}], runtime="runc",
                    env={"A": "b"}, resources={"nano_cpus": 100000000, "memory_bytes": 64 << 20}, max_attempts=2)
        created = push(c, spec, path)
        check(created["status"] == "queued", created)
        push(c, spec, path, expect=200)
        push(c, dict(spec, timeout_sec=5), path, expect=409)
        call(c, "POST", path, {"cmd": ["true"]}, expect=400, request_valid=False)
        call(c, "POST", path, dict(TASK, timeout_sec=0), expect=400, request_valid=False)
        call(c, "POST", path, dict(TASK, bogus=1), expect=400, request_valid=False)
        call(c, "POST", path, dict(TASK, cmd=["true"], command=["true"]), expect=400, request_valid=False)
        call(c, "POST", path, dict(TASK, inputs=[{"content": NO_CONTENT, "path": "/x"}]), expect=400,
             request_valid=True)
        call(c, "POST", path, dict(TASK, env={"A": "x" * 1000}, cmd=["y" * 60000] * 20), expect=413)
    push(c, dict(TASK, id="t-plain"))

    # Lists.
    _, _, page = call(c, "GET", "/api/tasks?limit=1", expect=200)
    check(page["next"] is not None and len(page["tasks"]) == 1, page)
    call(c, "GET", f"/api/tasks?limit=1&after={page['next']}", expect=200)
    call(c, "GET", "/api/tasks?status=queued&label=target_node=node-a", expect=200)
    for q in ("status=bogus", "limit=0", "after=x", "nothing=1", "label=novalue"):
        call(c, "GET", f"/api/tasks?{q}", expect=400)

    # One task, and its long poll.
    call(c, "GET", "/api/tasks/t-2", expect=200)
    call(c, "GET", "/api/tasks/no-such-task", expect=404)
    call(c, "GET", "/api/tasks/t-2?wait=0", expect=200)
    call(c, "GET", "/api/tasks/t-2?wait=1&since=queued", expect=200)
    for q in ("wait=abc", "wait=301", "since=queued", "nothing=1"):
        call(c, "GET", f"/api/tasks/t-2?{q}", expect=400)
    call(c, "GET", "/api/tasks/no-such-task?wait=1", expect=404)
    call(c, "GET", "/api/tasks/t-2/logs", expect=200)
    call(c, "GET", "/api/tasks/no-such-task/logs", expect=404)
    call(c, "GET", "/api/tasks/t-2/logs?follow=maybe", expect=400)
    call(c, "GET", "/api/tasks/t-2/logs?nothing=1", expect=400)

    # Events: a stream from the start, and its catch-up from a cursor.
    call(c, "GET", "/api/events?task=-bad", expect=400)
    call(c, "GET", "/api/events?nothing=1", expect=400)
    call(c, "GET", "/api/events?since=", expect=400)
    call(c, "GET", "/api/events?since=not-a-time", expect=400)
    first = c.task("t-2")["created_at"]
    s = EventStream(c, f"?since={urllib.parse.quote(first)}")
    check(s.status == 200, f"events: {s.status}")
    ids = [s.next_event()[1]["id"] for _ in range(2)]
    check("t-2" in ids, f"catch-up events: {ids}")
    s.close()

    # The agent side. Register; nodes.
    reg = {"node_id": "node-a", "capacity": {"nano_cpus": 4_000_000_000, "memory_bytes": 8 << 30},
           "labels": {"zone": "z1"}, "runtime": "runc", "driver": "exec", "version": "1"}
    ta = agent_token("node-a")
    call(c, "POST", "/api/agents/register", reg, token=ta, expect=200, request_valid=True)
    call(c, "POST", "/api/agents/register", dict(reg, node_id="node-b"), token=ta, expect=403, request_valid=True)
    call(c, "POST", "/api/agents/register", dict(reg, driver="vm"), token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/agents/register", {"node_id": "node-a"}, token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/agents/register", b"{not json", token=ta, expect=400)
    call(c, "GET", "/api/nodes", expect=200)

    # Claim: unregistered, bad, the three tasks of node-a (which one first is the control's), nothing.
    call(c, "POST", "/api/agents/claim", {"node_id": "node-b"}, token=agent_token("node-b"), expect=404,
         request_valid=True)
    call(c, "POST", "/api/agents/claim", {"node_id": "node-a", "wait_ms": -1}, token=ta, expect=400,
         request_valid=False)
    leases = {}
    for _ in range(3):
        got = claim(c)
        leases[got["task"]["id"]] = got["lease_token"]
    check(set(leases) == {"t-2", "t-3", "t-plain"}, f"claimed {leases}")
    claim(c, expect=204)

    def body(tid, **kw):
        b = {"node_id": "node-a", "lease_token": leases[tid]}
        b.update(kw)
        return b

    # Heartbeat: renews, revokes the unknown, bad input, unregistered node.
    hb = {"node_id": "node-a", "draining": False,
          "leases": [{"task_id": t, "lease_token": k} for t, k in leases.items()] + [{"task_id": "gone", "lease_token": 1}]}
    _, _, j = call(c, "POST", "/api/agents/heartbeat", hb, token=ta, expect=200, request_valid=True)
    check(len(j["renewed"]) == 3 and len(j["revoked"]) == 1, j)
    call(c, "POST", "/api/agents/heartbeat", dict(hb, leases=[{"task_id": "x"}]), token=ta, expect=400,
         request_valid=False)
    call(c, "POST", "/api/agents/heartbeat", {"node_id": "node-b"}, token=agent_token("node-b"), expect=404,
         request_valid=True)

    # Drain and undrain through the control.
    call(c, "POST", "/api/nodes/node-a/drain", expect=200)
    _, _, j = call(c, "POST", "/api/agents/heartbeat", {"node_id": "node-a", "leases": hb["leases"][:3]}, token=ta,
                   expect=200, request_valid=True)
    check(j["drain"] is True, j)
    call(c, "POST", "/api/nodes/node-a/undrain", expect=200)
    call(c, "POST", "/api/nodes/no-such-node/drain", expect=404)
    call(c, "POST", "/api/nodes/no-such-node/undrain", expect=404)
    call(c, "DELETE", "/api/nodes/node-a", expect=409)         # alive
    call(c, "DELETE", "/api/nodes/no-such-node", expect=404)

    # started.
    call(c, "POST", "/api/tasks/t-2/started", body("t-2", container_id="c1", inputs_ready_usec=1, inputs_bytes=11,
                                                   inputs_bytes_cache=11), token=ta, expect=200, request_valid=True)
    call(c, "POST", "/api/tasks/t-3/started", body("t-3", lease_token=leases["t-3"] + 5), token=ta, expect=409,
         request_valid=True)
    call(c, "POST", "/api/tasks/no-such-task/started", body("t-3"), token=ta, expect=404, request_valid=True)
    call(c, "POST", "/api/tasks/t-3/started", body("t-3", lease_token=0), token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/tasks/t-3/started", body("t-3", node_id="node-b"), token=ta, expect=403, request_valid=True)

    # Live output, and a followed log that ends with the task.
    follow = mctest.background(http, "GET", c.url + "/api/tasks/t-2/logs?follow=1", token=USER_TOKEN, timeout=120)
    ob = body("t-2", offset=0, data="hello\n")
    _, _, j = call(c, "POST", "/api/tasks/t-2/output", ob, token=ta, expect=200, request_valid=True)
    check(j["stored"] == 6, j)
    call(c, "POST", "/api/tasks/t-2/output", ob, token=ta, expect=200, request_valid=True)        # again
    call(c, "POST", "/api/tasks/t-2/output", dict(ob, offset=100), token=ta, expect=400, request_valid=True)
    call(c, "POST", "/api/tasks/t-2/output", dict(ob, offset=-1), token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/tasks/t-2/output", dict(ob, offset=6, data="0123456789abcdef"), token=ta, expect=200,
         request_valid=True)
    call(c, "POST", "/api/tasks/t-2/output", dict(ob, offset=22, data="more"), token=ta, expect=413,
         request_valid=True)
    call(c, "POST", "/api/tasks/t-2/output", dict(ob, lease_token=leases["t-2"] + 5), token=ta, expect=409,
         request_valid=True)
    call(c, "POST", "/api/tasks/no-such-task/output", ob, token=ta, expect=404, request_valid=True)
    _, _, text = call(c, "GET", "/api/tasks/t-2/logs", expect=200)
    check(text.startswith("hello\n"), f"live output: {text!r}")

    # finish.
    fin = body("t-2", status="succeeded", exit_code=0, reason="done", stdout_tail="hello\n", stderr_tail="",
               truncated=False, output="hello\n0123456789abcdef and all of it\n")
    call(c, "POST", "/api/tasks/t-2/finish", dict(fin, status="done"), token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/tasks/t-2/finish", dict(fin, exit_code=256), token=ta, expect=400, request_valid=False)
    call(c, "POST", "/api/tasks/t-2/finish", fin, token=ta, expect=200, request_valid=True)
    call(c, "POST", "/api/tasks/t-2/finish", fin, token=ta, expect=409, request_valid=True)
    call(c, "POST", "/api/tasks/no-such-task/finish", fin, token=ta, expect=404, request_valid=True)
    r = follow.get(timeout=120)
    check_answer("GET", "/api/tasks/t-2/logs", r.status, r.headers, r.body, "followed logs")
    check(r.status == 200 and r.text.endswith("all of it\n"), f"followed logs: {r.status} {r.text!r}")
    _, _, j = call(c, "GET", "/api/tasks/t-2", expect=200)
    check(j["status"] == "succeeded" and j["attempts"][0]["inputs_bytes"] == 11, j)
    call(c, "GET", "/api/tasks/t-2/logs", expect=200)

    # release.
    rel = body("t-3", code="inputs_unavailable", reason="no peer")
    call(c, "POST", "/api/tasks/t-3/release", dict(rel, code="bored"), token=ta, expect=400, request_valid=False)
    _, _, j = call(c, "POST", "/api/tasks/t-3/release", rel, token=ta, expect=200, request_valid=True)
    check(j["status"] == "queued" and j["attempts"][0]["status"] == "released", j)
    call(c, "POST", "/api/tasks/t-3/release", rel, token=ta, expect=409, request_valid=True)
    call(c, "POST", "/api/tasks/no-such-task/release", rel, token=ta, expect=404, request_valid=True)

    # Claims show the inputs; cancel revokes the lease.
    got = claim(c)
    check(got["task"]["id"] == "t-3" and got["inputs"][0]["length"] == 11, got)
    _, _, j = call(c, "POST", "/api/tasks/t-3/cancel", expect=200)
    check(j["status"] == "cancelled", j)
    call(c, "POST", "/api/tasks/t-3/cancel", expect=409)
    call(c, "POST", "/api/tasks/no-such-task/cancel", expect=404)
    _, _, j = call(c, "POST", "/api/agents/heartbeat", {"node_id": "node-a", "leases": [
        {"task_id": "t-3", "lease_token": got["lease_token"]}]}, token=ta, expect=200, request_valid=True)
    check(j["revoked"][0]["reason"] == "cancelled", j)
    # A cancelled task still takes the result of its last lease, once.
    call(c, "POST", "/api/tasks/t-3/finish", {"node_id": "node-a", "lease_token": got["lease_token"],
                                              "status": "cancelled", "exit_code": 137}, token=ta, expect=200,
         request_valid=True)

    # Delete: not ended, ended, unknown.
    call(c, "DELETE", "/api/tasks/t-plain", expect=409)
    call(c, "DELETE", "/api/tasks/t-2", expect=204)
    call(c, "DELETE", "/api/tasks/t-2", expect=404)

    # Streams over HTTP_MAX_STREAMS (2): 503 with Retry-After for each kind.
    # (The streams left before are ended within 10 s: until then they count.)
    held = []

    def hold_one():
        s = EventStream(c)
        if s.status == 200:
            held.append(s)
        else:
            s.close()
        return len(held) == 2
    mctest.wait_until(hold_one, timeout=60, msg="two event streams held")
    call(c, "GET", "/api/tasks/t-3?wait=5", expect=503)
    call(c, "GET", "/api/tasks/t-3/logs?follow=1", expect=503)
    s = EventStream(c)
    check(s.status == 503, f"a third stream: {s.status}")
    # A change shows on the streams held.
    push(c, dict(TASK, id="t-evt"))
    for s in held:
        while s.next_event()[1]["id"] != "t-evt":
            pass
        s.close()

    # A lost node is removed, by a replica whose lease TTL (the time to be lost) is short.
    call(c, "POST", "/api/agents/register", dict(reg, node_id="node-c"), token=agent_token("node-c"), expect=200,
         request_valid=True)
    c2 = Control(pg, tokens=c.tokens, args=["--lease-ttl-ms", 300], name="mc-control-short-ttl").start()
    mctest.wait_until(lambda: call(c2, "DELETE", "/api/nodes/node-c", expect=(204, 409))[0] == 204,
                      msg="lost node-c removed")
    c2.stop()

    # One connection too many from this address: 429 (a second control allowing one at a time).
    c3 = Control(pg, tokens=c.tokens, env={"MC_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "1"}, name="mc-control-one").start()
    hold = socket.create_connection(("127.0.0.1", c3.port))
    try:
        def refused():
            # The refusal is written at accept, before anything is read: send nothing, read it.
            with socket.create_connection(("127.0.0.1", c3.port), timeout=60) as s:
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status_line, _, rest = head.partition(b"\r\n")
            status = int(status_line.split()[1])
            if status != 429:
                return False
            headers = httpclient.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
            check_answer("GET", "/api/nodes", status, headers, body, "a second connection")
            return True
        mctest.wait_until(refused, msg="429 for a second connection")
    finally:
        hold.close()
    c3.stop()

    # The database away: 503 (health says "degraded").
    pg.stop()
    mctest.wait_until(lambda: call(c, "GET", "/api/health", token=None, expect=(200, 503))[0] == 503,
                      msg="health 503 without the database")
    u503 = [("GET", "/api/tasks", None, USER_TOKEN), ("POST", "/api/tasks/push", TASK, USER_TOKEN),
            ("POST", "/api/tasks", TASK, USER_TOKEN), ("GET", "/api/tasks/t-3", None, USER_TOKEN),
            ("DELETE", "/api/tasks/t-3", None, USER_TOKEN), ("GET", "/api/tasks/t-3/logs", None, USER_TOKEN),
            ("POST", "/api/tasks/t-3/cancel", None, USER_TOKEN), ("GET", "/api/contents", None, USER_TOKEN),
            ("GET", f"/api/contents/{cid}", None, USER_TOKEN), ("PUT", f"/api/contents/{cid}", torrent, USER_TOKEN),
            ("GET", "/api/nodes", None, USER_TOKEN), ("DELETE", "/api/nodes/node-a", None, USER_TOKEN),
            ("POST", "/api/nodes/node-a/drain", None, USER_TOKEN), ("POST", "/api/nodes/node-a/undrain", None, USER_TOKEN),
            ("POST", "/api/agents/register", reg, ta), ("POST", "/api/agents/claim", {"node_id": "node-a"}, ta),
            ("POST", "/api/agents/heartbeat", {"node_id": "node-a"}, ta),
            ("POST", "/api/tasks/t-3/started", body("t-3"), ta), ("POST", "/api/tasks/t-3/finish", fin, ta),
            ("POST", "/api/tasks/t-3/release", rel, ta), ("POST", "/api/tasks/t-3/output", ob, ta)]
    for method, path, b, token in u503:
        headers = tor if path.startswith("/api/contents/") and method == "PUT" else None
        call(c, method, path, b, token=token, headers=headers, expect=503)

    # Every documented answer was seen, but 500 and (but once) 429.
    missing = []
    for path, method, op, _ in operations():
        for code in op["responses"]:
            if code == "500" or code == "429" or (op["operationId"], code) in SEEN:
                continue
            if (op["operationId"], code) == ("metrics", "503"):
                continue        # out of connections, or stopping: no request of this test gets it
            missing.append(f"{method.upper()} {path} {code}")
    check(any(code == "429" for _, code in SEEN), "no 429 seen")
    check(not missing, "documented answers never seen: " + ", ".join(missing))
    print(f"checked {len(SEEN)} (operation, status) pairs against the document")


mctest.main()
