#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-control in the DHT: it announces itself under the cluster info-hash, and publishes each task's
state as a record signed by the cluster key, which `mc-dhtget task` reads and verifies with no
control running, and refuses under another key."""

import hashlib
import json
import os

import mctest
from mctest import binary, check, run, tmpdir, wait_until
from controltest import Control, Postgres, start_bootstrap, udp_port, write_tokens


def dhtget(bootstrap, *args, check_rc=True):
    p = run([binary("mc-dhtget"), "--bootstrap", bootstrap, "-4", "--timeout", "10"] + [str(a) for a in args],
            check=False, timeout=60)
    if check_rc:
        check(p.returncode == 0, f"mc-dhtget {' '.join(map(str, args))}: {p.returncode} {p.stdout} {p.stderr}")
    return p


def task_record(bootstrap, key, tid):
    p = dhtget(bootstrap, "--json", "--cluster-key", key, "task", tid, check_rc=False)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)


def test_records_announce_and_verification():
    boot = start_bootstrap()
    pg = Postgres().start()
    tokens = write_tokens(("node-a", "node-b"))
    c = Control(pg, tokens=tokens, args=["--dht-port", udp_port(), "--dht-bootstrap", boot,
                                          "--cluster-name", "test-cluster"]).start()
    key_file = os.path.join(c.daemon.state_dir, "cluster.pub")
    wait_until(lambda: os.path.exists(key_file), msg="the cluster key is generated")
    key = open(key_file).read().strip()
    check(len(key) == 64, f"public key: {key!r}")
    check(oct(os.stat(os.path.join(c.daemon.state_dir, "cluster.key")).st_mode & 0o777) == "0o600", "key mode")

    tid = c.push({"image": "i", "cmd": ["x"], "id": "dht-task-1"}).json()["id"]
    rec = wait_until(lambda: task_record(boot, key, tid), timeout=60, msg="the queued record")
    check(rec["status"] == "queued" and rec["id"] == tid, rec)

    a = c.agent("node-a")
    a.register()
    _, token = a.claim_task()
    rec = wait_until(lambda: (lambda r: r if r and r["status"] == "leased" else None)(task_record(boot, key, tid)),
                     timeout=60, msg="the leased record")
    check(rec["node"] == "node-a" and rec["lease_token"] == token and rec["attempt"] == 1, rec)

    check(a.finish(tid, token).status == 200, "finish")
    # No control at all: the record is still there, verified.
    c.stop()
    rec = wait_until(lambda: (lambda r: r if r and r["status"] == "succeeded" else None)(task_record(boot, key, tid)),
                     timeout=60, msg="the finished record, with the control stopped")
    check(rec["lease_token"] == token, rec)

    # Under another cluster key there is no such record: it is refused, with a clear message.
    other = run([binary("mc-dhtget"), "genkey", os.path.join(tmpdir("k"), "other.key")]).stdout.strip().split()[-1]
    check(len(other) == 64 and other != key, f"other key {other}")
    p = dhtget(boot, "--cluster-key", other, "task", tid, check_rc=False)
    check(p.returncode != 0 and p.stderr.strip(), f"another key must not verify: {p.returncode} {p.stdout} {p.stderr}")


def test_replicas_are_found_under_the_cluster_info_hash():
    boot = start_bootstrap()
    pg = Postgres().start()
    tokens = write_tokens(("node-a",))
    cs = [Control(pg, tokens=tokens, name=f"mc-control-{i}",
                  args=["--dht-port", udp_port(), "--dht-bootstrap", boot, "--cluster-name", "findme"]).start()
          for i in range(2)]
    ih = hashlib.sha1(b"mc-control:findme").hexdigest()

    def ports():
        p = dhtget(boot, "--json", "peers", ih, check_rc=False)
        if p.returncode != 0:
            return None
        found = {int(peer.rsplit(":", 1)[1]) for peer in json.loads(p.stdout)["peers"]}
        return found if found >= {c.port for c in cs} else None

    found = wait_until(ports, timeout=60, msg="both replicas announced")
    check(found >= {cs[0].port, cs[1].port}, found)


def test_a_replica_with_another_key_than_configured_refuses_to_start():
    pg = Postgres().start()
    c = Control(pg, args=["--dht-port", udp_port(), "--cluster-key", "ab" * 32])
    c.daemon.start()
    rc = c.daemon.wait()
    check(rc != 0, "it must not start")
    check("is not the public half" in c.daemon.log_text(), c.daemon.log_text())


mctest.main()
