"""The GraphQL API on the imported InceptionV1 (seeded random weights): neighbors, keys, Relay, circuits."""

import base64
import math

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import gql, sql_statements

README_QUERY = """
{ neuron(key: "InceptionV1 4c:447") { key pinnedKey
    inputs(first: 5, orderBy: WEIGHT) { edges { weight magnitude node { key } } } } }
"""


def top_inputs_sql(engine, key_layer: str, index: int, n: int, order: str = "weight DESC"):
    sql = f"""
        SELECT sl.key, s."index", c.weight, c.magnitude FROM connection c
        JOIN neuron t ON t.id = c.target_id JOIN layer tl ON tl.id = t.layer_id
        JOIN neuron s ON s.id = c.source_id JOIN layer sl ON sl.id = s.layer_id
        JOIN model m ON m.id = t.model_id
        WHERE m.key = 'inceptionv1' AND tl.key = :layer AND t."index" = :index
        ORDER BY c.{order}, s."index" LIMIT :n"""
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), {"layer": key_layer, "index": index, "n": n}).all()


def test_readme_example(api, engine):
    data = gql(api, README_QUERY)["data"]["neuron"]
    assert data["key"] == "inceptionv1/mixed4c:447"
    assert data["pinnedKey"].startswith("inceptionv1@") and data["pinnedKey"].endswith("/mixed4c:447")
    edges = data["inputs"]["edges"]
    expected = top_inputs_sql(engine, "mixed4c", 447, 5)
    assert [e["node"]["key"] for e in edges] == [f"inceptionv1/{layer}:{i}" for layer, i, _, _ in expected]
    assert [e["weight"] for e in edges] == pytest.approx([w for _, _, w, _ in expected])
    assert [e["magnitude"] for e in edges] == pytest.approx([g for _, _, _, g in expected])


def test_sign_and_order(api, engine):
    q = """query($o: NeighborOrder!, $s: Sign!) { neuron(key: "inceptionv1/mixed4c:447") {
             inputs(first: 20, orderBy: $o, sign: $s) { totalCount edges { weight magnitude } } } }"""
    neg = gql(api, q, {"o": "WEIGHT", "s": "NEGATIVE"})["data"]["neuron"]["inputs"]
    weights = [e["weight"] for e in neg["edges"]]
    assert all(w < 0 for w in weights) and weights == sorted(weights)
    assert weights[0] == pytest.approx(top_inputs_sql(engine, "mixed4c", 447, 1, "weight ASC")[0][2])
    pos = gql(api, q, {"o": "WEIGHT", "s": "POSITIVE"})["data"]["neuron"]["inputs"]
    assert pos["totalCount"] + neg["totalCount"] <= 512
    assert all(e["weight"] > 0 for e in pos["edges"])
    mag = gql(api, q, {"o": "MAGNITUDE", "s": "ANY"})["data"]["neuron"]["inputs"]
    mags = [e["magnitude"] for e in mag["edges"]]
    assert mags == sorted(mags, reverse=True) and mag["totalCount"] == 512


def test_outputs_and_kernels(api):
    q = """{ neuron(key: "InceptionV1 4c:447") { outputs(first: 3) { edges { weight magnitude method kernel
              node { key } } } inputs(first: 2) { edges { weight magnitude kernel } } } }"""
    n = gql(api, q)["data"]["neuron"]
    for e in n["outputs"]["edges"] + n["inputs"]["edges"]:
        k = np.array(e["kernel"])
        assert k.ndim == 2
        assert k.sum() == pytest.approx(e["weight"], rel=1e-4, abs=1e-6)
        assert math.sqrt((k**2).sum()) == pytest.approx(e["magnitude"], rel=1e-4)
    assert all(e["node"]["key"].startswith("inceptionv1/mixed4d:") for e in n["outputs"]["edges"])
    assert n["outputs"]["edges"][0]["method"] == "expanded"


