#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Contents and task inputs (docs/api.md, "Contents" and "Task inputs"):

- PUT /api/contents/{id} takes a content's manifest, a BitTorrent v2 .torrent, made here by
  libtorrent (python3-libtorrent, an implementation independent of ours) with our name and piece
  length rule; GET serves it back in its canonical form (libtorrent reads it as the same torrent) or
  as a JSON summary; re-PUTs are idempotent; agents may GET but not PUT;
- hostile manifests (wrong id, tampered or missing piece layer, multi-file, v1, hybrid, not
  canonical, not bencode, too large, wrong Content-Type) are refused with the right code and field,
  and nothing is stored;
- a push's inputs are refused for each bad path or unknown content with the field "inputs[i].path"
  or "inputs[i].content", storing nothing; a valid push shows its inputs in the task and the claim
  answer carries each input's length and piece length."""

import glob
import hashlib
import json
import os
import random

import mctest
from mctest import Postgres, check, http, tmpdir
from controltest import OTHER_USER_TOKEN, USER_TOKEN, Control, agent_token, bencode, small_content, start_cluster

try:
    import libtorrent as lt
except ImportError as e:  # a part we need: fail, never skip
    raise SystemExit(f"FAIL: python3-libtorrent is needed: {e}")

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TORRENT = "application/x-bittorrent"
MANIFEST_MAX = 2 * MIB


# ---------------------------------------------------------------------------------------------------
# Manifests

def piece_length_for(length):
    """Our rule (src/torrent/content.h): the smallest power of two >= 16 KiB giving at most 2048
    pieces, capped at 4 MiB."""
    p = 16 * KIB
    while p < 4 * MIB and length > p * 2048:
        p *= 2
    return p


class Content:
    def __init__(self, torrent, info, layers):
        self.torrent = torrent          # what is PUT
        self.info = info                # bencoded
        self.id = hashlib.sha256(info).hexdigest()
        # What the control stores and serves: {info, piece layers} and nothing else.
        self.canonical = b"d4:info" + info + b"12:piece layers" + bencode(layers) + b"e"


def lt_entry(d, name, piece_length, flags=None):
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(d, name))
    ct = lt.create_torrent(fs, piece_length, lt.create_torrent.v2_only if flags is None else flags)
    lt.set_piece_hashes(ct, d)
    return ct.generate()


def data_file(size, seed, name="data"):
    d = tmpdir("content")
    with open(os.path.join(d, name), "wb") as f:
        f.write(random.Random(seed).randbytes(size))
    return d


def lt_content(size, seed):
    """A content's manifest as libtorrent makes it: v2 only, our piece length, and the file named
    after its pieces root (known only once hashed: libtorrent hashes it twice)."""
    check(size > 0, "libtorrent makes no torrent of an empty file")
    d = data_file(size, seed)
    piece_length = piece_length_for(size)
    e = lt_entry(d, "data", piece_length)
    name = e[b"info"][b"file tree"][b"data"][b""][b"pieces root"].hex()
    os.rename(os.path.join(d, "data"), os.path.join(d, name))
    e = lt_entry(d, name, piece_length)
    c = Content(lt.bencode(e), lt.bencode(e[b"info"]), e.get(b"piece layers", {}))
    check(str(lt.torrent_info(c.torrent).info_hashes().v2) == c.id, f"libtorrent's id of {size} bytes")
    c.entry, c.dir, c.name, c.size = e, d, name, size
    return c


def sha(b):
    return hashlib.sha256(b).digest()


def pad_hash(level):
    h = bytes(32)
    for _ in range(level):
        h = sha(h + h)
    return h


