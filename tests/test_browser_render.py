"""Rendering from the pages in a real Chromium against `kb serve` with its own CPU render worker:

- an editor renders a layer from its page (the thumbnail preset, the bulk lane): the page shows "N of 192 rendered"
  climbing without a reload; meanwhile another editor asks for one unit from its neuron page, and it finishes
  (DONE, its picture shown) while the layer is still rendering; then the first cancels the layer from its page and
  the page shows its jobs cancelled;
- a render above the server's ceiling is refused with the reason shown beside the form;
- GraphiQL signed in by cookie runs a mutation (it sends the session's CSRF token).

No CSP violations anywhere. Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import secrets
import shutil
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from browsers import ARGS, CHROMIUM, csp_violations, people, screenshot, served_browser, sign_in
from servers import kb_serve

from kb.db.render_tables import dataset_table
from kb.db.tables import utcnow
from kb.render.params import params_hash
from kb.render.presets import presets
from kb.settings import Settings, get_settings

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect
LAYER = "/n/inceptionv1/conv2d2"  # 192 units
UNIT = "/n/inceptionv1/conv2d1/5"
THUMBNAIL = params_hash("FEATURE_VIS", presets(Settings())["thumbnail"].params.relevant("FEATURE_VIS"))


def _states(engine, layer: str, unit: int | None = None) -> dict[str, int]:
    """The thumbnail feature visualizations of a layer (or one unit) by status."""
    q = "SELECT status, count(*) FROM render_job WHERE layer_key = :l AND params_hash = :h AND kind = 'FEATURE_VIS'"
    args = {"l": layer, "h": THUMBNAIL}
    if unit is not None:
        q, args = q + " AND unit = :u", {**args, "u": unit}
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(q + " GROUP BY status"), args).all())


def test_a_layer_rendered_and_cancelled_from_its_page_while_a_unit_goes_first(engine, db_url, inceptionv1, tmp_path):
    amy, ben = people(engine, "editor", "editor")
    with engine.begin() as conn:  # a data set: the neuron page offers dataset examples (and asks which set)
        name = f"br-images-{secrets.token_hex(3)}"
        conn.execute(sa.insert(dataset_table).values(name=name, path=str(tmp_path), images=4, created_at=utcnow()))
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",  # the embedded broker and the server's own worker
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(get_settings().artifacts_dir),  # the session's: other pages show these pictures too
        "KB_RENDER_DEVICE": "cpu",
        "KB_RENDER_DEVICE_BATCH": "2",  # the layer is 96 device batches: a unit's job goes between two
        "KB_RENDER_SWEEP_S": "2",
        "KB_RENDER_MAX_STEPS": "100",  # the Microscope preset (512 steps) is above this server's ceiling
    }
    log = tmp_path / "serve.log"
    with kb_serve(env, log=log, timeout=120) as base, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            violations: list[str] = []
            a = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            b = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            for page in (a, b):
                csp_violations(page, violations)
            sign_in(a, base, amy, LAYER)
            sign_in(b, base, ben, UNIT)
            before = _states(engine, "conv2d2").get("DONE", 0)  # other modules may have landed a few

            # Amy renders the layer at the thumbnail preset; the progress climbs on her page without a reload
            a.evaluate("window.kbNoReload = 1")
            a.get_by_label("Feature visualizations of all 192 units at").select_option("thumbnail")
            a.get_by_role("button", name="Render this layer").click()
            expect(a.locator("#layer-render-status")).to_contain_text("192 units asked for", timeout=20000)
            row = a.locator(f'[data-request="FEATURE_VIS:{THUMBNAIL}"]')
            expect(row).to_contain_text(f"{before} of 192 rendered", timeout=10000)
            expect(row.get_by_role("button", name="Cancel")).to_have_count(1)
            expect(row).not_to_contain_text(f"{before} of 192 rendered", timeout=240000)  # the worker's first batches
            screenshot(a, "layer-rendering.png")

            # Ben asks for one unit of another layer from its neuron page: Microscope is refused, on the page
            b.evaluate("window.kbNoReload = 1")
            expect(b.locator("#r-dataset")).to_be_hidden()  # only dataset examples need a data set
            b.locator("#r-kind").select_option("dataset")
            expect(b.locator("#r-dataset")).to_be_visible()
            b.locator("#r-kind").select_option("feature")
            expect(b.locator("#r-dataset")).to_be_hidden()
            b.locator("#r-preset").select_option("microscope")
            b.get_by_role("button", name="Render", exact=True).click()
            ceiling = "steps 512 is above this knowledge base's ceiling: KB_RENDER_MAX_STEPS=100"
            expect(b.locator("#render-status")).to_have_text(ceiling, timeout=20000)
            expect(b.locator("#render-status")).to_have_class("error")
            screenshot(b, "neuron-render-refused.png", full_page=False)
            # the thumbnail finishes while the layer still renders
            layer = _states(engine, "conv2d2")
            assert layer.get("QUEUED", 0) >= 20, layer  # asked for while the layer has most of its work ahead
            b.locator("#r-kind").select_option("feature")
            b.locator("#r-preset").select_option("thumbnail")
            b.get_by_role("button", name="Render", exact=True).click()
            expect(b.locator("#render-list img")).to_have_count(1, timeout=240000)
            expect(b.locator("#render-status")).to_have_text("rendered")
            assert _states(engine, "conv2d1", 5) == {"DONE": 1}
            with engine.connect() as conn:  # it went ahead of the layer's remaining batches
                later = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM render_job l, render_job u WHERE l.layer_key = 'conv2d2' "
                        "AND u.layer_key = 'conv2d1' AND u.unit = 5 AND l.params_hash = :h AND u.params_hash = :h "
                        "AND (l.status IN ('QUEUED', 'RUNNING') OR l.finished_at > u.finished_at)"
                    ),
                    {"h": THUMBNAIL},
                ).scalar_one()
            assert later >= 10, later  # a whole device batch is two units: ten is five batches after it
            assert b.evaluate("document.querySelector('#render-list img').naturalWidth") == 64  # the picture loaded
            screenshot(b, "neuron-rendered-meanwhile.png")

            # Amy cancels the layer: the page shows its jobs cancelled, and no Cancel button any more
            row.get_by_role("button", name="Cancel").click()
            expect(a.locator("#layer-render-status")).to_contain_text("jobs cancelled", timeout=20000)
            expect(row).to_contain_text("cancelled · ended", timeout=20000)
            expect(row.get_by_role("button", name="Cancel")).to_have_count(0)
            final = _states(engine, "conv2d2")
            assert final.get("CANCELLED", 0) > 0 and set(final) <= {"DONE", "CANCELLED"}, final
            expect(row).to_contain_text(
                f"{final['DONE']} of 192 rendered · {final['CANCELLED']} cancelled", timeout=10000
            )
            screenshot(a, "layer-cancelled.png")
            assert a.evaluate("window.kbNoReload") == 1 and b.evaluate("window.kbNoReload") == 1
            assert not violations, violations
        finally:
            browser.close()


def test_graphiql_runs_a_mutation_signed_in_by_cookie(engine, db_url, inceptionv1):
    (amy,) = people(engine, "editor")
    query = 'mutation {\n  requestRender(kind: WEIGHTS, neurons: ["InceptionV1 3b:9"]) {\n    kind\n    lane\n  }\n}'
    with served_browser(db_url) as (base, browser):
        violations: list[str] = []
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        csp_violations(page, violations)
        sign_in(page, base, amy, "/")
        page.goto(f"{base}/graphql?query={quote(query)}")
        page.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror", timeout=20000)
        page.locator(".graphiql-query-editor .CodeMirror").click()
        page.keyboard.press("Control+Enter")
        result = page.locator(".result-window")
        result.get_by_text('"INTERACTIVE"').first.wait_for(timeout=20000)  # the job's lane: it ran as amy
        assert "UNAUTHENTICATED" not in result.inner_text()
        screenshot(page, "graphiql-mutation.png", full_page=False)
        assert not violations, violations
