#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The journal events and the docs, kept with the code: the table of src/shared/log-events.h
(as the compiled code has it: test-log-events --list) is the only list of events; src/ logs no event
around it; every event with a MESSAGE_ID has its entry in catalog/mc.catalog; every event has its
section in docs/events.md; and `journalctl -x` on a private journald shows the installed catalog's
text under the entries the real mc-control logs. Adding an event without its catalog entry and its
section fails here. So do a link of the Markdown files that leads out of the repository and a
directory that docs/architecture.md's source tree does not name."""

import json
import os
import re
import shutil
import subprocess

import mctest
from mctest import Daemon, Postgres, SystemdNamespace, check, free_port, http, tmpdir

SRC = mctest.source_dir()
ID_RE = re.compile(r"^[0-9a-f]{32}$")
# The docs named by the catalog as installed with --prefix=/usr (meson rewrites it for another prefix).
DOC_URL = "file:///usr/share/doc/mc/"


def events():
    """{name: message id or None}, from the compiled table."""
    out = mctest.run([mctest.binary("test-log-events"), "--list"]).stdout
    table = {}
    for line in out.splitlines():
        name, mid = line.split(" ")
        check(name not in table, f"{name} twice in the table")
        table[name] = None if mid == "-" else mid
    check(len(table) >= 20, f"only {len(table)} events in the table: {table}")
    return table


