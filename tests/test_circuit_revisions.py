"""Circuits edited together: immutable revisions (circuit:N@R), history, diff, EDIT_CONFLICT, and many concurrent
editors over HTTP with no lost revision (against two server processes on PostgreSQL; retrying editors on both
databases)."""

import json
import secrets
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa
from conftest import as_user, gql
from servers import kb_serve

from kb.claims import accounts as acc

CREATE = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key revision name edges { source target note } } }"
UPDATE = """mutation($k: String!, $r: Int!, $p: CircuitPatch!, $m: String! = "") {
    updateCircuit(key: $k, expectedRevision: $r, patch: $p, message: $m) {
        key revision name description edges { source target note } neurons { key } } }"""
# a revision's edges: its shared, content-addressed edge list (migration 0007)
REVISION_EDGES = (
    "SELECT r.revision, l.edges FROM circuit_revision r JOIN circuit_edge_list l ON l.sha256 = r.edges_sha256 "
    "WHERE r.circuit_id = :c ORDER BY r.revision"
)
A, B, C, D = "InceptionV1 4b:373", "InceptionV1 4c:447", "InceptionV1 4b:237", "InceptionV1 4b:1"
KA, KB, KC, KD = (
    "inceptionv1/mixed4b:373",
    "inceptionv1/mixed4c:447",
    "inceptionv1/mixed4b:237",
    "inceptionv1/mixed4b:1",
)


def make(api, token, name="car"):
    data = as_user(api, token, CREATE, {"i": {"name": name, "edges": [{"source": A, "target": B, "note": "wheels"}]}})
    assert "errors" not in data, data
    return data["data"]["createCircuit"]


def update(api, token, key, rev, patch, message=""):
    return as_user(api, token, UPDATE, {"k": key, "r": rev, "p": patch, "m": message})


def test_revisions_history_and_diff(api, accounts, engine):
    ed, ed2 = accounts["editor"]["token"], accounts["editor2"]["token"]
    made = make(api, ed)
    key = made["key"]
    assert made["revision"] == 1
    # another editor adds an edge and rewrites the first edge's note
    r2 = update(
        api,
        ed2,
        key,
        1,
        {"edges": [{"source": C, "target": B, "note": "windows"}, {"source": A, "target": B, "note": "round wheels"}]},
        "add windows",
    )["data"]["updateCircuit"]
    assert r2["revision"] == 2
    assert r2["edges"] == [
        {"source": KA, "target": KB, "note": "round wheels"},
        {"source": KC, "target": KB, "note": "windows"},
    ]
    stale = update(api, ed, key, 1, {"name": "lost?"})["errors"][0]
    assert stale["extensions"] == {"code": "EDIT_CONFLICT", "currentRevision": 2}
    r3 = update(
        api,
        ed,
        key,
        2,
        {"name": "car detector", "description": "two parts\n", "removeEdges": [{"source": A, "target": B}]},
    )["data"]["updateCircuit"]
    assert r3["revision"] == 3 and r3["name"] == "car detector"
    assert r3["edges"] == [{"source": KC, "target": KB, "note": "windows"}]
    assert KA in {n["key"] for n in r3["neurons"]}  # removing an edge keeps its units
    r4 = update(api, ed2, key, 3, {"removeNeurons": [A], "addNeurons": [D]})["data"]["updateCircuit"]
    assert {n["key"] for n in r4["neurons"]} == {KB, KC, KD}

    data = gql(
        api,
        """query($k: String!) { circuit(key: $k) { key revision name
            revisions { key revision name message author { name } edges { source note } citation { key url bibtex } }
            diff(from: 1, to: 3) { fields { field before after patch } addedEdges { source } removedEdges { source }
              changedNotes { source before after } addedNeurons removedNeurons } } }""",
        {"k": key},
    )["data"]["circuit"]
    assert data["revision"] == 4 and data["name"] == "car detector"
    revs = data["revisions"]
    assert [r["revision"] for r in revs] == [1, 2, 3, 4]
    assert [r["author"]["name"] for r in revs] == [
        accounts["editor"]["name"],
        accounts["editor2"]["name"],
        accounts["editor"]["name"],
        accounts["editor2"]["name"],
    ]
    assert revs[0]["name"] == "car" and revs[0]["edges"] == [{"source": KA, "note": "wheels"}]
    assert revs[1]["message"] == "add windows"
    number = key.split(":")[1]
    assert revs[1]["citation"]["key"] == f"{key}@2" and revs[1]["citation"]["url"].endswith(f"/circuits/{number}/2")
    assert "@misc{circuit_" in revs[1]["citation"]["bibtex"]
    d = data["diff"]
    assert {f["field"] for f in d["fields"]} == {"name", "description"}
    assert "+two parts" in next(f for f in d["fields"] if f["field"] == "description")["patch"]
    assert d["addedEdges"] == [{"source": KC}] and d["removedEdges"] == [{"source": KA}]
    assert d["changedNotes"] == [] and d["addedNeurons"] == [KC] and d["removedNeurons"] == []

    # circuit:N@R is citable: the circuit as it was
    old = gql(
        api, "query($k: String!) { circuit(key: $k) { key revision name edges { source note } } }", {"k": key + "@1"}
    )
    assert old["data"]["circuit"] == {
        "key": key,
        "revision": 1,
        "name": "car",
        "edges": [{"source": KA, "note": "wheels"}],
    }
    at2 = gql(api, "query($k: String!) { circuit(key: $k) { revisionAt(revision: 2) { key name } } }", {"k": key})
    assert at2["data"]["circuit"]["revisionAt"] == {"key": key + "@2", "name": "car"}
    missing = gql(api, "query($k: String!) { circuit(key: $k) { name } }", {"k": key + "@9"})["errors"][0]
    assert missing["extensions"]["code"] == "NOT_FOUND"

    # every revision is in the activity feed, attributed
    with engine.connect() as conn:
        subjects = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT subject FROM activity WHERE circuit_id = :c ORDER BY id"), {"c": int(number)}
            )
        ]
    assert subjects == [f"{key}@{r}" for r in (1, 2, 3, 4)]


