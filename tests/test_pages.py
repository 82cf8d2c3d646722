"""The pages behind the stable URLs: every neuron's /n/... and every claim's /c/..., plain HTML."""

import re
from html.parser import HTMLParser

from conftest import as_user, gql

BASE = "https://kb.example.org"
CREATE = """mutation($input: ClaimInput!) { createClaim(input: $input) { key revision } }"""
UPDATE = """mutation($key: String!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: 1, patch: $patch, message: "sharper") { revision } }"""
REVIEW = """mutation($key: String!) { reviewClaim(key: $key, verdict: SUPPORT, comment: "checked the weights") {
    verdict } }"""
TOP_INPUT = """query($k: String!) { neuron(key: $k) {
    inputs(first: 1, orderBy: WEIGHT, sign: POSITIVE) { edges { node { key } } } } }"""
CIRCUIT = "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }"
RENDER = "mutation($n: [String!]!) { requestRender(kind: FEATURE_VIS, neurons: $n) { id status } }"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.text = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Links:
    p = _Links()
    p.feed(html)
    return p


def local(url: str) -> str:
    return url[len(BASE) :] if url.startswith(BASE) else url


def test_the_neuron_url_the_api_gives_is_a_page_whose_links_are_pages(api, accounts):
    label = "car detector <script>alert(1)</script>"
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {
            "input": {
                "label": label,
                "kind": "FEATURE",
                "subjects": ["InceptionV1 4c:447"],
                "body": "wheels & windows",
                "evidence": [{"kind": "CITATION", "doi": "10.23915/distill.00024.006"}],
            }
        },
    )["data"]["createClaim"]
    url = gql(api, '{ neuron(key: "InceptionV1 4c:447") { url } }')["data"]["neuron"]["url"]
    assert url == f"{BASE}/n/inceptionv1/mixed4c/447"
    r = api.get(local(url))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text  # claim text is escaped
    page = parse(r.text)
    text = " ".join(page.text)
    assert "inceptionv1/mixed4c:447" in text and "inceptionv1@" in text  # the key and the pinned key
    assert "Inputs" in text and "excitatory" in text and "@misc{" in text  # connections and a BibTeX entry
    neighbours = [local(a) for a in page.links if "/n/inceptionv1/mixed4b/" in a]
    assert len(neighbours) >= 10
    mine = f"/c/{made['key'].split(':')[1]}"
    assert mine in [a for a in page.links if a.startswith("/c/")]  # other tests may have claims here too
    for link in [*neighbours[:3], mine]:  # the links are pages too
        assert api.get(link).status_code == 200, link


def test_claim_pages_show_each_revision(api, accounts):
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": "curve detector", "kind": "FEATURE", "subjects": ["InceptionV1 3b:379"]}},
    )["data"]["createClaim"]
    as_user(api, accounts["editor"]["token"], UPDATE, {"key": made["key"], "patch": {"label": "curve detector (r2)"}})
    as_user(api, accounts["editor2"]["token"], REVIEW, {"key": made["key"]})
    number = made["key"].split(":")[1]
    current = api.get(f"/c/{number}")
    assert current.status_code == 200 and "curve detector (r2)" in current.text
    assert "checked the weights" in current.text and "sharper" in current.text
    links = parse(current.text).links
    assert f"/c/{number}/1" in links and "/n/inceptionv1/mixed3b/379" in links
    first = api.get(f"/c/{number}/1")
    assert first.status_code == 200 and re.search(r"<h1>curve detector</h1>", first.text)
    assert "what changed (label)" in current.text and "<del>curve detector</del>" in current.text  # the diff
    assert "an earlier revision" in first.text
    missing = api.get(f"/c/{number}/999")
    assert missing.status_code == 404 and "revisions 1..2" in missing.text


def test_unknown_keys_are_404_pages_that_say_why(api):
    r = api.get("/n/inceptionv1/mixed4c/99999")
    assert r.status_code == 404 and "512 units" in r.text and "inceptionv1/mixed4c:511" in r.text
    assert api.get("/n/nosuchmodel/mixed4c/1").status_code == 404
    assert api.get("/n/inceptionv1@000000000000/mixed4c/1").status_code == 404  # pinned to other weights
    assert api.get("/c/999999").status_code == 404
    assert api.get("/c/abc").status_code == 404


