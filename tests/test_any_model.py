"""Any vision model (issue 26): five small torchvision and timm models the zoo never declared, imported with seeded
random weights at their own input size; sampled units of the database checked against autograd through the real
modules (tests/jacobian.py), and a neighbour query served from each by GraphQL. Then claims and a circuit on one
of them (keys with module paths: resnet18/layer3.1:7)."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import as_user, gql
from jacobian import jacobian

from kb.app.model_import import import_model
from kb.graph import zoo
from kb.graph.weights import reload
from kb.settings import get_settings

MODELS = {
    "resnet18": "torchvision:resnet18",
    "mobilenet_v3_small": "torchvision:mobilenet_v3_small",
    "squeezenet1_1": "torchvision:squeezenet1_1",
    "shufflenet_v2_x0_5": "torchvision:shufflenet_v2_x0_5",
    "resnet10t": "timm:resnet10t",
}
INPUTS = """query($key: String!) { neuron(key: $key) { key layer { key }
    inputs(first: 3, orderBy: WEIGHT) { edges { weight magnitude method node { key } } } } }"""


@pytest.fixture(scope="module")
def imported(engine):
    reports = {}
    for key, source in MODELS.items():
        reports[key] = import_model(
            engine, source, key=key, weights="random", seed=0, graphs_dir=get_settings().graphs_dir
        )
    return reports


@pytest.fixture(scope="module")
def client(engine, imported):
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, public_url="https://kb.example.org"), engine=engine, warm=False)
    app.state.graphs.warm()
    with TestClient(app) as c:
        yield c


def _inputs(engine, model: str, layer: str, unit: int) -> tuple[str, dict[int, tuple[float, float]]]:
    """The source layer of a target unit's inputs, and (weight, magnitude) per source unit, from the database."""
    sql = """
        SELECT sl.key, s."index", c.weight, c.magnitude
        FROM connection c
        JOIN neuron t ON t.id = c.target_id JOIN layer tl ON tl.id = t.layer_id
        JOIN neuron s ON s.id = c.source_id JOIN layer sl ON sl.id = s.layer_id
        JOIN model m ON m.id = tl.model_id
        WHERE m.key = :model AND tl.key = :layer AND t."index" = :unit"""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), {"model": model, "layer": layer, "unit": unit}).all()
    assert rows, (model, layer, unit)
    assert len({r[0] for r in rows}) == 1  # one source layer: the previous significant one
    return rows[0][0], {r[1]: (r[2], r[3]) for r in rows}


