"""In a real Chromium against `kb serve`: two people sign in with the form; a change one makes appears on the
other's activity page without a reload; a cross-site form post carrying the session cookie is refused; sign out.

Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import json
import shutil

import pytest
import sqlalchemy as sa
from browsers import csp_violations, people, served_browser, sign_in, wait_live
from servers import free_port

from kb.claims import sessions

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")


def test_two_people_live_updates_and_csrf(engine, db_url, inceptionv1):
    names = people(engine, "editor", "editor")
    with served_browser(db_url) as (base, browser):
        violations: list[str] = []
        amy, ben = browser.new_context(), browser.new_context()
        pages = [amy.new_page(), ben.new_page()]
        for page, name in zip(pages, names, strict=True):
            csp_violations(page, violations)
            sign_in(page, base, name, "/activity")  # the header's link, back to the page it was on
        a, b = pages
        csrf = a.locator('meta[name="csrf-token"]').get_attribute("content")

        # Ben watches the activity page; Amy makes a circuit through GraphQL with her session and CSRF token
        b.goto(f"{base}/activity")
        wait_live(b)  # the page's EventSource is open
        made = a.request.post(
            f"{base}/graphql",
            data=json.dumps(
                {
                    "query": "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
                    "variables": {"i": {"name": "seen by ben", "neurons": ["InceptionV1 4c:5"]}},
                }
            ),
            headers={"content-type": "application/json", "x-csrf-token": csrf},
        ).json()
        key = made["data"]["createCircuit"]["key"]
        item = b.locator("#activity li", has_text=f"{key}@1")
        playwright.expect(item).to_be_visible(timeout=5000)  # no reload
        playwright.expect(item).to_contain_text(names[0])

        # a page on another origin of the same site posts a form to Amy's account, her cookie goes with it
        evil = f"http://127.0.0.1:{free_port()}/evil"
        form = (
            f'<form method="post" action="{base}/account/tokens"><input name="csrf" value="{csrf}">'
            '<input name="note" value="stolen"></form><script>document.forms[0].submit()</script>'
        )
        a.route(evil, lambda route: route.fulfill(content_type="text/html", body=form))

        def tokens() -> int:
            with engine.connect() as conn:
                return conn.execute(
                    sa.text("SELECT count(*) FROM api_token t JOIN kb_user u ON u.id = t.user_id WHERE u.name = :n"),
                    {"n": names[0]},
                ).scalar_one()

        before = tokens()
        with a.expect_response(lambda r: r.url == f"{base}/account/tokens") as answer:
            a.goto(evil)
        assert answer.value.status == 403 and tokens() == before
        assert answer.value.request.headers.get("cookie", "").count(sessions.COOKIE) == 1  # it did carry it

        # her own page's form works, and shows the token once
        a.goto(f"{base}/account")
        a.get_by_label("Note").fill("notebook")
        a.get_by_role("button", name="Create token").click()
        playwright.expect(a.get_by_label("New token")).to_contain_text("ckb_")
        assert tokens() == before + 1

        a.get_by_role("button", name="Sign out").first.click()
        a.wait_for_url(f"{base}/signin")
        a.goto(f"{base}/account")
        assert a.url.startswith(f"{base}/signin")
    assert violations == []
