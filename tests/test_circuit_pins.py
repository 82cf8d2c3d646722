"""Claims pin the circuit revision they are about (claim:5@2 means circuit:1@1 whatever later edits of circuit:1
change), and circuit revisions share their edge lists, so renames neither grow the database nor the answers."""

import html
import json
import re
import secrets

import pytest
import sqlalchemy as sa
from conftest import BACKEND, as_user
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import circuits, sessions
from kb.claims.accounts import Account
from kb.db.catalog import load_catalog
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
ORIGIN = {"origin": "http://testserver"}
A, B, C = "inceptionv1/mixed4b:373", "inceptionv1/mixed4c:447", "inceptionv1/mixed4b:237"

CLAIM = """query($k: String!) { claim(key: $k) { status revision
  circuit { key name revision revisionKey latestRevision edges { source target note } }
  revisions { revision status circuitKey circuit { name revision edges { source target note } } } } }"""
CREATE = """mutation($i: ClaimInput!) { createClaim(input: $i) { key revision status
  revisionAt(revision: 1) { circuitKey } } }"""
MOVE = """mutation($k: String!, $r: Int!, $c: String!) {
  updateClaim(key: $k, expectedRevision: $r, patch: { circuit: $c }) { revision status
    circuit { revisionKey name } } }"""


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(Settings(database_url=url, public_url="http://testserver"), engine=engine, warm=False)
    application.state.graphs.warm()
    return application


@pytest.fixture(scope="module")
def people(engine):
    """alice and bob (editors, with tokens and passwords), mod (a moderator)."""
    suffix = secrets.token_hex(3)
    out = {}
    with engine.begin() as conn:
        for who, role in (("alice", "editor"), ("bob", "editor"), ("mod", "moderator")):
            name = f"{who}-{suffix}"
            user_id = acc.create_user(conn, name, role)
            sessions.set_password(conn, name, PASSWORD)
            out[who] = {"name": name, "token": acc.create_token(conn, name), "account": Account(user_id, name, role)}
    return out


