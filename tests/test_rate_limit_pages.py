"""One query rate limit for every dynamic route: the pages run the same resolvers as /graphql and count against
the same per-address limit (kb.web.request_limit); static files and /health do not count."""

from __future__ import annotations

import secrets

import pytest
from conftest import sql_statements

LIMIT = 6
PAGES = ["/n/inceptionv1", "/search?q=car", "/explore", "/c/999999", "/circuits"]


@pytest.fixture
def limited(engine, inceptionv1):
    """An app allowing LIMIT requests a minute per address, and a client with an address of its own."""
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    app = create_app(
        Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            public_url="https://kb.example.org",
            query_rate_limit=f"{LIMIT}/minute",
        ),
        engine=engine,
        warm=False,
    )
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    with TestClient(app, client=(address, 50000)) as client:
        yield client


def test_pages_and_graphql_share_one_limit_per_address(limited, engine):
    answered = [limited.get(path).status_code for path in PAGES]
    answered.append(limited.post("/graphql", json={"query": "{ models { key } }"}).status_code)
    assert 429 not in answered and len(answered) == LIMIT, answered

    page = limited.get("/n/inceptionv1/mixed4c/447")  # a page: the same resolvers, so the same limit
    assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
    assert "Too many requests" in page.text and int(page.headers["retry-after"]) >= 1

    api = limited.post("/graphql", json={"query": "{ models { key } }"})
    assert api.status_code == 429 and int(api.headers["retry-after"]) >= 1
    error = api.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] > 0

    for path in ("/search?q=wheel", "/explore", "/c/1", "/circuits/1", "/graphql"):
        assert limited.get(path).status_code == 429, path
    limited.cookies.set("kb_session", "x" * 43)
    with sql_statements(engine) as statements:  # refused before the session cookie is looked up
        assert limited.get("/n/inceptionv1").status_code == 429
    assert statements == []

    assert limited.get("/health").status_code == 200  # no resolver behind these: not counted, not refused
    assert limited.get("/static/kb.css").status_code == 200
