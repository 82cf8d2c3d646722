"""The smaller holes of issue 23, at the HTTP level: signed-in pages are private to a cache, evidence pictures
are artifacts of this knowledge base, numbers in URLs and forms are ASCII digits of a bounded size (a coded
400/404, never a 500), every error carries the security headers, BibTeX escapes every TeX special character,
redirects never name the Host a client sent, and GraphiQL is the vendored one (no CDN in any policy)."""

from __future__ import annotations

import itertools
import re
import secrets

import pytest
import sqlalchemy as sa
from starlette.routing import Route
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.db.claim_tables import claim_revision_table
from kb.db.render_tables import artifact_table
from kb.db.tables import utcnow
from kb.schema.claim_types import bib_escape
from kb.settings import Settings
from kb.web.app import create_app
from kb.web.security import graphiql_csp

PASSWORD = "correct horse battery"
ORIGIN = {"origin": "http://testserver"}
NEURON = "inceptionv1/mixed4c:11"
CREATE = "mutation($i: ClaimInput!) { createClaim(input: $i) { key revision } }"
CITE = "query($k: String!) { claim(key: $k) { citation { bibtex text } } }"
SUPERSCRIPT_TWO = "\N{SUPERSCRIPT TWO}"  # '²': str.isdigit() says yes, int() says no
_addresses = itertools.count(10)
_NET = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(Settings(database_url=url, public_url="http://testserver"), engine=engine, warm=False)
    application.state.graphs.warm()
    return application


@pytest.fixture(scope="module")
def amy(engine):
    name = f"amy-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, "editor")
        sessions.set_password(conn, name, PASSWORD)
        token = acc.create_token(conn, name)
    return {"name": name, "token": token}


def anonymous(app) -> TestClient:
    return TestClient(
        app, client=(f"{_NET}.{next(_addresses)}", 40000), follow_redirects=False, raise_server_exceptions=False
    )


