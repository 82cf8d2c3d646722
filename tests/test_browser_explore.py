"""/explore at depth 3 and perNode 5 in a real Chromium against `kb serve` (issue 24 item 7): every unit's tile
and number visible (no tile over another, each number on its own tile), mixed3b in at most four lines, the
figure at its own size in a 1280-pixel window; then inhibitory edges by magnitude chosen in the form.
Screenshots go to $KB_SCREENSHOTS (explore-depth3.png, explore-inhibitory.png): look at them.

Needs Python playwright and the system's chromium (skipped where either is missing).
"""

import shutil

import pytest
from browsers import screenshot, served_browser

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no system chromium")

GEOMETRY = """() => {
  const svg = document.querySelector('[data-diagram] svg.diagram');
  const box = r => { const b = r.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const units = Array.from(svg.querySelectorAll('a.unit')).map(a => ({
    key: a.getAttribute('data-unit'), tile: box(a.querySelector('rect.frame')), number: box(a.querySelector('text')),
    shown: document.elementFromPoint(...(b => [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])(box(a.querySelector('text'))))
      ?.closest('a.unit')?.getAttribute('data-unit') }));
  const names = Array.from(svg.querySelectorAll('.layers text')).map(box);
  return { units, names, width: svg.getBoundingClientRect().width, declared: svg.width.baseVal.value,
           edges: svg.querySelectorAll('.edges .edge').length,
           negative: svg.querySelectorAll('.edges .edge.neg').length };
}"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5


def test_explore_at_depth_3_and_per_node_5_is_readable(db_url, inceptionv1):
    with served_browser(db_url) as (base, browser):
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"{base}/explore?roots=InceptionV1+4c%3A447&direction=UPSTREAM&depth=3&perNode=5", timeout=300_000)
        g = page.evaluate(GEOMETRY)
        screenshot(page, "explore-depth3.png")
        units = g["units"]
        assert len(units) > 120 and g["edges"] > 120
        assert g["width"] >= 0.97 * g["declared"]  # drawn at its own size: not shrunk to fit
        for i, u in enumerate(units):
            assert all(not _overlap(u["tile"], v["tile"]) for v in units[i + 1 :]), u["key"]
            t, n = u["tile"], u["number"]
            assert t[0] <= n[0] and n[2] <= t[2] and t[1] <= n[1] and n[3] <= t[3] + 0.5, u["key"]
            assert u["shown"] == u["key"]  # the number is on top: no other tile or edge covers it
        left = min(u["tile"][0] for u in units)
        assert all(name[2] <= left for name in g["names"])  # the layer names and counts clear of every tile
        lines = {round(u["tile"][1]) for u in units if "/mixed3b:" in u["key"]}
        assert 1 < len(lines) <= 4, sorted(lines)

        page.select_option("select[name=sign]", "NEGATIVE")
        page.select_option("select[name=orderBy]", "MAGNITUDE")
        page.get_by_role("button", name="Draw").click()
        page.wait_for_url("**sign=NEGATIVE**")
        g = page.evaluate(GEOMETRY)
        screenshot(page, "explore-inhibitory.png")
        assert g["edges"] > 100 and g["negative"] == g["edges"]
        assert "most inhibitory inputs by kernel magnitude" in page.text_content("main")