def test_browse_from_the_models_to_a_unit(api, accounts):
    home = parse(api.get("/").text)
    assert "/n/inceptionv1" in home.links
    model = api.get("/n/inceptionv1")
    layers = [a for a in parse(model.text).links if a.startswith("/n/inceptionv1/")]
    assert model.status_code == 200 and len(layers) == 12 and "/n/inceptionv1/mixed4c" in layers
    pin = gql(api, '{ model(key: "inceptionv1") { shortHash } }')["data"]["model"]["shortHash"]
    assert api.get(f"/n/inceptionv1@{pin}").status_code == 200
    assert api.get("/n/inceptionv1@000000000000").status_code == 404
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": "layer-page claim", "kind": "FEATURE", "subjects": ["InceptionV1 4c:3"]}},
    )["data"]["createClaim"]
    for path in ("/n/inceptionv1/mixed4c", "/n/inceptionv1/4c"):  # the papers' layer name works too
        layer = api.get(path)
        links = parse(layer.text).links
        assert (
            layer.status_code == 200
            and "/n/inceptionv1/mixed4c/511" in links
            and len([a for a in links if a.startswith("/n/inceptionv1/mixed4c/")]) == 512
        )
        assert f"/c/{made['key'].split(':')[1]}" in links
    unit = parse(api.get("/n/inceptionv1/mixed4c/3").text).links
    assert "/n/inceptionv1/mixed4c" in unit and "/n/inceptionv1" in unit  # and back up
    assert api.get("/n/inceptionv1/nosuchlayer").status_code == 404
    assert api.get("/n/nosuchmodel").status_code == 404


NEURON_PAGE_STATEMENTS = 3  # the cards' claims, the cards' renders, the circuits with this unit


def test_the_neuron_page_costs_a_few_statements(api, engine):
    """Cards (pictures, claim chips) of 72 neighbours, kernels, renders, claims, circuits: batched, not per card."""
    from conftest import sql_statements

    api.get("/n/inceptionv1/mixed4c/9")  # warm the catalog and the kernel cache's programs
    with sql_statements(engine) as statements:
        r = api.get("/n/inceptionv1/mixed4c/10")
    assert r.status_code == 200 and r.text.count('class="card') >= 60 and r.text.count('<svg class="kernel"') >= 30
    assert len(statements) <= NEURON_PAGE_STATEMENTS, statements


def _as_graphql(page) -> dict:
    """kb.app.neuron_page's NeuronPage in the shape of the NEURON query's data (camelCase, lists as connections)."""

    def vis(v, with_size):
        artifact = {
            "url": v.artifact.url,
            **({"width": v.artifact.width, "height": v.artifact.height} if with_size else {}),
        }
        return {"kind": v.kind, "params": v.params, "artifact": artifact}

    def card(c):
        chips = [{"key": x.key, "label": x.label, "status": x.status, "kind": x.kind} for x in c.claims]
        return {"key": c.key, "visualizations": [vis(v, False) for v in c.visualizations], "claims": chips}

    def listed(ns, kernels):
        edges = [
            {
                "weight": e.weight,
                "magnitude": e.magnitude,
                "method": e.method,
                **({"kernel": e.kernel} if kernels else {}),
                "node": card(e.node),
            }
            for e in ns.edges
        ]
        assert all((e.kernel is not None) == kernels for e in ns.edges)
        return {"totalCount": ns.total_count, "edges": edges}

    claims = [
        {
            "key": c.key,
            "label": c.label,
            "kind": c.kind,
            "status": c.status,
            "revision": c.revision,
            "supportCount": c.support_count,
            "disputeCount": c.dispute_count,
        }
        for c in page.claims
    ]
    m = page.model
    return {
        "neuron": {
            "key": page.key,
            "pinnedKey": page.pinned_key,
            "index": page.index,
            "layer": {"key": page.layer.key, "name": page.layer.name, "units": page.layer.units},
            "model": {
                "key": m.key,
                "source": m.source,
                "shortHash": m.short_hash,
                "weights": m.weights,
                "weightsAreRandom": m.weights_are_random,
            },
            "inExcite": listed(page.in_excite, True),
            "inInhibit": listed(page.in_inhibit, True),
            "inStrong": listed(page.in_strong, True),
            "outExcite": listed(page.out_excite, False),
            "outInhibit": listed(page.out_inhibit, False),
            "outStrong": listed(page.out_strong, False),
            "claims": claims,
            "visualizations": [vis(v, True) for v in page.visualizations],
            "citation": {"text": page.citation.text, "bibtex": page.citation.bibtex},
        },
        "circuits": {"edges": [{"node": {"key": c.key, "name": c.name}} for c in page.circuits]},
    }


