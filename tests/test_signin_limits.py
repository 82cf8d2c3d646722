"""Sign-in limits by (account, address) with a growing wait, never a lock a stranger can put on an account; the
client address by KB_TRUSTED_PROXIES (X-Forwarded-For believed from trusted proxies only, in-process and behind
the real `kb serve`); and the deletion of old failed sign-ins and long-ended sessions."""

import os
import re
import secrets
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from servers import kb_serve
from starlette.testclient import TestClient

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.claims.errors import RateLimited
from kb.db.annotation_tables import signin_failure_table
from kb.db.tables import utcnow
from kb.settings import Settings
from kb.web.app import create_app

PASSWORD = "correct horse battery"
_NET = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}"  # fresh addresses per run: limits are per address
_host = iter(range(1, 255))


def address() -> str:
    return f"{_NET}.{next(_host)}"


def make_app(engine, **settings):
    url = engine.url.render_as_string(hide_password=False)
    return create_app(Settings(database_url=url, public_url="http://testserver", **settings), engine=engine, warm=False)


@pytest.fixture(scope="module")
def app(engine):
    # a first wait of 60 s: a refusal right after the failures holds however slowly this machine answers
    return make_app(engine, signin_failures_per_account=3, signin_failures_per_address=6, signin_backoff_first_s=60)


def browser(app, peer: str | None = None) -> TestClient:
    return TestClient(app, client=(peer or address(), 40000), follow_redirects=False)


def person(engine, role: str = "editor") -> str:
    name = f"{role}-{secrets.token_hex(3)}"
    with engine.begin() as conn:
        acc.create_user(conn, name, role)
        sessions.set_password(conn, name, PASSWORD)
    return name


def sign_in(client: TestClient, name: str, password: str = PASSWORD, headers: dict | None = None):
    page = client.get("/signin", headers=headers)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)[1]
    return client.post(
        "/signin",
        data={"csrf": token, "next": "/account", "name": name, "password": password},
        headers={"origin": "http://testserver", **(headers or {})},
    )


def failures_of(engine, name: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT address FROM signin_failure WHERE name = :n ORDER BY id"), {"n": name})
        return [r[0] for r in rows]


def test_a_stranger_cannot_lock_a_moderator_out(app, engine):
    moderator = person(engine, "moderator")
    stranger = browser(app)
    for _ in range(3):
        assert sign_in(stranger, moderator, "a wrong guess").status_code == 401
    # the moderator, from their own address, signs in at once
    signed_in = sign_in(browser(app), moderator)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/account"
    # the stranger's address is refused, even with the right password, and told how long to wait
    refused = sign_in(stranger, moderator)
    assert refused.status_code == 429, refused.text
    assert "too many failed sign-ins for this name from your address" in refused.text
    first_wait = int(refused.headers["retry-after"])
    assert 0 < first_wait <= 60
    # the stranger's wait grows: once it is over (the failures moved a minute back), one more failure doubles it
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE signin_failure SET at = :t WHERE name = :n"),
            {"t": utcnow() - timedelta(seconds=61), "n": moderator},
        )
    assert sign_in(stranger, moderator, "another wrong guess").status_code == 401
    again = sign_in(stranger, moderator)
    assert again.status_code == 429 and int(again.headers["retry-after"]) > first_wait


def test_the_wait_doubles_with_each_failure_up_to_the_cap(engine):
    limits = sessions.Limits(per_account=3, per_address=100, window_s=86400, first_wait_s=1, max_wait_s=60)
    name, here, there = f"target-{secrets.token_hex(3)}", address(), address()
    t = utcnow() - timedelta(hours=1)
    waits = []
    with engine.begin() as conn:
        for _ in range(9):
            sessions.check_limit(conn, name, here, limits, now=t)  # the last wait is over: a try is allowed
            sessions.record_failure(conn, name, here, now=t)
            try:
                sessions.check_limit(conn, name, here, limits, now=t)  # right after that failure
                waits.append(0)
            except RateLimited as exc:
                assert exc.code == "RATE_LIMITED" and str(exc).startswith("too many failed sign-ins")
                waits.append(exc.extensions["retryAfter"])
            sessions.check_limit(conn, name, there, limits, now=t)  # another address: never refused
            t += timedelta(seconds=waits[-1])
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32, 60]


def test_one_address_failing_over_many_names_waits(app, engine):
    guesser = browser(app)
    for i in range(6):
        assert sign_in(guesser, f"guess-{i}-{secrets.token_hex(2)}", "x" * 12).status_code == 401
    someone = person(engine)
    refused = sign_in(guesser, someone)
    assert refused.status_code == 429 and "too many failed sign-ins from your address" in refused.text
    assert sign_in(browser(app), someone).status_code == 303