def _signed_in(app, name: str) -> TestClient:
    client = TestClient(app, client=(f"10.9.{secrets.randbelow(250)}.{secrets.randbelow(250)}", 40000))
    client.follow_redirects = False
    page = client.get("/signin")
    token = re.search(r'action="/signin"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text)[1]
    done = client.post(
        "/signin", data={"csrf": token, "next": "/account", "name": name, "password": PASSWORD}, headers=ORIGIN
    )
    assert done.status_code == 303, done.text
    return client


def _ok(data: dict) -> dict:
    assert "errors" not in data, data
    return data["data"]


def test_a_judged_claim_keeps_the_circuit_it_judged(app, people, engine):
    """Alice's claim about circuit:N is SUPPORTED; Bob renames circuit:N and swaps its edges: the claim still shows
    the circuit as judged (name, edges, notes) and stays SUPPORTED about it; its page says a newer revision exists,
    and Alice moving the claim to it is a content edit that makes it PROPOSED again."""
    api = TestClient(app)
    alice, bob, mod = (people[k]["token"] for k in ("alice", "bob", "mod"))
    with engine.begin() as conn:
        cid = circuits.create_circuit(
            conn,
            load_catalog(conn),
            people["alice"]["account"],
            "car detector",
            [],
            [{"source": A, "target": B, "note": "wheels"}],
        )
    made = _ok(
        as_user(api, alice, CREATE, {"i": {"label": "car from wheels", "kind": "CIRCUIT", "circuit": f"circuit:{cid}"}})
    )["createClaim"]
    key = made["key"]
    assert made["revisionAt"]["circuitKey"] == f"circuit:{cid}@1"  # circuit:N pins the current revision
    judged = as_user(
        api,
        mod,
        "mutation($k: String!) { setClaimStatus(key: $k, expectedRevision: 1, status: SUPPORTED) { revision } }",
        {"k": key},
    )
    assert _ok(judged)["setClaimStatus"]["revision"] == 2

    swap = {
        "name": "dog detector",
        "removeEdges": [{"source": A, "target": B}],
        "edges": [{"source": C, "target": B, "note": "fur"}],
    }
    bob_edit = as_user(
        api,
        bob,
        "mutation($k: String!, $p: CircuitPatch!) { updateCircuit(key: $k, expectedRevision: 1, patch: $p) "
        + "{ revision } }",
        {"k": f"circuit:{cid}", "p": swap},
    )
    assert _ok(bob_edit)["updateCircuit"]["revision"] == 2

    claim = _ok(as_user(api, None, CLAIM, {"k": key}))["claim"]
    assert claim["status"] == "SUPPORTED" and claim["revision"] == 2
    shown = claim["circuit"]
    assert (shown["name"], shown["revision"], shown["revisionKey"], shown["latestRevision"]) == (
        "car detector",
        1,
        f"circuit:{cid}@1",
        2,
    )
    assert shown["edges"] == [{"source": A, "target": B, "note": "wheels"}]
    for rev in claim["revisions"]:  # claim:N@1 and claim:N@2 both still mean circuit:cid@1
        assert rev["circuitKey"] == f"circuit:{cid}@1"
        assert rev["circuit"]["name"] == "car detector" and rev["circuit"]["edges"][0]["note"] == "wheels"

    page = api.get(f"/c/{key.split(':')[1]}").text
    assert "car detector" in page and "wheels" in page and "dog detector" not in page and "fur" not in page
    assert "has a newer revision" in page and f"/circuits/{cid}/2" in page

    # a pinned revision can be named, and must exist
    at1 = as_user(api, alice, CREATE, {"i": {"label": "pinned", "kind": "CIRCUIT", "circuit": f"circuit:{cid}@1"}})
    assert _ok(at1)["createClaim"]["revisionAt"]["circuitKey"] == f"circuit:{cid}@1"
    missing = as_user(api, alice, CREATE, {"i": {"label": "nope", "kind": "CIRCUIT", "circuit": f"circuit:{cid}@9"}})
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"

    # Alice moves the claim to the newer revision from its page: a content edit, to be judged again
    web = _signed_in(app, people["alice"]["name"])
    number = key.split(":")[1]
    page = web.get(f"/c/{number}").text
    assert f'action="/c/{number}/circuit"' in page
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)[1]
    moved = web.post(
        f"/c/{number}/circuit",
        data={"csrf": token, "expectedRevision": "2", "circuit": f"circuit:{cid}@2"},
        headers=ORIGIN,
    )
    assert moved.status_code == 303, html.unescape(moved.text)[:2000]
    claim = _ok(as_user(api, None, CLAIM, {"k": key}))["claim"]
    assert claim["status"] == "PROPOSED" and claim["revision"] == 3
    assert claim["circuit"]["name"] == "dog detector" and claim["circuit"]["edges"][0]["note"] == "fur"
    assert [r["circuitKey"] for r in claim["revisions"]] == [f"circuit:{cid}@1"] * 2 + [f"circuit:{cid}@2"]
    assert "has a newer revision" not in web.get(f"/c/{number}").text

    # the same move by the API: a stale expected revision is refused, another pin is a new revision
    stale = as_user(api, alice, MOVE, {"k": key, "r": 2, "c": f"circuit:{cid}@1"})
    assert stale["errors"][0]["extensions"]["code"] == "EDIT_CONFLICT"
    back = _ok(as_user(api, alice, MOVE, {"k": key, "r": 3, "c": f"circuit:{cid}@1"}))["updateClaim"]
    assert back["circuit"] == {"revisionKey": f"circuit:{cid}@1", "name": "car detector"}


EDGES, NOTE, RENAMES = 2000, 1900, 30
LIMIT = 10_000_000


