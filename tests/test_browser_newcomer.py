"""The pages a new user hit (issue 24, items 6 and 7) in a real Chromium against `kb serve`, with screenshots: the
claim page (its evidence card with the cited picture once and the key on one line, no Support/Dispute for its
author, a reviewer's own review shown back, the Cite block following a new revision without a reload, the
family warning on random weights), the model page on random weights, and /activity filtered to renders, where
a bulk render request is one entry.

Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import hashlib
import io
import re
import secrets
import shutil

import httpx
import pytest
import sqlalchemy as sa
from browsers import csp_violations, people, screenshot, served_browser, sign_in, wait_live
from stores import store_for

from kb.claims import accounts as acc
from kb.render import jobs

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect
CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key revision } }"""
UPDATE = """mutation($key: String!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: 1, patch: $patch, message: "sharper") { revision } }"""
REVIEW = """mutation($key: String!) { reviewClaim(key: $key, verdict: SUPPORT, comment: "the wheels are there") {
    verdict } }"""


def _png(seed: int) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (128, 128))
    image.putdata([((x * seed) % 256, (y * 3 + seed) % 256, (x + y) % 256) for y in range(128) for x in range(128)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _land(engine, job_id: int, seed: int, params: dict) -> str:
    """What a render worker does: start the job, store the picture, finish; returns the picture's sha256."""
    data = _png(seed)
    sha = store_for(engine).put(data, ".png")
    assert sha == hashlib.sha256(data).hexdigest()
    with engine.begin() as conn:
        assert jobs.start(conn, [job_id], "test-worker", 60)
    with engine.begin() as conn:
        artifact = {
            "sha256": sha,
            "content_type": "image/png",
            "bytes": len(data),
            "width": 128,
            "height": 128,
            "kind": "FEATURE_VIS",
            "params": params,
            "versions": {"test": True},
            "meta": {},
        }
        jobs.finish(conn, job_id, artifact)
    return sha


def _gql(base: str, token: str, query: str, variables: dict) -> dict:
    answer = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    ).json()
    assert "errors" not in answer, answer
    return answer["data"]


def test_claim_model_and_activity_pages_in_chromium(engine, db_url, inceptionv1, tmp_path):
    amy, ben = people(engine, "editor", "editor")
    with engine.begin() as conn:
        tokens = {name: acc.create_token(conn, name) for name in (amy, ben)}
        sha = conn.execute(sa.text("SELECT sha256 FROM model WHERE key = 'inceptionv1'")).scalar_one()
    params = {"size": 128, "steps": 16, "nonce": secrets.token_hex(4)}
    with engine.begin() as conn:  # a bulk request (five units of mixed3a) and the picture of 4c:447
        bulk, _ = jobs.request(
            conn, [jobs.Unit("inceptionv1", sha, "mixed3a", i) for i in range(5)], "FEATURE_VIS", params
        )
        (single,), _ = jobs.request(conn, [jobs.Unit("inceptionv1", sha, "mixed4c", 447)], "FEATURE_VIS", params)
    for i, job_id in enumerate(bulk):
        _land(engine, job_id, 3 + i, params)
    picture = _land(engine, single, 11, params)

    with served_browser(db_url) as (base, browser):
        made = _gql(
            base,
            tokens[amy],
            CREATE,
            {
                "input": {
                    "label": "car detector: wheels over windows, at every scale",
                    "kind": "FEATURE",
                    "subjects": ["InceptionV1 4c:447"],
                    "body": "Responds to **cars**: wheels below, windows above.",
                    "evidence": [
                        {
                            "kind": "FEATURE_VISUALIZATION",
                            "neuron": "InceptionV1 4c:447",
                            "visualization": f"sha256:{picture}",
                            "note": "the feature visualization",
                        },
                        {"kind": "CITATION", "doi": "10.23915/distill.00024.006"},
                    ],
                }
            },
        )["createClaim"]
        number = made["key"].split(":")[1]
        _gql(base, tokens[ben], REVIEW, {"key": made["key"]})
        violations: list[str] = []
        a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        b = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        for page in (a, b):
            csp_violations(page, violations)
        claim = f"/c/{number}"
        sign_in(a, base, amy, claim)
        sign_in(b, base, ben, claim)

        # the author: no Support / Dispute; the reviewer: his own review shown back
        expect(a.locator(f"#review-{number}")).to_have_count(0)
        expect(a.locator("#review-note")).to_contain_text("cannot review it")
        expect(b.locator(f"#review-{number}")).to_have_count(1)
        expect(b.locator(".own-review")).to_contain_text("your review: SUPPORT — the wheels are there")
        expect(b.locator("#reviews-head")).to_contain_text("1 review ·")

        # the evidence card: the cited picture once, its key on one line, its label whole
        evidence = b.locator(".evidence .card")
        expect(evidence).to_have_count(1)
        expect(b.locator(f'.evidence img[src="/artifacts/{picture}.png"]')).to_have_count(1)
        key = evidence.locator(".key").bounding_box()
        one_line = b.evaluate("parseFloat(getComputedStyle(document.querySelector('.evidence .card .key')).lineHeight)")
        assert key["height"] < 1.5 * one_line, (key, one_line)
        chip = evidence.locator(".chip").first
        assert chip.evaluate("c => c.scrollWidth <= c.clientWidth"), "the evidence card's chip is cut"
        about = b.locator(".about .card .chip").first  # the subjects' cards too
        assert about.evaluate("c => c.scrollWidth <= c.clientWidth"), "the About card's chip is cut"
        screenshot(b, "claim-page.png")

        # a new revision: the reader's Cite block follows without a reload
        b.evaluate("window.kbNoReload = 1")
        wait_live(b)  # the page's EventSource is open
        expect(b.locator("#cite")).to_contain_text(f"claim:{number}@1")
        _gql(base, tokens[amy], UPDATE, {"key": made["key"], "patch": {"body": "Wheels below, windows above."}})
        expect(b.locator("#cite")).to_contain_text(f"claim:{number}@2", timeout=10000)
        assert b.evaluate("window.kbNoReload") == 1

        # the model page on random weights: what the weights are, not the trained model's description
        a.goto(f"{base}/n/inceptionv1")
        expect(a.locator("#weights-note")).to_contain_text("seeded random weights")
        assert "as trained by" not in a.content()
        screenshot(a, "model-page.png")

        # /activity, renders only: the bulk request is one entry, the one-unit render another
        a.goto(f"{base}/activity")
        a.get_by_label("Kind").select_option("render")
        a.get_by_role("button", name="Show").click()
        a.wait_for_url(f"{base}/activity?model=&kind=render")
        feed = a.locator("#activity")
        expect(feed.locator("li", has_text="rendered 5 units of mixed3a")).to_have_count(1)
        for i in range(5):  # no entry per unit of the bulk request (other tests' one-unit renders of mixed3a may show)
            per_unit = re.compile(rf"of inceptionv1/mixed3a:{i}(\D|$)")
            expect(feed.locator("li", has_text=per_unit)).to_have_count(0)
        expect(feed.locator("li", has_text="feature_vis of inceptionv1/mixed4c:447")).to_have_count(1)
        expect(feed.locator("li .kind", has_text="claim")).to_have_count(0)
        screenshot(a, "activity-renders.png")
        assert not violations, violations
