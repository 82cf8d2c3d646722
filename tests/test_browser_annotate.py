"""Annotation in a real Chromium against `kb serve`: one person proposes a claim with the neuron page's form and
another, with the same page open, sees it appear without a reload; support and dispute update the counts in
place (and on the other's page); a render requested with the Render button shows its progress and then the
picture; two people edit one claim, the second gets the conflict view with their own text kept, merges and
saves; a form posted from another origin with the session cookie is refused. No CSP violations anywhere.

Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import hashlib
import io
import re
import shutil

import pytest
import sqlalchemy as sa
from browsers import csp_violations, people, screenshot, served_browser, sign_in, wait_live
from servers import free_port
from stores import store_for

from kb.claims import sessions
from kb.render import jobs

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect
UNIT = "/n/inceptionv1/mixed4c/21"


def _png() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (128, 128))
    image.putdata([(x * 2, y * 2, (x + y) % 256) for y in range(128) for x in range(128)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _land_render(engine, job_id: int) -> None:
    """What a render worker does: start the job, report progress, store the picture, finish."""
    data = _png()
    sha = store_for(engine).put(data, ".png")
    assert sha == hashlib.sha256(data).hexdigest()
    with engine.begin() as conn:
        assert jobs.start(conn, [job_id], "test-worker", 60)
    with engine.begin() as conn:
        jobs.heartbeat(conn, [job_id], 0.5, 60)
    with engine.begin() as conn:
        artifact = {
            "sha256": sha,
            "content_type": "image/png",
            "bytes": len(data),
            "width": 128,
            "height": 128,
            "kind": "FEATURE_VIS",
            "params": {"size": 128},
            "versions": {"test": True},
            "meta": {},
        }
        jobs.finish(conn, job_id, artifact)


def test_annotating_in_two_browsers(engine, db_url, inceptionv1):
    amy_name, ben_name = people(engine, "editor", "moderator")
    suffix = amy_name.rpartition("-")[2]
    with served_browser(db_url) as (base, browser):
        violations: list[str] = []
        a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        b = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        for page in (a, b):
            csp_violations(page, violations)
        neuron = base + UNIT
        sign_in(a, base, amy_name, UNIT, shot="signin.png")
        sign_in(b, base, ben_name, UNIT)
        b.evaluate("window.kbNoReload = 1")  # gone if the page reloads
        wait_live(b)  # the page's EventSource is open

        # (a) Amy proposes with the form; Ben's open page shows the claim without a reload
        label = f"curve detector {suffix}"
        a.get_by_label("Label", exact=True).fill(label)
        a.get_by_label("Kind", exact=True).select_option("FEATURE")
        a.get_by_label("Body", exact=True).fill("Responds to **curves** at one orientation.")
        a.get_by_label("Confidence", exact=True).fill("0.7")
        a.get_by_label("DOI", exact=True).fill("10.23915/distill.00024.003")
        a.get_by_role("button", name="Propose claim").click()
        a.wait_for_url(re.compile(re.escape(neuron) + r"#claim-\d+$"))
        n = int(a.url.rsplit("-", 1)[1])
        expect(a.locator(f"#claim-{n}")).to_contain_text(label)
        seen = b.locator(f"#claim-{n}")
        expect(seen).to_contain_text(label, timeout=10000)
        expect(b.locator("#chips")).to_contain_text(label)
        assert b.evaluate("window.kbNoReload") == 1

        # (d) Ben supports it from the neuron page, then changes his mind: the counts follow, on both pages
        seen.get_by_label("Comment").fill("the curves are there")
        seen.get_by_role("button", name="Support").click()
        expect(seen).to_contain_text("+1 / \N{MINUS SIGN}0")
        expect(seen.get_by_label("Comment")).to_have_value("")
        expect(a.locator(f"#claim-{n}")).to_contain_text("+1 / \N{MINUS SIGN}0", timeout=10000)
        seen.get_by_role("button", name="Dispute").click()
        expect(seen).to_contain_text("+0 / \N{MINUS SIGN}1")
        expect(a.locator(f"#claim-{n}")).to_contain_text("+0 / \N{MINUS SIGN}1", timeout=10000)
        assert b.evaluate("window.kbNoReload") == 1
        # Amy may not review her own claim: no Support / Dispute for her, and the reason (Ben sees his own review)
        mine = a.locator(f"#claim-{n}")
        expect(mine.get_by_role("button", name="Support")).to_have_count(0)
        expect(mine).to_contain_text("its authors cannot review it")
        expect(seen.locator(".own-review")).to_contain_text("your review: DISPUTE")

        # Render: Amy asks; the page shows the job's progress, then the picture, without a reload
        a.evaluate("window.kbNoReload = 1")
        a.get_by_role("button", name="Render").click()
        expect(a.locator("#render-status")).to_contain_text("queued", timeout=10000)
        with engine.connect() as conn:
            job_id = conn.execute(
                sa.text(
                    "SELECT id FROM render_job WHERE layer_key = 'mixed4c' AND unit = 21 AND kind = 'FEATURE_VIS' "
                    "ORDER BY id DESC"
                )
            ).scalar()  # the newest (not scalar_one: other modules may have asked for this unit too)
        _land_render(engine, job_id)
        picture = a.locator("#render-list img")
        expect(picture).to_have_count(1, timeout=15000)
        expect(a.locator("#render-status")).to_have_text("rendered")
        expect(b.locator("#render-list img")).to_have_count(1, timeout=10000)  # Ben's page too, by the stream
        assert a.evaluate("window.kbNoReload") == 1 and b.evaluate("window.kbNoReload") == 1
        assert a.evaluate("document.querySelector('#render-list img').naturalWidth") == 128  # it loaded
        # the new picture can be cited: its checkbox is in the form now that the page is fetched again
        a.goto(neuron)
        expect(a.get_by_label("Feature visualization")).to_have_count(1)
        a.get_by_label("Label", exact=True).fill("draft kept")  # shown in the screenshot: a claim and the form
        screenshot(a, "neuron-signed-in.png")
        a.get_by_label("Label", exact=True).fill(f"cites its picture {suffix}")
        a.get_by_label("Feature visualization").check()
        a.get_by_role("button", name="Propose claim").click()
        a.wait_for_url(re.compile(r"#claim-\d+$"))
        a.goto(f"{base}/c/{a.url.rsplit('-', 1)[1]}")
        cited = a.locator('.evidence img[src^="/artifacts/"]')  # once: in the unit's evidence card
        expect(cited).to_have_count(1)
        assert a.evaluate("document.querySelector('.evidence img[src^=\"/artifacts/\"]').naturalWidth") == 128
        expect(a.locator(".evidence")).to_contain_text("feature visualization")

        # (b) both open the edit form; Amy saves first; Ben gets the conflict view, his text kept, merges, saves
        edit = f"{base}/c/{n}/edit"
        a.goto(edit)
        b.goto(edit)
        wait_live(b)  # Ben's EventSource is open
        expect(a.get_by_label("Body", exact=True)).to_have_value("Responds to **curves** at one orientation.")
        a.get_by_label("Body", exact=True).fill("Amy's body: curves at one orientation, 45 degrees.")
        a.get_by_label("Change message").fill("angle")
        ben_text = "Ben's body: curves, and\nsome circles."
        b.get_by_label("Body", exact=True).fill(ben_text)
        b.get_by_label("Label", exact=True).fill(label + " (Ben)")
        a.get_by_role("button", name="Save").click()
        a.wait_for_url(f"{base}/c/{n}")
        expect(a.locator("#claim-body")).to_contain_text("45 degrees")
        expect(b.locator("#edit-stale")).to_be_visible(timeout=10000)  # warned, live, before saving
        expect(b.get_by_label("Body", exact=True)).to_have_value(ben_text)  # untouched by the live update
        b.get_by_role("button", name="Save").click()
        expect(b.get_by_role("heading", name=re.compile("Their version"))).to_be_visible()
        expect(b.locator(".theirs")).to_contain_text("45 degrees")
        expect(b.locator(".theirs .tag")).to_have_text(["differs from yours"] * 2)  # label and body
        expect(b.get_by_label("Body", exact=True)).to_have_value(ben_text)
        expect(b.get_by_label("Label", exact=True)).to_have_value(label + " (Ben)")
        assert b.locator('input[name="expectedRevision"]').get_attribute("value") == "2"
        screenshot(b, "claim-conflict.png")
        merged = "Amy's body: curves at one orientation, 45 degrees.\n\nBen: and some circles."
        b.get_by_label("Body", exact=True).fill(merged)
        b.get_by_label("Label", exact=True).fill(label)
        b.get_by_role("button", name="Save").click()
        b.wait_for_url(f"{base}/c/{n}")
        expect(b.locator("#claim-body")).to_contain_text("and some circles")
        expect(a.locator("#claim-body")).to_contain_text("and some circles", timeout=10000)  # live on Amy's

        # the moderator's queue, and his status buttons
        b.goto(f"{base}/moderation")
        expect(b.get_by_role("link", name=label)).to_be_visible()
        screenshot(b, "moderation.png")
        b.get_by_role("link", name=label).click()
        expect(b.get_by_role("button", name="Edit")).to_be_visible()
        screenshot(b, "claim-moderator.png")
        b.get_by_role("button", name="Mark supported").click()
        b.wait_for_url(f"{base}/c/{n}")
        expect(b.locator("#claim-head")).to_contain_text("supported")
        expect(a.locator("#claim-head")).to_contain_text("supported", timeout=10000)

        # (c) a page on another origin posts the forms with Amy's cookie and even her token: refused
        a.goto(neuron)
        csrf = a.locator('meta[name="csrf-token"]').get_attribute("content")
        evil = f"http://127.0.0.1:{free_port()}/evil"
        for action, fields in (
            (neuron, {"label": "forged", "kind": "FEATURE"}),
            (f"{base}/c/{n}/review", {"verdict": "SUPPORT", "comment": "forged"}),
            (f"{base}/c/{n}/edit", {"expectedRevision": "4", "label": "forged", "kind": "FEATURE"}),
        ):
            inputs = "".join(f'<input name="{k}" value="{v}">' for k, v in {"csrf": csrf, **fields}.items())
            form = f'<form method="post" action="{action}">{inputs}</form><script>document.forms[0].submit()</script>'
            a.route(evil, lambda route, *_, body=form: route.fulfill(content_type="text/html", body=body))
            with a.expect_response(lambda r, url=action: r.url == url and r.request.method == "POST") as answer:
                a.goto(evil)
            assert answer.value.status == 403, action
            assert sessions.COOKIE in answer.value.request.headers.get("cookie", "")  # it did carry the cookie
            a.unroute(evil)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM claim WHERE label = 'forged'")).scalar_one() == 0
            row = conn.execute(sa.text("SELECT revision, support_count FROM claim WHERE id = :n"), {"n": n}).one()
        assert tuple(row) == (4, 0)
    assert violations == []