@pytest.mark.parametrize("key", list(MODELS))
def test_sampled_units_equal_autograd(engine, imported, key):
    """weight = sum(K), magnitude = |K|: K is the Jacobian of the target at the centre, through the linearised model
    (the stored rows, not the link programs that made them)."""
    report = imported[key]
    assert report.edges > 100_000 and report.layers >= 8
    arch = zoo.get(MODELS[key])
    model = reload(arch, report.weights)
    layers = [s.name for s in arch.layers]
    channels, size = arch.input_shape[0], arch.input_shape[1]
    for target_layer in (layers[1], layers[len(layers) // 2], layers[-1]):  # the first link, one inside, the last
        source_layer, stored = _inputs(engine, key, target_layer, 3)
        assert channels == 3
        grad, _ = jacobian(model, arch.layer(source_layer).module, arch.layer(target_layer).module, 3, size)
        g = grad.numpy().reshape(grad.shape[0], -1)
        assert len(stored) == g.shape[0]
        weight = np.array([stored[i][0] for i in range(g.shape[0])])
        magnitude = np.array([stored[i][1] for i in range(g.shape[0])])
        scale = np.abs(g).sum(axis=1).max()
        np.testing.assert_allclose(weight, g.sum(axis=1), atol=2e-4 * scale, rtol=0)
        np.testing.assert_allclose(magnitude, np.linalg.norm(g, axis=1), atol=2e-4 * scale, rtol=0)


@pytest.mark.parametrize("key", list(MODELS))
def test_neighbour_query_from_each(client, imported, key):
    arch = zoo.get(MODELS[key])
    layer = arch.layers[len(arch.layers) // 2].name  # a module path: layer3.0, features.6, stage3.3...
    data = gql(client, INPUTS, {"key": f"{key}/{layer}:3"})
    assert "errors" not in data, data
    neuron = data["data"]["neuron"]
    assert neuron["key"] == f"{key}/{layer}:3" and neuron["layer"]["key"] == f"{key}/{layer}"
    edges = neuron["inputs"]["edges"]
    assert len(edges) == 3
    assert [e["weight"] for e in edges] == sorted((e["weight"] for e in edges), reverse=True)
    previous = arch.layers[len(arch.layers) // 2 - 1].name
    assert all(e["node"]["key"].startswith(f"{key}/{previous}:") for e in edges)
    page = client.get(f"/n/{key}/{layer}/3")
    assert page.status_code == 200 and f"{key}/{layer}:3" in page.text


CIRCUIT = """mutation($edges: [CircuitEdgeInput!]!) { createCircuit(input: { name: "resnet18 test", edges: $edges }) {
    key check { allExist edges { source weight rank } } } }"""
CLAIM = """mutation($circuit: String!, $s: [String!]!) { createClaim(input: { label: "a layer3.1 unit",
    kind: CIRCUIT, circuit: $circuit, subjects: $s, body: "two inputs",
    evidence: [{ kind: FEATURE_VISUALIZATION, neuron: "resnet18/layer3.1:7" }] }) { key revision } }"""
FAMILY = """mutation($s: [String!]!) { createClaim(input: { label: "stripes at layer3.1", kind: FAMILY, subjects: $s,
    body: "a family of units" }) { key } }"""
SEARCH = """{ searchClaims(text: "stripes", layer: "resnet18 layer3.1", kind: FAMILY) {
    totalCount edges { node { key label } } } }"""
ABOUT = """query($key: String!) { neuron(key: $key) { key claims { key label } citation { key } } }"""


def test_claims_and_circuits_on_module_path_keys(client, imported, accounts):
    """Claim and circuit mutations take keys with module paths, in any accepted form, and check them against
    the weights."""
    token = accounts["editor"]["token"]
    top = gql(client, INPUTS, {"key": "resnet18/layer3.1:7"})["data"]["neuron"]["inputs"]["edges"]
    sources = [e["node"]["key"] for e in top[:2]]
    assert all(s.startswith("resnet18/layer3.0:") for s in sources)
    edges = [{"source": sources[0], "target": "resnet18/layer3.1:7", "note": "strongest"}]
    edges.append({"source": sources[1].replace("layer3.0", "layer3_0"), "target": "resnet18 layer3.1:7"})
    circuit = as_user(client, token, CIRCUIT, {"edges": edges})["data"]["createCircuit"]
    assert circuit["check"]["allExist"]
    assert [e["rank"] for e in circuit["check"]["edges"]] == [1, 2]
    assert circuit["check"]["edges"][0]["weight"] == pytest.approx(top[0]["weight"])
    claim = as_user(client, token, CLAIM, {"circuit": circuit["key"], "s": ["resnet18/layer3.1:7"]})
    assert "errors" not in claim, claim
    about = gql(client, ABOUT, {"key": "resnet18/layer3_1:7"})["data"]["neuron"]
    assert about["key"] == "resnet18/layer3.1:7"
    assert [c["label"] for c in about["claims"]] == ["a layer3.1 unit"]
    family = as_user(
        client, token, FAMILY, {"s": ["resnet18/layer3.1:1", "resnet18/layer3_1:2", "resnet18 layer3.1:5"]}
    )
    assert "errors" not in family, family
    found = gql(client, SEARCH)["data"]["searchClaims"]
    assert found["totalCount"] == 1 and found["edges"][0]["node"]["label"] == "stripes at layer3.1"


@pytest.mark.parametrize("key, layers", [("resnet18", ("layer3.1", "layer3.1.conv2")), ("resnet10t", ("layer2.0",))])
def test_a_unit_of_an_imported_model_renders(imported, key, layers):
    """The worker's path (kb.render.pictures): the architecture from the model's source, its prepared model (BatchNorm
    folded, channels-last), and lucent's objective at the layer's module path; a layer a --layers import chose is
    found by its path too (layer3.1.conv2 is not a default layer)."""
    from kb.render.feature_vis import render_units
    from kb.render.model_cache import cached_model

    report = imported[key]
    arch, model = cached_model(MODELS[key], report.weights, report.sha256, "cpu")
    for layer in layers:
        images = render_units(model, arch.layer(layer).module, [7, 8], size=32, steps=2, upsample=0)
        assert [i.shape for i in images] == [(32, 32, 3)] * 2
        assert not np.array_equal(images[0], images[1])
