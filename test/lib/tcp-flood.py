#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A connection flooder, as an attacker without credentials would run it: keeps CONNECTIONS connections
open to HOST:PORT, from the given source addresses in turn, each having sent half a request: half an
HTTP request header (--payload http), or half a BitTorrent handshake (--payload bittorrent). "idle"
ones then send nothing; "trickle" ones (HTTP only) one more header byte every second, so that only an
absolute deadline ends them. A connection the server closes (refused over a cap, timed out, evicted) is opened
again, at most REOPEN per 100 ms round, as a client that insists would.

Prints one line "ready" once every connection was opened once, runs until it reads a line on standard
input (or DURATION seconds pass), closes everything, and prints a JSON object of counts."""

import argparse
import errno
import json
import select
import socket
import sys
import time

HALF = {
    "http": b"POST /api/tasks/push HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\nX-Slow: ",
    "bittorrent": b"\x13BitTorrent prot",
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sources", default="127.0.0.2",
                   help="source addresses: A (one), or A/N (N addresses from A upwards)")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--mode", choices=("idle", "trickle", "mixed"), default="mixed")
    p.add_argument("--payload", choices=tuple(HALF), default="http")
    p.add_argument("--reopen", type=int, default=500)
    p.add_argument("--duration", type=float, default=600)
    a = p.parse_args()

    base, _, count = a.sources.partition("/")
    first = int.from_bytes(socket.inet_aton(base), "big")
    sources = [socket.inet_ntoa((first + i).to_bytes(4, "big")) for i in range(int(count or 1))]

    socks = [None] * a.connections      # [socket, sent header bytes, connected]
    stats = {"opened": 0, "closed_by_server": 0, "open_failed": 0, "max_open": 0}
    next_source = 0

    def open_one(i):
        nonlocal next_source
        src = sources[next_source % len(sources)]
        next_source += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((src, 0))
            rc = s.connect_ex((a.host, a.port))
        except OSError:
            s.close()
            stats["open_failed"] += 1
            return
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            stats["open_failed"] += 1
            return
        socks[i] = [s, 0, False]
        stats["opened"] += 1

    half = HALF[a.payload]

    def trickles(i):
        return a.payload == "http" and (a.mode == "trickle" or (a.mode == "mixed" and i % 2 == 1))

    for i in range(a.connections):
        open_one(i)
    print("ready", flush=True)

    deadline = time.monotonic() + a.duration
    tick = 0
    while time.monotonic() < deadline:
        if select.select([sys.stdin], [], [], 0.1)[0]:
            break
        tick += 1
        reopened = 0
        n_open = 0
        for i, e in enumerate(socks):
            if e is None:
                if reopened < a.reopen:
                    open_one(i)
                    reopened += 1
                continue
            s, sent, _ = e
            try:
                if sent == 0:
                    e[1] = s.send(half)
                elif tick % 10 == i % 10:
                    # Once a second: has the server answered (a refusal) or closed it?
                    try:
                        s.recv(4096)
                        raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    if trickles(i):
                        s.send(b"x")
                        e[1] += 1
                n_open += 1
            except (BlockingIOError, InterruptedError):
                n_open += 1
            except OSError:
                s.close()
                socks[i] = None
                stats["closed_by_server"] += 1
        stats["max_open"] = max(stats["max_open"], n_open)

    for e in socks:
        if e is not None:
            e[0].close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