def test_bad_edits_change_nothing(api, accounts, engine):
    ed = accounts["editor"]["token"]
    key = make(api, ed, "bad edits")["key"]
    cases = [
        ({"removeEdges": [{"source": C, "target": B}]}, "BAD_INPUT"),  # no such edge
        ({"name": ""}, "BAD_INPUT"),
        ({"name": "bad edits"}, "BAD_INPUT"),  # changes nothing
        ({"addNeurons": ["resnet50/layer3.5:12"]}, None),  # unknown model: NOT_FOUND or BAD_KEY
        ({"edges": [{"source": "InceptionV1 4b:99999", "target": B}]}, None),
    ]
    for patch, code in cases:
        err = update(api, ed, key, 1, patch)["errors"][0]
        assert err["extensions"]["code"] == code if code else err["extensions"]["code"] in ("NOT_FOUND", "BAD_KEY")
    viewer = update(api, accounts["viewer"]["token"], key, 1, {"name": "x"})["errors"][0]
    assert viewer["extensions"]["code"] == "FORBIDDEN"
    revision_key = update(api, ed, key + "@1", 1, {"name": "x"})["errors"][0]
    assert revision_key["extensions"]["code"] == "BAD_INPUT"
    with engine.connect() as conn:
        n = conn.execute(
            sa.text("SELECT count(*) FROM circuit_revision WHERE circuit_id = :c"), {"c": int(key.split(":")[1])}
        ).scalar_one()
    assert n == 1


EDITORS, EDITS, CIRCUITS = 24, 10, 3
READ = "query($k: String!) { circuit(key: $k) { revision } }"
EDIT = """mutation($k: String!, $r: Int!, $n: String!) {
    updateCircuit(key: $k, expectedRevision: $r, patch: {edges: [{source: "InceptionV1 4b:373",
        target: "InceptionV1 4c:447", note: $n}]}) { revision } }"""