def test_forwarded_for_is_believed_from_trusted_proxies_only(engine):
    app = make_app(engine, trusted_proxies="10.250.0.0/16, 192.0.2.1")
    name = f"nobody-{secrets.token_hex(3)}"
    cases = [
        ("198.51.100.7", {"x-forwarded-for": "203.0.113.9"}, "198.51.100.7"),  # forged: an untrusted peer
        ("10.250.1.1", {"x-forwarded-for": "203.0.113.5"}, "203.0.113.5"),  # our proxy names the client
        # a client's own X-Forwarded-For, then two proxies of ours: the right-most address not ours
        ("10.250.1.1", {"x-forwarded-for": "1.1.1.1, 203.0.113.6, 192.0.2.1"}, "203.0.113.6"),
        ("192.0.2.1", {"x-forwarded-for": "[2001:db8::5]:4711"}, "2001:db8::5"),
        ("10.250.1.1", {}, "10.250.1.1"),  # no header: the peer itself
    ]
    for peer, headers, _ in cases:
        assert sign_in(browser(app, peer), name, "x" * 12, headers).status_code == 401
    assert failures_of(engine, name) == [want for _, _, want in cases]
    # X-Forwarded-Proto the same way: https from our proxy makes the cookies Secure, from anyone else it does not
    proto = {"x-forwarded-proto": "https"}
    assert "Secure" in browser(app, "10.250.1.1").get("/signin", headers=proto).headers["set-cookie"]
    assert "Secure" not in browser(app, "198.51.100.7").get("/signin", headers=proto).headers["set-cookie"]


def test_query_rate_limit_counts_the_same_client_address(engine):
    limit = {"query_rate_limit": "2/minute"}
    peer = address()
    untrusted = TestClient(make_app(engine, trusted_proxies="", **limit), client=(peer, 1))
    statuses = [
        untrusted.post(
            "/graphql", json={"query": "{ models { key } }"}, headers={"x-forwarded-for": f"203.0.113.{i}"}
        ).status_code
        for i in range(3)
    ]
    assert statuses == [200, 200, 429]  # forged addresses are ignored: one peer, one limit
    trusted = TestClient(make_app(engine, trusted_proxies=peer, **limit), client=(peer, 1))
    clients = [f"198.51.{secrets.randbelow(250)}.{i}" for i in range(3)]
    statuses = [
        trusted.post("/graphql", json={"query": "{ models { key } }"}, headers={"x-forwarded-for": c}).status_code
        for c in clients
    ]
    assert statuses == [200, 200, 200]  # behind a trusted proxy each client has a limit of its own


def test_kb_serve_believes_forwarded_for_only_as_configured(kb_env):
    """One rule in the real server: uvicorn's own proxy handling (127.0.0.1 trusted by default) is off."""
    env = {**kb_env, "KB_QUERY_RATE_LIMIT": "2/minute"}
    forged = [f"203.0.{secrets.randbelow(250)}.{i}" for i in range(3)]
    with (
        kb_serve({**env, "KB_TRUSTED_PROXIES": ""}, "--no-render-worker") as untrusted,
        kb_serve({**env, "KB_TRUSTED_PROXIES": "127.0.0.1"}, "--no-render-worker") as trusted,
    ):
        statuses = {}
        for name, base in (("trusted", trusted), ("untrusted", untrusted)):
            statuses[name] = [
                httpx.post(
                    f"{base}/graphql", json={"query": "{ models { key } }"}, headers={"x-forwarded-for": a}
                ).status_code
                for a in forged
            ]
    assert statuses == {"trusted": [200, 200, 200], "untrusted": [200, 200, 429]}, statuses


def test_bad_trusted_proxies_setting_is_one_line(kb_env):
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, **kb_env, "KB_TRUSTED_PROXIES": "10.0.0.1, proxy.example"}
    with socket.socket() as taken:  # the setting is checked before the port: this one is never reached
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = subprocess.run([str(exe), "serve", "--port", port], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: KB_TRUSTED_PROXIES: 'proxy.example' is not an IP address or network"


def test_old_failures_and_long_ended_sessions_are_deleted_on_sign_in(engine):
    name = person(engine)
    now = utcnow()
    day = timedelta(days=1)
    with engine.begin() as conn:
        uid = acc.user_id(conn, name)
        for where, at in (("old", now - day - timedelta(minutes=1)), ("fresh", now - timedelta(minutes=1))):
            conn.execute(sa.insert(signin_failure_table).values(name=name, address=where, at=at))
        for label, ttl in (("expired long ago", -2 * 86400), ("just expired", -60), ("live", 3600)):
            sessions.create_session(conn, uid, label, ttl)
        for label, ago in (("ended long ago", 2 * day), ("just ended", timedelta(minutes=1))):
            sessions.create_session(conn, uid, label, 3600)
            conn.execute(
                sa.text("UPDATE web_session SET revoked_at = :t WHERE user_id = :u AND address = :a"),
                {"t": now - ago, "u": uid, "a": label},
            )
    # a fresh server's first sign-in (here: a failed one) deletes what has expired
    assert sign_in(browser(make_app(engine)), name, "a wrong guess").status_code == 401
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT address FROM web_session WHERE user_id = :u"), {"u": uid})
        assert sorted(r[0] for r in kept) == ["just ended", "just expired", "live"]
    failures = failures_of(engine, name)
    assert failures[0] == "fresh" and len(failures) == 2  # "old" is gone; the new failure is recorded
