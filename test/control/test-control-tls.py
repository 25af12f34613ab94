#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""HTTPS end to end (docs/tls.md): certificates made by tools/mc-certs, mc-control serving HTTPS with
client certificates checked against the cluster CA, curl and Python's ssl as users, real mc-agents
(exec driver) as agents. A push over HTTPS with the CA; clients with another CA refuse the control
(the agent logs control_tls_failed and never registers); a node-a certificate cannot act as node-b; an
agent with a certificate and no token runs a task; SIGHUP adds a token without closing a keep-alive
connection, and serves a renewed certificate to new connections; plain HTTP binds loopback only when
started by hand."""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys

import mctest
from mctest import Daemon, Postgres, check, free_port, wait_until

sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "agent"))
sys.path.insert(0, os.path.join(mctest.source_dir(), "test", "seeder"))
import agenttest as at  # noqa: E402
import seedertest as st  # noqa: E402
from controltest import USER_TOKEN, write_tokens  # noqa: E402

MC_CERTS = os.path.join(mctest.source_dir(), "tools", "mc-certs")


def mc_certs(*args):
    mctest.run([MC_CERTS] + [str(a) for a in args])


def make_pki(nodes):
    """The cluster CA, the control's certificate (127.0.0.1, localhost), one per node, and another CA
    with a node certificate of its own (what a client of another cluster holds)."""
    d = mctest.tmpdir("pki")
    mc_certs("ca", d)
    mc_certs("server", d, "control", "--ip", "127.0.0.1", "--dns", "localhost")
    for n in nodes:
        mc_certs("node", d, n)
    other = os.path.join(d, "other")
    mc_certs("ca", other)
    mc_certs("node", other, nodes[0])
    return d


class TlsControl:
    """mc-control serving HTTPS on 127.0.0.1 with the PKI of make_pki()."""

    def __init__(self, pki, nodes, client_ca=True):
        self.pki = pki
        self.pg = Postgres().start()
        self.tokens = write_tokens(nodes)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        args = ["--port", self.port, "--listen-address", "127.0.0.1", "--tokens-file", self.tokens, "--no-bus",
                "--tls-cert", self.file("control.crt"), "--tls-key", self.file("control.key")]
        if client_ca:
            args += ["--tls-client-ca", self.file("ca.crt")]
        self.daemon = Daemon("mc-control", args, env={"MC_DB_DSN": self.pg.dsn, "MC_LEASE_TTL_MS": "10000"})

    def file(self, name):
        return os.path.join(self.pki, name)

    def start(self):
        self.daemon.start()
        self.daemon.wait_ready()
        wait_until(lambda: self.request("GET", "/api/health")[0] == 200, msg="control healthy over HTTPS")
        return self

    def context(self, node=None, ca=None):
        ctx = ssl.create_default_context(cafile=ca or self.file("ca.crt"))
        if node:
            ctx.load_cert_chain(self.file(f"{node}.crt"), self.file(f"{node}.key"))
        return ctx

    def connection(self, node=None, ca=None):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=self.context(node, ca))

    def request(self, method, path, body=None, token=None, node=None, conn=None):
        """(status, parsed JSON or text) of one request, on conn (kept open) or a new connection."""
        c = conn or self.connection(node)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            r = c.getresponse()
            text = r.read().decode(errors="replace")
        finally:
            if conn is None:
                c.close()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    def reload(self):
        """SIGHUP, then wait for the control to say it reloaded (one more credentials_reloaded)."""
        before = self.daemon.log_text().count("MC_EVENT=credentials_reloaded")
        os.kill(self.daemon.pid, signal.SIGHUP)
        wait_until(lambda: self.daemon.log_text().count("MC_EVENT=credentials_reloaded") > before,
                   msg="credentials_reloaded after SIGHUP")


def setup(name, nodes=("node-a", "node-b"), client_ca=True):
    nodes = tuple(at.node_name(n) for n in nodes)
    pki = make_pki(nodes)
    return TlsControl(pki, nodes, client_ca=client_ca).start(), nodes


def tls_agent(c, node, env):
    e = {"MC_CONTROL_URLS": c.url, "MC_CONTROL_CA": c.file("ca.crt")}
    e.update(env)
    return at.Agent([], node, driver="exec", env=e)


def registered(c, node):
    status, body = c.request("GET", "/api/nodes", token=USER_TOKEN)
    check(status == 200, f"GET /api/nodes: {status} {body}")
    return any(n["node_id"] == node for n in body["nodes"])


def curl(c, *args):
    return subprocess.run(["curl", "-sS", "--max-time", "60"] + list(args), capture_output=True, text=True)


def test_push_over_https_with_curl():
    """The quickstart's push, over HTTPS with curl --cacert; without the CA, curl refuses the control
    (exit 60: certificate not verified); plain HTTP to the HTTPS port gets no answer."""
    c, _ = setup("push")
    p = curl(c, "--cacert", c.file("ca.crt"), "-X", "POST", f"{c.url}/api/tasks/push",
             "-H", f"Authorization: Bearer {USER_TOKEN}", "-H", "Content-Type: application/json",
             "-d", json.dumps({"image": "x", "cmd": ["true"]}), "-w", "\n%{http_code}")
    check(p.returncode == 0 and p.stdout.endswith("\n201"), f"curl --cacert push: {p.returncode} {p.stdout} {p.stderr}")
    tid = json.loads(p.stdout.rsplit("\n", 1)[0])["id"]
    status, body = c.request("GET", f"/api/tasks/{tid}", token=USER_TOKEN)
    check(status == 200 and body["status"] == "queued", f"the pushed task: {status} {body}")

    p = curl(c, f"{c.url}/api/health")
    check(p.returncode == 60, f"curl without the CA must refuse the certificate (60): {p.returncode} {p.stderr}")
    p = curl(c, "--cacert", os.path.join(c.pki, "other", "ca.crt"), f"{c.url}/api/health")
    check(p.returncode == 60, f"curl with another CA must refuse the certificate (60): {p.returncode} {p.stderr}")
    p = curl(c, f"http://127.0.0.1:{c.port}/api/health", "-o", "/dev/null", "-w", "%{http_code}")
    check(p.stdout.strip() != "200", f"plain HTTP to the HTTPS port must not be served: {p.stdout}")


def test_wrong_ca_refused_by_agent():
    """An agent whose CONTROL_CA did not sign the control's certificate never talks to it: it logs
    control_tls_failed naming the URL, and the control never sees it register."""
    c, (a_node, _) = setup("wrong-ca")
    a = tls_agent(c, a_node, {"MC_CONTROL_CA": os.path.join(c.pki, "other", "ca.crt"),
                              "MC_AGENT_TOKEN": at.agent_token(a_node)})
    a.start()
    a.daemon.wait_log("MC_EVENT=control_tls_failed", 60)
    line = next(ln for ln in a.log().splitlines() if "MC_EVENT=control_tls_failed" in ln)
    check(f"CONTROL_URL={c.url}" in line, f"the event names the control: {line}")
    check(not registered(c, a_node), "an agent that refused the control's certificate registered")
    check(a.daemon.running, "the agent keeps running (and retrying) after a TLS failure")


def test_certificate_binds_node():
    """A client certificate is its CN's node: node-a's may register node-a without a token, gets 403
    claiming as node-b, and may not use user endpoints; certificates of another CA, or one not meant
    for clients (the server's), are refused with 401 saying why, even with a valid token."""
    c, (a_node, b_node) = setup("binding")
    body = {"node_id": a_node, "capacity": {"nano_cpus": 1_000_000_000, "memory_bytes": 1 << 30},
            "runtime": "runc", "driver": "exec"}
    status, r = c.request("POST", "/api/agents/register", body, node=a_node)
    check(status == 200, f"node-a's certificate registering node-a: {status} {r}")
    status, r = c.request("POST", "/api/agents/register", dict(body, node_id=b_node), node=a_node)
    check(status == 403 and r.get("field") == "node_id", f"node-a's certificate claiming node-b: {status} {r}")
    status, r = c.request("POST", "/api/agents/heartbeat", {"node_id": b_node}, node=a_node)
    check(status == 403 and r.get("field") == "node_id", f"node-a's certificate heartbeating node-b: {status} {r}")
    status, r = c.request("GET", "/api/tasks", node=a_node)
    check(status == 403, f"a node certificate on a user endpoint: {status} {r}")
    status, r = c.request("POST", "/api/agents/register", body)
    check(status == 401, f"no certificate and no token: {status} {r}")

    ctx = c.context()
    ctx.load_cert_chain(os.path.join(c.pki, "other", f"{a_node}.crt"), os.path.join(c.pki, "other", f"{a_node}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", c.port, timeout=60, context=ctx)
    status, r = c.request("POST", "/api/agents/register", body, token=at.agent_token(a_node), conn=conn)
    conn.close()
    check(status == 401 and "TLS_CLIENT_CA" in r.get("error", ""), f"a certificate of another CA: {status} {r}")
    status, r = c.request("POST", "/api/agents/register", body, node="control")
    check(status == 401 and "clientAuth" in r.get("error", ""), f"the server's certificate as a client: {status} {r}")


def test_agent_with_certificate_runs_task():
    """A real agent with its node certificate and no token: it registers over mutual TLS, leases the
    task targeted at it, runs it and reports it succeeded. Another, with its token over TLS and no
    certificate, registers too."""
    c, (a_node, b_node) = setup("mtls-agent")
    a = tls_agent(c, a_node, {"MC_TLS_CERT": c.file(f"{a_node}.crt"), "MC_TLS_KEY": c.file(f"{a_node}.key"),
                              "MC_AGENT_TOKEN": ""})
    a.start()
    b = tls_agent(c, b_node, {"MC_AGENT_TOKEN": at.agent_token(b_node)})
    b.start()
    wait_until(lambda: registered(c, a_node), msg="the agent registered over mutual TLS")
    wait_until(lambda: registered(c, b_node), msg="the agent with a token registered over TLS")
    status, r = c.request("POST", "/api/tasks/push", {"image": at.IMAGE, "cmd": ["sh", "-c", "echo over-tls"],
                                                      "labels": {"target_node": a_node}}, token=USER_TOKEN)
    check(status == 201, f"push: {status} {r}")
    tid = r["id"]

    def final():
        s, t = c.request("GET", f"/api/tasks/{tid}", token=USER_TOKEN)
        return t if s == 200 and t["status"] in at.FINAL else None
    t = wait_until(final, 120, msg=f"task {tid} to finish")
    check(t["status"] == "succeeded", f"the task over mutual TLS: {t}")
    status, logs = c.request("GET", f"/api/tasks/{tid}/logs", token=USER_TOKEN)
    check(status == 200 and "over-tls" in str(logs), f"its output: {status} {logs}")
    check("MC_EVENT=control_tls_failed" not in a.log(), "no TLS failure logged")


def test_seeder_registers_over_https():
    """`mc-seeder add` registers its content with the control over HTTPS with CONTROL_CA; with another
    CA it stores the content, logs control_tls_failed, and the control never gets it."""
    c, _ = setup("seeder", client_ca=False)
    store = st.Store(env={"MC_CONTROL_URLS": c.url, "MC_CONTROL_CA": c.file("ca.crt"), "MC_TOKEN": USER_TOKEN})
    cid = store.add(st.random_file(10_000))
    status, r = c.request("GET", f"/api/contents/{cid}", token=USER_TOKEN)
    check(status == 200, f"registered over HTTPS: {status} {r}")

    wrong = st.Store(env={"MC_CONTROL_URLS": c.url, "MC_CONTROL_CA": os.path.join(c.pki, "other", "ca.crt"),
                          "MC_TOKEN": USER_TOKEN})
    p = wrong.cli("add", st.random_file(5_000))
    cid = p.stdout.strip()
    check("MC_EVENT=control_tls_failed" in p.stderr and f"CONTROL_URL={c.url}" in p.stderr,
          f"control_tls_failed from mc-seeder add: {p.stderr}")
    status, r = c.request("GET", f"/api/contents/{cid}", token=USER_TOKEN)
    check(status == 404, f"a seeder that refused the control's certificate registered: {status} {r}")


def test_sighup_adds_token_keeping_connections():
    """A token appended to the tokens file works after SIGHUP, also on a keep-alive connection opened
    before it, which stays the same TCP connection; an unreadable tokens file at the next SIGHUP
    changes nothing (credentials_reload_failed) and the old tokens keep working."""
    c, _ = setup("sighup")
    new_token = "user-token-carol-0123456789"
    conn = c.connection()
    status, _ = c.request("GET", "/api/tasks", token=USER_TOKEN, conn=conn)
    check(status == 200, f"before: {status}")
    sock = conn.sock
    local = sock.getsockname()
    status, _ = c.request("GET", "/api/tasks", token=new_token, conn=conn)
    check(status == 401, f"the new token before the reload: {status}")

    with open(c.tokens, "a") as f:
        f.write(f"user carol {new_token}\n")
    c.reload()
    status, r = c.request("GET", "/api/tasks", token=new_token, conn=conn)
    check(status == 200, f"the new token after SIGHUP, on the connection opened before: {status} {r}")
    check(conn.sock is sock and sock.getsockname() == local, "the keep-alive connection was reopened")
    status, _ = c.request("GET", "/api/tasks", token=USER_TOKEN, conn=conn)
    check(status == 200, f"the old token after SIGHUP: {status}")

    os.chmod(c.tokens, 0o644)      # refused: readable by others
    os.kill(c.daemon.pid, signal.SIGHUP)
    c.daemon.wait_log("MC_EVENT=credentials_reload_failed", 60)
    status, _ = c.request("GET", "/api/tasks", token=new_token, conn=conn)
    check(status == 200, f"a failed reload keeps the tokens: {status}")
    check(conn.sock is sock, "the keep-alive connection was reopened")
    conn.close()


def test_sighup_serves_renewed_certificate():
    """After the certificate is renewed on disk and SIGHUP, new connections get the new one, while a
    connection opened before keeps working; a key that does not match the certificate is refused at
    the next reload, and the renewed certificate keeps being served."""
    c, _ = setup("renew")

    def served():
        with socket.create_connection(("127.0.0.1", c.port), timeout=60) as s:
            with c.context().wrap_socket(s, server_hostname="127.0.0.1") as t:
                return t.getpeercert(binary_form=True)

    def on_disk():
        with open(c.file("control.crt")) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    old = served()
    check(old == on_disk(), "the served certificate is the file's")
    conn = c.connection()
    check(c.request("GET", "/api/tasks", token=USER_TOKEN, conn=conn)[0] == 200, "before renewal")

    mc_certs("server", c.pki, "control", "--ip", "127.0.0.1", "--dns", "localhost")
    check(on_disk() != old, "mc-certs made a new certificate")
    c.reload()
    check(served() == on_disk(), "a new connection gets the renewed certificate after SIGHUP")
    check(c.request("GET", "/api/tasks", token=USER_TOKEN, conn=conn)[0] == 200,
          "a connection opened before the renewal still works")
    conn.close()

    renewed = on_disk()
    mc_certs("node", c.pki, "stray")
    os.replace(c.file("stray.key"), c.file("control.key"))
    os.kill(c.daemon.pid, signal.SIGHUP)
    c.daemon.wait_log("MC_EVENT=credentials_reload_failed", 60)
    check("is not the private key of the certificate" in c.daemon.log_text(), "the mismatch is named")
    check(served() == renewed, "a refused reload keeps serving the certificate it had")


def test_plain_http_binds_loopback():
    """Started by hand without TLS and without LISTEN_ADDRESS, the control listens on 127.0.0.1 only
    and says it serves plain HTTP (plaintext_http, REACHABLE=no); with LISTEN_ADDRESS=0.0.0.0 it
    says so at warning priority (REACHABLE=yes)."""
    pg = Postgres().start()
    tokens = write_tokens(("n",))
    port = free_port()
    d = Daemon("mc-control", ["--port", port, "--tokens-file", tokens, "--no-bus"], env={"MC_DB_DSN": pg.dsn})
    d.start()
    d.wait_ready()
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    check(f"127.0.0.1:{port}" in listening, f"the plain-HTTP control listens on loopback only: {listening}")
    check("MC_EVENT=plaintext_http REACHABLE=no" in d.log_text(), "plaintext_http REACHABLE=no")
    d.stop()

    port = free_port()
    d = Daemon("mc-control", ["--port", port, "--listen-address", "0.0.0.0", "--tokens-file", tokens, "--no-bus"],
               env={"MC_DB_DSN": pg.dsn}, name="mc-control-all")
    d.start()
    d.wait_ready()
    check("MC_EVENT=plaintext_http REACHABLE=yes" in d.log_text(), "plaintext_http REACHABLE=yes")
    d.stop()


def test_bad_tls_configuration_refused():
    """Half a configuration, an unreadable file or a key of another certificate stop the control at
    start with a message naming the setting."""
    pki = make_pki((at.node_name("node-a"),))
    tokens = write_tokens(("n",))
    f = lambda n: os.path.join(pki, n)  # noqa: E731
    cases = [
        (["--tls-cert", f("control.crt")], "TLS_KEY"),
        (["--tls-cert", f("control.crt"), "--tls-key", f("missing.key")], "TLS_KEY="),
        (["--tls-cert", f("control.crt"), "--tls-key", f("ca.key")], "is not the private key"),
        (["--tls-cert", f("control.key"), "--tls-key", f("control.key")], "TLS_CERT="),
        (["--tls-client-ca", f("ca.crt")], "TLS_CLIENT_CA"),
    ]
    for i, (args, text) in enumerate(cases):
        p = mctest.run([mctest.binary("mc-control"), "--port", "0", "--tokens-file", tokens, "--no-bus"] + args,
                       env=dict(os.environ, MC_DB_DSN="host=/nonexistent"), check=False)
        check(p.returncode != 0 and text in p.stderr, f"case {i} {args}: {p.returncode} {p.stderr}")


mctest.main()
