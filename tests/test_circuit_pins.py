"""Claims pin the circuit revision they are about (claim:5@2 means circuit:1@1 whatever later edits of circuit:1
change), and circuit revisions share their edge lists, so renames neither grow the database nor the answers."""

import html
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
    edges = [{"source": s, "target": t, "note": secrets.token_urlsafe(NOTE)[:NOTE]} for s in sources for t in targets]
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