def _circuit_bytes(engine) -> int:
    """What the circuit tables take: pg_total_relation_size on PostgreSQL, the file's used pages on SQLite."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            tables = [
                t
                for t in ("circuit", "circuit_revision", "circuit_edge_list", "activity")
                if sa.inspect(conn).has_table(t)
            ]
            return sum(
                conn.execute(sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": t}).scalar_one()
                for t in tables
            )
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
        return (pages - free) * conn.exec_driver_sql("PRAGMA page_size").scalar_one()


def test_a_renamed_large_circuit_stays_small_in_the_database_and_in_answers(app, people, engine):
    """2,000 edges with 1,900-character notes, renamed 30 times: under 10 MB in the database, and no answer over
    10 MB (revisions { edges { note } } is refused with LIMIT_EXCEEDED / TOO_LARGE, not answered 31 times over)."""
    sources = [f"inceptionv1/mixed4b:{i}" for i in range(50)]
    targets = [f"inceptionv1/mixed4c:{i}" for i in range(40)]
    edges = [{"source": s, "target": t, "note": secrets.token_hex(NOTE // 2)} for s in sources for t in targets]
    assert len(edges) == EDGES
    before = _circuit_bytes(engine)
    actor = people["bob"]["account"]
    with engine.begin() as conn:
        catalog = load_catalog(conn)
        cid = circuits.create_circuit(conn, catalog, actor, "big", [], edges)
    for i in range(RENAMES):
        with engine.begin() as conn:
            circuits.update_circuit(conn, catalog, actor, cid, i + 1, {"name": f"big {i + 1}"})
    grown = _circuit_bytes(engine) - before
    print(f"\n{BACKEND}: a {EDGES}-edge circuit and {RENAMES} renames take {grown / 1e6:.1f} MB")
    assert grown < LIMIT

    api = TestClient(app)
    key = f"circuit:{cid}"
    refused = api.post(
        "/graphql", json={"query": f'{{ circuit(key: "{key}") {{ revisions {{ edges {{ note }} }} }} }}'}
    )
    assert len(refused.content) < LIMIT
    error = refused.json()["errors"][0]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED" and error["extensions"]["reason"] == "TOO_LARGE"
    # what fits is answered: the revisions without their edges, one revision's edges, the current edges
    small = api.post("/graphql", json={"query": f'{{ circuit(key: "{key}") {{ revisions {{ key name }} }} }}'})
    assert len(small.json()["data"]["circuit"]["revisions"]) == RENAMES + 1
    one = api.post(
        "/graphql", json={"query": f'{{ circuit(key: "{key}") {{ revisionAt(revision: 3) {{ edges {{ note }} }} }} }}'}
    )
    assert len(one.json()["data"]["circuit"]["revisionAt"]["edges"]) == EDGES and len(one.content) < LIMIT
    # aliases of the current edges add up: three copies are over the bound
    aliased = "{ " + " ".join(f'c{i}: circuit(key: "{key}") {{ edges {{ note }} }}' for i in range(3)) + " }"
    many = api.post("/graphql", json={"query": aliased})
    assert len(many.content) < LIMIT
    assert many.json()["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    page = api.get(f"/circuits/{cid}")  # the page's query is bounded the same way
    assert len(page.content) < LIMIT
    with engine.connect() as conn:
        lists = conn.execute(
            sa.text("SELECT count(DISTINCT edges_sha256) FROM circuit_revision WHERE circuit_id = :c"), {"c": cid}
        ).scalar_one()
    assert lists == 1  # 31 revisions, one stored edge list


@pytest.fixture
def old_url(tmp_path):
    """A database of its own for a migration test: a SQLite file, or a new PostgreSQL database (dropped after)."""
    from conftest import ADMIN_URL

    from kb.db.engine import make_engine

    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite'}"
        return
    name = f"kb_test_old_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_migration_pins_existing_claims_by_time_and_shares_edge_lists(old_url):
    """A database made at 0006: each claim revision gets the circuit revision current when it was made, and the
    circuit revisions' edges move to one stored list per distinct list; downgrading puts the copies back."""
    from kb.db import migrate
    from kb.db.engine import make_engine

    migrate.upgrade(old_url, "0006")
    engine = make_engine(old_url)
    one = [{"source": A, "target": B, "note": "wheels"}]
    two = [{"source": C, "target": B, "note": "fur"}]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO kb_user (id, name, display_name, role, created_at) VALUES (1, 'o', 'O', 'editor', :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO circuit (id, model_key, name, description, neurons, edges, created_by, created_at,"
                " revision) VALUES (1, 'inceptionv1', 'dog', '', :n, :e, 1, :t, 3)"
            ),
            {"n": json.dumps([A, B, C]), "e": json.dumps(two), "t": "2026-01-02 00:00:00"},
        )
        for rev, name, edges, day in ((1, "car", one, 2), (2, "car 2", one, 4), (3, "dog", two, 6)):
            conn.execute(
                sa.text(
                    "INSERT INTO circuit_revision (circuit_id, revision, author_id, created_at, name, description,"
                    " neurons, edges, message) VALUES (1, :r, 1, :t, :name, '', :n, :e, '')"
                ),
                {
                    "r": rev,
                    "t": f"2026-01-0{day} 00:00:00",
                    "name": name,
                    "n": json.dumps([A, B]),
                    "e": json.dumps(edges),
                },
            )
        # claim 1: revisions made on days 3, 5 and 7 (circuit revisions 1, 2 and 3 current then); claim 2 on day 1,
        # before the circuit's first revision (as after an import): revision 1
        for cid, revs in ((1, (3, 5, 7)), (2, (1,))):
            conn.execute(
                sa.text(
                    "INSERT INTO claim (id, revision, label, body, kind, status, model_key, circuit_id, created_by,"
                    " created_at, updated_at, support_count, dispute_count) VALUES (:c, :r, 'l', '', 'CIRCUIT',"
                    " 'PROPOSED', 'inceptionv1', 1, 1, :t, :t, 0, 0)"
                ),
                {"c": cid, "r": len(revs), "t": f"2026-01-0{revs[0]} 00:00:00"},
            )
            for i, day in enumerate(revs, 1):
                conn.execute(
                    sa.text(
                        "INSERT INTO claim_revision (claim_id, revision, author_id, created_at, label, body, kind,"
                        " status, subjects, circuit_id, evidence, message) VALUES (:c, :r, 1, :t, 'l', '', 'CIRCUIT',"
                        " 'PROPOSED', '[]', 1, '[]', '')"
                    ),
                    {"c": cid, "r": i, "t": f"2026-01-0{day} 12:00:00"},
                )
    migrate.upgrade(old_url)
    with engine.connect() as conn:
        pins = conn.execute(
            sa.text("SELECT claim_id, revision, circuit_revision FROM claim_revision ORDER BY claim_id, revision")
        ).all()
        current = dict(conn.execute(sa.text("SELECT id, circuit_revision FROM claim")).all())
        lists = conn.execute(sa.text("SELECT count(*) FROM circuit_edge_list")).scalar_one()
        shas = [r[0] for r in conn.execute(sa.text("SELECT edges_sha256 FROM circuit_revision ORDER BY revision"))]
        shown = circuits.at_revision(conn, 1, 2)
    assert [tuple(p) for p in pins] == [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 1)]
    assert current == {1: 3, 2: 1}
    assert lists == 2 and shas[0] == shas[1] != shas[2]  # a rename shares its list
    assert (shown.name, shown.edges, shown.current_revision) == ("car 2", one, 3)

    _downgrade(old_url, "0006")
    with engine.connect() as conn:
        edges = [r[0] for r in conn.execute(sa.text("SELECT edges FROM circuit_revision ORDER BY revision"))]
    assert [e if isinstance(e, list) else json.loads(e) for e in edges] == [one, one, two]
    engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    from alembic import command
    from kb.db import migrate

    command.downgrade(migrate.config(url), revision)
