"""Circuits made and edited in a real Chromium against `kb serve`: Amy selects units and edges on /explore (by
clicking the diagram, by keyboard and by the check box list) and saves them as a circuit; Ben edits it (renames it,
removes an edge); Amy's open page shows Ben's revision without a reload, and its history the diff; an edit of a
stale revision shows the conflict view with Amy's text kept. No Content-Security-Policy violation on the way.

Needs Python playwright and the system's chromium (skipped where either is missing). Screenshots go to
$KB_SCREENSHOTS when set.
"""

import json
import re
import shutil

import pytest
import sqlalchemy as sa
from browsers import csp_violations, people, screenshot, served_browser, sign_in, wait_live

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
EXPLORE = "/explore?roots=InceptionV1+4c%3A447&direction=UPSTREAM&depth=1&perNode=3"


def test_select_save_edit_live_and_conflict(engine, db_url, inceptionv1):
    expect = playwright.expect
    names = people(engine, "editor", "editor")
    with served_browser(db_url) as (base, browser):
        violations: list[str] = []
        errors: list[str] = []
        pages = []
        for _ in names:
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            page.set_default_timeout(20000)
            csp_violations(page, violations)
            page.on("pageerror", lambda e: errors.append(str(e)))
            pages.append(page)
        a, b = pages
        for page, name in zip(pages, names, strict=True):
            sign_in(page, base, name, "/explore")

        # Amy selects on the diagram: one edge by a click, one by keyboard, one more unit by its check box
        a.goto(base + EXPLORE)
        svg = a.locator("[data-diagram] svg.diagram")
        edges = svg.locator("g.edge[data-source]")
        expect(edges).to_have_count(3)
        first, second = edges.nth(0), edges.nth(1)
        pair = [(e.get_attribute("data-source"), e.get_attribute("data-target")) for e in (first, second)]
        first.click()
        second.focus()
        a.keyboard.press("Space")
        for source, target in pair:
            box = a.locator(f'input[name="edge"][value="{source}|{target}"]')
            expect(box).to_be_checked()  # the diagram's selection is the form's
        expect(first).to_have_class(re.compile(r"\bselected\b"))
        expect(a.locator('input[name="unit"][value="inceptionv1/mixed4c:447"]')).to_be_checked()  # an edge's ends too
        third = edges.nth(2)
        third_source = third.get_attribute("data-source")
        a.get_by_role("checkbox", name=third_source.split("/", 1)[1], exact=True).check()
        expect(svg.locator(f'a.unit[data-unit="{third_source}"]')).to_have_class(re.compile(r"\bselected\b"))
        expect(third).not_to_have_class(re.compile(r"\bselected\b"))
        expect(a.locator("[data-count]")).to_have_text("4 units and 2 edges selected")
        a.get_by_label("Name", exact=True).fill("Amy's car")
        a.get_by_label("Description").fill("two inputs of 4c:447")
        screenshot(a, "explore-selection.png")
        a.get_by_role("button", name="Save as circuit").click()
        a.wait_for_url(re.compile(r"/circuits/\d+$"))
        number = a.url.rsplit("/", 1)[1]
        key = f"circuit:{number}"
        expect(a.locator("h1")).to_have_text("Amy's car")
        expect(a.locator("table.checks tbody tr")).to_have_count(2)
        rows = a.locator("table.checks tbody tr")
        shown = {tuple(rows.nth(i).locator("td a").all_inner_texts()) for i in range(2)}
        assert shown == {(s.split("/", 1)[1], t.split("/", 1)[1]) for s, t in pair}  # exactly the edges selected
        expect(a.locator(".citekey")).to_have_text(f"{key}@1")
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT revision, neurons FROM circuit WHERE id = :i"), {"i": int(number)})
            revision, neurons = stored.one()
        assert revision == 1 and third_source in (neurons if isinstance(neurons, list) else json.loads(neurons))
        a.evaluate("window.kbNoReload = true")
        wait_live(a)  # the page's EventSource is open (it also checks the revision on connecting)

        # Ben opens it, edits: a new name, one edge removed
        b.goto(f"{base}/circuits/{number}")
        b.get_by_role("button", name="Edit").click()
        b.get_by_label("Name", exact=True).fill("Ben's car")
        removed = pair[0][0].split("/", 1)[1] + " → " + pair[0][1].split("/", 1)[1]
        b.get_by_label(f"remove {removed}").check()
        b.get_by_label("Message").fill("one edge is enough")
        b.get_by_role("button", name="Save").click()
        b.wait_for_url(f"{base}/circuits/{number}")
        expect(b.locator(".citekey")).to_have_text(f"{key}@2")

        # Amy's page follows, without a reload
        expect(a.locator("h1")).to_have_text("Ben's car", timeout=15000)
        expect(a.locator(".citekey")).to_have_text(f"{key}@2")
        expect(a.locator("#newer")).to_contain_text("revision 2")
        assert a.evaluate("window.kbNoReload") is True
        history = a.locator("ol.history > li")
        expect(history).to_have_count(2)
        newest = history.nth(0)
        expect(newest).to_contain_text("revision 2")
        expect(newest).to_contain_text(names[1])
        expect(newest).to_contain_text("edges removed")
        expect(newest.locator("dd.removed")).to_contain_text(removed)
        expect(newest.locator("del").first).to_have_text("Amy's car")
        expect(history.nth(1)).to_contain_text(f"{key}@1")
        expect(a.locator("table.checks tbody tr")).to_have_count(1)
        screenshot(a, "circuit-history.png")

        # Amy edits revision 2 while Ben saves revision 3: a banner says so, and her Save shows the conflict view
        a.get_by_role("button", name="Edit").click()
        a.get_by_label("Name", exact=True).fill("Amy's car again")
        a.get_by_label("Description").fill("Amy's words,\nkept")
        b.get_by_role("button", name="Edit").click()
        b.get_by_label("Description").fill("Ben's description")
        b.get_by_role("button", name="Save").click()
        b.wait_for_url(f"{base}/circuits/{number}")
        expect(a.locator("#newer")).to_contain_text("A newer revision exists: revision 3", timeout=15000)
        expect(a.get_by_label("Name", exact=True)).to_have_value("Amy's car again")  # not swapped away
        a.get_by_role("button", name="Save").click()
        expect(a.get_by_role("heading", name="Someone else saved first")).to_be_visible()
        expect(a.locator(".theirs")).to_contain_text("Ben's description")
        expect(a.get_by_label("Name", exact=True)).to_have_value("Amy's car again")
        expect(a.get_by_label("Description")).to_have_value("Amy's words,\nkept")
        screenshot(a, "circuit-conflict.png")
        a.get_by_role("button", name="Save").click()  # hers, after theirs
        a.wait_for_url(f"{base}/circuits/{number}")
        expect(a.locator(".citekey")).to_have_text(f"{key}@4")
        expect(a.locator("h1")).to_have_text("Amy's car again")

        # "Add to circuit" from /explore, at the revision the page showed; Ben saves first: told, list read again
        a.goto(base + EXPLORE)
        a.locator(f'input[name="edge"][value="{third_source}|{pair[0][1]}"]').check()
        a.get_by_label("Circuit", exact=True).select_option(f"{number}@4")
        b.reload()
        b.get_by_role("button", name="Edit").click()
        b.get_by_label("Description").fill("Ben again")
        b.get_by_role("button", name="Save").click()
        b.wait_for_url(f"{base}/circuits/{number}")
        a.get_by_role("button", name="Add to circuit").click()
        expect(a.get_by_role("alert")).to_contain_text(f"{key} was changed by someone else")
        expect(a.get_by_label("Circuit", exact=True)).to_have_value(f"{number}@5")
        expect(a.locator(f'input[name="edge"][value="{third_source}|{pair[0][1]}"]')).to_be_checked()
        screenshot(a, "explore-add-conflict.png")
        a.get_by_role("button", name="Add to circuit").click()
        a.wait_for_url(f"{base}/circuits/{number}")
        expect(a.locator(".citekey")).to_have_text(f"{key}@6")
        expect(a.locator("table.checks tbody tr")).to_have_count(2)
    assert violations == [] and errors == []
    with engine.connect() as conn:
        revs = conn.execute(
            sa.text("SELECT revision FROM circuit_revision WHERE circuit_id = :i ORDER BY revision"), {"i": int(number)}
        ).scalars()
        assert list(revs) == [1, 2, 3, 4, 5, 6]
