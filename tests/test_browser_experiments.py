"""A circuit checked by experiment from its page, in a real Chromium against `kb serve` with its own CPU worker:
an editor presses "Run check", the page says the check is queued or running (and reloads itself), then shows the
experiment's badges (sufficiency, necessity, random baseline, ablation, images of the data set) and its table.
No CSP violations. Needs Python playwright and the system's chromium (skipped where either is missing)."""

import os
import secrets
import shutil
from pathlib import Path

import httpx
import known_circuit
import pytest
import sqlalchemy as sa
from browsers import ARGS, CHROMIUM, csp_violations, people, screenshot, sign_in
from servers import kb_serve
from waits import wait_until

from kb.claims import circuits
from kb.claims.accounts import Account, user_id
from kb.db.catalog import load_catalog
from kb.db.render_tables import dataset_table
from kb.db.tables import utcnow
from kb.settings import get_settings

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")
expect = playwright.expect


def _ready(url: str, timeout: float = 300) -> None:
    def answers() -> bool:
        try:
            return httpx.get(url, timeout=60).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout, f"{url} to answer 200", every=2)


def _measured(engine, circuit_id: int) -> bool:
    with engine.connect() as conn:
        row = sa.text("SELECT COUNT(*) FROM experiment WHERE circuit_id = :c")
        return conn.execute(row, {"c": circuit_id}).scalar_one() > 0


def test_run_check_from_the_circuit_page_shows_the_experiments_badges(engine, db_url, inceptionv1, tmp_path):
    [amy] = people(engine, "editor")
    name = f"noise-{secrets.token_hex(3)}"
    known_circuit.write_pngs(tmp_path / "noise", n=64, size=32)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(dataset_table).values(name=name, path=str(tmp_path / "noise"), images=64, created_at=utcnow())
        )
        # mixed4b -> mixed4c:499 of InceptionV1 (seeded random weights): a unit active on noise
        number = circuits.create_circuit(
            conn,
            load_catalog(conn),
            Account(user_id(conn, amy), amy, "editor"),
            "two early inputs",
            [],
            [
                {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:499", "note": "one"},
                {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:499", "note": "two"},
            ],
        )
    env = {
        "KB_DATABASE_URL": db_url,
        "KB_BROKER_URL": "",  # the embedded broker and the server's own worker
        "KB_DATA_DIR": str(tmp_path / "data"),
        "KB_STORAGE_DIR": str(get_settings().artifacts_dir),
        "KB_RENDER_DEVICE": "cpu",
        "KB_RENDER_SWEEP_S": "2",
    }
    page_path = f"/circuits/{number}"
    log = Path(os.environ.get("KB_TEST_SERVE_LOG", tmp_path / "serve.log"))
    with kb_serve(env, log=log, timeout=120) as base, playwright.sync_playwright() as p:
        _ready(f"{base}{page_path}")  # a fresh data folder: the server builds the model's graph file first
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            violations: list[str] = []
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            csp_violations(page, violations)
            sign_in(page, base, amy, page_path)
            section = page.locator("#experiments")
            expect(section).to_contain_text("not checked by experiment yet")
            expect(section).to_contain_text("ablated at its layer's output")
            form = page.get_by_role("form", name="check this circuit by experiment")
            form.get_by_label("Data set").select_option(name)
            form.get_by_label("Ablation").select_option("mean")
            form.get_by_label("Images").select_option("32")
            form.get_by_role("button", name="Run check").click()
            expect(page.locator(".check-open, .experiment").first).to_be_visible(timeout=20000)
            badges = page.locator(".experiment .badges")
            # the worker measures and writes the experiment's row; the page shows it once read again
            wait_until(lambda: _measured(engine, number), 400, f"circuit:{number}'s experiment row (the worker)", 2)
            page.reload()
            expect(badges).to_contain_text("sufficiency")
            text = badges.inner_text()
            assert "necessity" in text and "random" in text and "±" in text, text
            assert "mean ablation" in text and f"32 images of {name}" in text, text
            expect(page.locator(".experiment h3")).to_contain_text(f"of circuit:{number}@1")
            expect(page.locator(".experiment-figures")).to_contain_text("sufficiency f(C)")
            screenshot(page, "circuit-experiment.png")
            assert violations == []
        finally:
            browser.close()
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT ablation, dataset FROM experiment WHERE circuit_id = :c"), {"c": number}
        ).one()
    assert tuple(row) == ("mean", name)
