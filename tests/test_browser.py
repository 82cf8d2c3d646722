"""The pages in a real browser: Chromium (the system's, driven by playwright) against `kb serve`, after a real
worker rendered a few units with tiny parameters.

Screenshots of each page type go to $KB_SCREENSHOTS (or the test's tmp folder): look at them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from conftest import as_user, gql
from servers import kb_serve
from waits import poll

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("KB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (bin/setup installs it)", allow_module_level=True)

ROOT = "InceptionV1 3b:350"  # in the 5x5 branch: its input kernels are 5x5
SMALL = {"size": 32, "steps": 3, "upsample": 0, "transforms": "none", "seed": 1}
REQUEST = """mutation($kind: RenderKind!, $n: [String!], $p: RenderParamsInput) {
    requestRender(kind: $kind, neurons: $n, params: $p) { id } }"""
JOBS = "query($ids: [Int!]!) { renderJobs(ids: $ids) { id status error } }"


def _worker(db_url: str, storage: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": db_url, "KB_STORAGE_DIR": str(storage), "KB_RENDER_DEVICE": "cpu"}
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"kb-browser-worker-{os.getpid()}.log"
    with open(log, "a") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(exe), "worker", "--loglevel", "warning"], env=env, start_new_session=True, stdout=out, stderr=out
        )


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("KB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def site(api, accounts, db_url, tmp_path_factory):
    """Renders of ROOT (every kind but dataset examples) and of its strongest inputs, a family claim, a circuit;
    then `kb serve` on them. Yields (base URL, facts)."""
    storage = tmp_path_factory.mktemp("artifacts")
    redis.Redis.from_url(os.environ["KB_BROKER_URL"]).flushdb()
    ed = accounts["editor"]["token"]
    inputs = gql(
        api, f'{{ neuron(key: "{ROOT}") {{ inputs(first: 4, sign: POSITIVE) {{ edges {{ node {{ key }} }} }} }} }}'
    )
    neighbours = [e["node"]["key"] for e in inputs["data"]["neuron"]["inputs"]["edges"]]
    worker = _worker(db_url, storage)
    try:
        ids = []
        for kind, units, extra in (
            ("FEATURE_VIS", [ROOT, *neighbours, "InceptionV1 3b:1", "InceptionV1 3b:2"], {}),
            ("FEATURE_VIS", [ROOT], {"negative": True}),
            ("NEURON_VIS", [ROOT], {}),
            ("WEIGHTS", [ROOT], None),
        ):
            variables = {"kind": kind, "n": units, "p": None if extra is None else {**SMALL, **extra}}
            ids += [j["id"] for j in as_user(api, ed, REQUEST, variables)["data"]["requestRender"]]
        jobs = poll(
            lambda: gql(api, JOBS, {"ids": ids})["data"]["renderJobs"],
            lambda jobs: all(j["status"] in ("DONE", "FAILED") for j in jobs),
            300,
            f"render jobs {ids} to end (the worker)",
            0.5,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert all(j["status"] == "DONE" for j in jobs), jobs
    family = as_user(
        api,
        ed,
        """mutation($i: ClaimInput!) { createClaim(input: $i) { key } }""",
        {
            "i": {
                "label": "Browser family",
                "kind": "FAMILY",
                "subjects": [ROOT, "InceptionV1 3b:1"],
                "body": "Like the <a href='#group_mixed3a_curves'>curves</a>, see <code>3b:0</code>.\n\n**bold** text",
            }
        },
    )["data"]["createClaim"]["key"]
    circuit = as_user(
        api,
        ed,
        """mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }""",
        {
            "i": {
                "name": "browser circuit",
                "edges": [{"source": k, "target": ROOT, "note": f"input {i}"} for i, k in enumerate(neighbours)],
            }
        },
    )["data"]["createCircuit"]["key"]
    env = {"KB_DATABASE_URL": db_url, "KB_STORAGE_DIR": str(storage)}
    with kb_serve(env, "--no-render-worker") as base:
        # the server reads the model's graph in the background: wait for it here, not in a page's first load
        assert httpx.get(base + _path("inceptionv1/mixed3b:350"), timeout=300).status_code == 200
        yield base, {"neighbours": neighbours, "family": family, "circuit": circuit}


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Visit:
    """A page in a fresh context that counts requests to other hosts (and blocks them) and console errors."""

    def __init__(self, browser, base: str):
        self.host = urlsplit(base).netloc
        self.base = base
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(90_000)  # a loaded CI machine
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route):
        if urlsplit(route.request.url).netloc != self.host:
            self.outside.append(route.request.url)
            return route.abort()
        return route.continue_()

    def go(self, path: str):
        response = self.page.goto(self.base + path, wait_until="networkidle")
        assert response.status == 200, (path, response.status)
        return self.page

    def images_loaded(self) -> int:
        """Scrolls through the page (lazy images), then checks every shown image decoded; returns how many images
        the page has. An image in a hidden element (a card the family filter hides) is left out: lazy, it is never
        fetched, which is what the browser should do, and hidden before it loaded it counts as incomplete."""
        self.page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        self.page.wait_for_load_state("networkidle")
        # each shown image decoded, waited for: "networkidle" can come before a lazy image's or a live swap's
        # load ends (the full suite failed here, on both databases, with an image that loads when tried alone);
        # one that never decodes (a 404, a broken file) still fails, named, after the deadline
        poll(
            lambda: self.page.evaluate(
                "Array.from(document.images).filter(i => i.offsetParent !== null)"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            ),
            lambda broken: broken == [],
            20,
            "every shown image to be decoded",
        )
        return self.page.evaluate("document.images.length")

    def close(self, shots: Path, name: str):
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        self.context.close()
        assert self.outside == [], self.outside
        assert self.errors == [], self.errors


def _path(key: str) -> str:
    model, rest = key.split("/", 1)
    layer, index = rest.split(":")
    return f"/n/{model}/{layer}/{index}"


def test_neuron_page(site, browser, shots, api):
    base, facts = site
    v = Visit(browser, base)
    page = v.go(_path("inceptionv1/mixed3b:350"))
    assert v.images_loaded() >= 4 + len(facts["neighbours"])
    kinds = page.eval_on_selector_all(".render", "els => els.map(e => e.classList[1])")
    assert {"feature_vis", "feature_vis_neg", "neuron_vis", "weights"} <= set(kinds)
    panel = page.locator("#panel-in-excite")
    for key in facts["neighbours"]:  # the rendered inputs are cards with their pictures
        card = panel.locator(f'.card:has(a[href="{_path(key)}"])')
        assert card.locator("img").count() == 1, key
    assert panel.locator(".card svg.kernel").count() == panel.locator(".card").count() > 0
    assert page.locator("#panel-in-inhibit").is_hidden()
    # keyboard: Tab to the first tab of the inputs, arrow right selects "inhibitory"
    page.locator("#tab-in-excite").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#tab-in-inhibit").get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-in-inhibit"
    assert page.locator("#panel-in-inhibit").is_visible() and page.locator("#panel-in-excite").is_hidden()
    page.keyboard.press("ArrowLeft")
    assert page.locator("#panel-in-excite").is_visible()
    assert page.locator(".banner").is_visible()  # random weights
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, width  # the BibTeX block wraps
    v.close(shots, "neuron")


def test_layer_page(site, browser, shots):
    base, _ = site
    v = Visit(browser, base)
    page = v.go("/n/inceptionv1/mixed3b")
    assert page.locator("#units .card").count() == 480
    assert page.locator("#units .card img").count() >= 3
    assert page.locator("#units img[loading=lazy]").count() == page.locator("#units img").count()
    assert "units rendered" in page.locator(".share").inner_text()
    page.locator("#family").focus()
    page.select_option("#family", "browser_family")  # the page's script filters the cards on the change event
    playwright.expect(page.locator("#units .card:visible")).to_have_count(2)
    assert "family=browser_family" in page.url
    v.images_loaded()
    v.close(shots, "layer")


def _diagram_counts(page) -> dict:
    return page.evaluate(
        """() => { const s = document.querySelector('svg.diagram');
        const units = Array.from(s.querySelectorAll('.units .unit'));
        return { edges: s.querySelectorAll('.edges .edge').length, units: units.length,
                 pictures: units.map(u => u.querySelectorAll('image, rect.ph').length),
                 images: s.querySelectorAll('.units image').length }; }"""
    )


def test_explore_page(site, browser, shots, api):
    base, _ = site
    q = f'{{ subgraph(roots: ["{ROOT}"], depth: 3, perNode: 5) {{ nodes {{ key }} edges {{ weight }} }} }}'
    sub = gql(api, q)["data"]["subgraph"]
    v = Visit(browser, base)
    page = v.go(f"/explore?roots={ROOT}&depth=3&perNode=5&direction=UPSTREAM")
    counts = _diagram_counts(page)
    assert counts["edges"] == len(sub["edges"]) and counts["units"] == len(sub["nodes"])
    assert set(counts["pictures"]) == {1} and counts["images"] >= 5
    page.locator(".edges .edge").first.focus()  # keyboard: the weight and kernel appear
    assert page.locator("svg.diagram .tip").get_attribute("visibility") == "visible"
    assert page.locator("svg.diagram .tip rect").count() == 1 + 25  # its background and a 5x5 kernel
    width = page.evaluate("document.querySelector('svg.diagram').getBoundingClientRect().width")
    assert width >= 900  # readable: not squeezed
    v.images_loaded()
    v.close(shots, "explore")


def test_circuit_pages(site, browser, shots, api):
    base, facts = site
    number = facts["circuit"].split(":")[1]
    v = Visit(browser, base)
    page = v.go("/circuits")
    assert page.locator(f'a[href="/circuits/{number}"]').count() == 1
    page = v.go(f"/circuits/{number}")
    counts = _diagram_counts(page)
    assert counts["edges"] == len(facts["neighbours"]) and counts["units"] == len(facts["neighbours"]) + 1
    assert set(counts["pictures"]) == {1} and counts["images"] == counts["units"]
    assert page.locator(".checks tbody tr").count() == len(facts["neighbours"])
    v.images_loaded()
    v.close(shots, "circuit")


def test_claim_page(site, browser, shots):
    base, facts = site
    v = Visit(browser, base)
    page = v.go("/c/" + facts["family"].split(":")[1])
    body = page.locator(".body")
    assert body.locator("strong").count() == 1 and body.locator("code").count() == 1
    assert body.locator('a[href="/n/inceptionv1/mixed3a?family=curves"]').count() == 1
    assert "<a href" not in body.inner_text()
    assert page.locator(".card img").count() == 2  # both subjects are rendered
    v.images_loaded()
    v.close(shots, "claim")
    v = Visit(browser, base)
    v.go("/")
    v.go("/n/inceptionv1")
    v.go("/search?q=browser")
    assert v.page.locator(".card").count() >= 1
    v.close(shots, "search")


def test_graphiql_starts_with_nothing_from_other_hosts(site, browser, shots):
    base, _ = site
    v = Visit(browser, base)
    requests: list[str] = []
    v.page.on("request", lambda r: requests.append(r.url))
    page = v.go("/graphql")
    page.wait_for_selector(".graphiql-container .graphiql-query-editor .CodeMirror", timeout=20000)
    editor = page.locator(".graphiql-query-editor .CodeMirror")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("{ models { key } ")
    page.keyboard.press("Control+Enter")
    # a locator, not wait_for_function: the page's CSP (no 'unsafe-eval') refuses the string predicate it evals
    page.locator(".result-window").get_by_text("inceptionv1").first.wait_for(timeout=20000)
    assert requests and all(urlsplit(u).netloc == v.host for u in requests), requests
    v.close(shots, "graphiql")


def test_static_files_ship_with_the_package():
    from kb.web.templating import STATIC

    for name in (
        "kb.css",
        "kb.js",
        "vendor/graphiql-3.8.3/graphiql.min.js",
        "vendor/graphiql-3.8.3/LICENSE",
        "vendor/react-18.3.1/LICENSE",
        "vendor/react-dom-18.3.1/LICENSE",
    ):
        assert (STATIC / name).is_file(), name
