# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fixtures for mc integration tests: real PostgreSQL, real daemons, a private D-Bus, dockerd, and a
private journald + systemd user manager. Standard library only (Debian's /usr/bin/python3).

A test script defines test_* functions and ends with `mctest.main()`. Everything a test starts
(daemons, databases, buses, the systemd namespace) is stopped and checked when that test ends, even
when it fails; what is started outside a test is stopped when the script exits. A part that cannot be
had is a failure, never a skip. Poll with wait_until(), never sleep a fixed time.

    import mctest
    from mctest import Daemon, Postgres, check, free_port, http

    def test_push():
        pg = Postgres().start()
        port = free_port()
        d = Daemon("mc-control", [f"--listen-port={port}"], env={"MC_DB_DSN": pg.dsn}).start()
        d.wait_ready()
        r = http("POST", f"http://127.0.0.1:{port}/api/tasks", {"image": "x", "cmd": ["true"]}, token="t")
        check(r.status == 201, f"push: {r.status} {r.text}")

    mctest.main()

Run one script by hand from the build directory:
    MC_BUILD_DIR=$PWD PYTHONPATH=../test/lib /usr/bin/python3 ../test/control/test-x.py [test_name...]
MC_KEEP_TMP=1 keeps the temporary directories (logs, data) for a look afterwards.
"""

import atexit
import contextlib
import ctypes
import fcntl
import glob
import http.client as httpclient
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

__all__ = [
    "build_dir", "source_dir", "binary", "free_port", "listen_socket", "tmpdir", "background", "defer",
    "check", "wait_until", "run", "http", "Response", "Postgres", "Daemon", "PrivateBus", "Dockerd",
    "docker_api", "docker_events", "Network", "Host", "SystemdNamespace", "enter_private_mount_namespace",
    "main",
]

DEFAULT_TIMEOUT = 30.0
_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------------------------------------------
# Paths

def source_dir():
    d = os.environ.get("MC_SOURCE_DIR")
    if d:
        return d
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dir():
    d = os.environ.get("MC_BUILD_DIR")
    if not d:
        raise AssertionError("MC_BUILD_DIR is not set: run the test through `meson test`")
    return d


def binary(name):
    """Path of a built program: src/*/NAME, tools/NAME, test/*/NAME (test helpers) or the build root."""
    b = build_dir()
    candidates = sorted(glob.glob(os.path.join(b, "src", "*", name)))
    candidates += [os.path.join(b, "tools", name)]
    candidates += sorted(glob.glob(os.path.join(b, "test", "*", name)))
    candidates += [os.path.join(b, name)]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise AssertionError(f"binary {name!r} not found under {b} (is it built?)")


# ---------------------------------------------------------------------------------------------------
# Cleanup: a stack of scopes. main() opens one per test; the bottom one is closed at exit.

_scopes = [[]]
_scopes_lock = threading.Lock()


def defer(fn, *args, **kwargs):
    """Calls fn(*args, **kwargs) when the current test ends (or at exit, outside a test).
    Deferred calls run in reverse order; an exception they raise fails the test."""
    with _scopes_lock:
        _scopes[-1].append((fn, args, kwargs))


def _close_scope(scope):
    errors = []
    while scope:
        fn, args, kwargs = scope.pop()
        try:
            fn(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - a cleanup must not stop the others
            errors.append(f"{getattr(fn, '__qualname__', fn)}: {type(e).__name__}: {e}")
    return errors


def _close_all_scopes():
    errors = []
    while True:
        with _scopes_lock:
            if not _scopes:
                break
            scope = _scopes.pop()
        errors += _close_scope(scope)
    with _scopes_lock:
        _scopes.append([])
    return errors


def _atexit():
    errors = _close_all_scopes()
    for e in errors:
        print(f"FAIL cleanup: {e}", file=sys.stderr, flush=True)
    # Only now, with every daemon stopped and checked, may their directories go.
    if _tmp_root is not None and os.environ.get("MC_KEEP_TMP") != "1":
        shutil.rmtree(_tmp_root, ignore_errors=True)
    if errors:
        sys.stdout.flush()
        os._exit(1)


atexit.register(_atexit)


def _on_sigterm(signum, frame):
    # meson sends SIGTERM to the test's process group on timeout: turn it into an exit so that the
    # cleanups run and nothing we started outlives the test.
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)


# ---------------------------------------------------------------------------------------------------
# Small helpers

def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.05, msg=None, abort=None):
    """Polls predicate() until it returns something truthy, which is returned. Exceptions raised by
    predicate count as "not yet"; the last one is reported on timeout. abort(), if given, is asked
    first on every round: a truthy answer (a message) fails at once, e.g. when the daemon that
    should answer has exited: abort=lambda: not d.running and f"exited with {d.proc.returncode}"."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        if abort is not None:
            why = abort()
            if why:
                raise AssertionError(f"gave up waiting for {msg or getattr(predicate, '__name__', 'condition')}: {why}")
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() >= deadline:
            what = msg or getattr(predicate, "__name__", "condition")
            extra = f" (last error: {type(last_exc).__name__}: {last_exc})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


class Background:
    """fn(*args, **kwargs) running in a thread (a long-poll request, a blocking client).
    get() waits for it and returns its result, or raises what it raised."""

    def __init__(self, fn, *args, **kwargs):
        self._result = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, fn, args, kwargs):
        try:
            self._result = fn(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - handed to get()
            self._error = e

    @property
    def done(self):
        return not self._thread.is_alive()

    def get(self, timeout=DEFAULT_TIMEOUT):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"background call still running after {timeout}s")
        if self._error is not None:
            raise self._error
        return self._result


def metrics_at(url):
    """Every series of one /metrics answer at url: {name with its labels as written (an unlabelled one,
    or `x{a="b"}`): value}, each value an int when it is one."""
    series = {}
    for line in http("GET", url).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        v = float(value)
        series[name] = int(v) if v.is_integer() else v
    return series


def metric_at(url, name):
    """The value of one series of the /metrics answer at url (metrics_at()), or None when it is not
    there."""
    return metrics_at(url).get(name)


def check_prometheus_text(text):
    """`promtool check metrics` finds nothing to say about a /metrics answer (format errors and the
    Prometheus naming rules: units, _total counters, HELP on every family)."""
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    check(p.returncode == 0 and not (p.stdout + p.stderr).strip(),
          f"promtool check metrics: exit {p.returncode}\n{p.stdout}{p.stderr}")


def background(fn, *args, **kwargs):
    return Background(fn, *args, **kwargs)


# Every test process of the machine takes its ports in turn from one counter, so that no two tests are
# given the same port however many run at once.
_PORT_COUNTER = "/tmp/mc-test-ports"


