#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Writes the hand-made seeds of the control, agent and shared fuzz targets: valid inputs as the
daemons see them and hostile variants (wrong types, bounds, NUL bytes, truncation). Run once with the
source tree's root as argument; the corpus that is committed is these seeds merged (libFuzzer
-merge=1) with what the fuzzers found. Usage: make-fuzz-seeds.py SOURCE_ROOT"""

import json, os, struct, sys

root = sys.argv[1]

def save(area, target, name, data):
    d = f"{root}/test/{area}/corpus/{target}"
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{d}/seed-{name}", "wb") as f:
        f.write(data)

H = "a" * 64
spec = {"image": "debian:12", "cmd": ["sh", "-c", "echo hi"], "env": {"A": "1", "_B": "x"},
        "timeout_sec": 60, "labels": {"target_node": "node-1", "team/x": "y"},
        "resources": {"nano_cpus": 1000000000, "memory_bytes": 67108864},
        "inputs": [{"content": H, "path": "data/in.txt"}], "max_attempts": 2, "runtime": "runc", "id": "task-1"}
save("control", "task-spec", "full", json.dumps(spec))
save("control", "task-spec", "minimal", '{"image":"alpine","command":["true"]}')
for name, body in [
        ("both-cmd", '{"image":"a","cmd":["x"],"command":["y"]}'),
        ("empty-prog", '{"image":"a","cmd":[""]}'),
        ("nul-escape", '{"image":"a","cmd":["a\\u0000b"]}'),
        ("bad-path", '{"image":"a","cmd":["x"],"inputs":[{"content":"%s","path":"../x"}]}' % H),
        ("dup-path", '{"image":"a","cmd":["x"],"inputs":[{"content":"%s","path":"x"},{"content":"%s","path":"x"}]}' % (H, H)),
        ("big-int", '{"image":"a","cmd":["x"],"timeout_sec":99999999999999999999}'),
        ("float", '{"image":"a","cmd":["x"],"max_attempts":1.5}'),
        ("unknown", '{"image":"a","cmd":["x"],"resources":{"gpus":1}}'),
        ("nan", '{"image":"a","cmd":["x"],"timeout_sec":NaN}'),
        ("array", '[1,2,3]'),
        ("trailing", '{"image":"a","cmd":["x"]} x'),
        ("deep", "[" * 40 + "]" * 40),
        ("null-env", '{"image":"a","cmd":["x"],"env":null,"labels":{"target_node":"bad node"}}'),
        ("surrogate", b'{"image":"a","cmd":["\xed\xa0\x80"]}'),
        ("utf8", '{"image":"a","cmd":["\u00e9\u4e2d"],"env":{"X":"\\ud83d\\ude00"}}'),
        ]:
    save("control", "task-spec", name, body)

for name, text in [
        ("valid", "# tokens\nuser alice 0123456789abcdef0123\nagent node-1 fedcba9876543210fedc\n\n"),
        ("short", "user bob short\n"),
        ("bad-kind", "admin x y\n"),
        ("extra", "user a b c\n"),
        ("long-name", "user " + "n" * 200 + " tok\n"),
        ("long-token", "agent n " + "t" * 600 + "\n"),
        ("nul", b"user alice tok\x00en\n"),
        ("crlf", "user a tokentokentokentoken\r\n\t  # comment\r\n"),
        ]:
    save("control", "auth", name, text)

for name, text in [
        ("valid", "# comment\n; also\nNAME=x\nexport PORT = 8080\nFLAG=yes\nURLS=http://a, http://b\tc\nMC_TTL='-5'\n"),
        ("quotes", 'OLD_NAME="quoted value"\nFLAG=off\n'),
        ("range", "PORT=70000\n"),
        ("notint", "PORT=12x\n"),
        ("overflow", "TTL_MS=99999999999999999999\n"),
        ("unknown", "NOPE=1\n"),
        ("noeq", "JUSTAKEY\n"),
        ("badbool", "FLAG=maybe\n"),
        ("nul", b"NAME=a\x00b\n"),
        ("empty-strv", "URLS=,,, \n"),
        ]:
    save("shared", "config", name, text)

for name, text in [
        ("object", '{"a":"s","b":1,"c":true,"d":null,"e":[1.5,-0.0,1e300],"f":{"g":{}}}'),
        ("bigint", '{"a":18446744073709551615,"b":-9223372036854775808,"c":9223372036854775807}'),
        ("escapes", '"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"'),
        ("nul-escape", '"\\\\u0000 \\u0000"'),
        ("number", "123"),
        ("literal", " true "),
        ("inf", "1e400"),
        ("deep", "[" * 33 + "]" * 33),
        ("trailing", "{} {}"),
        ("overlong", b'"\xc0\xaf"'),
        ("bad-utf8", b'"\xf4\x90\x80\x80"'),
        ]:
    save("shared", "json", name, text)

# The agent endpoints' bodies: the first byte chooses register, claim, heartbeat, started or finish.
for name, kind, body in [
        ("register", 0, json.dumps({"node_id": "node-1", "capacity": {"nano_cpus": 4000000000, "memory_bytes": 8 << 30},
                                    "labels": {"zone": "a"}, "runtime": "runc", "driver": "docker", "version": "0.1"})),
        ("register-bad", 0, '{"node_id":"n","capacity":{"nano_cpus":-1},"driver":"lxc"}'),
        ("claim", 1, '{"node_id":"node-1","wait_ms":25000}'),
        ("claim-long", 1, '{"node_id":"node-1","wait_ms":99999999}'),
        ("heartbeat", 2, json.dumps({"node_id": "node-1", "leases": [{"task_id": "t1", "lease_token": 3}], "draining": False})),
        ("heartbeat-bad", 2, '{"node_id":"node-1","leases":[1,{"task_id":"t"}]}'),
        ("started", 3, json.dumps({"node_id": "node-1", "lease_token": 3, "container_id": "c" * 64})),
        ("finish", 4, json.dumps({"node_id": "node-1", "lease_token": 3, "status": "succeeded", "exit_code": 0, "reason": "ok",
                                  "stdout_tail": "hi\n", "stderr_tail": "", "truncated": False, "output": "hi\n"})),
        ("finish-bad", 4, '{"node_id":"node-1","lease_token":9223372036854775807,"status":"done","exit_code":256}'),
        ("unknown-key", 3, '{"node_id":"bad id","x":1}'),
        ]:
    save("control", "agent-body", name, bytes([kind]) + body.encode())

# GET /api/tasks queries, as libmicrohttpd hands them over (decoded).
for name, q in [
        ("all", "status=queued&limit=50&after=1234&label=team=x&label=target_node=node-1"),
        ("plain", "status=queued&limit=7"),
        ("bad-status", "status=done"),
        ("limits", "limit=0&limit=1001&limit=-1&limit= 5"),
        ("after", "after=0x10"),
        ("labels", "&".join("label=k%d=v" % i for i in range(17))),
        ("label-forms", "label==v&label=k&label=" + "k" * 70 + "=v&label=k/x=" + "v" * 300),
        ("overflow", "limit=99999999999999999999999&after=-9223372036854775808"),
        ]:
    save("control", "list-query", name, q)

claim = {"task": {"id": "t1", "image": "alpine", "cmd": ["true"], "env": {}, "timeout_sec": 10,
                  "resources": {"nano_cpus": 1000000000, "memory_bytes": 1 << 26}},
         "lease_token": 7, "attempt": 1, "lease_ttl_ms": 15000}
save("agent", "claim-answer", "claim", json.dumps(claim))
save("agent", "claim-answer", "error", '{"error":"Database unavailable; retry.","field":null}')
save("agent", "claim-answer", "heartbeat", '{"renewed":["t1"],"revoked":[{"task_id":"t2","lease_token":3,"reason":"cancelled"}],"lease_ttl_ms":15000}')
save("agent", "claim-answer", "odd", '{"task":{"id":"../../x","resources":{"nano_cpus":-5},"timeout_sec":-1},"lease_token":-1,"attempt":"x","lease_ttl_ms":-3}')

def frame(stream, payload):
    return struct.pack(">BxxxI", stream, len(payload)) + payload
save("agent", "docker-logs", "two", b"\x40\x08\x03" + frame(1, b"hello\n") + frame(2, "é\u4e2d err\n".encode()))
save("agent", "docker-logs", "cut", b"\x01\x02\x05" + frame(1, b"x" * 40) + frame(2, b"\xff\xfe\xe4\xb8") + frame(1, b"\xad"))
save("agent", "docker-logs", "stdin", b"\x10\x10\x01" + frame(0, b"in"))
save("agent", "docker-logs", "bad-stream", b"\x10\x10\x01" + frame(3, b"?"))
save("agent", "docker-logs", "torn", b"\x10\x10\x02" + struct.pack(">BxxxI", 1, 1000) + b"abc")

ev = {"status": "die", "id": "c" * 64, "Type": "container", "Action": "die",
      "Actor": {"ID": "c" * 64, "Attributes": {"exitCode": "0", "mc.task": "t1"}}, "time": 1700000000,
      "timeNano": 1700000000000000000}
save("agent", "docker-events", "two", "\x03" + json.dumps(ev) + "\n" + json.dumps(ev) + "\n")
save("agent", "docker-events", "ws", "\x00 \r\n\t{}\n\n{\"a\":[1,2]}")
save("agent", "docker-events", "partial", '\x05{"status":"start","id":"x"')
save("agent", "docker-events", "garbage", "\x01{}\nnot json\n")
save("agent", "docker-events", "numbers", "\x02 1 2.5 true null \"s\" ")

inspect = {"Id": "c" * 64, "State": {"Status": "running", "Pid": 123, "ExitCode": 0, "OOMKilled": False,
                                     "StartedAt": "2024-01-01T00:00:00Z"},
           "Config": {"Labels": {"mc.task": "t1", "mc.lease": "7"}}, "HostConfig": {"NanoCpus": 1000000000, "Runtime": "runc"}}
save("agent", "docker-inspect", "inspect", json.dumps(inspect))
save("agent", "docker-inspect", "list", json.dumps([{"Id": "c" * 64, "State": "exited", "Labels": {"mc.lease": "7"}}, {"Labels": None}]))
save("agent", "docker-inspect", "types", '{"State":[],"Config":{"Labels":[1]},"HostConfig":{"NanoCpus":1e3}}')

leases = {"boot_id": "fuzz-boot", "ttl_usec": 15000000, "agent_pid": 1234,
          "leases": [{"task_id": "t1", "lease_token": 7, "deadline_usec": 5000000, "fence_usec": 4000000,
                      "pid": 99, "cgroup_marker": "/mc-t1\n"},
                     {"task_id": "t2", "lease_token": 8, "deadline_usec": 6000000, "pid": 0}]}
save("agent", "lease-store", "valid", json.dumps(leases))
save("agent", "lease-store", "other-boot", json.dumps(dict(leases, boot_id="x")))
save("agent", "lease-store", "odd", '{"boot_id":"fuzz-boot","ttl_usec":-1,"agent_pid":4294967297,"leases":[{"task_id":"t","lease_token":1,"deadline_usec":-1},{"task_id":"u","lease_token":"1","deadline_usec":1},{"task_id":"v","lease_token":1,"deadline_usec":1,"cgroup_marker":""}]}')
save("agent", "lease-store", "torn", json.dumps(leases)[:70])

finish = {"node_id": "node-1", "lease_token": 7, "status": "succeeded", "exit_code": 0, "stdout_tail": "hi\n",
          "stderr_tail": "", "truncated": False, "output": "hi\n"}
save("agent", "outbox", "valid", json.dumps({"task_id": "t1", "lease_token": 7, "finish": finish}))
save("agent", "outbox", "no-finish", '{"task_id":"t1","lease_token":7}')
save("agent", "outbox", "torn", json.dumps({"task_id": "t1", "lease_token": 7, "finish": finish})[:50])
save("agent", "outbox", "types", '{"task_id":1,"lease_token":"7","finish":[]}')