def test_the_neuron_page_reads_what_the_api_answers(api, accounts, engine):
    """The page's use case (kb.app.neuron_page) reads without GraphQL's executor; its data must be the API's answer
    to the page's query, to the value, so that the page and the API cannot drift: here with a family claim and its
    review, a circuit and renders, on the unit and on the card of its strongest input."""
    from front_renders import picture
    from stores import store_for

    from kb.app.neuron_page import neuron_page
    from kb.render import images, jobs
    from kb.web.pages import NEURON

    unit = "inceptionv1/mixed4c:447"
    top = gql(api, TOP_INPUT, {"k": unit})["data"]["neuron"]["inputs"]["edges"][0]["node"]["key"]
    token = accounts["editor"]["token"]
    claim = {"label": "curve detector", "kind": "FAMILY", "subjects": [unit, top]}
    key = as_user(api, token, CREATE, {"input": claim})["data"]["createClaim"]["key"]
    as_user(api, accounts["admin"]["token"], REVIEW, {"key": key})
    made = as_user(api, token, CIRCUIT, {"i": {"name": "curves", "edges": [{"source": top, "target": unit}]}})
    assert "errors" not in made, made
    asked = as_user(api, token, RENDER, {"n": [unit, top]})["data"]["requestRender"]
    for job in asked:  # land what is not done yet (an earlier module may have rendered these units already)
        if job["status"] == "QUEUED":
            data = images.png(picture(int(job["id"]), 128))
            artifact = {"sha256": store_for(engine).put(data, ".png"), "content_type": "image/png"}
            artifact.update(bytes=len(data), width=128, height=128, kind="FEATURE_VIS", params={}, versions={}, meta={})
            with engine.begin() as conn:
                assert jobs.start(conn, [int(job["id"])], "test", 60)
            with engine.begin() as conn:
                jobs.finish(conn, int(job["id"]), artifact)

    graphs, public_url = api.app.state.graphs, api.app.state.pages.context_factory().settings.public_url
    for text in ("InceptionV1 4c:447", top, "/n/inceptionv1/conv2d0/3", "inceptionv1/mixed5b:1"):
        expected = gql(api, NEURON, {"k": text})
        assert "errors" not in expected, expected
        assert _as_graphql(neuron_page(graphs.engine, graphs, public_url, text)) == expected["data"], text
    page = neuron_page(graphs.engine, graphs, public_url, unit)
    card = page.in_excite.edges[0].node
    assert card.key == top and card.visualizations and [c.key for c in card.claims][-1] == key
    assert page.visualizations and page.claims[-1].key == key and page.claims[-1].support_count >= 1
    assert page.circuits[0].name == "curves" and page.in_excite.edges[0].kernel


def test_random_weights_are_flagged_on_every_page(api):
    assert gql(api, '{ model(key: "inceptionv1") { weightsAreRandom } }')["data"]["model"]["weightsAreRandom"]
    for path in (
        "/n/inceptionv1",
        "/n/inceptionv1/mixed4c",
        "/n/inceptionv1/mixed4c/447",
        "/explore?roots=InceptionV1 4c:447",
    ):
        r = api.get(path)
        assert r.status_code == 200 and "these features mean nothing" in r.text, path