def _port_candidates():
    """The ports outside the kernel's ephemeral range, from 10000 up: bind(0) and every connect() take
    their local port from that range, so a port chosen there can be taken by any outgoing connection
    (of this test or another) between the choice and the daemon's bind ("Address already in use")."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    return [p for a, b in ((10000, lo - 1), (hi + 1, 65535)) for p in range(a, b + 1)]


def _bindable(port, kind):
    """Nobody has port (of kind) on any address now: a bind to the wildcard address fails otherwise."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, kind)
        except OSError:
            continue        # no IPv6 on this machine: nobody can hold the port there either
        with s:
            try:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((host, port))
            except OSError:
                return False
    return True


def socket_inodes(pid):
    """The inode numbers (as /proc/net/* writes them) of the sockets process pid holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def free_port(kind=socket.SOCK_STREAM):
    """A port that is free now on every address and that no other test of this machine was given
    recently (TCP by default; pass socket.SOCK_DGRAM for UDP), outside the ephemeral range."""
    candidates = _port_candidates()
    fd = os.open(_PORT_COUNTER, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            i = int(os.pread(fd, 32, 0) or b"x")
        except ValueError:
            i = os.getpid()
        for _ in range(len(candidates)):
            i = (i + 1) % len(candidates)
            if _bindable(candidates[i], kind):
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(i).encode(), 0)
                return candidates[i]
    finally:
        os.close(fd)
    raise AssertionError("no free port outside the ephemeral range")


def listen_socket(port=0, host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A bound (and for TCP, listening) socket to hand to a daemon with Daemon.start(listen=[...]);
    its port is sock.getsockname()[1]."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    if kind == socket.SOCK_STREAM:
        s.listen(4096)
    return s


_tmp_root = None


def _tmp_base():
    global _tmp_root
    if _tmp_root is None:
        # Short paths: unix socket names are limited to 107 bytes.
        _tmp_root = tempfile.mkdtemp(prefix="mc-test-", dir="/tmp")
        os.chmod(_tmp_root, 0o755)  # the postgres user must reach its directory
        if os.environ.get("MC_KEEP_TMP") == "1":
            print(f"# keeping temporary files in {_tmp_root}", file=sys.stderr)
    return _tmp_root


def tmpdir(prefix="d"):
    """A new temporary directory, removed when the script exits (kept with MC_KEEP_TMP=1)."""
    d = tempfile.mkdtemp(prefix=prefix + "-", dir=_tmp_base())
    os.chmod(d, 0o755)
    return d


def _sanitizer_env(log_dir):
    return {
        "ASAN_OPTIONS": f"log_path={log_dir}/asan:halt_on_error=1:abort_on_error=1:detect_leaks=1",
        "UBSAN_OPTIONS": f"log_path={log_dir}/ubsan:print_stacktrace=1:halt_on_error=1",
    }


def _sanitizer_reports(log_dir):
    reports = []
    for f in sorted(glob.glob(os.path.join(log_dir, "asan.*")) + glob.glob(os.path.join(log_dir, "ubsan.*"))):
        with open(f, errors="replace") as fh:
            reports.append(f"--- {f}\n{fh.read()}")
    return reports


def run(cmd, *, env=None, input=None, timeout=60, check=True, cwd=None):
    """Runs a command to completion (a built program runs with sanitizer reports collected; a report
    fails the test). Returns subprocess.CompletedProcess with text stdout/stderr. check=True raises
    on a non-zero exit, naming the command and its output."""
    if isinstance(cmd, str):
        cmd = [cmd]
    cmd = [str(c) for c in cmd]
    log_dir = tmpdir("run")
    full_env = dict(os.environ)
    full_env.update(_sanitizer_env(log_dir))
    full_env.setdefault("MC_LOG_TARGET", "console")
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(cmd, env=full_env, input=input, capture_output=True, timeout=timeout, cwd=cwd)
    p.stdout = p.stdout.decode(errors="replace")
    p.stderr = p.stderr.decode(errors="replace")
    reports = _sanitizer_reports(log_dir)
    if reports:
        raise AssertionError(f"sanitizer report from {cmd}:\n" + "\n".join(reports))
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited with {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


# ---------------------------------------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # httpclient.HTTPMessage: case-insensitive .get()
        self.body = body

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response ({self.status}) is not JSON: {e}: {self.text[:500]!r}")

    def __repr__(self):
        return f"<Response {self.status} {self.text[:200]!r}>"


class UnixHTTPConnection(httpclient.HTTPConnection):
    """http.client over a unix stream socket (the Docker Engine API)."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def _encode_body(body, headers):
    if body is None:
        return None
    if isinstance(body, (dict, list)):
        headers.setdefault("Content-Type", "application/json")
        return json.dumps(body).encode()
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def http(method, url, body=None, token=None, headers=None, timeout=DEFAULT_TIMEOUT, unix_socket=None):
    """One HTTP request. body: dict/list (sent as JSON), str or bytes (sent as is). Never raises on
    4xx/5xx: look at .status. Raises on connection errors."""
    u = urllib.parse.urlsplit(url)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    data = _encode_body(body, hdrs)
    if unix_socket:
        conn = UnixHTTPConnection(unix_socket, timeout=timeout)
    elif u.scheme == "https":
        conn = httpclient.HTTPSConnection(u.hostname, u.port or 443, timeout=timeout)
    else:
        conn = httpclient.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.reason, r.headers, r.read())
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------
# Process helpers

def _children_of(pid):
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.split("/")[2]))
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def _tail(path, n=60):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------
# PostgreSQL

def _pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise AssertionError("PostgreSQL is not installed (/usr/lib/postgresql/*/bin): run tools/install-deps")
    return dirs[-1]


