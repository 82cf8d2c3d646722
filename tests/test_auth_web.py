"""Accounts in the browser, at the HTTP level: passwords, sessions (expiry, revocation), sign-in rate limits,
CSRF (a cross-site post with a valid session cookie is refused), one's own API tokens, cookie-authenticated
GraphQL, and the security headers on every response."""

import base64
import hashlib
import itertools
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"
ME = "{ me { name } }"
_addresses = itertools.count(10)
_NET = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}"  # fresh addresses per run: limits are per address


@pytest.fixture(scope="module")
def app(engine, inceptionv1):
    url = engine.url.render_as_string(hide_password=False)
    application = create_app(
        Settings(
            database_url=url,
            public_url="http://testserver",
            signin_failures_per_account=3,
            signin_failures_per_address=6,
            signin_backoff_first_s=60,  # a refusal right after the failures holds however slow this machine is
        ),
        engine=engine,
        warm=False,
    )
    application.state.graphs.warm()
    return application


def browser(app) -> TestClient:
    """A browser of its own (own cookies, own address, so rate limits of one test do not reach another)."""
    return TestClient(app, client=(f"{_NET}.{next(_addresses)}", 40000), follow_redirects=False)


@pytest.fixture
def user(engine):
    name = f"ada-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, "editor")
        sessions.set_password(conn, name, PASSWORD)
    return name


def sign_in(client: TestClient, name: str, password: str = PASSWORD, origin: str = "http://testserver"):
    page = client.get("/signin?next=/account")
    token = re.search(r'action="/signin"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]+)"', page.text)[1]
    return client.post(
        "/signin",
        data={"csrf": token, "next": "/account", "name": name, "password": password},
        headers={"origin": origin},
    )


def csrf_of(client: TestClient) -> str:
    page = client.get("/account")
    assert page.status_code == 200, page.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)[1]


