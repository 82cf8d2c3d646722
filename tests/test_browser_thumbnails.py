"""Thumbnails that fill in as people browse, in a real Chromium against a fresh `kb serve` in the embedded default
(its own local worker on the SQLite broker): a neuron page opened with nothing rendered asks for its own and its
cards' thumbnails (the view lane), and shows each picture as its render lands, without a reload; then the layer
grid of its inputs shows another render of a unit with a mark (not the preset) and fills in the same way.

Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import shutil

import pytest
import sqlalchemy as sa
from browsers import ARGS, CHROMIUM, csp_violations, screenshot
from front_renders import land
from servers import kb_serve

from kb.db.render_tables import render_job_table
from kb.render.params import RenderParams
from kb.settings import get_settings

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect
# an early layer of InceptionV1 (its renders stop there: quick on a CPU), with 64 inputs and outputs
LAYER, INDEX = "conv2d1", 37
KEY = f"inceptionv1/{LAYER}:{INDEX}"
WAIT_MS = 300_000


def test_a_neuron_page_fills_in_its_thumbnails_without_a_reload(db_url, engine, inceptionv1, tmp_path):
    t = render_job_table
    with engine.connect() as conn:  # nothing of this unit is rendered yet: the page starts with placeholders
        assert not conn.execute(
            sa.select(t.c.id).where(t.c.model_key == "inceptionv1", t.c.layer_key == LAYER, t.c.unit == INDEX)
        ).first()
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",  # the embedded default: a local worker on a SQLite broker file
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(get_settings().artifacts_dir),  # where land() below puts its picture
        "KB_RENDER_DEVICE": "cpu",
        "KB_VIEW_THUMBNAILS": "true",
    }
    log = tmp_path / "serve.log"
    with kb_serve(env, log=log, timeout=120) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            violations: list[str] = []
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            csp_violations(page, violations)
            page.goto(f"{base}/n/inceptionv1/{LAYER}/{INDEX}")
            page.evaluate("window.kbNoReload = 1")  # gone if the page reloads
            inputs = page.locator("#panel-in-excite .card")
            expect(inputs).to_have_count(10)
            expect(page.locator("#render-list img")).to_have_count(0)
            assert page.locator("#panel-in-excite .card .ph").count() > 0  # not all there yet
            screenshot(page, "thumbnails-before.png", full_page=False)

            own = page.locator("#render-list img")
            expect(own).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("#render-list")).to_contain_text("size 64, steps 16")
            expect(page.locator("#panel-in-excite .card img")).to_have_count(10, timeout=WAIT_MS)
            expect(page.locator("#panel-in-excite .card .ph")).to_have_count(0)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#render-list img, #panel-in-excite .card img')]"
                ".every(i => i.complete && i.naturalWidth === 64)",
                timeout=30_000,
            )
            assert page.locator("#panel-in-excite .card .fallback").count() == 0  # the preset's pictures
            assert page.evaluate("window.kbNoReload") == 1
            screenshot(page, "thumbnails-after.png", full_page=False)
            screenshot(page, "thumbnails-after-full.png")

            # the inputs' layer: a unit rendered only otherwise (128 px) shows that render, marked
            shown = set(page.eval_on_selector_all("[data-thumb]", "els => els.map(e => e.dataset.thumb)"))
            other = next(i for i in range(64) if f"inceptionv1/conv2d0:{i}" not in shown)
            land(engine, "inceptionv1", [("conv2d0", other)], RenderParams(size=128, steps=8).relevant("FEATURE_VIS"))
            page.goto(f"{base}/n/inceptionv1/conv2d0")
            page.evaluate("window.kbNoReload = 1")
            marked = page.locator(f'[data-thumb="inceptionv1/conv2d0:{other}"]')
            expect(marked.locator("img")).to_have_count(1)
            expect(marked.locator(".fallback")).to_have_text("128px")
            assert "size 128, steps 8" in marked.locator(".fallback").get_attribute("title")
            share = page.locator("#rendered-share").inner_text()
            waiting = page.locator("#units .ph").count()
            assert waiting > 0
            screenshot(page, "thumbnails-layer-before.png", full_page=False)
            page.wait_for_function(  # the grid fills in as the worker lands them, without a reload
                f"() => document.querySelectorAll('#units .ph').length < {waiting}", timeout=WAIT_MS
            )
            assert page.evaluate("window.kbNoReload") == 1
            expect(page.locator("#rendered-share")).not_to_contain_text(share)  # the count follows
            page.wait_for_function(  # the pictures in view have loaded
                "() => [...document.querySelectorAll('#units img')].filter(i => i.getBoundingClientRect().top"
                " < innerHeight).every(i => i.complete && i.naturalWidth > 0)"
            )
            screenshot(page, "thumbnails-layer-after.png", full_page=False)
            assert violations == []
        finally:
            browser.close()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.lane, t.c.requested_by, t.c.status).where(
                t.c.model_key == "inceptionv1", t.c.layer_key == LAYER, t.c.unit == INDEX
            )
        ).all()
    assert [(r.lane, r.requested_by, r.status) for r in rows] == [("view", None, "DONE")], log.read_text()[-3000:]