def test_pagination(api):
    q = """query($after: String, $first: Int) { neuron(key: "inceptionv1/mixed4c:447") {
             inputs(first: $first, after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor }
             edges { cursor node { key } } } } }"""
    six = gql(api, q, {"first": 6})["data"]["neuron"]["inputs"]
    page1 = gql(api, q, {"first": 3})["data"]["neuron"]["inputs"]
    page2 = gql(api, q, {"first": 3, "after": page1["pageInfo"]["endCursor"]})["data"]["neuron"]["inputs"]
    assert [e["node"]["key"] for e in page1["edges"] + page2["edges"]] == [e["node"]["key"] for e in six["edges"]]
    assert page2["pageInfo"]["hasPreviousPage"] and page2["pageInfo"]["hasNextPage"] and page2["totalCount"] == 512
    last = gql(api, q, {"first": 100, "after": base64.b64encode(b"o:500").decode()})["data"]["neuron"]["inputs"]
    assert len(last["edges"]) == 11 and not last["pageInfo"]["hasNextPage"]
    err = gql(api, q, {"first": 101})["errors"][0]
    assert err["extensions"]["code"] == "LIMIT_EXCEEDED"
    err = gql(api, q, {"first": 3, "after": "not-a-cursor"})["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT"


@pytest.mark.parametrize(
    "form",
    [
        "InceptionV1 4c:447",
        "inceptionv1/mixed4c:447",
        "models/inceptionv1/mixed4c_0/447",
        "https://microscope.openai.com/models/inceptionv1/mixed4c_0/447",
        "INCEPTIONV1/4c:447",
        "n/inceptionv1/mixed4c/447",
    ],
)
def test_every_form_resolves(api, form):
    data = gql(api, "query($k: String!) { neuron(key: $k) { key } }", {"k": form})
    assert data["data"]["neuron"]["key"] == "inceptionv1/mixed4c:447"


def test_pinned_keys_and_neurons_list(api):
    pinned = gql(api, README_QUERY)["data"]["neuron"]["pinnedKey"]
    keys = [pinned, "mixed4b:373", "4b:237"]
    data = gql(api, 'query($k: [String!]!) { neurons(keys: $k, model: "inceptionv1") { key } }', {"k": keys})
    assert [n["key"] for n in data["data"]["neurons"]] == [
        "inceptionv1/mixed4c:447",
        "inceptionv1/mixed4b:373",
        "inceptionv1/mixed4b:237",
    ]
    wrong = "inceptionv1@ffffffffffff/mixed4c:447"
    err = gql(api, "query($k: String!) { neuron(key: $k) { key } }", {"k": wrong})["errors"][0]
    assert err["extensions"]["code"] == "BAD_KEY" and "not the model version" in err["message"]


def test_unknown_and_malformed_keys(api):
    q = "query($k: String!) { neuron(key: $k) { key } }"
    r = gql(api, q, {"k": "InceptionV1 4x:447"})
    assert r["data"] is None
    err = r["errors"][0]
    assert err["extensions"]["code"] == "NOT_FOUND" and err["extensions"]["suggestion"].startswith("inceptionv1/mixed4")
    assert err["path"] == ["neuron"]
    err = gql(api, q, {"k": "inceptionv1/mixed4c:9999"})["errors"][0]
    assert err["extensions"]["code"] == "NOT_FOUND" and "512 units" in err["message"]
    err = gql(api, q, {"k": "this is not a key"})["errors"][0]
    assert err["extensions"]["code"] == "BAD_KEY"
    err = gql(api, q, {"k": "nomodel/mixed4c:1"})["errors"][0]
    assert err["extensions"]["code"] == "NOT_FOUND"


def test_relay_nodes(api):
    data = gql(api, """{ neuron(key: "InceptionV1 4c:447") { id layer { id units } model { id key } } }""")["data"]
    n = data["neuron"]
    r = gql(api, "query($id: ID!) { node(id: $id) { __typename id ... on Neuron { key index } } }", {"id": n["id"]})
    assert r["data"]["node"] == {"__typename": "Neuron", "id": n["id"], "key": "inceptionv1/mixed4c:447", "index": 447}
    r = gql(
        api,
        "query($ids: [ID!]!) { nodes(ids: $ids) { __typename ... on Layer { key } ... on Model { key } } }",
        {"ids": [n["layer"]["id"], n["model"]["id"]]},
    )
    assert r["data"]["nodes"] == [
        {"__typename": "Layer", "key": "inceptionv1/mixed4c"},
        {"__typename": "Model", "key": "inceptionv1"},
    ]


def test_models_and_layers(api):
    data = gql(
        api,
        """{ models { key shortHash removed layers { name units } }
        model(key: "inceptionv1") { inputShape source }
        layer(key: "InceptionV1 4c") { key units modulePath kind aliases outputShape
            neurons(first: 2, after: "bzow") { totalCount edges { node { key url } } } } }""",
    )["data"]
    model = next(m for m in data["models"] if m["key"] == "inceptionv1")
    assert len(model["layers"]) == 12 and sum(layer["units"] for layer in model["layers"]) == 5804
    assert data["model"] == {"inputShape": [3, 224, 224], "source": "lucent:inceptionv1"}
    layer = data["layer"]
    assert layer["key"] == "inceptionv1/mixed4c" and layer["units"] == 512 and layer["modulePath"] == "mixed4c"
    assert layer["aliases"] == ["4c"] and layer["outputShape"] == [512, 14, 14]
    assert layer["neurons"]["totalCount"] == 512
    assert [e["node"]["key"] for e in layer["neurons"]["edges"]] == ["inceptionv1/mixed4c:1", "inceptionv1/mixed4c:2"]
    assert layer["neurons"]["edges"][0]["node"]["url"] == "https://kb.example.org/n/inceptionv1/mixed4c/1"


def test_subgraph(api, engine):
    q = """query($d: Int!, $p: Int!, $dir: Direction!) { subgraph(roots: ["InceptionV1 4c:447"], direction: $dir,
             depth: $d, perNode: $p) { nodes { key } edges { source { key } target { key } weight } } }"""
    sub = gql(api, q, {"d": 2, "p": 3, "dir": "UPSTREAM"})["data"]["subgraph"]
    keys = [n["key"] for n in sub["nodes"]]
    assert keys[0] == "inceptionv1/mixed4c:447" and len(keys) <= 1 + 3 + 9 and len(set(keys)) == len(keys)
    first_hop = [e for e in sub["edges"] if e["target"]["key"] == keys[0]]
    top3 = top_inputs_sql(engine, "mixed4c", 447, 3)
    assert [e["source"]["key"] for e in first_hop] == [f"inceptionv1/{layer}:{i}" for layer, i, _, _ in top3]
    assert all(e["source"]["key"] in keys and e["target"]["key"] in keys for e in sub["edges"])
    assert len(sub["edges"]) == 3 + 9
    both = gql(api, q, {"d": 1, "p": 2, "dir": "BOTH"})["data"]["subgraph"]
    layers = {n["key"].split(":")[0] for n in both["nodes"]}
    assert layers == {"inceptionv1/mixed4b", "inceptionv1/mixed4c", "inceptionv1/mixed4d"}
    for bad, code in (
        ({"d": 5, "p": 3}, "LIMIT_EXCEEDED"),
        ({"d": 2, "p": 21}, "LIMIT_EXCEEDED"),
        ({"d": 0, "p": 3}, "BAD_INPUT"),
    ):
        err = gql(api, q, {**bad, "dir": "UPSTREAM"})["errors"][0]
        assert err["extensions"]["code"] == code


def test_path_is_the_strongest_chain(api):
    graph = api.app.state.graphs.graph("inceptionv1")
    a, b = graph.ordinal("mixed3b", 10), graph.ordinal("mixed4b", 20)
    r = gql(
        api,
        """{ path(from: "InceptionV1 4b:20", to: "inceptionv1/mixed3b:10") { score
        nodes { key } edges { source { key } target { key } weight } } }""",
    )["data"]["path"]
    assert [n["key"] for n in r["nodes"]][::2] == ["inceptionv1/mixed3b:10", "inceptionv1/mixed4b:20"]
    # brute force over the middle layer: the best product of positive weights a -> m -> b
    out = graph.outputs
    w_am = {int(out.other[p]): float(out.weight[p]) for p in range(out.indptr[a], out.indptr[a + 1])}
    inp = graph.inputs
    w_mb = {int(inp.other[p]): float(inp.weight[p]) for p in range(inp.indptr[b], inp.indptr[b + 1])}
    best = max(w_am[m] * w_mb[m] for m in w_am if w_am[m] > 0 and w_mb.get(m, 0) > 0)
    assert r["score"] == pytest.approx(best, rel=1e-5)
    assert r["edges"][0]["weight"] * r["edges"][1]["weight"] == pytest.approx(best, rel=1e-5)
    assert r["edges"][0]["target"] == r["edges"][1]["source"]
    err = gql(api, '{ path(from: "InceptionV1 4b:20", to: "InceptionV1 4b:21") { score } }')["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT"


def test_no_n_plus_one(api, engine):
    """100 neurons, their top-10 inputs and each input's layer: a bounded number of SQL statements."""
    keys = [f"inceptionv1/mixed4c:{i}" for i in range(100)]
    q = """query($k: [String!]!) { neurons(keys: $k) { key layer { key modulePath }
             inputs(first: 10) { edges { weight node { key layer { key modulePath kind } } } } } }"""
    gql(api, q, {"k": keys[:1]})  # warm the catalog
    with sql_statements(engine) as statements:
        data = gql(api, q, {"k": keys})["data"]["neurons"]
    assert len(data) == 100 and all(len(n["inputs"]["edges"]) == 10 for n in data)
    assert len(statements) <= 2, statements


def test_compiled_plans_answer_like_strawberry(api):
    endpoint = api.app.state.graphql
    queries = [
        (README_QUERY, {}),
        (
            """query Q($k: String!, $n: Int) { neuron(key: $k) { id key index url pinnedKey
              model { key shortHash } layer { key units name }
              a: inputs(first: $n, orderBy: MAGNITUDE) { totalCount pageInfo { endCursor hasNextPage }
                 edges { cursor weight magnitude method kernel node { key __typename } } }
              outputs(first: 2, sign: NEGATIVE) { edges { weight node { ...N } } } } }
           fragment N on Neuron { key index }""",
            {"k": "InceptionV1 3a:7", "n": 4},
        ),
        ("""{ models { key layers { key units } } }""", {}),
    ]
    for query, variables in queries:
        endpoint.plans.clear()  # whatever earlier tests sent: this document is new again
        before = endpoint.fast
        first = gql(api, query, variables)  # strawberry's path (the plan is compiled for the next request)
        assert endpoint.fast == before, query
        second = gql(api, query, variables)
        assert endpoint.fast == before + 1, query
        assert first == second and "errors" not in first
    # an error on a compiled document goes through strawberry again, with its code
    err = gql(api, queries[1][0], {"k": "inceptionv1/mixed9z:1", "n": 1})["errors"][0]
    assert err["extensions"]["code"] == "NOT_FOUND"


def test_small_plans_answer_on_the_loop_and_move_to_a_thread_when_they_need_the_database(api):
    """A cheap compiled query runs on the event loop; where it would touch the database (a stale catalog, a link
    program not yet read) it is run again on a worker thread, with the same answer."""
    endpoint, graphs = api.app.state.graphql, api.app.state.graphs
    q = """query($k: String!) { neuron(key: $k) { key inputs(first: 3) { edges { weight kernel node { key } } } } }"""
    variables = {"k": "InceptionV1 3a:7"}
    endpoint.plans.clear()
    expected = gql(api, q, variables)  # strawberry's path; the plan is compiled for the next request
    graphs._programs.clear()
    graphs._kernels.clear()
    fast, inline = endpoint.fast, endpoint.inline
    assert gql(api, q, variables) == expected  # the kernels need the link program: read on a thread
    assert (endpoint.fast, endpoint.inline) == (fast + 1, inline)
    assert gql(api, q, variables) == expected  # everything in memory now: answered on the loop
    assert (endpoint.fast, endpoint.inline) == (fast + 2, inline + 1)
    graphs._catalog_at = 0.0  # the catalog is stale: its refresh reads the database
    assert gql(api, q, variables) == expected
    assert (endpoint.fast, endpoint.inline) == (fast + 3, inline + 1)
    assert gql(api, q, variables) == expected
    assert (endpoint.fast, endpoint.inline) == (fast + 4, inline + 2)


def test_no_connection_leaves_the_pool_under_no_io(engine):
    from kb.db.io_guard import NeedsIO, no_io

    before = engine.pool.checkedout()
    with no_io(), pytest.raises(NeedsIO):
        engine.connect()
    assert engine.pool.checkedout() == before
    with engine.connect() as conn:  # outside the guard, as before
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
