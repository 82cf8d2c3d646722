"""Limits linear in the document, the cost budget, introspection, and one error mapping (fuzzed)."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import gql, sql_statements
from graphql import get_introspection_query, parse

from kb.schema.limits import MAX_IDS


def _doubling(n: int) -> str:
    """n fragments, each spreading the previous one twice: 2^n fields once expanded, ~40 bytes a level."""
    return f'{{ neuron(key: "InceptionV1 4c:1") {{ ...F{n} }} }} fragment F0 on Neuron {{ key }} ' + " ".join(
        f"fragment F{i} on Neuron {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, n + 1)
    )


@pytest.mark.parametrize("levels", [21, 60, 190])
def test_fragment_doubling_is_refused_at_once(api, levels, monkeypatch):
    """Refused by the limits' walk, before any resolver runs (2^190 fields would never end otherwise). How soon,
    against parsing the same document, is bench/limits_walk.py's figure (bench/attacks.py's over HTTP)."""
    calls: list[str] = []
    graphs = api.app.state.graphs
    real = graphs.graph
    monkeypatch.setattr(graphs, "graph", lambda key: calls.append(key) or real(key))
    err = gql(api, _doubling(levels))["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED", err
    assert calls == []


def test_fragments_within_the_limits_are_collected_once(api):
    """12 doubling levels (4,096 fields expanded) are allowed: both executors collect each fragment once."""
    endpoint = api.app.state.graphql
    query = _doubling(12)
    first = gql(api, query)
    assert first["data"] == {"neuron": {"key": "inceptionv1/mixed4c:1"}}, first
    before = endpoint.fast
    second = gql(api, query)  # the compiled plan of the same document
    assert second["data"] == first["data"] and endpoint.fast == before + 1


@pytest.mark.parametrize("levels", [21, 60, 99])
def test_limits_walk_is_linear(levels, monkeypatch):
    """Each fragment's selections are walked once: 99 levels (2^99 fields expanded; 100 fragments are the most a
    document may define) take about 99 walks, where expanding them would never end. Counted, not timed: the
    time is bench/limits_walk.py's."""
    from kb.schema import limits

    walks = [0]
    real = limits._Walker.shape

    def counted(self, selection_set, introspection):
        walks[0] += 1
        return real(self, selection_set, introspection)

    monkeypatch.setattr(limits._Walker, "shape", counted)
    analysis = limits.analyse(parse(_doubling(levels)))
    assert {e.extensions["code"] for e in analysis.errors} == {"LIMIT_EXCEEDED"}
    assert walks[0] <= levels + 5, walks[0]