def test_concurrent_circuit_edits_lose_no_revision(engine, db_url, inceptionv1):
    """On PostgreSQL and SQLite: 24 editors over two server processes edit 3 circuits, each naming the revision it
    read; the refused get EDIT_CONFLICT, and every accepted edit is exactly one revision and one feed row."""
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        tokens = []
        for i in range(EDITORS):
            acc.create_user(conn, f"ced{i}-{suffix}", "editor")
            tokens.append(acc.create_token(conn, f"ced{i}-{suffix}"))
    env = {"KB_DATABASE_URL": db_url, "KB_RATE_LIMIT_BURST": "100000", "KB_QUERY_RATE_LIMIT": ""}
    # two server processes (two `kb serve`, not --workers: uvicorn's supervisor kills workers that are slow to
    # start, as they are on a loaded machine), editors spread over both
    with (
        kb_serve(env, "--no-render-worker", timeout=120) as one,
        kb_serve(env, "--no-render-worker", timeout=120) as two,
    ):
        servers = (one, two)
        with httpx.Client(base_url=one, timeout=60, headers={"authorization": f"Bearer {tokens[0]}"}) as c:
            keys = [
                c.post(
                    "/graphql", json={"query": CREATE, "variables": {"i": {"name": f"c{i}", "neurons": [B]}}}
                ).json()["data"]["createCircuit"]["key"]
                for i in range(CIRCUITS)
            ]

        def editor(i: int) -> list[tuple[str, str, str | None]]:
            out = []
            with httpx.Client(
                base_url=servers[i % 2], timeout=60, headers={"authorization": f"Bearer {tokens[i]}"}
            ) as client:
                for j in range(EDITS):
                    key = keys[(i + j) % CIRCUITS]
                    rev = client.post("/graphql", json={"query": READ, "variables": {"k": key}}).json()["data"][
                        "circuit"
                    ]["revision"]
                    note = f"note {i}.{j}"
                    body = client.post("/graphql", json={"query": EDIT, "variables": {"k": key, "r": rev, "n": note}})
                    body = body.json()
                    code = body["errors"][0]["extensions"]["code"] if body.get("errors") else None
                    out.append((key, note, code))
            return out

        with ThreadPoolExecutor(EDITORS) as pool:
            results = [r for rs in pool.map(editor, range(EDITORS)) for r in rs]

    codes = Counter(code for _, _, code in results)
    assert set(codes) <= {None, "EDIT_CONFLICT"}, codes
    assert codes[None] >= CIRCUITS and codes["EDIT_CONFLICT"] > 0  # real contention happened
    with engine.connect() as conn:
        for key in keys:
            cid = int(key.split(":")[1])
            accepted = sorted(note for k, note, code in results if k == key and code is None)
            revs = conn.execute(
                sa.text(REVISION_EDGES),
                {"c": cid},
            ).all()
            assert [r.revision for r in revs] == list(range(1, len(revs) + 1))  # gapless
            assert len(revs) - 1 == len(accepted)  # no lost revision
            notes = sorted(_json(r.edges)[0]["note"] for r in revs[1:])
            assert notes == accepted  # each accepted edit is exactly one revision
            current = conn.execute(sa.text("SELECT revision FROM circuit WHERE id = :c"), {"c": cid}).scalar_one()
            assert current == len(revs)
            feed = conn.execute(
                sa.text("SELECT count(*) FROM activity WHERE kind = 'CIRCUIT' AND circuit_id = :c"), {"c": cid}
            ).scalar_one()
            assert feed == len(revs)  # one feed entry per committed revision, none for refused edits
    print(
        f"\n{EDITORS} editors x {EDITS} edits on {CIRCUITS} circuits: {codes[None]} accepted, "
        f"{codes['EDIT_CONFLICT']} EDIT_CONFLICT, 0 lost"
    )


RETRY_EDITORS, RETRY_EDITS = 8, 5


