"""The front page in Chromium against `kb serve`: two models, one with rendered units (a strip of pictures that
load and line up), one with none yet (a visible placeholder); the newest claims and circuits below the cards.

The screenshot goes to the test's tmp folder (and $KB_SCREENSHOTS): look at it.
"""

from __future__ import annotations

import shutil
from itertools import pairwise

import pytest
from browsers import SHOTS, served_browser
from conftest import as_user
from front_renders import land

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect

CREATE_CLAIM = """mutation($input: ClaimInput!) { createClaim(input: $input) { key } }"""
CREATE_CIRCUIT = """mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"""
UNITS = [
    ("conv2d0", 12),
    ("conv2d1", 40),
    ("conv2d2", 7),
    ("mixed3a", 98),
    ("mixed3b", 379),
    ("mixed4a", 61),
    ("mixed4b", 373),
    ("mixed4c", 447),
    ("mixed4d", 5),
    ("mixed5a", 20),
]


def _fresh_model(engine, folder) -> str:
    """The tiny test network with weights of its own (a checkpoint): a model with nothing rendered."""
    import tiny
    import torch

    from kb.app.model_import import import_model

    tiny.register()
    model = tiny.build()
    with torch.no_grad():
        model.conv1.weight.mul_(3.0)
    path = folder / "tiny.pt"
    torch.save(model.state_dict(), path)
    import_model(engine, "test:tiny", key="tinynet", weights=str(path))
    return "tinynet"


def test_the_front_page_shows_model_cards_with_pictures(api, engine, accounts, db_url, tmp_path):
    fresh = _fresh_model(engine, tmp_path)
    land(engine, "inceptionv1", UNITS)
    ed = accounts["editor"]["token"]
    for label, subject in (
        ("curve detector", "InceptionV1 3b:379"),
        ("high-low frequency detector", "InceptionV1 3a:98"),
        ("car detector", "InceptionV1 4c:447"),
    ):
        made = as_user(api, ed, CREATE_CLAIM, {"input": {"label": label, "kind": "FEATURE", "subjects": [subject]}})
        assert "errors" not in made, made
    circuit = as_user(
        api,
        ed,
        CREATE_CIRCUIT,
        {
            "i": {
                "name": "car detector from wheels and windows",
                "edges": [
                    {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447", "note": "wheels"},
                    {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:447", "note": "windows"},
                ],
            }
        },
    )
    assert "errors" not in circuit, circuit

    with served_browser(db_url) as (base, browser):
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(base + "/")
        cards = page.locator("section.model-card")
        pictured = cards.filter(has=page.get_by_role("heading", name="inceptionv1", exact=True))
        empty = cards.filter(has=page.get_by_role("heading", name=fresh, exact=True))
        expect(pictured).to_have_count(1)
        expect(empty).to_have_count(1)

        pictures = pictured.locator(".strip img")
        expect(pictures).to_have_count(8)
        for i in range(8):  # loaded (not wait_for_function: the page's CSP refuses the predicate it evals)
            expect(pictures.nth(i)).to_have_js_property("complete", True)
        assert page.evaluate("[...document.querySelectorAll('.strip img')].every(i => i.naturalWidth > 0)")
        shot = tmp_path / "front.png"
        page.screenshot(path=str(shot), full_page=True)
        for folder in [SHOTS] if SHOTS else []:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, folder / "front.png")
        boxes = [pictures.nth(i).bounding_box() for i in range(8)]
        assert {(round(b["width"]), round(b["height"])) for b in boxes} == {(96, 96)}  # one size
        assert len({round(b["y"]) for b in boxes}) == 1  # one row, lined up
        lefts = [b["x"] for b in boxes]
        gaps = {round(b - a - 96) for a, b in pairwise(lefts)}
        assert len(gaps) == 1 and gaps.pop() >= 6, lefts  # evenly spaced, not touching
        expect(pictured.locator("dl.counts")).to_contain_text("units rendered")

        expect(empty.locator(".strip img")).to_have_count(0)
        expect(empty.locator(".strip .ph")).to_have_count(8)
        expect(empty.get_by_text(f"No unit of {fresh} is rendered yet")).to_be_visible()

        newest = page.locator("section", has=page.get_by_role("heading", name="Newest claims"))
        expect(newest).to_contain_text("car detector")
        circuits = page.locator("section", has=page.get_by_role("heading", name="Newest circuits"))
        expect(circuits).to_contain_text("car detector from wheels and windows")
        assert shot.stat().st_size > 10_000
