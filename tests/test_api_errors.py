"""Refusals: limits, malformed requests and masked internal errors, each with its code and never a 500."""

import json

import pytest
from conftest import gql


def test_depth_limit(api):
    deep = '{ neuron(key: "InceptionV1 4c:447") { ' + "layer { model { layers { " * 4 + "key" + " } } }" * 4 + " } }"
    err = gql(api, deep)["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and "depth" in err["message"]


def test_alias_limit(api):
    fields = " ".join(f"a{i}: models {{ key }}" for i in range(31))
    err = gql(api, "{ " + fields + " }")["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and "aliases" in err["message"]


def test_token_limit(api):
    fields = " ".join("models { key }" for _ in range(600))
    err = gql(api, "{ " + fields + " }")["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and "tokens" in err["message"]


def test_keys_per_request_limit(api):
    err = gql(
        api,
        "query($k: [String!]!) { neurons(keys: $k) { key } }",
        {"k": [f"inceptionv1/mixed4c:{i}" for i in range(101)]},
    )["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    "query", ["{ neuron(key: ", "{ nosuchfield }", "{ neuron { key } }", "query($k: Int!) { neuron(key: $k) { key } }"]
)
def test_invalid_documents_are_bad_input(api, query):
    r = api.post("/graphql", json={"query": query})
    assert r.status_code in (200, 400)
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


def test_wrong_variable_type(api):
    r = api.post("/graphql", json={"query": "query($k: String!) { neuron(key: $k) { key } }", "variables": {"k": 5}})
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


@pytest.mark.parametrize("body", [b"not json", b"5", b'\xff\xfe{"query": 1}', b"[]", b'{"query": 5}', b"null"])
def test_malformed_bodies_are_4xx(api, body):
    r = api.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text)


def test_oversized_body_is_refused(api):
    r = api.post("/graphql", content=b" " * (1 << 20) + b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"


def test_internal_errors_are_masked(api, monkeypatch):
    graphs = api.app.state.graphs

    def broken(key):
        raise RuntimeError("psycopg failed at /secret/path: SELECT password FROM users")

    monkeypatch.setattr(graphs, "graph", broken)
    r = api.post("/graphql", json={"query": '{ neuron(key: "inceptionv1/mixed4c:1") { key } }'})
    assert r.status_code == 200
    text = r.text
    assert "secret" not in text and "SELECT" not in text and "Traceback" not in text
    err = json.loads(text)["errors"][0]
    assert err["message"] == "internal error" and err["extensions"]["code"] == "INTERNAL"


def test_every_error_has_a_code(api):
    for query in [
        '{ neuron(key: "x") { key } }',
        '{ layer(key: "inceptionv1/nolayer") { key } }',
        '{ model(key: "nomodel") { key } }',
        '{ path(from: "x", to: "y") { score } }',
        "{ subgraph(roots: []) { nodes { key } } }",
    ]:
        errors = gql(api, query).get("errors")
        assert errors, f"{query} must fail"
        for err in errors:
            assert err["extensions"]["code"] in {"NOT_FOUND", "BAD_KEY", "BAD_INPUT"}, (query, err)


def test_health(api):
    r = api.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["models"] >= 1


def test_graphiql_in_a_browser(api):
    r = api.get("/graphql", headers={"accept": "text/html"})
    assert r.status_code == 200 and "graphiql" in r.text.lower()