def read(path):
    with open(os.path.join(SRC, path), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------------
# The catalog and the docs, as text

def parse_catalog(text):
    """{message id: {"headers": [(key, value)], "body": str, "text": str}}; text is what journalctl
    prints for the entry (everything after the "-- ID" line)."""
    entries = {}
    current = None
    lines = []
    for line in text.splitlines() + ["-- end"]:
        m = re.match(r"^-- (\S+)\s*$", line)
        if m:
            if current is not None:
                while lines and not lines[-1].strip():
                    lines.pop()
                check(current not in entries, f"catalog: entry {current} twice")
                entries[current] = "\n".join(lines)
            current, lines = (m.group(1) if m.group(1) != "end" else None), []
            continue
        if current is None:
            check(line == "" or line.startswith("#"), f"catalog: text outside an entry: {line!r}")
            continue
        lines.append(line)
    parsed = {}
    for mid, t in entries.items():
        check(ID_RE.match(mid), f"catalog: {mid!r} is not a MESSAGE_ID (32 lowercase hex digits)")
        head, sep, body = t.partition("\n\n")
        check(sep and body.strip(), f"catalog {mid}: no blank line and body after the headers")
        headers = []
        for h in head.splitlines():
            m = re.match(r"^([A-Za-z-]+): (.+)$", h)
            check(m, f"catalog {mid}: bad header line {h!r}")
            headers.append((m.group(1), m.group(2)))
        parsed[mid] = {"headers": headers, "body": body, "text": t}
    return parsed


def catalog_fields(entry):
    return set(re.findall(r"@([A-Z0-9_]+)@", entry["text"]))


def parse_events_doc(text):
    """{event: {"message_id": id or None, "fields": {FIELD: presence}}} from the ### sections."""
    sections = {}
    for m in re.finditer(r"^### (.+?)\s*\n(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S):
        name, body = m.group(1).strip("` "), m.group(2)
        check(name not in sections, f"docs/events.md: section {name} twice")
        mid = re.search(r"^\| MESSAGE_ID \| (?:`([0-9a-f]{32})`|none) \|", body, re.M)
        check(mid, f"docs/events.md, {name}: no '| MESSAGE_ID | `<id>` |' (or none) row")
        fields = {f: p.strip() for f, p in re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", body, re.M)}
        check(fields, f"docs/events.md, {name}: no fields table")
        sections[name] = {"message_id": mid.group(1), "fields": fields}
    return sections


def always_fields(section):
    return {f for f, presence in section["fields"].items() if presence == "always"}


def test_catalog_has_every_message_id():
    table = events()
    catalog = parse_catalog(read("catalog/mc.catalog"))
    with_id = {mid: name for name, mid in table.items() if mid}
    missing = sorted(f"{name} ({mid})" for mid, name in with_id.items() if mid not in catalog)
    check(not missing, f"events without an entry in catalog/mc.catalog: {missing}")
    stray = sorted(set(catalog) - set(with_id))
    check(not stray, f"catalog entries for no event of src/shared/log-events.h: {stray}")
    for mid, e in catalog.items():
        keys = [k for k, _ in e["headers"]]
        check(keys.count("Subject") == 1, f"catalog {with_id[mid]}: one Subject: line")
        check(("Defined-By", "mc") in e["headers"], f"catalog {with_id[mid]}: no 'Defined-By: mc'")
        docs = [v for k, v in e["headers"] if k == "Documentation"]
        check(docs, f"catalog {with_id[mid]}: no Documentation: line")
        for d in docs:
            check(d.startswith(DOC_URL) and os.path.isfile(os.path.join(SRC, "docs", d[len(DOC_URL):])),
                  f"catalog {with_id[mid]}: Documentation {d} is not one of docs/")
        check(set(keys) <= {"Subject", "Defined-By", "Support", "Documentation"},
              f"catalog {with_id[mid]}: unknown header in {keys}")


def test_docs_have_every_event():
    table = events()
    doc = parse_events_doc(read("docs/events.md"))
    missing = sorted(set(table) - set(doc))
    check(not missing, f"events without a ### section in docs/events.md: {missing}")
    stray = sorted(set(doc) - set(table))
    check(not stray, f"docs/events.md documents events src/shared/log-events.h does not have: {stray}")
    catalog = parse_catalog(read("catalog/mc.catalog"))
    for name, mid in table.items():
        check(doc[name]["message_id"] == mid,
              f"docs/events.md, {name}: MESSAGE_ID {doc[name]['message_id']}, the table says {mid}")
        if mid:
            # journalctl writes a field's name where the entry lacks the field: the catalog may use
            # only the fields every entry of the event has.
            extra = catalog_fields(catalog[mid]) - always_fields(doc[name])
            check(not extra, f"catalog {name} uses {sorted(extra)}, which docs/events.md does not list as 'always'")
    readme = read("README.md")
    check("docs/events.md" in readme and "docs/architecture.md" in readme,
          "README.md links neither docs/events.md nor docs/architecture.md")


# ---------------------------------------------------------------------------------------------------
# The sources

def source_files():
    for root, _, files in os.walk(os.path.join(SRC, "src")):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                path = os.path.join(root, f)
                yield os.path.relpath(path, SRC), open(path, encoding="utf-8").read()


def strip_comments(text):
    """The code without comments, string literals kept (and comment markers inside them left alone)."""
    return re.sub(r'"(?:\\.|[^"\\\n])*"|/\*.*?\*/|//[^\n]*',
                  lambda m: m.group(0) if m.group(0).startswith('"') else " ", text, flags=re.S)


def call_arguments(code, start):
    """The arguments of the call whose '(' is at code[start], split at top-level commas."""
    depth, args, cur, i = 0, [], "", start
    while i < len(code):
        c = code[i]
        if c == '"':
            m = re.compile(r'"(?:\\.|[^"\\\n])*"').match(code, i)
            cur += m.group(0)
            i = m.end()
            continue
        if c in "([{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return args
        elif c == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
            i += 1
            continue
        cur += c
        i += 1
    raise AssertionError("unbalanced call")


def test_sources_log_only_table_events():
    table = events()
    header = "src/shared/log-events.h"
    upper = {"MC_EVENT_" + n.upper() for n in table}
    files = dict(source_files())
    check(header in files, f"{header} is missing")

    # The functions that take an event: log_event() and whatever passes an McEvent on, found by
    # their declarations, so that a new wrapper is checked too. (position of the event argument)
    takers = {"log_event": 1}
    for code in map(strip_comments, files.values()):
        for m in re.finditer(r"\b(\w+)\s*\(([^;{)]*\bMcEvent\s+\w+[^;{)]*)\)\s*[;{_]", code):
            params = [p.strip() for p in m.group(2).split(",")]
            pos = next(i for i, p in enumerate(params) if re.match(r"(const\s+)?McEvent\s+\w+$", p))
            if m.group(1) not in ("log_internal", "log_to_journal", "log_to_console",
                                  "log_event_name", "log_event_message_id"):
                takers[m.group(1)] = pos
    check({"log_task", "control_task_changed"} <= set(takers), f"wrappers found: {takers}")

    problems = []
    used = set()
    for path, text in files.items():
        code = strip_comments(text)
        literals = re.findall(r'"((?:\\.|[^"\\\n])*)"', code)
        if path != header:
            for lit in literals:
                if lit in table:
                    problems.append(f"{path}: event name as a string: \"{lit}\"")
        if path != "src/shared/log.c":
            for lit in literals:
                if re.match(r"^(MC_EVENT|MESSAGE_ID)\b", lit):
                    problems.append(f"{path}: \"{lit}\": only src/shared/log.c writes MC_EVENT= and MESSAGE_ID=")
            for m in re.finditer(r"\bsd_journal_(send|sendv|print|printv|send_with_location)\b", code):
                problems.append(f"{path}: {m.group(0)}() around log_event(): events go through log.c")
        for m in re.finditer(r"\bMC_EVENT_[A-Z0-9_]+\b", code):
            tok = m.group(0)
            if tok in ("MC_EVENT_NONE", "MC_EVENT_TABLE", "MC_EVENT_ENUM_"):
                continue
            if tok not in upper:
                problems.append(f"{path}: {tok} is not an event of {header}")
            elif path != header:
                used.add(tok)
        for name, pos in takers.items():
            for m in re.finditer(r"\b%s\s*\(" % name, code):
                if re.search(r"\b(void|int|bool|define)\s*\**\s*$", code[:m.start()]):
                    continue  # its declaration, definition or macro
                args = call_arguments(code, m.end() - 1)
                if len(args) <= pos:
                    continue
                arg = args[pos]
                if '"' in arg or re.search(r"\bNULL\b", arg):
                    problems.append(f"{path}: {name}() with event {arg!r}: events are MC_EVENT_* values")
    for tok in sorted(upper - used):
        problems.append(f"{tok} is never logged: remove it from {header}, the catalog and docs/events.md")
    check(not problems, "\n".join(problems))


def test_repository_stands_alone():
    """Every relative link of the Markdown files leads to a file of the repository, and nothing
    points to the design notes outside it."""
    outside = ["../" + "shared", "DESIGN" + ".md"]
    tracked = subprocess.run(["git", "-C", SRC, "ls-files"], capture_output=True, text=True)
    check(tracked.returncode == 0, f"git ls-files: {tracked.stderr}")
    problems = []
    for rel in tracked.stdout.splitlines():
        path = os.path.join(SRC, rel)
        if not os.path.isfile(path):
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        for o in outside:
            if o in text:
                problems.append(f"{rel}: mentions {o}")
        if rel.endswith(".md"):
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                    continue
                t = os.path.normpath(os.path.join(os.path.dirname(path), target.split("#")[0]))
                if not t.startswith(SRC + os.sep) or not os.path.exists(t):
                    problems.append(f"{rel}: link to {target}, which is not in the repository")
    check(not problems, "\n".join(problems))


def test_architecture_names_every_directory():
    """docs/architecture.md's source tree names every top-level directory, every directory of src/
    and of src/agent/, and every area of test/ and bench/."""
    tracked = subprocess.run(["git", "-C", SRC, "ls-files"], capture_output=True, text=True)
    check(tracked.returncode == 0, f"git ls-files: {tracked.stderr}")
    dirs, areas = set(), set()
    for rel in tracked.stdout.splitlines():
        parts = rel.split("/")[:-1]
        if not parts or parts[0].startswith("."):
            continue
        if parts[0] in ("test", "bench"):
            if len(parts) > 1:
                areas.add(parts[1])
            dirs.add(parts[0] + "/<area>/")
        elif parts[0] == "src" and len(parts) > 1:
            dirs.add("/".join(parts[:3 if parts[1] == "agent" and len(parts) > 2 else 2]) + "/")
        else:
            dirs.add(parts[0] + "/")
    doc = read("docs/architecture.md")
    missing = sorted(d for d in dirs if f"`{d}`" not in doc)
    missing += sorted(f"test or bench area `{a}`" for a in areas if f"`{a}`" not in doc)
    check(not missing, f"docs/architecture.md does not name: {missing}")


# ---------------------------------------------------------------------------------------------------
# journalctl -x, for real

def install_docs_and_catalog():
    """`meson install` of the catalog and the docs into a fresh directory: (destdir, installed catalog)."""
    meson = shutil.which("meson")
    check(meson, "meson is not in PATH")
    dest = tmpdir("destdir")
    mctest.run([meson, "install", "-C", mctest.build_dir(), "--no-rebuild", "--quiet", "--destdir", dest,
                "--tags", "catalog,doc"], timeout=120)
    with open(os.path.join(mctest.build_dir(), "meson-info", "intro-installed.json")) as f:
        installed = json.load(f)
    where = {os.path.basename(src): dst for src, dst in installed.items()
             if src.endswith(("/mc.catalog", "/events.md"))}
    check(set(where) == {"mc.catalog", "events.md"}, f"meson installs neither the catalog nor docs/events.md: {where}")
    catalog = dest + where["mc.catalog"]
    check(os.path.isfile(catalog) and os.path.isfile(dest + where["events.md"]),
          f"meson install put nothing at {catalog} or {dest + where['events.md']}")
    # The installed catalog names the installed docs.
    for e in parse_catalog(open(catalog).read()).values():
        for k, v in e["headers"]:
            if k == "Documentation":
                check(v.startswith("file://") and os.path.isfile(dest + v[len("file://"):]),
                      f"the installed catalog's Documentation {v} is not an installed file")
    return dest, catalog


def explanation(ns, **match):
    """The catalog text journalctl -x prints under the one entry matching `match`, and the entry."""
    (entry,) = ns.wait_journal(**match)
    args = ["journalctl", "-x", "-D", ns.journal_dir, "--no-pager", "-q", "-o", "short"]
    args += [f"{k}={v}" for k, v in match.items()]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, f"{' '.join(args)}: {p.stderr}")
    lines = p.stdout.splitlines()
    # One entry: its line, then the catalog text, each line prefixed with "░░ " (or "-- ").
    text = [re.sub(r"^(░░|--) ?", "", line) for line in lines if re.match(r"^(░░|--)( |$)", line)]
    check(text, f"journalctl -x shows no catalog text for {match}:\n{p.stdout}")
    return "\n".join(text), entry


def expected(entry_text, entry):
    """The catalog entry as journalctl renders it for this journal entry."""
    def field(m):
        check(m.group(1) in entry, f"the entry has no {m.group(1)}, which the catalog text uses: {entry}")
        return entry[m.group(1)]
    return re.sub(r"@([A-Z0-9_]+)@", field, entry_text)


def test_journalctl_explains_events():
    table = events()
    doc = parse_events_doc(read("docs/events.md"))
    dest, catalog_path = install_docs_and_catalog()
    catalog = parse_catalog(open(catalog_path).read())

    ns = SystemdNamespace()
    # journalctl --update-catalog compiles the catalog files of <root>/usr/lib/systemd/catalog (and
    # /usr/local/...) into <root>/var/lib/systemd/catalog/database; -x reads the database at its
    # fixed place, which in this private mount namespace becomes ours.
    mctest.run(["journalctl", f"--root={dest}", "--update-catalog"])
    database_dir = os.path.join(dest, "var/lib/systemd/catalog")
    check(os.path.isfile(os.path.join(database_dir, "database")), "journalctl --update-catalog wrote no database")
    mctest.run(["mount", "--bind", database_dir, "/var/lib/systemd/catalog"])
    mctest.defer(mctest.run, ["umount", "-l", "/var/lib/systemd/catalog"])
    listed = mctest.run(["journalctl", "--list-catalog"]).stdout
    for name, mid in table.items():
        if mid:
            check(re.search(rf"^{mid} mc: ", listed, re.M), f"journalctl --list-catalog lacks {name} ({mid}):\n{listed}")

    # The real control, logging to the journal, on a real database: a push (task_queued), a lease
    # that nobody renews (lease_expired, from the sweep).
    pg = Postgres().start()
    tokens = os.path.join(tmpdir("tokens"), "tokens")
    with open(tokens, "w") as f:
        f.write("user alice user-token-0123456789abcdef\nagent node-x agent-token-node-x-0123456789\n")
    os.chmod(tokens, 0o600)
    port = free_port()
    control = Daemon("mc-control", ["--port", port, "--listen-address", "127.0.0.1", "--tokens-file", tokens,
                                    "--no-bus", "--db-dsn", pg.dsn, "--lease-ttl-ms", 500, "--lease-grace-ms", 0,
                                    "--sweep-interval-ms", 50],
                     env={"MC_LOG_TARGET": "journal"}).start()
    control.wait_ready()
    url = f"http://127.0.0.1:{port}"
    r = http("POST", url + "/api/tasks", {"id": "explained-1", "image": "alpine:3.20", "cmd": ["true"],
                                          "max_attempts": 2}, token="user-token-0123456789abcdef")
    check(r.status == 201, f"push: {r.status} {r.text}")
    agent = "agent-token-node-x-0123456789"
    r = http("POST", url + "/api/agents/register", {"node_id": "node-x", "capacity": {
        "nano_cpus": 1000000000, "memory_bytes": 1 << 30}}, token=agent)
    check(r.status == 200, f"register: {r.status} {r.text}")
    # A long poll: the claim is answered as soon as the task can be had, not sampled once.
    r = http("POST", url + "/api/agents/claim", {"node_id": "node-x", "wait_ms": 20000}, token=agent, timeout=60)
    check(r.status == 200 and r.json()["task"]["id"] == "explained-1", f"claim: {r.status} {r.text}")

    for name, match in (("task_queued", {"MC_EVENT": "task_queued", "TASK_ID": "explained-1"}),
                        ("lease_expired", {"MC_EVENT": "lease_expired", "TASK_ID": "explained-1"})):
        shown, entry = explanation(ns, SYSLOG_IDENTIFIER="mc-control", **match)
        check(entry.get("MESSAGE_ID") == table[name], f"{name}: MESSAGE_ID {entry.get('MESSAGE_ID')}, not {table[name]}")
        missing = always_fields(doc[name]) - set(entry)
        check(not missing, f"{name}: docs/events.md says every entry has {sorted(missing)}; this one does not: {entry}")
        want = expected(catalog[table[name]]["text"], entry)
        check(shown.strip() == want.strip(), f"{name}: journalctl -x shows\n{shown}\ninstead of\n{want}")
    check(control.stop() == 0, "mc-control exit status")


mctest.main()
