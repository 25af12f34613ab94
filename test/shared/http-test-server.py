#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small real HTTP server for the HTTP client tests: listens on 127.0.0.1 (port 0) and on a unix
socket given as argv[1], prints the TCP port on stdout, and serves until stdin closes.

  GET  /hello                 "hello"
  ANY  /echo                  JSON: method, path, body, content-type, authorization, x-test header
  GET  /slow?ms=N             waits N ms, then "slow"
  GET  /stream?n=N&ms=M       N chunks "chunk-<i>\n", M ms apart (chunked transfer encoding)
  GET  /big?bytes=N           N bytes of 'x'
"""
import json
import os
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in two writes

    def log_message(self, fmt, *args):
        pass

    def address_string(self):
        return "unix" if isinstance(self.client_address, (str, bytes)) or not self.client_address else super().address_string()

    def send_body(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if u.path == "/hello":
            return self.send_body(200, b"hello")
        if u.path == "/echo":
            o = {"method": self.command, "path": self.path, "body": body.decode(),
                 "content_type": self.headers.get("Content-Type"),
                 "authorization": self.headers.get("Authorization"),
                 "x_test": self.headers.get("X-Test"),
                 "expect": self.headers.get("Expect")}
            return self.send_body(200, json.dumps(o).encode(), "application/json")
        if u.path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            return self.send_body(200, b"slow")
        if u.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for i in range(int(q.get("n", "5"))):
                    c = f"chunk-{i}\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                    self.wfile.flush()
                    time.sleep(int(q.get("ms", "50")) / 1000)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if u.path == "/big":
            return self.send_body(200, b"x" * int(q.get("bytes", "100000")))
        return self.send_body(404, b"not found")

    do_GET = do_POST = do_DELETE = do_PUT = handle_any


class UnixHandler(Handler):
    disable_nagle_algorithm = False


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass   # clients that hang up early (cancelled requests) are part of the test


class TcpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256   # the default of 5 turns a burst of connections into SYN retries

    def handle_error(self, request, client_address):
        pass


def main():
    tcp = TcpServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    if len(sys.argv) > 1:
        path = sys.argv[1]
        if os.path.exists(path):
            os.unlink(path)
        unix = UnixServer(path, UnixHandler)
        threading.Thread(target=unix.serve_forever, daemon=True).start()
    print(tcp.server_address[1], flush=True)
    sys.stdin.read()   # the test closes our stdin (or dies) when it is done


main()
