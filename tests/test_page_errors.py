"""Pages lose nothing silently: a claim's page shows every revision's diff, and a page query that fails is logged
with its name and shown to the reader (the message page, or an alert naming the part of the page that is missing)."""

import logging
import re
import secrets
from pathlib import Path

from conftest import gql

import kb.web
from kb.claims import accounts as acc
from kb.claims import claims as domain
from kb.claims.accounts import Account
from kb.db.catalog import load_catalog

REVISIONS = 40


def _editor(conn) -> Account:
    name = f"pages-{secrets.token_hex(3)}"
    return Account(acc.create_user(conn, name, "editor"), name, "editor")


def _page_logs(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kb.web.pages" and f"page query {name} failed" in r.getMessage()]


def test_a_claim_with_40_revisions_shows_all_39_diffs(api, engine):
    """The diffs were 39 aliases of one query, over the limit of 30: refused, and the page showed none."""
    with engine.begin() as conn:
        author = _editor(conn)
        catalog = load_catalog(conn)
        claim_id = domain.create_claim(
            conn, catalog, author, label="step 1", kind="FEATURE", subjects=["inceptionv1/mixed4c:40"]
        )
        for revision in range(1, REVISIONS):
            domain.update_claim(conn, catalog, author, claim_id, revision, {"label": f"step {revision + 1}"})
    page = api.get(f"/c/{claim_id}")
    assert page.status_code == 200 and "<h1>step 40</h1>" in page.text
    history = page.text[page.text.index('<ol class="history"') : page.text.index("</ol>", page.text.index("history"))]
    assert history.count("what changed (label)") == REVISIONS - 1
    shown = re.findall(r"<del>step (\d+)</del> → <ins>step (\d+)</ins>", history)
    assert sorted((int(a), int(b)) for a, b in shown) == [(r - 1, r) for r in range(2, REVISIONS + 1)]
    assert 'role="alert"' not in page.text
    older = api.get(f"/c/{claim_id}/7")  # an earlier revision's page lists the same history
    assert older.status_code == 200 and older.text.count("what changed (label)") == REVISIONS - 1


def test_a_part_of_a_page_that_fails_is_named_on_the_page_and_logged(api, engine, caplog):
    """A claim may name up to 500 units; its page asks for their cards in one query of at most 100 keys. Refused,
    the cards were dropped without a word: now the page says which part is missing and why, and the log has it."""
    with engine.begin() as conn:
        claim_id = domain.create_claim(
            conn,
            load_catalog(conn),
            _editor(conn),
            label="a family of 101 units",
            kind="FAMILY",
            subjects=[f"inceptionv1/mixed4c:{i}" for i in range(101)],
        )
    caplog.set_level(logging.INFO, logger="kb.web.pages")
    page = api.get(f"/c/{claim_id}")
    assert page.status_code == 200 and "<h1>a family of 101 units</h1>" in page.text  # the rest of the page is there
    alert = re.search(r'<p class="error" role="alert">([^<]*)</p>', page.text)
    assert alert and "The units&#39; cards could not be shown" in alert.group(1), page.text[:3000]
    assert "at most 100 keys" in alert.group(1) and "(LIMIT_EXCEEDED)" in alert.group(1)
    logged = _page_logs(caplog, "NEURONS")
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING and "at most 100 keys" in logged[0].getMessage()


def test_a_page_whose_query_fails_shows_the_error_and_logs_it(api, caplog):
    caplog.set_level(logging.INFO, logger="kb.web.pages")
    refused = api.get("/explore?roots=InceptionV1 4c:447&depth=4&perNode=20")  # within the API's limits, not the budget
    assert refused.status_code == 400 and '<form class="explore"' in refused.text and "over the budget" in refused.text
    logged = _page_logs(caplog, "EXPLORE")
    assert len(logged) == 1 and logged[0].levelno == logging.INFO  # the reader asked for too much
    assert "LIMIT_EXCEEDED: this query may return" in logged[0].getMessage()
    missing = api.get("/c/999999")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text and "claim:999999" in missing.text
    logged = _page_logs(caplog, "CLAIM_REVISION")
    assert len(logged) == 1 and logged[0].levelno == logging.INFO and "NOT_FOUND" in logged[0].getMessage()


def test_diff_from_previous_is_each_revisions_change(api, engine):
    with engine.begin() as conn:
        author = _editor(conn)
        catalog = load_catalog(conn)
        claim_id = domain.create_claim(
            conn, catalog, author, label="one", kind="FEATURE", subjects=["inceptionv1/4c:1"]
        )
        domain.update_claim(conn, catalog, author, claim_id, 1, {"body": "a body"})
        domain.update_claim(conn, catalog, author, claim_id, 2, {"label": "two"})
    query = "query($k: String!) { claim(key: $k) { revisions { revision diffFromPrevious { field before after } } } }"
    revs = gql(api, query, {"k": f"claim:{claim_id}"})["data"]["claim"]["revisions"]
    assert [r["diffFromPrevious"] for r in revs] == [
        None,
        [{"field": "body", "before": "", "after": "a body"}],
        [{"field": "label", "before": "one", "after": "two"}],
    ]


def test_every_page_runs_its_queries_through_page_query():
    """No page executes GraphQL itself, to look at the errors (or forget to): kb.web.page_query runs them all."""
    web = Path(kb.web.__file__).parent
    own = {"page_query.py", "graphql_endpoint.py", "app.py"}  # the helper, and /graphql's own answers
    offenders = [
        str(p.relative_to(web)) for p in web.rglob("*.py") if p.name not in own and "schema.execute(" in p.read_text()
    ]
    assert offenders == []
