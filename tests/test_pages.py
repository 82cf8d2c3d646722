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
    assert "Strongest excitatory inputs" in text and "@misc{" in text  # connections and a BibTeX entry
    neighbours = [local(a) for a in page.links if "/n/inceptionv1/mixed4b/" in a]
    assert len(neighbours) >= 10
    mine = f"/c/{made['key'].split(':')[1]}"
    assert mine in [a for a in page.links if a.startswith("/c/")]  # other tests may have claims here too
    for link in neighbours[:3] + [mine]:  # the links are pages too
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