def test_claim_bodies_are_sanitised_markdown(api, accounts):
    body = (
        "Like the <a href='#group_mixed3a_curves'>curves</a> and <a href='https://en.wikipedia.org/wiki/Complex_cell'>"
        "complex cells</a>, see <code>3b:0</code>.<br>**bold** [x](javascript:alert(1)) <script>alert(1)</script>"
        " <img src=https://evil.example/x.png onerror=alert(1)> ![pic](https://evil.example/y.png)"
    )
    made = as_user(
        api,
        accounts["editor"]["token"],
        CREATE,
        {"input": {"label": "markdown", "kind": "FAMILY", "subjects": ["InceptionV1 3b:1"], "body": body}},
    )["data"]["createClaim"]
    html = api.get(f"/c/{made['key'].split(':')[1]}").text
    main = html[html.index('<div class="body">') : html.index("</div>", html.index('<div class="body">'))]
    assert '<a href="/n/inceptionv1/mixed3a?family=curves">curves</a>' in main
    assert '<a href="https://en.wikipedia.org/wiki/Complex_cell">complex cells</a>' in main
    assert "<code>3b:0</code>" in main and "<strong>bold</strong>" in main
    assert "<script" not in main and "<img" not in main and 'href="javascript' not in main
    assert 'src="https://evil' not in main  # a Markdown image is at most a link: pictures come from this server
    links = parse(html).links
    assert "/n/inceptionv1/mixed3b/1" in links  # the subject as a unit card


def test_circuits_have_pages_and_a_connection(api, accounts):
    made = as_user(
        api,
        accounts["editor"]["token"],
        """mutation($i: CircuitInput!) { createCircuit(input: $i) { key url } }""",
        {
            "i": {
                "name": "pages circuit <b>",
                "edges": [
                    {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447", "note": "wheels"},
                    {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:447", "note": "windows"},
                ],
            }
        },
    )["data"]["createCircuit"]
    number = made["key"].split(":")[1]
    assert made["url"] == f"{BASE}/circuits/{number}"
    listed = gql(
        api, '{ circuits(neuron: "InceptionV1 4b:373", model: "inceptionv1") { totalCount edges { node { key } } } }'
    )
    keys = [e["node"]["key"] for e in listed["data"]["circuits"]["edges"]]
    assert made["key"] == keys[0]  # newest first
    assert (
        gql(api, '{ circuits(neuron: "InceptionV1 conv2d0:63") { totalCount } }')["data"]["circuits"]["totalCount"] == 0
    )
    bad = gql(api, '{ circuits(model: "nosuchmodel") { totalCount } }')["errors"][0]
    assert bad["extensions"]["code"] in ("NOT_FOUND", "BAD_KEY")
    page = api.get(local(made["url"]))
    assert page.status_code == 200 and "pages circuit &lt;b&gt;" in page.text
    assert page.text.count('class="edge pos"') + page.text.count('class="edge neg"') == 2
    svg = page.text[
        page.text.index('<svg class="diagram"') : page.text.index("</svg>", page.text.index('<svg class="diagram"'))
    ]
    assert svg.count('<a class="unit"') == 3 and svg.count('<g class="edge ') == 2  # one picture a unit, a mark an edge
    assert "wheels" in page.text and " of " in page.text  # the note and the rank
    assert f"/circuits/{number}" in parse(api.get("/circuits").text).links
    assert f"/circuits/{number}" in parse(api.get("/circuits?neuron=InceptionV1 4c:447").text).links
    assert api.get("/circuits/999999").status_code == 404


def test_explore_draws_the_subgraph(api):
    q = '{ subgraph(roots: ["InceptionV1 4c:447"], depth: 3, perNode: 5) { nodes { key } edges { weight } } }'
    sub = gql(api, q)["data"]["subgraph"]
    r = api.get("/explore?roots=InceptionV1 4c:447&depth=3&perNode=5")
    assert r.status_code == 200
    assert r.text.count('<g class="edge ') == len(sub["edges"]) and r.text.count('<a class="unit"') == len(sub["nodes"])
    assert r.text.count("data-kernel=") == len(sub["edges"])
    assert api.get("/explore?roots=InceptionV1 4c:447&depth=99").status_code == 400
    assert api.get("/explore?roots=nosuch/x:1").status_code == 404
    assert api.get("/explore").status_code == 200  # the form


def test_graphiql_and_static_files_are_served_here(api):
    html = api.get("/graphql", headers={"accept": "text/html"}).text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith("/static/") for s in srcs), srcs
    for s in srcs:
        r = api.get(s)
        assert r.status_code == 200 and len(r.content) > 20, s
    assert "<script>" not in html  # no inline script (a strict CSP comes later)
    for path in ("/", "/n/inceptionv1/mixed4c/447", "/n/inceptionv1/mixed4c", "/circuits"):
        assert not re.search(r"<script(?![^>]*\bsrc=)", api.get(path).text), path
    assert api.post("/graphql", json={"query": "{ models { key } }"}).json()["data"]["models"]
