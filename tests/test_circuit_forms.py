"""The circuit forms without a browser: /explore's selection saved as a circuit or added to one, and the circuit
page's edit form. Each post is checked like every form (same origin, the session's CSRF token, signed in) and
writes through the same mutations as the API: roles, EDIT_CONFLICT (a conflict view that keeps what was typed)."""

import html
import re
import secrets

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
ORIGIN = {"origin": "http://testserver"}
EXPLORE = "/explore?roots=InceptionV1 4c:447&direction=UPSTREAM&depth=1&perNode=3"
CREATE = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key revision } }"
READ = """query($k: String!) { circuit(key: $k) { revision name description edges { source target note }
  neurons { key } } }"""
UPDATE = """mutation($k: String!, $r: Int!, $p: CircuitPatch!) {
  updateCircuit(key: $k, expectedRevision: $r, patch: $p) { revision } }"""


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    application = create_app(
        Settings(database_url=engine.url.render_as_string(hide_password=False), public_url="http://testserver"),
        engine=engine,
        warm=False,
    )
    application.state.graphs.warm()
    return application


def person(app, engine, role: str = "editor") -> tuple[TestClient, str, str]:
    """A browser signed in as a new account of ``role``: (client, name, csrf token)."""
    name = f"{role[:3]}-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, role)
        sessions.set_password(conn, name, PASSWORD)
    client = TestClient(app, follow_redirects=False)
    page = client.get("/signin?next=/account")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    signed = client.post(
        "/signin", data={"csrf": token, "next": "/account", "name": name, "password": PASSWORD}, headers=ORIGIN
    )
    assert signed.status_code == 303, signed.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").text)[1]
    return client, name, csrf


def gql(client, csrf, query, variables):
    body = client.post("/graphql", json={"query": query, "variables": variables}, headers={"x-csrf-token": csrf})
    return body.json()


def boxes(text: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'name="{name}" value="([^"]+)"', text)]


def checked(text: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'name="{name}" value="([^"]+)" checked', text)]


def selection_form(client) -> tuple[list[str], list[str], dict]:
    page = client.get(EXPLORE)
    assert page.status_code == 200
    assert "Save as circuit</button>" in page.text
    units, edges = boxes(page.text, "unit"), boxes(page.text, "edge")
    assert len(units) >= 3 and len(edges) >= 2
    back = {"roots": "InceptionV1 4c:447", "direction": "UPSTREAM", "depth": "1", "perNode": "3"}
    return units, edges, back


def test_signed_out_explore_has_no_selection_form(app):
    page = TestClient(app).get(EXPLORE)
    assert page.status_code == 200 and 'action="/explore/circuit"' not in page.text
    assert "Sign in</a> to save a selection" in page.text


def test_save_selection_as_circuit(app, engine):
    client, name, csrf = person(app, engine)
    units, edges, back = selection_form(client)
    chosen = edges[:2]
    form = {**back, "csrf": csrf, "edge": chosen, "unit": [units[0]], "name": "from explore", "action": "save"}
    form["description"] = "two inputs\r\nof 4c:447"
    made = client.post("/explore/circuit", data=form, headers=ORIGIN)
    assert made.status_code == 303, made.text
    number = made.headers["location"].rsplit("/", 1)[1]
    assert made.headers["location"] == f"/circuits/{number}"
    c = gql(client, csrf, READ, {"k": f"circuit:{number}"})["data"]["circuit"]
    assert c["revision"] == 1 and c["name"] == "from explore" and c["description"] == "two inputs\nof 4c:447"
    assert [f"{e['source']}|{e['target']}" for e in c["edges"]] == chosen
    ends = {k for e in chosen for k in e.split("|")}
    assert {n["key"] for n in c["neurons"]} == ends | {units[0]}
    page = client.get(f"/circuits/{number}")
    assert f"circuit:{number}@1" in page.text and '<button type="submit" aria-controls="edit"' in page.text
    with engine.connect() as conn:
        author = conn.execute(
            sa.text("SELECT u.name FROM circuit c JOIN kb_user u ON u.id = c.created_by WHERE c.id = :i"),
            {"i": int(number)},
        ).scalar_one()
    assert author == name