def test_concurrent_circuit_edits_with_retries_lose_no_revision(engine, db_url, inceptionv1):
    """On PostgreSQL and SQLite: editors in threads, each re-reading and retrying on EDIT_CONFLICT until each of its
    edits is in; every success is exactly one revision, and the revisions are 1..N without a gap."""
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        tokens = []
        for i in range(RETRY_EDITORS):
            acc.create_user(conn, f"red{i}-{suffix}", "editor")
            tokens.append(acc.create_token(conn, f"red{i}-{suffix}"))
    env = {"KB_DATABASE_URL": db_url, "KB_RATE_LIMIT_BURST": "100000", "KB_QUERY_RATE_LIMIT": ""}
    with kb_serve(env, "--no-render-worker", timeout=120) as base:
        with httpx.Client(base_url=base, timeout=60, headers={"authorization": f"Bearer {tokens[0]}"}) as c:
            key = c.post(
                "/graphql", json={"query": CREATE, "variables": {"i": {"name": f"retried {suffix}", "neurons": [B]}}}
            ).json()["data"]["createCircuit"]["key"]

        def editor(i: int) -> tuple[list[str], int]:
            done, conflicts = [], 0
            with httpx.Client(base_url=base, timeout=60, headers={"authorization": f"Bearer {tokens[i]}"}) as client:
                for j in range(RETRY_EDITS):
                    note = f"note {i}.{j}"
                    for _ in range(500):
                        rev = client.post("/graphql", json={"query": READ, "variables": {"k": key}}).json()
                        rev = rev["data"]["circuit"]["revision"]
                        body = client.post(
                            "/graphql", json={"query": EDIT, "variables": {"k": key, "r": rev, "n": note}}
                        ).json()
                        if not body.get("errors"):
                            assert body["data"]["updateCircuit"]["revision"] == rev + 1
                            done.append(note)
                            break
                        assert body["errors"][0]["extensions"]["code"] == "EDIT_CONFLICT", body
                        conflicts += 1
            return done, conflicts

        with ThreadPoolExecutor(RETRY_EDITORS) as pool:
            results = list(pool.map(editor, range(RETRY_EDITORS)))
    accepted = sorted(n for done, _ in results for n in done)
    assert len(accepted) == RETRY_EDITORS * RETRY_EDITS  # every edit got in, after its retries
    cid = int(key.split(":")[1])
    with engine.connect() as conn:
        revs = conn.execute(sa.text(REVISION_EDGES), {"c": cid}).all()
        current = conn.execute(sa.text("SELECT revision FROM circuit WHERE id = :c"), {"c": cid}).scalar_one()
    assert [r.revision for r in revs] == list(range(1, len(accepted) + 2))  # gapless: one revision per success
    assert current == len(revs)
    assert sorted(_json(r.edges)[0]["note"] for r in revs[1:]) == accepted  # each success is exactly one revision
    print(f"\n{len(accepted)} edits by {RETRY_EDITORS} editors, {sum(c for _, c in results)} EDIT_CONFLICT retried")


def _json(value):
    return value if isinstance(value, list) else json.loads(value)


def test_existing_circuits_become_their_revision_1(tmp_path):
    """Migration 0005 on a database that already has circuits: each gets revision 1 with its content."""
    from kb.db import migrate
    from kb.db.engine import make_engine

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    migrate.upgrade(url, "0003")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO kb_user (name, display_name, role, created_at) "
                "VALUES ('old', 'Old', 'editor', '2026-01-01')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO circuit (model_key, name, description, neurons, edges, created_by, created_at) "
                "VALUES ('m', 'old circuit', 'd', :n, :e, 1, '2026-01-02')"
            ),
            {
                "n": json.dumps(["m/a:1", "m/b:2"]),
                "e": json.dumps([{"source": "m/a:1", "target": "m/b:2", "note": "x"}]),
            },
        )
    migrate.upgrade(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT revision FROM circuit")).scalar_one() == 1
        rev = (
            conn.execute(
                sa.text("SELECT * FROM circuit_revision r JOIN circuit_edge_list l ON l.sha256 = r.edges_sha256")
            )
            .one()
            ._mapping
        )
    assert (rev["circuit_id"], rev["revision"], rev["author_id"], rev["name"]) == (1, 1, 1, "old circuit")
    assert _json(rev["edges"]) == [{"source": "m/a:1", "target": "m/b:2", "note": "x"}]
    engine.dispose()