def test_cost_budget_refuses_before_resolvers_run(api, monkeypatch):
    calls = []
    graphs = api.app.state.graphs
    real = graphs.graph
    monkeypatch.setattr(graphs, "graph", lambda key: calls.append(key) or real(key))
    deep = (
        '{ neuron(key:"InceptionV1 4c:447") { inputs(first:100){edges{node{ inputs(first:100){edges{node{ '
        "inputs(first:100){edges{weight}}}}}}}}}}"
    )
    body = gql(api, deep)
    err = body["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and "budget" in err["message"], err
    assert err["extensions"]["cost"] > err["extensions"]["budget"]
    assert f"{err['extensions']['budget']:,}" in err["message"]
    assert body.get("data") is None and calls == []  # no resolver ran


def test_two_apps_in_one_process_each_enforce_their_own_budget(api, engine):
    """Each app builds its schema with its own settings: an app built after another (with another budget) changes
    neither the first app's budget nor its refusals, on strawberry's path and the compiled plan's alike."""
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    url = str(engine.url.render_as_string(hide_password=False))
    q = '{ neuron(key: "InceptionV1 4c:447") { key inputs(first: 20) { edges { weight node { key } } } } }'
    small = create_app(Settings(database_url=url, query_cost_budget=30), engine=engine, warm=False)
    large = create_app(Settings(database_url=url, query_cost_budget=90_000), engine=engine, warm=False)
    assert small.state.graphql.limits.budget == 30 and large.state.graphql.limits.budget == 90_000
    with TestClient(small) as s, TestClient(large) as big:
        for _ in range(2):  # strawberry's path, then the compiled plan
            refused = gql(s, q)
            assert refused["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED", refused
            assert refused["errors"][0]["extensions"]["budget"] == 30, refused
            answered = gql(big, q)
            assert "errors" not in answered and answered["extensions"]["cost"]["budget"] == 90_000, answered
            default = gql(api, q)  # the session's app, built before both: the default budget still
            assert "errors" not in default and default["extensions"]["cost"]["budget"] == 50_000, default


@pytest.mark.parametrize(
    "query",
    [
        " ".join(f'p{i}: path(from: "InceptionV1 4b:373", to: "InceptionV1 4c:447") {{ score }}' for i in range(30)),
        " ".join(
            f'a{i}: subgraph(roots: ["InceptionV1 4c:447"], depth: 4, perNode: 12) {{ edges {{ kernel }} }}'
            for i in range(30)
        ),
    ],
)
def test_aliased_expensive_fields_are_refused(api, query):
    err = gql(api, "{ " + query + " }")["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and "budget" in err["message"], err


def test_cost_is_reported_in_extensions(api):
    q = "query($k: String!) { neuron(key: $k) { key inputs(first: 5) { edges { weight node { key } } } } }"
    for _ in range(2):  # strawberry's path, then the compiled plan
        body = gql(api, q, {"k": "InceptionV1 4c:447"})
        cost = body["extensions"]["cost"]
        assert 5 < cost["estimated"] <= cost["budget"], body


def test_page_and_readme_queries_fit_the_budget(api):
    from kb.web import pages

    schema = api.app.state.graphql.limits
    readme = [
        '{ neuron(key: "InceptionV1 4c:447") { key pinnedKey url '
        "inputs(first: 5, orderBy: WEIGHT) { edges { weight magnitude method kernel node { key } } } } }",
        '{ subgraph(roots: ["InceptionV1 4c:447"], direction: UPSTREAM, depth: 2, perNode: 3) { '
        "nodes { key } edges { source { key } target { key } weight } } }",
        '{ path(from: "InceptionV1 4b:373", to: "InceptionV1 4c:447") { score edges { source { key } '
        "target { key } weight } } }",
        '{ neuron(key: "InceptionV1 4c:447") { citation { key url bibtex } claims { key label status } } }',
        '{ claimRevision(key: "claim:114@2") { label author { name } citation { text bibtex } } }',
        '{ searchClaims(text: "curve detector", layer: "InceptionV1 3b", kind: FAMILY) { totalCount '
        "edges { node { key label } } } }",
        "{ renderJobs(ids: [1, 2]) { status progress attempts error artifact { url } } }",
        '{ neuron(key: "InceptionV1 4c:447") { visualizations { kind params artifact { url } } } }',
    ]
    page_queries = [pages.NEURON, pages.CLAIM, pages.HOME, pages.NEWEST_WORK, pages.MODEL, pages.LAYER]
    for q in readme + page_queries:
        analysis = schema.analysis(q, parse(q))
        assert not analysis.errors, (q, analysis.errors)
        cost = schema.cost(analysis, None, {"k": "x", "r": 1})
        assert isinstance(cost, int) and cost <= schema.budget, (q, cost)


def test_nodes_takes_at_most_100_ids_in_one_statement_per_type(api, engine):
    ids = [base64.b64encode(f"Claim:{i}".encode()).decode() for i in range(1, 61)]
    ids += [base64.b64encode(f"Circuit:{i}".encode()).decode() for i in range(1, 31)]
    q = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }"
    with sql_statements(engine) as seen:
        body = gql(api, q, {"ids": ids})
    assert "errors" not in body and len(body["data"]["nodes"]) == 90
    assert len([s for s in seen if "FROM claim" in s or "FROM circuit" in s]) == 2, seen
    err = gql(api, q, {"ids": ids + ids[: MAX_IDS - 89]})["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED" and str(MAX_IDS) in err["message"]


def test_standard_introspection_is_answered(api):
    body = gql(api, get_introspection_query(descriptions=True))
    assert "errors" not in body, body["errors"]
    names = {t["name"] for t in body["data"]["__schema"]["types"]}
    assert {"Neuron", "Claim", "Query", "Mutation"} <= names


def test_introspection_is_not_exempt_from_size_limits(api):
    nested = "fields { type { " * 40 + "name" + " } }" * 40
    err = gql(api, "{ __schema { types { " + nested + " } } }")["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED", err


def test_enum_errors_list_the_allowed_values(api):
    err = gql(api, "{ claims(status: ACCEPTED) { totalCount } }")["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT"
    assert "PROPOSED" in err["message"] and "RETRACTED" in err["message"], err
    err = gql(api, "query($s: ClaimStatus) { claims(status: $s) { totalCount } }", {"s": "ACCEPTED"})["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT" and "PROPOSED" in err["message"], err


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query($id: ID!) { node(id: $id) { id } }", {"id": base64.b64encode(b"Claim:abc").decode()}),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": base64.b64encode(b"User:1").decode()}),
        ('{ claim(key: "claim:99999999999999999999") { key } }', None),
        ('{ claim(key: "claim:\u00b9") { key } }', None),
        ('{ circuit(key: "circuit:\u00b2") { key } }', None),
        ('{ claims(after: "bzo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5") { totalCount } }', None),
        ("query($t: String!) { searchClaims(text: $t) { totalCount } }", {"t": "a\x00b"}),
        ('{ searchClaims(text: "a\\u0000b") { totalCount } }', None),
    ],
)
def test_malformed_input_has_a_code(api, query, variables):
    body = gql(api, query, variables)
    codes = {e["extensions"]["code"] for e in body["errors"]}
    assert codes <= {"BAD_INPUT", "BAD_KEY", "NOT_FOUND"}, body


def test_get_errors_are_json_with_a_code(api):
    for params in (
        {"query": "{ models { key } }", "variables": "{not json"},
        {"query": "{ models { key } }", "variables": "[1]"},
        {"query": 'mutation { reviewClaim(key: "claim:1", verdict: SUPPORT) { revision } }'},
        {"query": "{ nosuchfield }"},
    ):
        r = api.get("/graphql", params=params)
        assert r.headers["content-type"].startswith("application/json"), (params, r.text)
        assert r.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT", (params, r.text)


# --- fuzz: arbitrary text in every key, ID and cursor argument -------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TEXT_ARGUMENTS = [
    "query($v: String!) { neuron(key: $v) { key } }",
    "query($v: String!) { neuron(key: $v, model: $v) { key } }",
    "query($v: String!) { neurons(keys: [$v, $v]) { key } }",
    "query($v: String!) { layer(key: $v) { key } }",
    "query($v: String!) { model(key: $v) { key } }",
    "query($v: ID!) { node(id: $v) { id } }",
    "query($v: ID!) { nodes(ids: [$v]) { id } }",
    "query($v: String!) { subgraph(roots: [$v]) { nodes { key } } }",
    'query($v: String!) { path(from: $v, to: "InceptionV1 4c:447") { score } }',
    "query($v: String!) { claim(key: $v) { key } }",
    "query($v: String!) { claimRevision(key: $v) { key } }",
    "query($v: String!) { circuit(key: $v) { key } }",
    "query($v: String) { claims(after: $v) { totalCount } }",
    "query($v: String!) { claims(layer: $v) { totalCount } }",
    "query($v: String!) { claims(model: $v) { totalCount } }",
    "query($v: String!) { searchClaims(text: $v) { totalCount } }",
    'query($v: String!) { searchClaims(text: "curve", after: $v) { totalCount } }',
    "query($v: String!) { searchNeurons(text: $v) { totalCount } }",
    'query($v: String) { neuron(key: "InceptionV1 4c:447") { inputs(after: $v) { totalCount } } }',
    'query($v: String) { layer(key: "InceptionV1 4c") { neurons(after: $v) { totalCount } } }',
]

texts = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=20).map(lambda t: base64.b64encode(t.encode()).decode()),
    st.from_regex(r"(claim|circuit|o|Claim|Circuit|Neuron|Layer|Model):[0-9\u00b9\u0660-]{0,25}(@[0-9]{0,25})?"),
    st.from_regex(r"(inceptionv1|InceptionV1 )[/ ]?(mixed)?[0-9][a-e]?:-?[0-9]{1,22}"),
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=texts, method=st.sampled_from(["GET", "POST"]))
@pytest.mark.parametrize("query", TEXT_ARGUMENTS)
def test_fuzzed_arguments_are_never_internal(api, query, value, method):
    if method == "POST":
        r = api.post("/graphql", json={"query": query, "variables": {"v": value}})
    else:
        r = api.get("/graphql", params={"query": query, "variables": json.dumps({"v": value})})
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    for err in body.get("errors", []):
        assert err["extensions"]["code"] not in (None, "INTERNAL"), (query, value, err)


def test_an_enum_value_error_lists_the_values_of_the_schema_that_answers(api):
    """The values come from the schema the app serves (kb.schema.Schema.with_code), not from a module's global."""
    from graphql import GraphQLError

    from kb.schema.errors import with_code

    body = gql(api, '{ neuron(key: "InceptionV1 4c:447") { inputs(orderBy: HEAVIEST) { totalCount } } }')
    err = body["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT", err
    assert "NeighborOrder" in err["message"] and err["message"].endswith("Allowed values: WEIGHT, MAGNITUDE."), err
    bare = with_code(GraphQLError("Value 'HEAVIEST' does not exist in 'NeighborOrder' enum."))
    assert "Allowed values" not in bare.message  # no schema named: nothing to list