def fabricated(length, seed=0):
    """The canonical manifest of a file of length bytes without the file: a piece layer of made-up
    piece hashes and the pieces root they give (BEP 52's tree, padded). The control cannot tell: it
    checks that the layer hashes to the root, and the root is what names the content."""
    if length == 0:
        name = "00" * 32
        info = bencode({"file tree": {name: {"": {"length": 0}}}, "meta version": 2, "name": name,
                        "piece length": piece_length_for(0)})
        return _content(info, {})
    piece_length = piece_length_for(length)
    check(length > piece_length, "fabricated contents have a piece layer")
    n_pieces = -(-length // piece_length)
    blocks = -(-length // (16 * KIB))
    leaves = 1 << (blocks - 1).bit_length()
    piece_level = (piece_length // (16 * KIB)).bit_length() - 1
    rnd = random.Random(seed)
    layer = [rnd.randbytes(32) for _ in range(n_pieces)]
    nodes = layer + [pad_hash(piece_level)] * ((leaves >> piece_level) - n_pieces)
    while len(nodes) > 1:
        nodes = [sha(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
    root = nodes[0]
    name = root.hex()
    info = bencode({"file tree": {name: {"": {"length": length, "pieces root": root}}}, "meta version": 2,
                    "name": name, "piece length": piece_length})
    return _content(info, {root: b"".join(layer)})


def _content(info, layers):
    return Content(b"d4:info" + info + b"12:piece layers" + bencode(layers) + b"e", info, layers)


# ---------------------------------------------------------------------------------------------------
# Requests

def put(c, cid, body, token=USER_TOKEN, ctype=TORRENT):
    return http("PUT", f"{c.url}/api/contents/{cid}", body, token=token,
                headers={"Content-Type": ctype} if ctype is not None else {})


def get(c, cid, token=USER_TOKEN, accept=None):
    return http("GET", f"{c.url}/api/contents/{cid}", token=token, headers={"Accept": accept} if accept else {})


def error_field(r):
    try:
        j = r.json()
    except AssertionError:
        return "<not JSON>"
    if not isinstance(j, dict) or not isinstance(j.get("error"), str) or not j["error"]:
        return "<no error>"
    return j.get("field")


def db_fingerprint(pg):
    """Every row of the tables a refused request must leave alone."""
    return pg.psql("SELECT (SELECT md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) FROM contents c), "
                   "(SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM tasks t), "
                   "(SELECT md5(coalesce(string_agg(a::text, '|' ORDER BY task_id, attempt), '')) FROM attempts a)")[0]


def n_contents(pg):
    return int(pg.psql("SELECT count(*) FROM contents")[0][0])


# ---------------------------------------------------------------------------------------------------

def test_fabricated_manifests_are_libtorrents():
    """The test's own manifest builder (used for sizes no test can hash) agrees with libtorrent."""
    for size, seed in ((100000, 1), (3 * MIB + 7, 2)):
        c = lt_content(size, seed)
        layers = c.entry.get(b"piece layers", {})
        root = bytes.fromhex(c.name)
        layer = layers[root]
        pl = piece_length_for(size)
        piece_level = (pl // (16 * KIB)).bit_length() - 1
        blocks = -(-size // (16 * KIB))
        nodes = [layer[i:i + 32] for i in range(0, len(layer), 32)]
        nodes += [pad_hash(piece_level)] * (((1 << (blocks - 1).bit_length()) >> piece_level) - len(nodes))
        while len(nodes) > 1:
            nodes = [sha(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
        check(nodes[0] == root, f"{size}: our tree of libtorrent's layer gives libtorrent's root")
        info = bencode({"file tree": {c.name: {"": {"length": size, "pieces root": root}}}, "meta version": 2,
                        "name": c.name, "piece length": pl})
        check(info == c.info, f"{size}: our info dictionary is libtorrent's")
    # controltest's manifests of files of one block, for tests without libtorrent.
    for size, seed in ((1, 3), (1000, 4), (16 * KIB, 5)):
        c = lt_content(size, seed)
        check(small_content(random.Random(seed).randbytes(size)) == (c.id, c.canonical), f"{size}: small_content")
    check(small_content(b"") == (fabricated(0).id, fabricated(0).torrent), "small_content of nothing")


def test_put_get_round_trip():
    pg, (c,) = start_cluster()
    contents = [lt_content(size, seed) for seed, size in enumerate(
        (1, 1000, 16 * KIB, 16 * KIB + 1, 100000, 3 * MIB + 7, 40 * MIB + 3))]
    contents.append(fabricated(0))      # the empty file: no root, no piece layer
    ids = []
    for x in contents:
        r = put(c, x.id, x.torrent)
        check(r.status == 201, f"PUT {x.id}: {r.status} {r.text[:300]}")
        check(r.headers.get("Location") == f"/api/contents/{x.id}", f"Location {r.headers.get('Location')}")
        s = r.json()
        length = getattr(x, "size", 0)
        pl = piece_length_for(length)
        check(s["id"] == x.id and s["length"] == length and s["piece_length"] == pl
              and s["pieces"] == -(-length // pl), f"summary {s}")
        check(s["created_by"] == "alice", f"created_by {s['created_by']}")
        ids.append(x.id)

        # The .torrent, canonical: libtorrent's (with its creation date) less what is not the content.
        for token in (USER_TOKEN, agent_token("node-a")):
            r = get(c, x.id, token=token)
            check(r.status == 200 and r.headers.get("Content-Type", "").startswith(TORRENT),
                  f"GET {x.id}: {r.status} {r.headers.get('Content-Type')} {r.text[:200]}")
            check(r.body == x.canonical, f"GET {x.id}: not the canonical manifest")
            check("Accept" in (r.headers.get("Vary") or ""), "Vary: Accept")
        if length > 0:  # libtorrent takes no torrent of nothing
            ti = lt.torrent_info(r.body)
            check(str(ti.info_hashes().v2) == x.id and not ti.info_hashes().has_v1(), "libtorrent reads what GET gave")
            check(ti.files().file_size(0) == length, f"libtorrent's size {ti.files().file_size(0)}")

        # The JSON summary, for users and agents alike.
        for token in (USER_TOKEN, agent_token("node-b")):
            r = get(c, x.id, token=token, accept="application/json")
            check(r.status == 200 and r.headers.get("Content-Type", "").startswith("application/json"),
                  f"GET json: {r.status} {r.text[:200]}")
            j = r.json()
            check({k: j[k] for k in ("id", "length", "piece_length", "pieces", "name")} ==
                  {k: s[k] for k in ("id", "length", "piece_length", "pieces", "name")}, f"summary {j}")
            check(j["name"] == (x.name if length else "00" * 32), f"name {j['name']}")
            atp = lt.parse_magnet_uri(j["magnet"])
            check(str(atp.info_hashes.v2) == x.id, f"libtorrent's id of the magnet {j['magnet']}")
            check(j["created_at"] and j["created_at"] == s["created_at"], "created_at")

        # Idempotent: the same bytes, the canonical bytes, and without a Content-Type.
        for body, ctype in ((x.torrent, TORRENT), (x.canonical, TORRENT), (x.torrent, None),
                            (x.torrent, "Application/X-BitTorrent; q=1")):
            r = put(c, x.id, body, ctype=ctype)
            check(r.status == 200 and r.json()["id"] == x.id, f"re-PUT ({ctype}): {r.status} {r.text[:200]}")
            check(r.headers.get("Location") is None, "no Location on a 200")
        # Another user registering it again changes nothing either.
        r = put(c, x.id, x.torrent, token=OTHER_USER_TOKEN)
        check(r.status == 200 and r.json()["created_by"] == "alice", f"bob's PUT: {r.status} {r.text[:200]}")
    check(n_contents(pg) == len(contents), "one row per content")

    # Accept: the first of the two types named decides; q=0 names nothing; anything else is a .torrent.
    x = contents[4]
    for accept, want_json in (("application/json", True), ("application/x-bittorrent", False),
                              ("*/*", False), ("text/html", False), ("application/json;q=0", False),
                              ("application/x-bittorrent, application/json", False),
                              ("application/json, application/x-bittorrent", True),
                              ("application/x-bittorrent;q=0, application/json", True),
                              (" APPLICATION/JSON ; charset=utf-8", True)):
        r = get(c, x.id, accept=accept)
        check(r.status == 200, f"Accept {accept}: {r.status}")
        check((r.body == x.canonical) != want_json, f"Accept {accept!r}: {r.headers.get('Content-Type')}")
    r = http("HEAD", f"{c.url}/api/contents/{x.id}", token=agent_token("node-a"))
    check(r.status == 200 and r.body == b"", f"HEAD: {r.status}")

    # The list, newest first, in pages.
    seen, after = [], None
    while True:
        r = http("GET", f"{c.url}/api/contents?limit=3" + (f"&after={after}" if after else ""), token=USER_TOKEN)
        check(r.status == 200, f"list: {r.status} {r.text[:200]}")
        page = r.json()
        check(len(page["contents"]) <= 3, "page size")
        seen += [s["id"] for s in page["contents"]]
        after = page["next"]
        if after is None:
            break
    check(seen == ids[::-1], f"listed {seen}")
    r = http("GET", f"{c.url}/api/contents", token=USER_TOKEN)
    check(r.status == 200 and len(r.json()["contents"]) == len(ids) and r.json()["next"] is None, "list all")

    # Unknown and malformed ids; who may do what.
    before = db_fingerprint(pg)
    for path, token, method, body, status, field in (
            ("/api/contents/" + "0" * 64, USER_TOKEN, "GET", None, 404, "id"),
            ("/api/contents/" + "0" * 64, agent_token("node-a"), "GET", None, 404, "id"),
            ("/api/contents/" + x.id.upper(), USER_TOKEN, "GET", None, 400, "id"),
            ("/api/contents/" + x.id[:63], USER_TOKEN, "GET", None, 400, "id"),
            ("/api/contents/" + x.id + "0", USER_TOKEN, "GET", None, 400, "id"),
            ("/api/contents/..%2F" + x.id, USER_TOKEN, "GET", None, 400, "id"),
            ("/api/contents/" + x.id, None, "GET", None, 401, None),
            ("/api/contents/" + x.id, agent_token("node-a"), "PUT", x.torrent, 403, None),
            ("/api/contents", agent_token("node-a"), "GET", None, 403, None),
            ("/api/contents?limit=0", USER_TOKEN, "GET", None, 400, "limit"),
            ("/api/contents?after=x", USER_TOKEN, "GET", None, 400, "after"),
            ("/api/contents?status=queued", USER_TOKEN, "GET", None, 400, "status"),
            ("/api/contents/" + x.id, USER_TOKEN, "POST", x.torrent, 405, None),
            ("/api/contents/" + x.id, USER_TOKEN, "DELETE", None, 405, None),
            ("/api/contents", USER_TOKEN, "PUT", x.torrent, 405, None)):
        headers = {"Content-Type": TORRENT} if body is not None else {}
        r = http(method, c.url + path, body, token=token, headers=headers)
        check(r.status == status and (field is None or error_field(r) == field),
              f"{method} {path}: {r.status} {r.text[:200]}, wanted {status} {field}")
        if status == 405:
            allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
            check(allow == ({"GET", "HEAD", "PUT"} if path != "/api/contents" else {"GET", "HEAD"}), f"Allow {allow}")
    check(db_fingerprint(pg) == before, "the database changed")


def test_hostile_manifests_are_refused_and_change_nothing():
    pg, (c,) = start_cluster()
    good = lt_content(100000, 10)      # 7 pieces of 16 KiB
    other = lt_content(50000, 11)
    root = bytes.fromhex(good.name)
    e = good.entry
    layer = e[b"piece layers"][root]

    def torrent(info, layers, **extra):
        d = {b"info": info, b"piece layers": layers}
        d.update(extra)
        return hashlib.sha256(lt.bencode(info)).hexdigest(), lt.bencode(d)

    tampered = bytearray(layer)
    tampered[40] ^= 1
    extra_key = dict(e[b"info"])
    extra_key[b"private"] = 1

    # Not canonical: the file named "data" rather than its root; a piece length the size does not imply.
    d = data_file(100000, 12)
    named_data = lt_entry(d, "data", 16 * KIB)
    d2 = data_file(100000, 13)
    e2 = lt_entry(d2, "data", 16 * KIB)
    rooted = e2[b"info"][b"file tree"][b"data"][b""][b"pieces root"].hex()
    os.rename(os.path.join(d2, "data"), os.path.join(d2, rooted))
    big_pieces = lt_entry(d2, rooted, 64 * KIB)
    # Several files; v1 only; hybrid (v1 + v2).
    dm = tmpdir("multi")
    os.mkdir(os.path.join(dm, "dir"))
    for n in ("a", "b"):
        with open(os.path.join(dm, "dir", n), "wb") as f:
            f.write(random.Random(n).randbytes(20000))
    multi = lt_entry(dm, "dir", 16 * KIB)
    v1 = lt_entry(good.dir, good.name, 16 * KIB, flags=lt.create_torrent.v1_only)
    hybrid = lt_entry(good.dir, good.name, 16 * KIB, flags=0)
    too_large = fabricated(256 * GIB + 1)       # 65537 pieces of 4 MiB: a piece layer over 2 MiB

    def whole(entry):
        return hashlib.sha256(lt.bencode(entry[b"info"])).hexdigest(), lt.bencode(entry)

    # (name, id, body, Content-Type, token, status, field)
    cases = [
        ("another content's manifest", good.id, other.torrent, TORRENT, USER_TOKEN, 400, "id"),
        ("tampered piece layer", *torrent(e[b"info"], {root: bytes(tampered)}), TORRENT, USER_TOKEN, 400, "piece layers"),
        ("piece layer cut short", *torrent(e[b"info"], {root: layer[:-32]}), TORRENT, USER_TOKEN, 400, "piece layers"),
        ("piece layer missing", *torrent(e[b"info"], {}), TORRENT, USER_TOKEN, 400, "piece layers"),
        ("piece layers of another file", *torrent(e[b"info"], {bytes(32): layer}), TORRENT, USER_TOKEN, 400, "manifest"),
        ("several files", *whole(multi), TORRENT, USER_TOKEN, 400, "manifest"),
        ("v1 only", *whole(v1), TORRENT, USER_TOKEN, 400, "manifest"),
        ("hybrid v1 + v2", *whole(hybrid), TORRENT, USER_TOKEN, 400, "manifest"),
        ("name is not the root", *whole(named_data), TORRENT, USER_TOKEN, 400, "manifest"),
        ("piece length not ours", *whole(big_pieces), TORRENT, USER_TOKEN, 400, "manifest"),
        ("extra key in info", *torrent(extra_key, e[b"piece layers"]), TORRENT, USER_TOKEN, 400, "manifest"),
        ("not bencode", good.id, b"hello, world", TORRENT, USER_TOKEN, 400, "manifest"),
        ("a JSON wrapper", good.id, b'{"torrent": "ZDQ6aW5mb2Rl"}', TORRENT, USER_TOKEN, 400, "manifest"),
        ("bencode, not a dictionary", good.id, b"l4:infoe", TORRENT, USER_TOKEN, 400, "manifest"),
        ("trailing bytes", good.id, good.torrent + b"x", TORRENT, USER_TOKEN, 400, "manifest"),
        ("truncated", good.id, good.torrent[:-1], TORRENT, USER_TOKEN, 400, "manifest"),
        ("empty body", good.id, b"", TORRENT, USER_TOKEN, 400, "manifest"),
        ("over 2 MiB", good.id, good.torrent + b"0" * (3 * MIB), TORRENT, USER_TOKEN, 413, None),
        ("valid but over 2 MiB", too_large.id, too_large.torrent, TORRENT, USER_TOKEN, 413, None),
        ("sent as JSON", good.id, good.torrent, "application/json", USER_TOKEN, 415, None),
        ("sent as a form", good.id, good.torrent, "application/x-www-form-urlencoded", USER_TOKEN, 415, None),
        ("sent as octet-stream", good.id, good.torrent, "application/octet-stream", USER_TOKEN, 415, None),
        ("agent token", good.id, good.torrent, TORRENT, agent_token("node-a"), 403, None),
        ("no token", good.id, good.torrent, TORRENT, None, 401, None),
        ("id in capitals", good.id.upper(), good.torrent, TORRENT, USER_TOKEN, 400, "id"),
        ("id too short", good.id[:-2], good.torrent, TORRENT, USER_TOKEN, 400, "id"),
    ]
    check(len(too_large.torrent) > MANIFEST_MAX, "the too large manifest is too large")

    before = db_fingerprint(pg)
    failures = []
    for name, cid, body, ctype, token, status, field in cases:
        r = put(c, cid, body, token=token, ctype=ctype)
        problem = None
        if r.status != status:
            problem = f"status {r.status}, wanted {status}: {r.text[:200]}"
        elif error_field(r) != field:
            problem = f"field {error_field(r)!r}, wanted {field!r}: {r.text[:200]}"
        after = db_fingerprint(pg)
        if after != before:
            problem = (problem + "; " if problem else "") + "the database changed"
            before = after
        if problem:
            failures.append(f"{name}: {problem}")
        else:
            print(f"  refused as expected: {name} -> {status} {field or ''}")
    check(not failures, "\n".join(failures))
    check(n_contents(pg) == 0, "nothing stored")

    # The good one still goes in, then a 409 for other bytes under its id cannot be reached by a
    # valid manifest; check it with the bytes changed in the database itself.
    r = put(c, good.id, good.torrent)
    check(r.status == 201, f"PUT good: {r.status} {r.text[:200]}")
    pg.psql(f"UPDATE contents SET torrent = torrent || '\\x00'::bytea WHERE id = '{good.id}'")
    r = put(c, good.id, good.torrent)
    check(r.status == 409 and error_field(r) == "id", f"PUT over other bytes: {r.status} {r.text[:200]}")


def test_largest_manifests():
    """A file of 4 GiB and more has a piece layer that fits; one of 255 GiB is the largest that does."""
    pg, (c,) = start_cluster()
    for length in (4 * GIB + 1, 100 * GIB, 255 * GIB):
        x = fabricated(length, seed=length)
        check(len(x.torrent) <= MANIFEST_MAX, f"{length}: {len(x.torrent)} bytes")
        r = put(c, x.id, x.torrent)
        check(r.status == 201, f"PUT {length}: {r.status} {r.text[:200]}")
        s = r.json()
        check(s["length"] == length and s["piece_length"] == piece_length_for(length)
              and s["pieces"] == -(-length // piece_length_for(length)), f"summary {s}")
        r = get(c, x.id)
        check(r.status == 200 and r.body == x.canonical, f"GET {length}: {r.status}")
        check(str(lt.torrent_info(r.body).info_hashes().v2) == x.id, f"libtorrent's id of {length}")


# ---------------------------------------------------------------------------------------------------
# Push inputs

def test_push_inputs_are_checked_and_nothing_is_stored():
    pg, (c,) = start_cluster()
    a, b = lt_content(100000, 20), lt_content(5000, 21)
    for x in (a, b):
        check(put(c, x.id, x.torrent).status == 201, "PUT")
    A, B, U = a.id, b.id, "0123456789abcdef" * 4     # U: well-formed, never registered

    def task(*inputs, **kw):
        t = {"image": "img", "cmd": ["true"], "inputs": [{"content": cid, "path": p} for cid, p in inputs]}
        t.update(kw)
        return t

    # (name, body, field)
    cases = [
        ("relative", task((A, "data/in.txt")), "inputs[0].path"),
        ("relative with ..", task((A, "../etc/passwd")), "inputs[0].path"),
        ("dot-dot inside", task((A, "/a/../b")), "inputs[0].path"),
        ("dot-dot last", task((A, "/data/..")), "inputs[0].path"),
        ("dot component", task((A, "/a/./b")), "inputs[0].path"),
        ("dot last", task((A, "/a/.")), "inputs[0].path"),
        ("double slash", task((A, "/a//b")), "inputs[0].path"),
        ("leading double slash", task((A, "//a")), "inputs[0].path"),
        ("trailing slash", task((A, "/data/")), "inputs[0].path"),
        ("the root", task((A, "/")), "inputs[0].path"),
        ("empty", task((A, "")), "inputs[0].path"),
        ("under /proc", task((A, "/proc/x")), "inputs[0].path"),
        ("onto /sys", task((A, "/sys")), "inputs[0].path"),
        ("onto /dev", task((A, "/dev")), "inputs[0].path"),
        ("under /dev/shm", task((A, "/dev/shm/x")), "inputs[0].path"),
        ("under /run/mc", task((A, "/run/mc/x")), "inputs[0].path"),
        ("onto /etc/resolv.conf", task((A, "/etc/resolv.conf")), "inputs[0].path"),
        # JSON's \u0000 is refused by the parser for the whole body, before any field is looked at.
        ("NUL byte", task((A, "/data/a\u0000b")), None),
        ("control character", task((A, "/data/a\tb")), "inputs[0].path"),
        ("too long", task((A, "/" + "/".join(["a" * 200] * 6))), "inputs[0].path"),
        ("component too long", task((A, "/" + "a" * 256)), "inputs[0].path"),
        ("too deep", task((A, "/a" * 33)), "inputs[0].path"),
        ("not a string", {"image": "img", "cmd": ["true"], "inputs": [{"content": A, "path": 7}]}, "inputs[0].path"),
        ("path missing", {"image": "img", "cmd": ["true"], "inputs": [{"content": A}]}, "inputs[0].path"),
        ("second one bad", task((A, "/data/a"), (B, "data/b")), "inputs[1].path"),
        ("duplicate", task((A, "/data/a"), (B, "/data/a")), "inputs[1].path"),
        ("overlap, directory first", task((A, "/data"), (B, "/data/x")), "inputs[1].path"),
        ("overlap, directory last", task((A, "/data/x"), (B, "/data")), "inputs[1].path"),
        ("overlap with the third", task((A, "/x"), (B, "/y"), (A, "/x/z")), "inputs[2].path"),
        ("unknown content", task((A, "/a"), (U, "/b")), "inputs[1].content"),
        ("unknown content first", task((U, "/a"), (B, "/b")), "inputs[0].content"),
        ("unknown content with an id", task((A, "/a"), (B, "/b"), (U, "/c"), id="with-unknown"), "inputs[2].content"),
        ("content not hex", task(("z" * 64, "/a")), "inputs[0].content"),
        ("content in capitals", task((A.upper(), "/a")), "inputs[0].content"),
        ("content missing", {"image": "img", "cmd": ["true"], "inputs": [{"path": "/a"}]}, "inputs[0].content"),
        ("unknown key", {"image": "img", "cmd": ["true"], "inputs": [{"content": A, "path": "/a", "mode": 7}]},
         "inputs[0].mode"),
        ("not an object", {"image": "img", "cmd": ["true"], "inputs": [{"content": A, "path": "/a"}, "x"]}, "inputs[1]"),
        ("not an array", {"image": "img", "cmd": ["true"], "inputs": {"content": A}}, "inputs"),
        ("65 inputs", task(*[(A, f"/in/{i}") for i in range(65)]), "inputs"),
    ]
    check(len(cases) >= 12, "cases")

    before = db_fingerprint(pg)
    failures = []
    for name, body, field in cases:
        for path in ("/api/tasks/push", "/api/tasks"):
            r = http("POST", c.url + path, body, token=USER_TOKEN)
            problem = None
            if r.status != 400:
                problem = f"status {r.status}, wanted 400: {r.text[:200]}"
            elif error_field(r) != field:
                problem = f"field {error_field(r)!r}, wanted {field!r}: {r.text[:200]}"
            after = db_fingerprint(pg)
            if after != before:
                problem = (problem + "; " if problem else "") + "the database changed"
                before = after
            if problem:
                failures.append(f"{name} ({path}): {problem}")
        if not any(f.startswith(name + " (") for f in failures):
            print(f"  refused as expected: {name} -> {field}")
    check(not failures, "\n".join(failures))
    check(int(pg.psql("SELECT count(*) FROM tasks")[0][0]) == 0, "no task stored")

    # Paths that only look like refused ones are fine, and so are 64 inputs.
    for inputs in ([(A, "/data"), (B, "/data2")], [(A, "/device"), (B, "/procx/y")], [(A, "/etc/passwd")],
                   [(A, "/run/mcx")], [(A, "/a" * 32)], [(A, "/" + "a" * 255)], [(A, "/..a/.b/c..")],
                   [(A if i % 2 else B, f"/in/{i}") for i in range(64)]):
        r = c.push(task(*inputs))
        check(r.status == 201, f"push {inputs[:2]}: {r.status} {r.text[:200]}")

    # A push refused for an unknown content stored nothing under its id: once the content is
    # registered, the same push creates the task.
    check(put(c, fabricated(0).id, fabricated(0).torrent).status == 201, "PUT the empty content")
    r = c.push(task((A, "/a"), (fabricated(0).id, "/empty"), id="later"))
    check(r.status == 201, f"push: {r.status} {r.text[:200]}")
    u = lt_content(7000, 22)
    r = c.push(task((u.id, "/u"), id="with-unknown"))
    check(r.status == 400 and error_field(r) == "inputs[0].content", f"{r.status} {r.text[:200]}")
    check(put(c, u.id, u.torrent).status == 201, "PUT")
    r = c.push(task((u.id, "/u"), id="with-unknown"))
    check(r.status == 201, f"push after the PUT: {r.status} {r.text[:200]}")


def test_inputs_in_the_task_and_the_claim():
    pg, (c,) = start_cluster()
    a, b = lt_content(3 * MIB + 7, 30), lt_content(1000, 31)
    for x in (a, b):
        check(put(c, x.id, x.torrent).status == 201, "PUT")
    inputs = [{"content": a.id, "path": "/data/in.bin"}, {"content": b.id, "path": "/models/m"}]
    r = c.push({"image": "img", "cmd": ["true"], "inputs": inputs, "id": "two-inputs"})
    check(r.status == 201 and r.json()["inputs"] == inputs, f"push: {r.status} {r.text[:300]}")
    check(c.task("two-inputs")["inputs"] == inputs, "GET shows the inputs as pushed")
    r = c.list()
    check([t["inputs"] for t in r.json()["tasks"]] == [inputs], "the list shows them too")
    # Pushed again, the same: 200.
    r = c.push({"image": "img", "cmd": ["true"], "inputs": inputs, "id": "two-inputs"})
    check(r.status == 200, f"repeat: {r.status}")

    agent = c.agent("node-a")
    agent.register()
    r = agent.claim()
    check(r.status == 200, f"claim: {r.status} {r.text[:300]}")
    j = r.json()
    check(j["task"]["id"] == "two-inputs" and j["task"]["inputs"] == inputs, f"claimed {j['task']}")
    want = [dict(inputs[0], length=a.size, piece_length=piece_length_for(a.size)),
            dict(inputs[1], length=b.size, piece_length=piece_length_for(b.size))]
    check(j["inputs"] == want, f"claim answer inputs {j['inputs']}, wanted {want}")
    # The agent then fetches the manifests with its own token.
    for x in (a, b):
        r = get(c, x.id, token=agent.token)
        check(r.status == 200 and r.body == x.canonical, f"agent GET {x.id}: {r.status}")

    # A task without inputs: an empty list.
    check(c.push({"image": "img", "cmd": ["true"], "id": "no-inputs"}).status == 201, "push")
    r = agent.claim()
    check(r.status == 200 and r.json()["task"]["id"] == "no-inputs" and r.json()["inputs"] == [],
          f"claim: {r.status} {r.text[:300]}")


def test_upgrade_from_schema_version_1():
    """A database of schema version 1 with tasks in it (one with inputs of the old, relative kind) is
    upgraded in place: the tasks are intact and claimable, and contents work."""
    pg = Postgres().start()
    with open(os.path.join(mctest.source_dir(), "src/control/sql/001-schema.sql")) as f:
        pg.psql(f.read())
    # As mc-control records an applied migration (src/control/db.c).
    pg.psql("CREATE TABLE mc_schema (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO mc_schema VALUES (1, 'schema')")
    old_inputs = [{"content": "a" * 64, "path": "data/in.txt"}]
    spec = {"image": "img", "cmd": ["true"], "env": {}, "labels": {}, "resources": {}, "timeout_sec": 60,
            "max_attempts": 3, "inputs": old_inputs}
    pg.psql("INSERT INTO tasks (id, spec) VALUES ('old-task', '" + json.dumps(spec) + "'::jsonb)")

    c = Control(pg).start()
    # Upgraded to whatever the tree's latest schema is, each migration after the first recorded once.
    migrations = sorted(glob.glob(os.path.join(mctest.source_dir(), "src/control/sql/[0-9]*-*.sql")))
    latest = int(os.path.basename(migrations[-1]).split("-")[0])
    check(http("GET", c.url + "/api/health").json()["schema_version"] == latest, f"schema version {latest}")
    check(pg.psql("SELECT count(*) FROM mc_schema")[0][0] == str(len(migrations)), "every migration recorded once")
    check(c.task("old-task")["inputs"] == old_inputs, "the old task is intact")
    agent = c.agent("node-a")
    agent.register()
    r = agent.claim()
    check(r.status == 200 and r.json()["task"]["id"] == "old-task", f"claim: {r.status} {r.text[:300]}")
    # Its content was never registered: no length to give.
    check(r.json()["inputs"] == [dict(old_inputs[0], length=None, piece_length=None)], r.json()["inputs"])
    x = lt_content(20000, 40)
    check(put(c, x.id, x.torrent).status == 201, "PUT after the upgrade")
    check(c.push({"image": "img", "cmd": ["true"], "inputs": [{"content": x.id, "path": "/x"}]}).status == 201,
          "push with an input after the upgrade")


mctest.main()
