"""Unknown keys cost no more than known ones.

A key the catalog does not know makes it read again once in its lifetime (another process may have imported a
model); after that, unknown keys are answered from the catalog in memory, and remembered (kb.serving.graph_cache's
negative cache). On the compiled path an unknown key's error is answered by the plan itself, so the resolvers
do not run a second time through strawberry. Cost is counted work: catalog reads and SQL statements.
"""

from __future__ import annotations

import secrets

import pytest
from conftest import sql_statements

from kb.serving import graph_cache

N = 1000
NEURON = "query($k: String!) { neuron(key: $k) { key } }"
LAYER = "query($k: String!) { layer(key: $k) { key } }"
MODEL = "query($k: String!) { model(key: $k) { key } }"


def known(i: int) -> tuple[str, str]:
    return [(NEURON, f"inceptionv1/mixed4c:{i % 512}"), (LAYER, "InceptionV1 4c"), (MODEL, "inceptionv1")][i % 3]


def unknown(i: int) -> tuple[str, str]:
    """Every one different: no model, no layer, no such unit, not a key; layers and models too."""
    return [
        (NEURON, f"nomodel{i}/mixed4c:1"),
        (NEURON, f"inceptionv1/nolayer{i}:1"),
        (NEURON, f"inceptionv1/mixed4c:{100000 + i}"),
        (NEURON, f"not a key {i}"),
        (LAYER, f"inceptionv1/nolayer{i}"),
        (MODEL, f"nomodel{i}"),
    ][i % 6]


@pytest.fixture(scope="module")
def client(engine, inceptionv1):
    """An app of its own, with no query rate limit (2,000 requests) and a catalog that lives as long as the test."""
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    app = create_app(
        Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            public_url="https://kb.example.org",
            query_rate_limit="",
        ),
        engine=engine,
        warm=False,
    )
    app.state.graphs.catalog_ttl = 3600.0
    app.state.graphs.warm()
    with TestClient(app) as c:
        yield c


@pytest.fixture
def catalog_reads(monkeypatch):
    """How many times a GraphCache read the catalog (a list, one item a read)."""
    reads: list[int] = []
    load = graph_cache.load_catalog

    def counted(conn):
        reads.append(1)
        return load(conn)

    monkeypatch.setattr(graph_cache, "load_catalog", counted)
    return reads


def expire(graphs) -> None:
    """The catalog's lifetime ends, as when catalog_ttl has passed: the next look-up reads it."""
    graphs._catalog_at = float("-inf")


def ask(client, query: str, key: str) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": {"k": key}})
    assert response.status_code == 200, response.text
    return response.json()


def cost(client, engine, reads: list[int], requests: list[tuple[str, str]]) -> tuple[dict, list[dict]]:
    """What the requests cost, from the same start: a catalog whose lifetime has ended (catalog_ttl passed)."""
    graphs, endpoint = client.app.state.graphs, client.app.state.graphql
    expire(graphs)
    before, fast = len(reads), endpoint.fast
    with sql_statements(engine) as statements:
        answers = [ask(client, query, key) for query, key in requests]
    spent = {"catalog reads": len(reads) - before, "statements": len(statements), "plans": endpoint.fast - fast}
    return spent, answers


def test_a_thousand_unknown_keys_cost_no_more_than_a_thousand_known(client, engine, catalog_reads):
    for query in (NEURON, LAYER, MODEL):  # each document's plan is compiled on its first request
        ask(client, query, known({NEURON: 0, LAYER: 1, MODEL: 2}[query])[1])
    known_cost, answers = cost(client, engine, catalog_reads, [known(i) for i in range(N)])
    assert all("errors" not in a for a in answers)
    unknown_cost, answers = cost(client, engine, catalog_reads, [unknown(i) for i in range(N)])
    codes = {a["errors"][0]["extensions"]["code"] for a in answers}
    assert codes == {"NOT_FOUND", "BAD_KEY"} and all(a["data"] is None for a in answers)

    assert unknown_cost["catalog reads"] <= known_cost["catalog reads"], (unknown_cost, known_cost)
    assert unknown_cost["statements"] <= known_cost["statements"], (unknown_cost, known_cost)
    # every request answered by its plan: no second run through strawberry for an unknown key
    assert unknown_cost["plans"] == known_cost["plans"] == N, (unknown_cost, known_cost)


def test_the_negative_cache_lasts_as_long_as_the_catalog(client, engine, catalog_reads, tiny_arch):
    from kb.app.model_import import import_model

    graphs = client.app.state.graphs
    key = f"tiny-{secrets.token_hex(3)}"
    expire(graphs)
    assert ask(client, NEURON, f"{key}/c1:0")["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    reads = len(catalog_reads)
    import_model(engine, "test:tiny", key=key, weights="random")  # as another process would
    for _ in range(3):  # the catalog was read for the last unknown key: it is not read again in its lifetime
        assert ask(client, NEURON, f"{key}/c1:0")["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert ask(client, MODEL, key)["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert len(catalog_reads) == reads
    expire(graphs)  # its lifetime ends: the next catalog knows the model
    assert ask(client, NEURON, f"{key}/c1:0")["data"] == {"neuron": {"key": f"{key}/c1:0"}}
    assert ask(client, MODEL, key)["data"] == {"model": {"key": key}}
    assert len(catalog_reads) == reads + 1


def test_a_key_unknown_to_a_catalog_not_yet_checked_makes_it_read_once(client, catalog_reads, tiny_arch, engine):
    """The first unknown key in a catalog's lifetime reads it again: a model another process imported shows."""
    from kb.app.model_import import import_model

    graphs = client.app.state.graphs
    key = f"tiny-{secrets.token_hex(3)}"
    expire(graphs)
    assert ask(client, MODEL, "inceptionv1")["data"] == {"model": {"key": "inceptionv1"}}  # a fresh catalog
    import_model(engine, "test:tiny", key=key, weights="random")
    reads = len(catalog_reads)
    assert ask(client, NEURON, f"{key}/c1:0")["data"] == {"neuron": {"key": f"{key}/c1:0"}}
    assert ask(client, NEURON, f"nothing-{key}/c1:0")["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert len(catalog_reads) == reads + 1