def test_password_from_stdin_then_sign_in(app, kb_env, engine):
    name = f"grace-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, "editor")
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, **kb_env}
    ok = subprocess.run(
        [str(exe), "user", "password", name], input=PASSWORD + "\n", env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    short = subprocess.run(
        [str(exe), "user", "password", name], input="short\n", env=env, capture_output=True, text=True
    )
    assert short.returncode == 1 and short.stderr.startswith("error:") and len(short.stderr.splitlines()) == 1
    nobody = subprocess.run(
        [str(exe), "user", "password", "nobody-here"], input=PASSWORD + "\n", env=env, capture_output=True, text=True
    )
    assert nobody.returncode == 1 and "no user" in nobody.stderr
    signout = subprocess.run([str(exe), "user", "signout", name], env=env, capture_output=True, text=True)
    assert signout.returncode == 0 and "ended 0 session(s)" in signout.stdout
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM kb_user WHERE name = :n"), {"n": name}).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    client = browser(app)
    page = client.get("/signin")
    assert '<label for="name">Name</label>' in page.text and '<label for="password">Password</label>' in page.text
    assert '<button type="submit">Sign in</button>' in page.text
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None  # only the site's own script files
    response = sign_in(client, name)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain http here
    account = client.get("/account")
    assert (
        account.status_code == 200
        and name in account.text
        and '<button type="submit">Sign out</button>' in account.text
    )
    with engine.connect() as conn:
        hashes = [r[0] for r in conn.execute(sa.text("SELECT token_hash FROM web_session"))]
    secret = client.cookies[sessions.COOKIE]
    assert secret not in hashes and hashlib.sha256(secret.encode()).hexdigest() in hashes  # only the hash is kept


def test_secure_cookie_behind_https(engine, inceptionv1, user):
    """Secure when the request is https, when KB_PUBLIC_URL is (TLS ends at a proxy), or when the setting says so."""
    for public, base, forced, want in (
        ("https://kb.example.org", "https://testserver", None, True),
        ("http://testserver", "https://testserver", None, True),
        ("http://testserver", "http://testserver", True, True),
        ("http://testserver", "http://testserver", None, False),
    ):
        settings = Settings(database_url="sqlite://", public_url=public, cookie_secure=forced)
        client = TestClient(
            create_app(settings, engine=engine, warm=False),
            base_url=base,
            client=(f"{_NET}.{next(_addresses) + 100}", 1),
            follow_redirects=False,
        )
        form_cookie = client.get("/signin").headers["set-cookie"]
        assert ("Secure" in form_cookie) is want and "SameSite=strict" in form_cookie
        if base.startswith("https"):  # the client keeps Secure cookies only over https
            response = sign_in(client, user, origin=base)
            assert response.status_code == 303, response.text
            assert "Secure" in response.headers["set-cookie"] and "HttpOnly" in response.headers["set-cookie"]


def test_wrong_password_and_rate_limits(app, user, engine):
    client = browser(app)
    wrong = sign_in(client, user, "not the password")
    assert wrong.status_code == 401 and "wrong name or password" in wrong.text
    assert sessions.COOKIE not in wrong.headers.get("set-cookie", "")
    unknown = sign_in(client, "nobody-" + secrets.token_hex(3))
    assert unknown.status_code == 401 and "wrong name or password" in unknown.text  # the same answer
    for _ in range(2):
        assert sign_in(client, user, "still wrong").status_code == 401
    # three failures for this account from this address: even the right password is refused now, from here
    limited = sign_in(client, user)
    assert limited.status_code == 429 and "too many failed sign-ins" in limited.text
    assert int(limited.headers["retry-after"]) > 0
    assert sign_in(browser(app), user).status_code == 303  # from another address: no one can lock an account
    # per address: six failures from one address, over several names, make that address wait, whatever name
    other = browser(app)
    for i in range(6):
        assert sign_in(other, f"guess-{i}-{secrets.token_hex(2)}", "x" * 12).status_code == 401
    fresh_user = f"lin-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, fresh_user, "editor")
        sessions.set_password(conn, fresh_user, PASSWORD)
    assert sign_in(other, fresh_user).status_code == 429
    assert sign_in(browser(app), fresh_user).status_code == 303  # another address is not limited


def test_session_expiry_and_revocation(app, user, engine):
    a, b = browser(app), browser(app)
    assert sign_in(a, user).status_code == 303 and sign_in(b, user).status_code == 303
    csrf_a = csrf_of(a)
    stolen = a.cookies[sessions.COOKIE]
    # sign out: the cookie is cleared, and the old cookie value is dead on the server too
    out = a.post("/signout", data={"csrf": csrf_a}, headers={"origin": "http://testserver"})
    assert out.status_code == 303 and sessions.COOKIE not in a.cookies
    replay = browser(app)
    replay.cookies.set(sessions.COOKIE, stolen)
    assert replay.get("/account").status_code == 303  # to the sign-in page
    gql = replay.post("/graphql", json={"query": ME}, headers={"x-csrf-token": csrf_a}).json()
    assert gql["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert b.get("/account").status_code == 200  # the other session lives on

    # expiry: the same session, once past expires_at, is refused everywhere
    csrf_b = csrf_of(b)
    assert b.post("/graphql", json={"query": ME}, headers={"x-csrf-token": csrf_b}).json()["data"]["me"]["name"] == user
    digest = hashlib.sha256(b.cookies[sessions.COOKIE].encode()).hexdigest()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE web_session SET expires_at = created_at WHERE token_hash = :h"), {"h": digest})
    assert b.get("/account").status_code == 303
    expired = b.post("/graphql", json={"query": ME}, headers={"x-csrf-token": csrf_b}).json()["errors"][0]
    assert expired["extensions"]["code"] == "UNAUTHENTICATED" and "expired" in expired["message"]

    # "sign out everywhere", and a new password, end every session of the account
    c, d = browser(app), browser(app)
    sign_in(c, user), sign_in(d, user)
    assert (
        c.post(
            "/account/sessions/revoke", data={"csrf": csrf_of(c)}, headers={"origin": "http://testserver"}
        ).status_code
        == 303
    )
    assert d.get("/account").status_code == 303
    e = browser(app)
    sign_in(e, user)
    with engine.begin() as conn:
        sessions.set_password(conn, user, PASSWORD + " 2")
    assert e.get("/account").status_code == 303


def test_cross_site_posts_are_refused(app, user, engine):
    client = browser(app)
    sign_in(client, user)
    csrf = csrf_of(client)

    def tokens() -> int:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM api_token t JOIN kb_user u ON u.id = t.user_id WHERE u.name = :n"),
                {"n": user},
            ).scalar_one()

    before = tokens()
    evil = client.post("/account/tokens", data={"csrf": csrf, "note": "x"}, headers={"origin": "https://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.text
    evil_referer = client.post(
        "/account/tokens", data={"csrf": csrf, "note": "x"}, headers={"referer": "https://evil.example/page"}
    )
    assert evil_referer.status_code == 403
    bare = client.post("/account/tokens", data={"csrf": csrf, "note": "x"})  # neither Origin nor Referer
    assert bare.status_code == 403
    wrong_token = client.post(
        "/account/tokens", data={"csrf": "guess", "note": "x"}, headers={"origin": "http://testserver"}
    )
    assert wrong_token.status_code == 403
    signout = client.post("/signout", data={"csrf": csrf}, headers={"origin": "https://evil.example"})
    assert signout.status_code == 403 and client.get("/account").status_code == 200  # still signed in
    login = sign_in(browser(app), user, origin="https://evil.example")  # login CSRF
    assert login.status_code == 403
    assert tokens() == before
    ok = client.post(
        "/account/tokens", data={"csrf": csrf, "note": "x"}, headers={"referer": "http://testserver/account"}
    )
    assert ok.status_code == 200 and tokens() == before + 1


def test_own_api_tokens_shown_once(app, user, engine):
    client = browser(app)
    sign_in(client, user)
    csrf = csrf_of(client)
    made = client.post(
        "/account/tokens", data={"csrf": csrf, "note": "notebook"}, headers={"origin": "http://testserver"}
    )
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    token = re.search(r"(ckb_[0-9A-Za-z]{32}_[0-9A-Za-z]{6})", made.text)[1]
    again = client.get("/account").text
    assert token not in again and token[:12] in again and "notebook" in again  # listed, never shown again
    bearer = {"authorization": f"Bearer {token}"}
    assert client.post("/graphql", json={"query": ME}, headers=bearer).json()["data"]["me"]["name"] == user
    with engine.connect() as conn:
        token_id = conn.execute(sa.text("SELECT id FROM api_token WHERE prefix = :p"), {"p": token[:12]}).scalar_one()
        someone_else = conn.execute(
            sa.text("SELECT t.id FROM api_token t JOIN kb_user u ON u.id = t.user_id WHERE u.name <> :n"), {"n": user}
        ).first()
    if someone_else is not None:  # another account's token: not found, and untouched
        r = client.post(
            "/account/tokens/revoke",
            data={"csrf": csrf, "id": str(someone_else[0])},
            headers={"origin": "http://testserver"},
        )
        assert r.status_code == 404
    r = client.post(
        "/account/tokens/revoke", data={"csrf": csrf, "id": str(token_id)}, headers={"origin": "http://testserver"}
    )
    assert r.status_code == 303
    gone = client.post("/graphql", json={"query": ME}, headers=bearer).json()["errors"][0]
    assert gone["extensions"]["code"] == "UNAUTHENTICATED"


def test_graphql_mutations_by_session_need_the_csrf_header(app, user):
    client = browser(app)
    sign_in(client, user)
    variables = {"i": {"name": "by cookie", "neurons": ["InceptionV1 4c:2"]}}
    without = client.post("/graphql", json={"query": CIRCUIT, "variables": variables}).json()["errors"][0]
    assert without["extensions"]["code"] == "UNAUTHENTICATED" and "x-csrf-token" in without["message"]
    forged = client.post(
        "/graphql", json={"query": CIRCUIT, "variables": variables}, headers={"x-csrf-token": "guess"}
    ).json()
    assert forged["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    made = client.post(
        "/graphql", json={"query": CIRCUIT, "variables": variables}, headers={"x-csrf-token": csrf_of(client)}
    ).json()
    assert made["data"]["createCircuit"]["key"].startswith("circuit:")
    form = client.post("/graphql", data={"query": "mutation { x }"}, headers={"origin": "http://testserver"})
    assert form.status_code == 415  # a form cannot reach /graphql at all


def test_security_headers_everywhere(app):
    client = browser(app)
    for method, path, kwargs in (
        ("GET", "/", {}),
        ("GET", "/signin", {}),
        ("GET", "/activity", {}),
        ("GET", "/n/inceptionv1/mixed4c/447", {}),
        ("GET", "/no/such/page", {}),
        ("POST", "/graphql", {"json": {"query": "{ models { key } }"}}),
        ("POST", "/graphql", {"content": b"not json", "headers": {"content-type": "application/json"}}),
        ("GET", "/artifacts/" + "0" * 64 + ".png", {}),
    ):
        r = client.request(method, path, **kwargs)
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "style-src 'self';" in csp and "img-src 'self';" in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "same-origin"


def test_graphiql_gets_a_policy_scoped_to_its_own_scripts(app):
    client = browser(app)
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    script_src = next(p for p in csp.split(";") if p.strip().startswith("script-src"))
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    for inline in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", page.text, re.S):
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src  # exactly the page's own inline scripts may run
    assert "frame-ancestors 'none'" in csp and int(page.headers["content-length"]) == len(page.content)
    query = client.get("/graphql", params={"query": "{ models { key } }"}, headers={"accept": "application/json"})
    assert "script-src 'self';" in query.headers["content-security-policy"]  # other /graphql answers: strict


def test_signing_in_again_replaces_the_session(app, user, kb_env):
    client = browser(app)
    sign_in(client, user)
    first = client.cookies[sessions.COOKIE]
    assert sign_in(client, user).status_code == 303
    second = client.cookies[sessions.COOKIE]
    assert first != second and client.get("/account").status_code == 200
    replay = browser(app)
    replay.cookies.set(sessions.COOKIE, first)
    assert replay.get("/account").status_code == 303  # the old one ended: no fixation, no pile of sessions
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, **kb_env}
    ended = subprocess.run([str(exe), "user", "signout", user], env=env, capture_output=True, text=True)
    assert ended.returncode == 0 and "ended 1 session(s)" in ended.stdout, ended.stdout + ended.stderr
    assert client.get("/account").status_code == 303


def test_no_open_redirect_after_sign_in():
    from kb.web.auth.forms import safe_next

    assert safe_next("/c/17/2") == "/c/17/2"
    for bad in ("//evil.example", "https://evil.example", "/\\evil.example", "/\t/evil.example", "evil", "", None):
        assert safe_next(bad) == "/account", bad
