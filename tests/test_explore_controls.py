"""/explore's sign and ranking controls (issue 24 item 7): inhibitory edges, either sign, and edges ranked by
their kernel's magnitude are drawn exactly as the API's subgraph(sign:, orderBy:) gives them, the form keeps the
choice (in the selection form's post too), and a value the API does not know is the form again with a message."""

import html
import re

import pytest
from conftest import gql
from test_circuit_forms import ORIGIN, app, person  # noqa: F401

ROOT = "InceptionV1 4c:447"
SUB = """query($s: Sign!, $o: NeighborOrder!) { subgraph(roots: ["InceptionV1 4c:447"], depth: 2, perNode: 4,
  sign: $s, orderBy: $o) { nodes { key } edges { source { key } target { key } weight magnitude } } }"""


def _drawn(text: str) -> set[tuple[str, str]]:
    return {
        (html.unescape(s), html.unescape(t))
        for s, t in re.findall(r'data-source="([^"]+)" data-target="([^"]+)"', text)
    }


def _selected(text: str, name: str) -> str:
    select = text[text.index(f'<select name="{name}"') :]
    return re.search(r'<option value="(\w+)" selected>', select[: select.index("</select>")])[1]


@pytest.mark.parametrize(
    "sign, order", [("POSITIVE", "WEIGHT"), ("NEGATIVE", "WEIGHT"), ("ANY", "MAGNITUDE"), ("NEGATIVE", "MAGNITUDE")]
)
def test_the_diagram_follows_the_sign_and_ranking_chosen(api, sign, order):
    sub = gql(api, SUB, {"s": sign, "o": order})["data"]["subgraph"]
    page = api.get(f"/explore?roots={ROOT}&depth=2&perNode=4&sign={sign}&orderBy={order}")
    assert page.status_code == 200
    assert _drawn(page.text) == {(e["source"]["key"], e["target"]["key"]) for e in sub["edges"]}
    assert page.text.count('<a class="unit"') == len(sub["nodes"])
    negative = sum(e["weight"] < 0 for e in sub["edges"])
    assert page.text.count('class="edge neg"') == negative
    if sign == "NEGATIVE":
        assert negative == len(sub["edges"]) > 0  # inhibitory edges only, all drawn blue
    if sign == "ANY" and order == "MAGNITUDE":
        assert 0 < negative < len(sub["edges"])  # the strongest kernels of either sign
    assert _selected(page.text, "sign") == sign and _selected(page.text, "orderBy") == order
    said = {"POSITIVE": "most excitatory", "NEGATIVE": "most inhibitory", "ANY": "strongest"}[sign]
    how = "kernel magnitude" if order == "MAGNITUDE" else "weight"
    assert f"Each unit's 4 {said} inputs by {how}" in html.unescape(page.text)


def test_by_default_the_form_follows_excitatory_edges_by_weight(api):
    page = api.get(f"/explore?roots={ROOT}&depth=2&perNode=4")
    assert _selected(page.text, "sign") == "POSITIVE" and _selected(page.text, "orderBy") == "WEIGHT"
    assert 'class="edge neg"' not in page.text and 'class="edge pos"' in page.text


def test_an_unknown_sign_or_ranking_is_the_form_again_with_a_message(api):
    for query in ("sign=SIDEWAYS", "orderBy=COLOUR"):
        page = api.get(f"/explore?roots={ROOT}&depth=2&perNode=4&{query}")
        assert page.status_code == 400 and '<form class="explore"' in page.text
        assert "POSITIVE, NEGATIVE or ANY; ranked by WEIGHT or MAGNITUDE" in page.text
        assert '<svg class="diagram"' not in page.text


def test_the_selection_form_keeps_the_sign_and_ranking(app, engine):  # noqa: F811
    client, _, csrf = person(app, engine)
    page = client.get(f"/explore?roots={ROOT}&depth=1&perNode=3&sign=NEGATIVE&orderBy=MAGNITUDE").text
    assert '<input type="hidden" name="sign" value="NEGATIVE">' in page
    assert '<input type="hidden" name="orderBy" value="MAGNITUDE">' in page
    back = {"roots": ROOT, "direction": "UPSTREAM", "depth": "1", "perNode": "3", "sign": "NEGATIVE"}
    back["orderBy"] = "MAGNITUDE"
    refused = client.post("/explore/circuit", data={**back, "csrf": csrf, "action": "save"}, headers=ORIGIN)
    assert refused.status_code == 400 and "select units or edges first" in refused.text
    assert _drawn(refused.text) == _drawn(page) and 'class="edge pos"' not in refused.text  # the same diagram
    assert _selected(refused.text, "sign") == "NEGATIVE" and _selected(refused.text, "orderBy") == "MAGNITUDE"
