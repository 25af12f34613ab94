#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""mc-seeder registering manifests with a real mc-control (PUT /api/contents/{id}): the manifest
arrives (GET /api/contents/{id} gives the same .torrent), a seeder started before its control keeps
retrying until the control is up, a wrong token is a refusal shown in the list, and without a
daemon `mc-seeder add` registers once. Needs the control's contents API (branch control-contents)."""

import os
import sys

import mctest
from mctest import Postgres, PrivateBus, check, free_port, http, wait_until
sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "control"))
import controltest as ct  # noqa: E402 - found through the path above
import seedertest as st  # noqa: E402


def registration(bus, cid):
    for e in st.bus_list(bus):
        if e["id"] == cid:
            return e["registration"]
    return None


def test_manifest_reaches_the_control():
    pg = Postgres().start()
    c = ct.Control(pg).start()
    bus = PrivateBus()
    store = st.Store(bus, env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": ct.USER_TOKEN})
    d = store.daemon().start()
    d.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    path = st.random_file(2 << 20)
    cid = store.add(path)
    wait_until(lambda: registration(bus, cid) == "registered", 60, msg="registered")
    r = http("GET", f"{c.url}/api/contents/{cid}", token=ct.USER_TOKEN)
    check(r.status == 200, f"GET /api/contents/{cid}: {r.status} {r.body[:200]!r}")
    check(r.body == store.cli("torrent", cid, binary=True).stdout, "the control serves the seeder's .torrent")
    d.stop()


def test_retry_until_control_is_up():
    pg = Postgres().start()
    c = ct.Control(pg)
    bus = PrivateBus()
    store = st.Store(bus, env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": ct.USER_TOKEN})
    d = store.daemon().start()
    d.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    cid = store.add(st.random_file(10_000))
    wait_until(lambda: "MC_EVENT=content_register_failed" in d.log_text(), 60, msg="a failed try")
    check(registration(bus, cid) == "pending", st.bus_list(bus))
    c.start()
    wait_until(lambda: registration(bus, cid) == "registered", 120, msg="registered once the control is up")
    check(http("GET", f"{c.url}/api/contents/{cid}", token=ct.USER_TOKEN).status == 200, "the control has it")
    d.stop()


def test_refusal_is_shown():
    pg = Postgres().start()
    c = ct.Control(pg).start()
    bus = PrivateBus()
    store = st.Store(bus, env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": "wrong-token-0123456789"})
    d = store.daemon().start()
    d.wait_ready()
    bus.wait_name(st.SEEDER_NAME)
    cid = store.add(st.random_file(10_000))
    wait_until(lambda: registration(bus, cid) == "refused", 60, msg="refused")
    entry = [e for e in st.bus_list(bus) if e["id"] == cid][0]
    check("registration_error" in entry, entry)
    check(http("GET", f"{c.url}/api/contents/{cid}", token=ct.USER_TOKEN).status == 404, "the control has not got it")
    d.stop()


def test_add_without_daemon_registers():
    pg = Postgres().start()
    c = ct.Control(pg).start()
    store = st.Store(env={"MC_CONTROL_URLS": c.url, "MC_TOKEN": ct.USER_TOKEN})
    cid = store.add(st.random_file(10_000))
    check(http("GET", f"{c.url}/api/contents/{cid}", token=ct.USER_TOKEN).status == 200, "registered by the command")
    # With the control down, the content is stored all the same.
    down = st.Store(env={"MC_CONTROL_URLS": f"http://127.0.0.1:{free_port()}", "MC_TOKEN": ct.USER_TOKEN})
    path = st.random_file(1000)
    check(down.add(path) == st.expected_id(path), "stored without a control")


mctest.main()