class Postgres:
    """A private, throw-away PostgreSQL server: unix socket in its own directory, no TCP, trust auth,
    user "postgres". fsync stays on (tests check durability after kill()).

        with Postgres() as pg:            # or pg = Postgres().start(); stopped when the test ends
            pg.psql("CREATE TABLE t (x int)")
            rows = pg.psql("SELECT 1, 'a'")   # [('1', 'a')]; NULL is None

    standby_of=primary makes a streaming standby of a running primary instead (pg_basebackup -R: its
    data is the primary's, it follows the primary's WAL, read-only until promote()). The primary's
    settings given here (-c) are not copied: synchronous_standby_names=* on the primary leaves a
    promoted standby without it.

    net_host=a Network Host runs the server in that host's network namespace, listening on TCP at
    net_host.address (port `port`) besides its socket directory, trusting every address: reach it as
    host=<address> from another host, and cut it off with net_host.set_link(False).
    """

    def __init__(self, port=5432, settings=None, env=None, standby_of=None, net_host=None):
        self.bindir = _pg_bindir()
        self.env = dict(os.environ, **(env or {}))  # e.g. FakeClock.env(): the database host's clock
        self.dir = tmpdir("pg")
        self.datadir = os.path.join(self.dir, "data")
        self.port = port  # only names the socket file: the socket directory is private
        self.settings = dict(settings or {})
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.proc = None
        self._deferred = False
        self.net_host = net_host
        shutil.chown(self.dir, "postgres", "postgres")
        if standby_of is not None:
            self._pg_run(["pg_basebackup", "-D", self.datadir, "-h", standby_of.host, "-p", str(standby_of.port),
                          "-U", "postgres", "-X", "stream", "-R", "-c", "fast", "--no-sync"])
        else:
            # initdb once per build directory, then copy: 0.1 s instead of 1 s or more per server.
            template = self._template()
            subprocess.run(["cp", "-a", template, self.datadir], check=True)
        if net_host is not None:
            with open(os.path.join(self.datadir, "pg_hba.conf"), "a") as f:
                f.write("host all all 0.0.0.0/0 trust\nhost replication all 0.0.0.0/0 trust\n")

    INITDB_ARGS = ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"]

    def _template(self):
        version = os.path.basename(os.path.dirname(self.bindir))
        try:
            cache = os.path.join(build_dir(), "test-cache")
        except AssertionError:
            cache = "/tmp/mc-test-cache"
        os.makedirs(cache, exist_ok=True)
        template = os.path.join(cache, f"pg{version}-template")
        if os.path.isdir(template):
            return template
        with open(os.path.join(cache, "pg.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # tests running in parallel make it once
            if not os.path.isdir(template):
                work = tempfile.mkdtemp(prefix="pg-template-", dir=cache)
                os.chmod(work, 0o755)
                shutil.chown(work, "postgres", "postgres")
                self._pg_run(["initdb", "-D", os.path.join(work, "data")] + self.INITDB_ARGS)
                os.rename(os.path.join(work, "data"), template)
                os.rmdir(work)
        return template

    def _pg_run(self, argv):
        p = subprocess.run([os.path.join(self.bindir, argv[0])] + argv[1:], user="postgres",
                           group="postgres", cwd=self.dir, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"{argv[0]} failed ({p.returncode}): {p.stdout}{p.stderr}")
        return p

    @property
    def host(self):
        return self.dir

    @property
    def dsn(self):
        return f"host={self.dir} port={self.port} user=postgres dbname=postgres"

    def dsn_for(self, dbname):
        return f"host={self.dir} port={self.port} user=postgres dbname={dbname}"

    @property
    def uri(self):
        return f"postgresql://postgres@/postgres?host={urllib.parse.quote(self.dir, safe='')}&port={self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=60):
        if self.running:
            return self
        argv = [os.path.join(self.bindir, "postgres"), "-D", self.datadir, "-k", self.dir,
                "-p", str(self.port), "-c", "listen_addresses=", "-c", "fsync=on",
                "-c", "max_connections=200"]
        for k, v in self.settings.items():
            argv += ["-c", f"{k}={v}"]
        user = {"user": "postgres", "group": "postgres"}
        if self.net_host is not None:
            # nsenter execs the server as postgres in the namespace: the pid stays the postmaster's.
            pw = pwd.getpwnam("postgres")
            argv = (["nsenter", f"--net=/run/netns/{self.net_host.netns}", "-S", str(pw.pw_uid), "-G", str(pw.pw_gid),
                     "--"] + argv + ["-c", f"listen_addresses={self.net_host.address}"])
            user = {}
        log = open(self.logfile, "ab")
        try:
            self.proc = subprocess.Popen(argv, cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, **user)
        finally:
            log.close()
        if not self._deferred:
            self._deferred = True
            defer(self._cleanup)

        def ready():
            try:
                with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                    lines = f.read().split("\n")
            except FileNotFoundError:
                return False
            # Line 1 is the postmaster's pid (the file may be a stale one after kill()), line 8 its
            # status: "ready" once it accepts connections ("standby" for a standby's read-only ones).
            return (len(lines) > 7 and lines[0].strip() == str(self.proc.pid)
                    and lines[7].strip() in ("ready", "standby"))

        wait_until(ready, timeout, interval=0.02, msg="postgres to accept connections",
                   abort=lambda: self.proc.poll() is not None
                   and f"postgres exited with {self.proc.returncode}:\n{_tail(self.logfile)}")
        return self

    def stop(self, timeout=60):
        """Fast shutdown (SIGINT): rolls back open transactions, checkpoints, exits."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"postgres did not stop within {timeout}s:\n{_tail(self.logfile)}")

    def kill(self):
        """SIGKILL the postmaster and every backend: a crash, as far as the database can tell."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = [self.proc.pid] + _children_of(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        wait_until(lambda: not any(_alive(p) for p in pids), 30, msg="postgres backends to die")

    def restart(self):
        self.stop()
        return self.start()

    def promote(self, timeout=60):
        """Makes a standby a primary (pg_ctl promote), and waits until it takes writes."""
        self._pg_run(["pg_ctl", "promote", "-D", self.datadir, "-w", "-t", str(timeout)])

    def rebuild_as_standby_of(self, primary, settings=None):
        """Makes this (stopped or killed) server a new standby of primary, in its own place (same
        socket directory and port): what an operator does with a failed primary after a failover,
        so that it can never come back as a second primary."""
        check(not self.running, "the server to rebuild is stopped")
        shutil.rmtree(self.datadir)
        self.settings = dict(settings or {})
        self._pg_run(["pg_basebackup", "-D", self.datadir, "-h", primary.host, "-p", str(primary.port),
                      "-U", "postgres", "-X", "stream", "-R", "-c", "fast", "--no-sync"])
        return self.start()

    def in_recovery(self):
        return self.psql("SELECT pg_is_in_recovery()")[0][0] == "t"

    def _cleanup(self):
        if self.running:
            self.stop()

    def log_text(self):
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def psql(self, sql, dbname="postgres", check=True):
        """Runs SQL with psql; returns the rows of the last statement as tuples of str (None for NULL)."""
        p = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                            "-F", "\x1f", "-R", "\x1e", "-P", "null=\x02",
                            "-h", self.dir, "-p", str(self.port), "-U", "postgres", "-d", dbname,
                            "-c", sql],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            if check:
                raise AssertionError(f"psql failed ({p.returncode}) for {sql!r}: {p.stderr.strip()}")
            return None
        out = p.stdout
        if out.endswith("\n"):
            out = out[:-1]
        if out == "":
            return []
        return [tuple(None if c == "\x02" else c for c in row.split("\x1f")) for row in out.split("\x1e")]

    def create_database(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------
# A wall clock that steps

class FakeClock:
    """The wall clock of a host, which the test steps: the processes started with env() (PostgreSQL,
    a daemon) see CLOCK_REALTIME moved by the offset, read by libfaketime (Debian package libfaketime)
    from a file on every call, so a step takes effect at once. Their CLOCK_MONOTONIC and CLOCK_BOOTTIME
    stay true (FAKETIME_DONT_FAKE_MONOTONIC), as when NTP steps a real clock or a VM resumes.

        clock = FakeClock()
        pg = Postgres(env=clock.env()).start()
        clock.step(60)      # the database host's clock jumps a minute ahead
    """

    def __init__(self):
        libs = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
        if not libs:
            raise AssertionError("libfaketime is not installed (/usr/lib/*/faketime/libfaketime.so.1): "
                                 "run tools/install-deps")
        self.lib = libs[0]
        self.dir = tmpdir("faketime")
        self.file = os.path.join(self.dir, "faketimerc")
        self.offset = 0
        self._write()

    def env(self):
        return {"LD_PRELOAD": self.lib, "FAKETIME_TIMESTAMP_FILE": self.file, "FAKETIME_NO_CACHE": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def step(self, seconds):
        """Moves the clock by seconds (negative: back) from where it is."""
        self.offset += int(seconds)
        self._write()

    def _write(self):
        # Renamed into place: a reader sees the old offset or the new one, never an empty file.
        tmp = self.file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.offset:+d}\n")
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.file)


# ---------------------------------------------------------------------------------------------------
# Daemons

# What Daemon._sync_notify() sends itself through a daemon's notify socket; never a daemon's message.
_NOTIFY_SYNC = "MCTEST_NOTIFY_SYNC="


def _parse_notify(text):
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


class Daemon:
    """A daemon of ours under test: its own state directory (STATE_DIRECTORY, RUNTIME_DIRECTORY),
    output captured to a log file, sd_notify messages collected from a private NOTIFY_SOCKET, and
    sanitizer reports written next to it. Stopped and checked (exit status 0, no sanitizer report)
    when the test ends.

        d = Daemon("mc-control", ["--listen-port", str(port)], env={"MC_DB_DSN": pg.dsn}).start()
        d.wait_ready()
        ...
        d.stop()          # SIGTERM; asserts exit status 0 and no sanitizer report
    """

    def __init__(self, program, args=(), env=None, watchdog_usec=None, notify=True, cwd=None,
                 name=None, inherit_env=True, host=None):
        self.path = program if os.sep in program else binary(program)
        self.host = host  # a Network Host to run in, or None for this machine's network
        self.name = name or (os.path.basename(self.path) + (f"@{host.name}" if host else ""))
        self.args = [str(a) for a in args]
        self.dir = tmpdir(self.name)
        self.state_dir = os.path.join(self.dir, "state")
        self.runtime_dir = os.path.join(self.dir, "run")
        os.makedirs(self.state_dir)
        os.makedirs(self.runtime_dir)
        self.logfile = os.path.join(self.dir, "output.log")
        self.cwd = cwd or self.dir
        self.env = dict(os.environ) if inherit_env else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
                  "WATCHDOG_PID", "ASAN_OPTIONS", "UBSAN_OPTIONS"):
            self.env.pop(k, None)
        self.env.update({"STATE_DIRECTORY": self.state_dir, "RUNTIME_DIRECTORY": self.runtime_dir,
                         "MC_LOG_TARGET": "console"})
        self.env.update(_sanitizer_env(self.dir))
        if watchdog_usec:
            self.env["WATCHDOG_USEC"] = str(int(watchdog_usec))
        if env:
            self.env.update({k: str(v) for k, v in env.items()})
        if "LD_PRELOAD" in (env or {}):
            # A preloaded library (FakeClock's) comes before the ASan runtime, which ASan refuses
            # unless told that it is meant.
            self.env["ASAN_OPTIONS"] += ":verify_asan_link_order=0"
        self.proc = None
        self.returncode = None
        self._listen, self._fdnames = [], None
        self._messages = []
        self._cond = threading.Condition()
        self._notify_sock = None
        self._notify_path = None
        self._syncs_sent = self._syncs_read = 0
        self._start_index = 0
        if notify:
            path = self._notify_path = os.path.join(self.dir, "notify")
            self._notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify_sock.bind(path)
            self._notify_sock.settimeout(0.2)
            self.env["NOTIFY_SOCKET"] = path
            self._reader = threading.Thread(target=self._read_notify, daemon=True)
            self._reader.start()
        defer(self._cleanup)

    # -- notify socket
    def _read_notify(self):
        sock = self._notify_sock
        while sock.fileno() >= 0:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            with self._cond:
                if text.startswith(_NOTIFY_SYNC):
                    self._syncs_read = int(text[len(_NOTIFY_SYNC):])
                else:
                    self._messages.append((time.monotonic(), text))
                self._cond.notify_all()

    def _sync_notify(self, timeout=DEFAULT_TIMEOUT):
        """Returns once the reader thread has taken every message queued on the notify socket before
        this call. A daemon's last messages (STOPPING=1) are in the socket's queue when it exits, but
        the reader may not have read them yet; a marker sent now comes out of the same FIFO queue
        behind them."""
        if self._notify_sock is None:
            return
        with self._cond:
            self._syncs_sent += 1
            n = self._syncs_sent
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(f"{_NOTIFY_SYNC}{n}".encode(), self._notify_path)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._syncs_read < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: the notify socket's reader did not catch up in {timeout}s")
                self._cond.wait(min(left, 0.1))

    def _exited(self):
        return self.proc is not None and self.proc.poll() is not None

    def notifications(self, since_start=False):
        """Every sd_notify message received (across restarts, or since the last start), each as a
        dict such as {"READY": "1", "STATUS": "..."}, oldest first; once the daemon has exited,
        every message it sent."""
        if self._exited():
            self._sync_notify()
        with self._cond:
            msgs = self._messages[self._start_index:] if since_start else list(self._messages)
        return [_parse_notify(text) for _, text in msgs]

    def wait_notify(self, key, value=None, timeout=DEFAULT_TIMEOUT, count=1):
        """Waits until `count` messages since the last start carry KEY (=value when given); returns the last."""
        deadline = time.monotonic() + timeout
        synced_after_exit = False
        while True:
            with self._cond:
                msgs = [_parse_notify(text) for _, text in self._messages[self._start_index:]]
                hits = [m for m in msgs if key in m and (value is None or m[key] == value)]
                if len(hits) >= count:
                    return hits[count - 1]
                if not self._exited():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise AssertionError(f"{self.name}: no {key}{'=' + value if value else ''} within "
                                             f"{timeout}s:\n{self.log_tail()}")
                    self._cond.wait(min(left, 0.1))
                    continue
            if synced_after_exit:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} before sending "
                                     f"{key}{'=' + value if value else ''}:\n{self.log_tail()}")
            self._sync_notify()     # what it sent before it exited may still be queued
            synced_after_exit = True

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        """Returns when READY=1 arrived since the last start; fails at once if the daemon exits."""
        return self.wait_notify("READY", "1", timeout)

    # -- process
    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, extra_args=(), listen=None, fdnames=None, pass_fds=()):
        """Starts the program. listen: sockets passed as systemd does (fds 3.., LISTEN_FDS,
        LISTEN_PID, and LISTEN_FDNAMES from fdnames), as a socket unit would; they are remembered,
        so restart() passes the same sockets again. pass_fds: other fds inherited as they are."""
        assert not self.running, f"{self.name} is already running"
        if listen is not None:
            self._listen, self._fdnames = list(listen), fdnames
        listen, fdnames = self._listen, self._fdnames
        with self._cond:
            self._start_index = len(self._messages)
        argv = [self.path] + self.args + [str(a) for a in extra_args]
        if self.host is not None:
            argv = self.host.wrap(argv)
        env = dict(self.env)
        high = []
        if listen:
            # Moved to fds 3.. by bash, which then execs the daemon with its own pid as LISTEN_PID
            # (the pid is unknown before the fork; preexec_fn is unsafe with our reader threads).
            high = [fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 100) for sock in listen]
            moves = " ".join(f"{3 + i}<&{fd}" for i, fd in enumerate(high))
            closes = " ".join(f"{fd}<&-" for fd in high)
            env["LISTEN_FDS"] = str(len(listen))
            if fdnames:
                env["LISTEN_FDNAMES"] = ":".join(fdnames)
            argv = ["/bin/bash", "-c", f'exec {moves} {closes}; export LISTEN_PID=$$; exec "$0" "$@"'] + argv
        log = open(self.logfile, "ab")
        try:
            log.write(f"--- start {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, pass_fds=tuple(pass_fds) + tuple(high))
        finally:
            log.close()
            for fd in high:
                os.close(fd)
        self.returncode = None
        return self

    def wait(self, timeout=DEFAULT_TIMEOUT):
        """Waits for the process to exit by itself; returns its exit status (negative: killed by signal)."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout}s:\n{self.log_tail()}")
        return self.returncode

    def stop(self, timeout=DEFAULT_TIMEOUT, expect=0):
        """SIGTERM, wait, check. Returns the exit status; raises if it is not `expect` (None: any) or
        if a sanitizer report appeared."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}")
        self.returncode = self.proc.returncode
        self.check_sanitizers()
        if expect is not None and self.returncode != expect:
            raise AssertionError(f"{self.name} exited with {self.returncode} (expected {expect}):\n{self.log_tail()}")
        return self.returncode

    def kill(self, sig=signal.SIGKILL):
        """Sends sig (SIGKILL by default) and, for SIGKILL, waits for the process to be gone."""
        if not self.running:
            return
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.returncode = self.proc.wait()

    def restart(self, timeout=DEFAULT_TIMEOUT):
        """stop() (checked), start(), wait_ready() when notify is on."""
        self.stop()
        self.start()
        if self._notify_sock is not None:
            self.wait_ready(timeout)
        return self

    def check_sanitizers(self):
        reports = _sanitizer_reports(self.dir)
        if reports:
            raise AssertionError(f"{self.name}: sanitizer report:\n" + "\n".join(reports))

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return f"--- last lines of {self.logfile}:\n{_tail(self.logfile, n)}"

    def wait_log(self, text, timeout=DEFAULT_TIMEOUT):
        """Waits until text appears in the captured output."""
        wait_until(lambda: text in self.log_text(), timeout, msg=f"{text!r} in {self.name}'s output")

    def _cleanup(self):
        try:
            if self.running:
                self.stop()
            else:
                self.check_sanitizers()
        finally:
            if self._notify_sock is not None:
                self._notify_sock.close()

    def __enter__(self):
        if not self.running:
            self.start()
        return self

    def __exit__(self, exc_type, *rest):
        if self.running:
            self.stop()