def test_selection_posts_are_refused_without_csrf_session_or_role(app, engine):
    client, _, csrf = person(app, engine)
    _, edges, back = selection_form(client)
    form = {**back, "csrf": csrf, "edge": edges[:1], "name": "refused", "action": "save"}

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM circuit WHERE name = 'refused'")).scalar_one()

    no_csrf = client.post("/explore/circuit", data={**form, "csrf": ""}, headers=ORIGIN)
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    cross = client.post("/explore/circuit", data=form, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403 and "cross-site" in cross.text
    bare = client.post("/explore/circuit", data=form)  # neither Origin nor Referer
    assert bare.status_code == 403
    signed_out = TestClient(app, follow_redirects=False).post("/explore/circuit", data=form, headers=ORIGIN)
    assert signed_out.status_code == 401 and "not signed in" in signed_out.text
    viewer, _, viewer_csrf = person(app, engine, "viewer")
    forbidden = viewer.post("/explore/circuit", data={**form, "csrf": viewer_csrf}, headers=ORIGIN)
    assert forbidden.status_code == 403 and "editor" in forbidden.text
    assert checked(forbidden.text, "edge") == edges[:1] and 'value="refused"' in forbidden.text  # nothing lost
    nothing = client.post("/explore/circuit", data={**form, "edge": []}, headers=ORIGIN)
    assert nothing.status_code == 400 and "select units or edges" in nothing.text and 'value="refused"' in nothing.text
    no_name = client.post("/explore/circuit", data={**form, "name": " "}, headers=ORIGIN)
    assert no_name.status_code == 400 and "needs a name" in no_name.text and checked(no_name.text, "edge") == edges[:1]
    assert count() == 0


def test_add_to_circuit_at_its_revision_and_a_stale_one(app, engine):
    client, _, csrf = person(app, engine)
    units, edges, back = selection_form(client)
    first, second, third = edges[0], edges[1], edges[2] if len(edges) > 2 else edges[1]
    s, t = first.split("|")
    made = gql(
        client,
        csrf,
        CREATE,
        {"i": {"name": "grows", "edges": [{"source": s, "target": t, "note": "kept note"}]}},
    )["data"]["createCircuit"]
    number = made["key"].split(":")[1]
    page = client.get(EXPLORE).text
    assert f'value="{number}@1"' in page  # the list names each circuit's current revision
    form = {**back, "csrf": csrf, "edge": [first, second], "circuit": f"{number}@1", "action": "add"}
    added = client.post("/explore/circuit", data=form, headers=ORIGIN)
    assert added.status_code == 303 and added.headers["location"] == f"/circuits/{number}"
    c = gql(client, csrf, READ, {"k": made["key"]})["data"]["circuit"]
    assert c["revision"] == 2
    assert [(f"{e['source']}|{e['target']}", e["note"]) for e in c["edges"]] == [(first, "kept note"), (second, "")]

    # someone else edits it; adding at revision 2 (what this page showed) is refused and says so, keeping the selection
    other, _, other_csrf = person(app, engine)
    assert gql(other, other_csrf, UPDATE, {"k": made["key"], "r": 2, "p": {"name": "grown"}})["data"]
    again = {**form, "edge": [third], "unit": [units[-1]], "circuit": f"{number}@2"}
    stale = client.post("/explore/circuit", data=again, headers=ORIGIN)
    assert stale.status_code == 409
    assert f"circuit:{number} was changed by someone else" in stale.text and "revision 3" in stale.text
    assert checked(stale.text, "edge") == [third] and checked(stale.text, "unit") == [units[-1]]
    assert f'value="{number}@3" selected' in stale.text  # read again: the same circuit, now at its revision 3
    assert gql(client, csrf, READ, {"k": made["key"]})["data"]["circuit"]["revision"] == 3  # nothing added


def _edit_form(text: str) -> dict:
    form = text[text.index('class="edit-form"') :]
    form = form[: form.index("</form>")]
    return {
        "revision": re.search(r'name="revision" value="(\d+)"', form)[1],
        "notes": [html.unescape(v) for v in re.findall(r'name="note\d+" value="([^"]*)"', form)],
    }


def test_edit_form_saves_a_revision_and_a_stale_one_shows_the_conflict(app, engine):
    amy, _, amy_csrf = person(app, engine)
    ben, ben_name, ben_csrf = person(app, engine)
    edges = [
        {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447", "note": "wheels"},
        {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:447", "note": "windows"},
    ]
    key = gql(amy, amy_csrf, CREATE, {"i": {"name": "car", "edges": edges}})["data"]["createCircuit"]["key"]
    number = key.split(":")[1]
    page = amy.get(f"/circuits/{number}?edit=1").text
    assert _edit_form(page) == {"revision": "1", "notes": ["wheels", "windows"]}
    assert '<label>Name <input name="name" value="car"' in page and '<button type="submit">Save</button>' in page

    # Ben renames it and removes the second edge (both browsers had revision 1 open)
    saved = ben.post(
        f"/circuits/{number}/edit",
        data={"csrf": ben_csrf, "revision": "1", "name": "car detector", "description": "", "note0": "wheels",
              "note1": "windows", "remove1": "1", "message": "one edge is enough"},
        headers=ORIGIN,
    )  # fmt: skip
    assert saved.status_code == 303 and saved.headers["location"] == f"/circuits/{number}"
    c = gql(amy, amy_csrf, READ, {"k": key})["data"]["circuit"]
    assert c["revision"] == 2 and c["name"] == "car detector" and len(c["edges"]) == 1

    # Amy saves her edit of revision 1: the conflict view, their version beside hers, her text kept
    mine = {"csrf": amy_csrf, "revision": "1", "name": "Amy's car", "description": "Amy's long\r\ndescription",
            "note0": "round wheels", "note1": "windows", "message": "my words"}  # fmt: skip
    stale = amy.post(f"/circuits/{number}/edit", data=mine, headers=ORIGIN)
    assert stale.status_code == 409
    text = stale.text
    assert "Someone else saved first" in text and "Theirs: revision 2" in text and ben_name in text
    assert 'name="name" value="Amy&#39;s car"' in text and "Amy&#39;s long\ndescription</textarea>" in text
    assert 'value="my words"' in text
    form = _edit_form(text)
    assert form == {"revision": "2", "notes": ["round wheels"]}  # on their revision, with her note on the edge left
    assert "edges removed" in text and "windows" in text  # what they changed since revision 1
    assert gql(amy, amy_csrf, READ, {"k": key})["data"]["circuit"]["revision"] == 2  # nothing saved

    # saving the conflict view's form applies her version after theirs
    again = amy.post(
        f"/circuits/{number}/edit",
        data={**mine, "revision": form["revision"], "note0": "round wheels", "note1": ""},
        headers=ORIGIN,
    )
    assert again.status_code == 303
    c = gql(amy, amy_csrf, READ, {"k": key})["data"]["circuit"]
    assert c["revision"] == 3 and c["name"] == "Amy's car" and c["description"] == "Amy's long\ndescription"
    assert [e["note"] for e in c["edges"]] == ["round wheels"]

    history = amy.get(f"/circuits/{number}").text
    assert all(f"{key}@{r}" in history for r in (1, 2, 3))
    assert "edges removed" in history and "one edge is enough" in history
    old = amy.get(f"/circuits/{number}/1").text
    assert 'Cite as <code class="citekey">' + key + "@1</code>" in old and "see the current one (revision 3)" in old


def test_edit_form_refusals_keep_the_text(app, engine):
    amy, _, csrf = person(app, engine)
    key = gql(amy, csrf, CREATE, {"i": {"name": "kept", "neurons": ["InceptionV1 4c:9"]}})["data"]["createCircuit"]
    number = key["key"].split(":")[1]
    form = {"csrf": csrf, "revision": "1", "name": "", "description": "typed text stays"}
    no_name = amy.post(f"/circuits/{number}/edit", data=form, headers=ORIGIN)
    assert no_name.status_code == 400 and "needs a name" in no_name.text
    assert "typed text stays</textarea>" in no_name.text
    url = f"/circuits/{number}/edit"
    assert amy.post(url, data={**form, "csrf": "x"}, headers=ORIGIN).status_code == 403
    assert amy.post(url, data=form, headers={"origin": "https://evil.example"}).status_code == 403
    out = TestClient(app, follow_redirects=False).post(f"/circuits/{number}/edit", data=form, headers=ORIGIN)
    assert out.status_code == 401
    # a session that ended (signed out; the old cookie replayed with its CSRF token) is refused too
    ended, _, ended_csrf = person(app, engine)
    cookie = ended.cookies[sessions.COOKIE]
    assert ended.post("/signout", data={"csrf": ended_csrf}, headers=ORIGIN).status_code == 303
    replay = TestClient(app, follow_redirects=False, cookies={sessions.COOKIE: cookie})
    gone = replay.post(url, data={**form, "csrf": ended_csrf, "name": "late"}, headers=ORIGIN)
    assert gone.status_code == 401 and "not signed in" in gone.text
    viewer, _, viewer_csrf = person(app, engine, "viewer")
    page = viewer.get(f"/circuits/{number}").text
    assert 'action="/circuits/' in page  # a signed-in viewer sees the form; the API's role rule answers
    refused = viewer.post(f"/circuits/{number}/edit", data={**form, "csrf": viewer_csrf, "name": "v"}, headers=ORIGIN)
    assert refused.status_code == 403 and "editor" in refused.text and "typed text stays</textarea>" in refused.text
    assert TestClient(app).get(f"/circuits/{number}").text.count('action="/circuits/') == 0  # signed out: no form
    assert gql(amy, csrf, READ, {"k": key["key"]})["data"]["circuit"]["revision"] == 1
