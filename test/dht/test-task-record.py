#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Task state records in the DHT, writer and reader together: test-task-publisher publishes records
with task_record_publish() (the function mc-control will call) under a cluster key generated in its
state directory, and `mc-dhtget task` reads and verifies them. Records signed by another key, or
forged under the cluster key's targets by a hostile node, are rejected."""

import json

import mctest
from mctest import Daemon, binary, check, run, tmpdir, wait_until

TIMEOUT = 30


def dht_network(n=5):
    nodes = []
    for i in range(n):
        args = ["serve", "--bind", "127.0.0.1"]
        if nodes:
            args += ["-b", f"127.0.0.1:{nodes[0][1]}"]
        d = Daemon("mc-dhtget", args, name=f"dht-{i}").start()
        st = d.wait_ready(TIMEOUT)
        nodes.append((d, int(st["STATUS"].split("port ")[1].split(",")[0])))
    return nodes[0][1]


def publisher(boot, state_dir, *records, forge=None, name="publisher"):
    args = ["-b", f"127.0.0.1:{boot}", "-d", state_dir]
    if forge:
        args += ["--forge", forge]
    d = Daemon(binary("test-task-publisher"), args + list(records), name=name).start()
    return d, d.wait_ready(TIMEOUT)["STATUS"]


def task(boot, key, tid, *extra, check_rc=True):
    return run([binary("mc-dhtget"), "-b", f"127.0.0.1:{boot}", "-t", "20", "task", tid, "--cluster-key", key, *extra],
               check=check_rc)


def test_publish_and_read():
    boot = dht_network()
    state = tmpdir("control-state")
    _, key = publisher(boot, state, "t-1:running:2:7:node-b", "t-2:queued:1:0:-")

    rec = json.loads(task(boot, key, "t-1", "--json").stdout)
    check(rec["id"] == "t-1" and rec["status"] == "running" and rec["attempt"] == 2 and rec["lease_token"] == 7
          and rec["node"] == "node-b" and rec["verified"] is True, f"t-1: {rec}")
    rec = json.loads(task(boot, key, "t-2", "--json").stdout)
    check(rec["status"] == "queued" and rec["node"] is None and rec["lease_token"] == 0, f"t-2: {rec}")
    out = task(boot, key, "t-1").stdout
    check(out.startswith("task t-1: running (attempt 2, lease token 7, node node-b, updated "), out)

    # The cluster key was generated into the state directory, mode 0600, with its public half beside it.
    import os
    st = os.stat(os.path.join(state, "cluster.key"))
    check(st.st_mode & 0o777 == 0o600, f"cluster.key mode {oct(st.st_mode)}")
    with open(os.path.join(state, "cluster.pub")) as f:
        check(f.read().strip() == key, "cluster.pub")

    # A later state (same key from the same state directory, higher seq) replaces the earlier one.
    publisher(boot, state, "t-1:succeeded:2:7:node-b", name="publisher-2")
    wait_until(lambda: json.loads(task(boot, key, "t-1", "--json").stdout)["status"] == "succeeded", TIMEOUT,
               msg="the newer record")

    # base64 works as well as hex for the key.
    import base64
    b64 = base64.b64encode(bytes.fromhex(key)).decode()
    check(json.loads(task(boot, b64, "t-2", "--json").stdout)["id"] == "t-2", "base64 key")

    # A task nobody published: a clear message and exit status 2.
    r = task(boot, key, "t-404", check_rc=False)
    check(r.returncode == 2 and "task t-404: not found" in r.stderr, f"{r.returncode} {r.stderr!r}")


def test_other_key_rejected():
    boot = dht_network()
    _, key = publisher(boot, tmpdir("control-state"), "t-1:running:1:3:node-a")
    # Another cluster's key publishes the same task id: a reader with our key does not take it.
    _, other = publisher(boot, tmpdir("other-state"), "t-9:succeeded:5:9:evil", name="other-cluster")
    check(other != key, "two state directories, two keys")
    r = task(boot, key, "t-9", check_rc=False)
    check(r.returncode == 2, f"record of another key accepted: {r.stdout}")
    r = task(boot, other, "t-1", check_rc=False)
    check(r.returncode == 2, f"record of another key accepted: {r.stdout}")

    # A hostile node answers with records under our key's targets, signed by its own key (half of them
    # claiming to be our key), with a seq far above the genuine one.
    publisher(boot, tmpdir("forger-state"), "t-1:succeeded:9:99:evil", "t-5:succeeded:9:99:evil",
              "t-6:failed:9:99:evil", forge=key, name="forger")
    for tid in ("t-5", "t-6"):
        r = task(boot, key, tid, check_rc=False)
        check(r.returncode == 2 and "not signed by the cluster key" in r.stderr,
              f"{tid}: forged record not rejected: {r.returncode} {r.stdout!r} {r.stderr!r}")
    # Where a genuine record exists, the reader returns it, not the forgery.
    rec = json.loads(task(boot, key, "t-1", "--json").stdout)
    check(rec["status"] == "running" and rec["node"] == "node-a", f"t-1: {rec}")


mctest.main()