# ---------------------------------------------------------------------------------------------------
# D-Bus

class PrivateBus:
    """A private dbus-daemon (session configuration by default, or config_file=). Point daemons at it
    with env=bus.env() (DBUS_SYSTEM_BUS_ADDRESS)."""

    def __init__(self, config_file=None):
        self.dir = tmpdir("bus")
        self.socket = os.path.join(self.dir, "bus")
        argv = ["dbus-daemon", "--nofork", "--print-address"]
        if config_file:
            argv.append(f"--config-file={config_file}")
        else:
            argv += ["--session", f"--address=unix:path={self.socket}"]
        self.logfile = os.path.join(self.dir, "dbus-daemon.log")
        with open(self.logfile, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         stderr=log, text=True)
        line = self.proc.stdout.readline().strip()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"dbus-daemon exited with {self.proc.returncode} without an address:\n"
                                 f"{_tail(self.logfile)}")
        self.address = line
        defer(self.stop)

    def env(self):
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address, "DBUS_SESSION_BUS_ADDRESS": self.address}

    def busctl(self, *args, check=True, timeout=60):
        """Runs `busctl --address=ADDR ARGS...`; returns its stdout (raises on failure when check)."""
        p = subprocess.run(["busctl", f"--address={self.address}"] + [str(a) for a in args],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"busctl {' '.join(map(str, args))} failed ({p.returncode}): {p.stderr.strip()}")
        return p.stdout if check else p

    def busctl_json(self, *args, timeout=60):
        """busctl --json=short ARGS...: the parsed answer (e.g. of `call` or `get-property`)."""
        return json.loads(self.busctl("--json=short", *args, timeout=timeout))

    def wait_name(self, name, timeout=DEFAULT_TIMEOUT):
        wait_until(lambda: name in self.busctl("list", "--no-legend", "--acquired").split(),
                   timeout, msg=f"{name} on the bus")

    def monitor(self):
        """busctl monitor on this bus, returned once it is known to see messages."""
        return BusMonitor(self)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class BusMonitor:
    """Every message on a PrivateBus, as `busctl monitor --json=short` prints it, read as it comes.
    Ready only once a probe call of its own has shown up: a monitor that is merely started may not
    have become one yet, and the signals sent meanwhile would be missed."""

    def __init__(self, bus):
        self.proc = subprocess.Popen(["busctl", f"--address={bus.address}", "monitor", "--json=short"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.messages = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        defer(self.stop)
        probe = f"mc.test.probe{os.getpid()}x{id(self)}"
        wait_until(lambda: (bus.busctl("call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "NameHasOwner", "s", probe),
                            any(probe in json.dumps(m) for m in self.all()))[1],
                   30, interval=0.1, msg="busctl monitor to see messages")

    def _read(self):
        for line in self.proc.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.messages.append(m)

    def all(self):
        with self.lock:
            return list(self.messages)

    def signals(self, member, path=None):
        return [m for m in self.all() if m.get("type") == "signal" and m.get("member") == member
                and (path is None or m.get("path") == path)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.reader.join(10)
        return self.all()


# ---------------------------------------------------------------------------------------------------
# Docker

DOCKER_SOCKET = "/var/run/docker.sock"
TEST_IMAGE = "mc-test/busybox:latest"
SECOND_RUNTIME = "mc-runc2"


class Dockerd:
    _ensured = False

    @classmethod
    def ensure(cls):
        """Makes sure dockerd answers on /var/run/docker.sock, with the mc-runc2 runtime and the
        mc-test/busybox:latest image (tools/ensure-docker). Fails the test if it cannot."""
        if cls._ensured:
            return
        script = os.path.join(source_dir(), "tools", "ensure-docker")
        p = subprocess.run([script], capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise AssertionError(f"tools/ensure-docker failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        cls._ensured = True


def docker_api(method, path, body=None, timeout=120):
    """A Docker Engine API call over the unix socket; returns a Response (never raises on 4xx/5xx)."""
    return http(method, "http://localhost" + path, body=body, timeout=timeout, unix_socket=DOCKER_SOCKET)


def docker_events(filters=None, since=None, until=None):
    """Docker events between since and until (unix seconds, float ok; until defaults to now) as a list
    of dicts. filters: e.g. {"type": ["container"], "label": ["mc.task_id=abc"]}."""
    q = {"until": f"{until if until is not None else time.time():.6f}"}
    if since is not None:
        q["since"] = f"{since:.6f}"
    if filters:
        q["filters"] = json.dumps(filters)
    r = docker_api("GET", "/events?" + urllib.parse.urlencode(q))
    if r.status != 200:
        raise AssertionError(f"docker events failed: {r.status} {r.text}")
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------
# Several hosts on one machine: network namespaces on a private bridge

_CLONE_NEWNET = 0x40000000


def _in_netns(netns, fn, *args, **kwargs):
    """fn(*args, **kwargs) run in a thread that has entered network namespace netns (setns() changes only the
    calling thread's namespace); sockets it creates stay in that namespace wherever they are used."""
    if netns is None:
        return fn(*args, **kwargs)
    result = []

    def run():
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, _CLONE_NEWNET) != 0:
                result.append(OSError(ctypes.get_errno(), f"setns({netns})"))
                return
        finally:
            os.close(fd)
        try:
            result.append((fn(*args, **kwargs),))
        except BaseException as e:  # noqa: B902 - handed to the caller
            result.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0][0]


class Host:
    """One "machine" of a Network: a network namespace with eth0 on the network's bridge."""

    def __init__(self, network, index, name, net_only=False):
        self.network = network
        self.index = index
        self.name = name            # for humans and Daemon(name=...)
        self.net_only = net_only
        self.netns = f"{network.prefix}-{index}"
        self.address = f"{network.subnet_prefix}.{index}"
        self.port = f"h{index}"     # its end on the bridge

    def wrap(self, argv):
        """argv run inside this host (`ip netns exec`); the pid stays the same, so Daemon's notify
        socket and LISTEN_PID work as usual. A net_only host enters the network namespace alone
        (`nsenter --net`): `ip netns exec` also mounts the namespace's own sysfs over /sys, which hides
        /sys/fs/cgroup from a program that needs it (mc-agent's exec driver)."""
        if self.net_only:
            return ["nsenter", f"--net=/run/netns/{self.netns}", "--"] + list(argv)
        return ["ip", "netns", "exec", self.netns] + list(argv)

    def run(self, argv, **kwargs):
        return run(self.wrap(argv), **kwargs)

    def new_socket(self, family=socket.AF_INET, kind=socket.SOCK_STREAM):
        """A socket in this host's namespace (for a test client; listen_socket() for a daemon)."""
        return _in_netns(self.netns, socket.socket, family, kind)

    def listen_socket(self, port=0, kind=socket.SOCK_STREAM):
        return _in_netns(self.netns, listen_socket, port, self.address, kind)

    def http(self, method, url, **kwargs):
        """http() from inside this host (e.g. to another host's address)."""
        return _in_netns(self.netns, http, method, url, **kwargs)  # connect() happens in the thread

    def shape(self, rate, burst="32kbit", latency="400ms"):
        """Limits what this host sends to rate (tc tbf, e.g. "10mbit"). netem (delay, loss) is not
        in this machine's kernel."""
        subprocess.run(["ip", "netns", "exec", self.netns, "tc", "qdisc", "replace", "dev", "eth0", "root",
                        "tbf", "rate", rate, "burst", burst, "latency", latency], check=True)

    def shape_ingress(self, rate, burst="32kbit", latency="400ms"):
        """Limits what this host receives to rate: eth0's ingress is redirected (tc mirred) to an ifb
        device of its own namespace, whose egress gets a tbf like shape()'s."""
        ns = ["ip", "netns", "exec", self.netns]
        for argv in (["ip", "link", "add", "ifb0", "type", "ifb"],
                     ["ip", "link", "set", "ifb0", "up"],
                     ["tc", "qdisc", "add", "dev", "eth0", "handle", "ffff:", "ingress"],
                     ["tc", "filter", "add", "dev", "eth0", "parent", "ffff:", "protocol", "all", "u32", "match",
                      "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "ifb0"],
                     ["tc", "qdisc", "replace", "dev", "ifb0", "root", "tbf", "rate", rate, "burst", burst,
                      "latency", latency]):
            p = subprocess.run(ns + argv, capture_output=True, text=True)
            if p.returncode != 0:
                raise AssertionError(f"{' '.join(argv)} in {self.netns} failed: {p.stderr.strip()}")

    def link_bytes(self):
        """(bytes sent, bytes received) by eth0 so far: the counters of the host's end of its cable,
        every header and retransmission included."""
        p = subprocess.run(["ip", "-n", self.netns, "-s", "-j", "link", "show", "dev", "eth0"],
                           capture_output=True, text=True, check=True)
        st = json.loads(p.stdout)[0]["stats64"]
        return st["tx"]["bytes"], st["rx"]["bytes"]

    def set_link(self, up):
        """Cuts (up=False) or restores this host's cable: a partition, as far as the others can tell."""
        subprocess.run(["ip", "-n", self.network.bridge_netns, "link", "set", self.port, "up" if up else "down"],
                       check=True)


class Network:
    """Hosts on a private layer-2 network: each Host is a network namespace with eth0 (address
    10.<k>.<n>.<i>/24) on a bridge that lives in a namespace of its own, so nothing touches the
    machine's own network and parallel tests cannot meet. The test process stays in the machine's
    namespace: reach hosts with host.http(), host.new_socket(), Daemon(..., host=host).

        net = Network()
        a, b = net.add_host("a"), net.add_host("b")
        d = Daemon("mc-control", [f"--listen-address={a.address}"], host=a).start()
        r = b.http("GET", f"http://{a.address}:8080/api/health")
    """

    _counter = 0

    def __init__(self):
        Network._counter += 1
        self.prefix = f"mc{os.getpid()}n{Network._counter}"
        self.bridge_netns = f"{self.prefix}-br"
        # Private to this network's bridge, so any subnet would do; vary it anyway for readable logs.
        self.subnet_prefix = f"10.{100 + Network._counter % 100}.{os.getpid() % 250}"
        self.hosts = []
        self._netns = []
        defer(self.stop)
        self._add_netns(self.bridge_netns)
        self._ip("-n", self.bridge_netns, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.bridge_netns, "link", "set", "br0", "up")

    def _ip(self, *args):
        p = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
        if p.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)} failed: {p.stderr.strip()}")

    def _add_netns(self, name):
        self._ip("netns", "add", name)
        self._netns.append(name)
        self._ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name=None, net_only=False):
        """A new host; net_only: its programs see this machine's mounts (Host.wrap())."""
        index = len(self.hosts) + 1
        if index > 250:
            raise AssertionError("at most 250 hosts per Network")
        h = Host(self, index, name or f"host{index}", net_only=net_only)
        self._add_netns(h.netns)
        self._ip("-n", self.bridge_netns, "link", "add", h.port, "type", "veth", "peer", "name", "eth0",
                 "netns", h.netns)
        self._ip("-n", self.bridge_netns, "link", "set", h.port, "master", "br0", "up")
        self._ip("-n", h.netns, "addr", "add", f"{h.address}/24", "dev", "eth0")
        self._ip("-n", h.netns, "link", "set", "eth0", "up")
        self.hosts.append(h)
        return h

    def stop(self):
        for name in reversed(self._netns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._netns = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------
# journald and a systemd user manager, in a private mount namespace

_CLONE_NEWNS = 0x00020000
_in_private_ns = False


def enter_private_mount_namespace():
    """Moves this process (and what it starts from now on) into its own mount namespace, with
    mount propagation to the host switched off, so that it can mount over /run/systemd and /run/log
    without anyone else noticing. Idempotent; there is no way back for the process."""
    global _in_private_ns
    if _in_private_ns:
        return
    if _libc.unshare(_CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise AssertionError(f"unshare(CLONE_NEWNS): {os.strerror(e)} (tests must run as root)")
    # What `unshare -m --propagation private` does: our mounts must not propagate to the host.
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    _in_private_ns = True


def _cgroup_hierarchies():
    """The cgroup trees a systemd manager keeps its units in: the v2 tree (unified or pure v2) and
    the v1 name=systemd tree in hybrid mode."""
    roots = []
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        roots.append("/sys/fs/cgroup")
    for d in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        if os.path.exists(os.path.join(d, "cgroup.procs")):
            roots.append(d)
    return roots


def _remove_cgroup_tree(path):
    for dirpath, dirnames, _ in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                for pid in f.read().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            wait_until(lambda: _rmdir(dirpath), 10, msg=f"rmdir {dirpath}")


def _rmdir(path):
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    return True


def make_inaccessible_nodes():
    """/run/systemd/inaccessible/*: what PID 1 creates at boot for ProtectHome=, InaccessiblePaths=,
    PrivateDevices= and friends to mount over what they hide. A SystemdNamespace has a fresh tmpfs on
    /run/systemd: without these, a unit with such settings fails with status 226/NAMESPACE."""
    d = "/run/systemd/inaccessible"
    os.makedirs(d, exist_ok=True)
    if os.path.exists(os.path.join(d, "blk")):
        return
    os.mkdir(os.path.join(d, "dir"), 0)
    open(os.path.join(d, "reg"), "w").close()
    os.mkfifo(os.path.join(d, "fifo"), 0)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(os.path.join(d, "sock"))
    os.mknod(os.path.join(d, "chr"), 0o020000, os.makedev(0, 0))
    os.mknod(os.path.join(d, "blk"), 0o060000, os.makedev(0, 0))
    for n in ("dir", "reg", "fifo", "sock", "chr", "blk"):
        os.chmod(os.path.join(d, n), 0)


class SystemdNamespace:
    """A private systemd-journald and a real `systemd --user` manager, for testing units (socket
    activation, Type=notify, watchdog, journal fields). Calling it moves the whole test process into
    a private mount namespace (enter_private_mount_namespace()), where tmpfs'es are mounted over
    /run/systemd and /run/log. The manager reads units from unit_dir (given, or self.unit_dir, an
    empty directory to write units into) before the default search path; write units, then
    daemon_reload(). Its units run in their own cgroup subtree (/mc-test-PID-N), so that managers of
    tests running in parallel do not meet. Stopped when the test ends; one at a time per process.

        ns = SystemdNamespace()
        ns.add_unit("x.service", "[Service]\\nExecStart=/bin/sleep 100\\n")
        ns.systemctl("start", "x.service")
        ns.wait_journal(_SYSTEMD_UNIT="x.service")
    """

    _active = None
    _counter = 0

    def __init__(self, unit_dir=None, timeout=DEFAULT_TIMEOUT):
        if SystemdNamespace._active is not None:
            raise AssertionError("a SystemdNamespace is already running in this process")
        enter_private_mount_namespace()
        SystemdNamespace._counter += 1
        self.dir = tmpdir("systemd")
        self.unit_dir = unit_dir or os.path.join(self.dir, "units")
        os.makedirs(self.unit_dir, exist_ok=True)
        self._mask_dir = os.path.join(self.dir, "mask")
        os.makedirs(self._mask_dir)
        # The session bus is ours (below); a dbus.socket from dbus-user-session would fight for it.
        for unit in ("dbus.socket", "dbus.service"):
            os.symlink("/dev/null", os.path.join(self._mask_dir, unit))
        self.runtime_dir = os.path.join(self.dir, "xdg")
        os.makedirs(self.runtime_dir, mode=0o700)
        self.journal_dir = "/run/log/journal"
        # Named like a real user manager's cgroup (journald wants "user@<uid>.service" under slices to
        # file a unit's messages under _SYSTEMD_USER_UNIT=<unit>), in a slice unique to this manager.
        self.cgroup = f"mc-test-{os.getpid()}-{SystemdNamespace._counter}.slice/user@0.service"
        self.bus_address = f"unix:path={self.runtime_dir}/bus"
        self._procs = []
        self._mounts = []
        self.logfile = os.path.join(self.dir, "systemd.log")
        SystemdNamespace._active = self
        defer(self.stop)

        for m in ("/run/systemd", "/run/log"):
            os.makedirs(m, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", m], check=True)
            self._mounts.append(m)
        os.makedirs("/run/systemd/system")

        log = open(self.logfile, "ab")
        try:
            self._journald = self._spawn(["/lib/systemd/systemd-journald"], log)
            wait_until(lambda: os.path.exists("/run/systemd/journal/socket")
                       and os.path.exists("/run/systemd/journal/stdout"), timeout, msg="journald's sockets")
            self._dbus = self._spawn(["dbus-daemon", "--session", "--nofork", f"--address={self.bus_address}"], log)
            wait_until(lambda: os.path.exists(os.path.join(self.runtime_dir, "bus")), timeout, msg="the session bus")

            notify_path = os.path.join(self.dir, "notify")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(notify_path)
            env = dict(os.environ)
            for k in ("LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM"):
                env.pop(k, None)
            env.update(self.env())
            env.update({"SYSTEMD_UNIT_PATH": f"{self._mask_dir}:{self.unit_dir}:", "NOTIFY_SOCKET": notify_path,
                        "CG": self.cgroup, "CG_ROOTS": " ".join(_cgroup_hierarchies())})
            # Into its own cgroup first: the manager treats the cgroup it starts in as its root.
            self._manager = self._spawn(
                ["sh", "-c", 'for r in $CG_ROOTS; do mkdir -p "$r/$CG" && echo $$ >"$r/$CG/cgroup.procs" || exit 1; done; '
                             'exec /lib/systemd/systemd --user'], log, env=env)
            deadline = time.monotonic() + timeout
            ready = False
            with notify:
                while not ready:
                    notify.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
                    try:
                        ready = "READY=1" in notify.recv(4096).decode(errors="replace").split("\n")
                    except socket.timeout:
                        if self._manager.poll() is not None:
                            raise AssertionError(f"systemd --user exited with {self._manager.returncode}:\n"
                                                 f"{_tail(self.logfile)}")
                        if time.monotonic() >= deadline:
                            raise AssertionError(f"systemd --user not ready within {timeout}s:\n{_tail(self.logfile)}")
        finally:
            log.close()

    def _spawn(self, argv, log, env=None):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._procs.append(p)
        return p

    def env(self):
        """What a client of this manager and bus needs (systemctl --user, busctl --user)."""
        return {"XDG_RUNTIME_DIR": self.runtime_dir, "DBUS_SESSION_BUS_ADDRESS": self.bus_address}

    def systemctl(self, *args, check=True, timeout=60):
        """Runs `systemctl --user ARGS...`; returns stdout (or the CompletedProcess when check=False)."""
        env = dict(os.environ)
        env.update(self.env())
        p = subprocess.run(["systemctl", "--user", "--no-pager"] + [str(a) for a in args], env=env,
                           capture_output=True, text=True, timeout=timeout)
        if not check:
            return p
        if p.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(map(str, args))} failed ({p.returncode}): "
                                 f"{p.stderr.strip()}{p.stdout.strip()}")
        return p.stdout

    def add_unit(self, name, text):
        """Writes a unit file into unit_dir (call daemon_reload() after changing loaded units)."""
        path = os.path.join(self.unit_dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def daemon_reload(self):
        self.systemctl("daemon-reload")

    def show(self, unit, prop):
        """One property of a unit (`systemctl show -P`)."""
        return self.systemctl("show", "-P", prop, unit).strip()

    def wait_state(self, unit, state="active", timeout=DEFAULT_TIMEOUT):
        """Waits until the unit's ActiveState is state ("active", "failed", "inactive", ...)."""
        wait_until(lambda: self.show(unit, "ActiveState") == state, timeout,
                   msg=f"{unit} to be {state} (is {self.show(unit, 'ActiveState')})")

    def journal(self, *matches, unit=None, **fields):
        """Journal entries (dicts of fields, oldest first) matching journalctl matches, given as
        "FIELD=value" strings or FIELD=value keywords (e.g. MC_EVENT="task_queued"). unit= selects
        what a unit of this manager logged (_SYSTEMD_USER_UNIT=unit: it is a user manager)."""
        args = list(matches) + [f"{k}={v}" for k, v in fields.items()]
        if unit:
            args.append(f"_SYSTEMD_USER_UNIT={unit}")
        p = subprocess.run(["journalctl", "-D", self.journal_dir, "-o", "json", "--no-pager", "-q"] + args,
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0 and "No entries" not in p.stderr:
            raise AssertionError(f"journalctl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]

    def wait_journal(self, *matches, unit=None, timeout=DEFAULT_TIMEOUT, count=1, **fields):
        """Waits until at least count entries match; returns them all."""
        def enough():
            entries = self.journal(*matches, unit=unit, **fields)
            return entries if len(entries) >= count else None
        return wait_until(enough, timeout, msg=f"{count} journal entries matching {matches} {fields} unit={unit}")

    def stop(self):
        if SystemdNamespace._active is not self:
            return
        try:
            # SIGTERM makes a user manager stop its units and exit.
            for p in reversed(self._procs):
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            for root in _cgroup_hierarchies():
                _remove_cgroup_tree(os.path.join(root, os.path.dirname(self.cgroup)))
            for m in reversed(self._mounts):
                subprocess.run(["umount", "-l", m], check=False)
        finally:
            SystemdNamespace._active = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------
# The runner

def main():
    """Runs every test_* function of the calling script in definition order (or the ones named on the
    command line), printing `ok NAME` or `FAIL NAME: reason` for each; exits 1 if any failed."""
    mod = sys.modules["__main__"]
    tests = [(n, f) for n, f in vars(mod).items() if n.startswith("test_") and callable(f)]
    wanted = sys.argv[1:]
    if wanted:
        unknown = set(wanted) - {n for n, _ in tests}
        if unknown:
            print(f"unknown test(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            sys.exit(2)
        tests = [(n, f) for n, f in tests if n in wanted]
    if not tests:
        print("no test_* functions found", file=sys.stderr)
        sys.exit(2)
    failed = []
    for name, fn in tests:
        with _scopes_lock:
            _scopes.append([])
        t0 = time.monotonic()
        error = None
        try:
            fn()
        except BaseException as e:  # noqa: B902 - KeyboardInterrupt too: report, clean up, go on
            error = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=sys.stdout)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                failed.append(name)
                print(f"FAIL {name}: {error}", flush=True)
                break
        with _scopes_lock:
            scope = _scopes.pop()
        cleanup_errors = _close_scope(scope)
        if cleanup_errors and not error:
            error = "cleanup: " + "; ".join(cleanup_errors)
        elif cleanup_errors:
            print("cleanup errors: " + "; ".join(cleanup_errors), file=sys.stderr)
        dt = time.monotonic() - t0
        if error:
            failed.append(name)
            print(f"FAIL {name}: {error}", flush=True)
        else:
            print(f"ok {name} ({dt:.1f}s)", flush=True)
    errors = _close_all_scopes()
    for e in errors:
        print(f"FAIL cleanup: {e}", flush=True)
    total = len(tests)
    print(f"# {total - len(failed)}/{total} passed", flush=True)
    sys.exit(1 if failed or errors else 0)