def signed_in(app, name: str) -> TestClient:
    client = anonymous(app)
    page = client.get("/signin")
    token = re.search(r'action="/signin"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text)[1]
    done = client.post(
        "/signin", data={"csrf": token, "next": "/account", "name": name, "password": PASSWORD}, headers=ORIGIN
    )
    assert done.status_code == 303, done.text
    return client


def csrf(client: TestClient) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', client.get("/account").text)[1]


def api(client: TestClient, token: str, query: str, variables: dict) -> dict:
    r = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers={"authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return r.json()


def new_claim(client: TestClient, amy: dict, label: str = "", evidence: list | None = None) -> dict:
    i = {"label": label or f"curve {secrets.token_hex(3)}", "kind": "FEATURE", "subjects": [NEURON]}
    return api(client, amy["token"], CREATE, {"i": {**i, "evidence": evidence or []}})


def assert_secured(r, what) -> None:
    csp = r.headers.get("content-security-policy", "")
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, (what, r.status_code, csp)
    assert r.headers.get("x-content-type-options") == "nosniff", what


# --- cache ---------------------------------------------------------------------------------------------------


def test_signed_in_pages_are_private_to_caches(app, amy):
    client = signed_in(app, amy["name"])
    number = new_claim(client, amy)["data"]["createClaim"]["key"].split(":")[1]
    for path in ("/", "/account", f"/c/{number}", "/circuits", "/search?q=curve"):
        r = client.get(path)
        if path != "/account":
            assert r.headers.get("cache-control") == "private, no-store", path
        assert r.status_code == 200 and 'name="csrf-token"' in r.text, path  # the session's token is in the page
        cache = r.headers.get("cache-control", "")
        assert cache in ("private, no-store", "no-store"), (path, cache)  # /account already said no-store
        assert "cookie" in r.headers.get("vary", "").lower(), path
    reader = anonymous(app).get("/")  # anonymous pages stay cacheable (they vary by cookie)
    assert reader.status_code == 200 and "csrf-token" not in reader.text
    assert "no-store" not in reader.headers.get("cache-control", "") and "Cookie" in reader.headers["vary"]


# --- evidence pictures ---------------------------------------------------------------------------------------


def _artifact(engine) -> str:
    sha = secrets.token_hex(32)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(artifact_table).values(
                sha256=sha,
                content_type="image/png",
                bytes=1,
                width=1,
                height=1,
                kind="FEATURE_VIS",
                params={},
                versions={},
                meta={},
                created_at=utcnow(),
            )
        )
    return sha


def test_evidence_visualization_is_an_artifact_of_this_kb(app, amy, engine):
    client = anonymous(app)
    sha = _artifact(engine)
    for bad in (
        "https://attacker.example/track.png",
        "//attacker.example/track.png",
        "javascript:alert(1)",
        f"https://attacker.example/artifacts/{sha}.png",
        "sha256:" + sha[:-1],
        "sha256:" + secrets.token_hex(32),  # the right shape, but no artifact here
    ):
        made = new_claim(client, amy, evidence=[{"kind": "FEATURE_VISUALIZATION", "visualization": bad}])
        assert made["errors"][0]["extensions"]["code"] == "BAD_INPUT", (bad, made)
    for good in (f"sha256:{sha}", sha, f"/artifacts/{sha}.png", f"SHA256:{sha.upper()}"):
        made = new_claim(client, amy, evidence=[{"kind": "FEATURE_VISUALIZATION", "visualization": good}])
        key = made["data"]["createClaim"]["key"]
        got = api(
            client, amy["token"], "query($k: String!) { claim(key: $k) { evidence { visualization } } }", {"k": key}
        )
        assert got["data"]["claim"]["evidence"][0]["visualization"] == sha, good  # stored as the digest
        page = client.get(f"/c/{key.split(':')[1]}").text
        assert f'<img class="evidence-img" src="/artifacts/{sha}.png"' in page
    # an old revision written before the check (or imported) may hold a URL: it never becomes an image source
    number = int(key.split(":")[1])
    with engine.begin() as conn:
        conn.execute(
            sa.update(claim_revision_table)
            .where(claim_revision_table.c.claim_id == number)
            .values(
                evidence=[
                    {"kind": "FEATURE_VISUALIZATION", "note": "old", "visualization": "https://attacker.example/t.png"}
                ]
            )
        )
    page = client.get(f"/c/{number}")
    assert page.status_code == 200 and "old" in page.text
    assert "evidence-img" not in page.text and 'src="https://attacker.example' not in page.text


# --- digits --------------------------------------------------------------------------------------------------


def test_numbers_are_ascii_digits_of_a_bounded_size(app, amy, engine):
    client = signed_in(app, amy["name"])
    number = new_claim(client, amy)["data"]["createClaim"]["key"].split(":")[1]
    token = csrf(client)
    huge = "9" * 23
    asks = [
        ("GET", f"/c/{number}/%C2%B2", {}, 404),
        ("GET", "/c/%C2%B2", {}, 404),
        ("GET", f"/c/{number}/{huge}", {}, 404),
        ("GET", f"/c/{huge}", {}, 404),
        ("GET", "/circuits/%C2%B2", {}, 404),
        ("GET", "/n/inceptionv1/mixed4c/" + "9" * 5000, {}, 404),
        ("GET", "/n/inceptionv1/mixed4c/%D9%A3", {}, 404),  # ARABIC-INDIC DIGIT THREE
        ("GET", f"/circuits/{huge}", {}, 404),
        ("GET", "/events?since=%C2%B2", {}, 400),
        ("GET", f"/events?since={huge}", {}, 400),
        ("GET", "/events", {"headers": {"last-event-id": b"\xb2"}}, 400),
        (
            "POST",
            f"/c/{number}/edit",
            {"data": {"csrf": token, "label": "x", "kind": "FEATURE", "expectedRevision": SUPERSCRIPT_TWO}},
            400,
        ),
        ("POST", f"/c/{number}/edit", {"data": {"csrf": token, "label": "x", "expectedRevision": huge}}, 400),
        (
            "POST",
            f"/c/{number}/status",
            {"data": {"csrf": token, "status": "RETRACTED", "expectedRevision": SUPERSCRIPT_TWO}},
            400,
        ),
        (
            "POST",
            f"/c/{number}/status",
            {"data": {"csrf": token, "status": "RETRACTED", "expectedRevision": huge}},
            400,
        ),
        ("POST", "/account/tokens/revoke", {"data": {"csrf": token, "id": huge}}, 400),
        ("POST", "/account/tokens/revoke", {"data": {"csrf": token, "id": SUPERSCRIPT_TWO}}, 400),
    ]
    wrong = []
    for method, path, kwargs, status in asks:
        if method == "POST":
            kwargs = {**kwargs, "headers": ORIGIN}
        r = client.request(method, path, **kwargs)
        if r.status_code != status or "frame-ancestors" not in r.headers.get("content-security-policy", ""):
            wrong.append((method, path, str(kwargs.get("data", kwargs.get("headers"))), r.status_code))
    assert not wrong, wrong  # each a coded 400/404 with the security headers
    with engine.connect() as conn:  # nothing was changed by them
        assert conn.execute(sa.text("SELECT revision, status FROM claim WHERE id = :i"), {"i": int(number)}).one() == (
            1,
            "PROPOSED",
        )


def test_row_id_parsing():
    from kb.claims.ids import MAX_ROW_ID, row_id

    assert row_id("17") == 17 and row_id("007") == 7 and row_id(str(MAX_ROW_ID)) == MAX_ROW_ID
    for bad in (None, "", SUPERSCRIPT_TWO, "\N{ARABIC-INDIC DIGIT THREE}", "1\n", " 1", "-1", "+1", "1_0", "9" * 23):
        assert row_id(bad) is None, bad
    assert row_id(str(MAX_ROW_ID + 1)) is None and row_id("9" * 5000) is None


# --- errors --------------------------------------------------------------------------------------------------


def test_server_errors_carry_the_security_headers(engine, inceptionv1):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(Settings(database_url=url, public_url="http://testserver"), engine=engine, warm=False)

    async def boom(request):
        raise RuntimeError("a bug")

    application.router.routes.append(Route("/test-boom", boom))
    client = anonymous(application)
    r = client.get("/test-boom")
    assert r.status_code == 500 and "a bug" not in r.text
    assert_secured(r, "500")
    for path in ("/no/such/page", "/c/0/x", "/events?claim=nope"):
        r = client.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert_secured(r, path)


# --- BibTeX --------------------------------------------------------------------------------------------------


def test_bibtex_escapes_every_tex_special_character(app, amy):
    assert bib_escape("\\input^^7b/etc/hostname^^7d") == (
        "\\textbackslash{}input\\textasciicircum{}\\textasciicircum{}7b/etc/hostname"
        "\\textasciicircum{}\\textasciicircum{}7d"
    )
    assert bib_escape("a~b {c} & 5% $x$ #1 a_b") == "a\\textasciitilde{}b \\{c\\} \\& 5\\% \\$x\\$ \\#1 a\\_b"
    client = anonymous(app)
    label = "\\input^^7b/etc/hostname^^7d ~ {x}"
    key = new_claim(client, amy, label=label)["data"]["createClaim"]["key"]
    bibtex = api(client, amy["token"], CITE, {"k": key})["data"]["claim"]["citation"]["bibtex"]
    title = re.search(r"title = \{(.*)\},\n", bibtex)[1]
    assert "\\input" not in bibtex and "^" not in bibtex and "~" not in bibtex, bibtex
    # every backslash in the title starts an escape, every brace is escaped or closes one of \text...{}
    assert re.fullmatch(r"(?:[^\\{}]|\\[{}&%$#_]|\\text(?:backslash|asciicircum|asciitilde)\{\})*", title), title


# --- redirects -----------------------------------------------------------------------------------------------


def test_redirects_never_name_the_host_sent(app):
    client = anonymous(app)
    for path, want in (
        ("/circuits/", "/circuits"),
        ("/circuits/?model=inceptionv1", "/circuits?model=inceptionv1"),
        ("/search/?q=x", "/search?q=x"),
    ):
        r = client.get(path, headers={"host": "evil.example"})
        assert r.status_code in (301, 302, 303, 307, 308), (path, r.status_code)
        assert r.headers["location"] == want, (path, r.headers["location"])
        assert_secured(r, path)
    for path in ("/%2Fevil.example/", "/%5Cevil.example/", "/nothing-here/"):  # //evil.example/, /\evil.example/
        r = client.get(path, headers={"host": "evil.example"})
        assert r.status_code == 404 and "location" not in r.headers, (path, r.status_code, r.headers)


# --- GraphiQL ------------------------------------------------------------------------------------------------


def test_graphiql_is_the_vendored_one_for_every_browser_accept(app):
    client = anonymous(app)
    for accept in ("*/*", "text/html", "text/html,application/xhtml+xml,*/*;q=0.8"):
        page = client.get("/graphql", headers={"accept": accept})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), accept
        assert "/static/vendor/graphiql-" in page.text and "unpkg" not in page.text, accept
        csp = page.headers["content-security-policy"]
        assert "http" not in csp and "unpkg" not in csp, csp
    query = client.get("/graphql", params={"query": "{ __typename }"}, headers={"accept": "*/*"})
    assert query.json()["data"] == {"__typename": "Query"}  # curl with a query still gets the answer
    # a page naming a CDN gets no host in its policy
    policy = graphiql_csp(
        b'<script src="https://unpkg.com/graphiql/graphiql.min.js"></script><link href="https://cdn.example/x.css">'
    )
    assert "unpkg" not in policy and "cdn.example" not in policy and "https:" not in policy
