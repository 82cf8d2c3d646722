"""Claims through the API: history that loses nothing, permissions, reviews, circuits, bad input."""

import pytest
from conftest import as_user, gql, sql_statements

CREATE = (
    """mutation($input: ClaimInput!) { createClaim(input: $input) { key revision status label author { name } } }"""
)
UPDATE = """mutation($key: String!, $rev: Int!, $patch: ClaimPatch!) {
    updateClaim(key: $key, expectedRevision: $rev, patch: $patch) { key revision label body } }"""
STATUS = """mutation($key: String!, $rev: Int!, $s: ClaimStatus!) {
    setClaimStatus(key: $key, expectedRevision: $rev, status: $s) { key revision status } }"""
REVIEW = """mutation($key: String!, $v: Verdict!, $c: String!) {
    reviewClaim(key: $key, verdict: $v, comment: $c) { verdict revision comment reviewer { name } } }"""

ROWS = (
    "SELECT (SELECT count(*) FROM claim), (SELECT count(*) FROM claim_revision), "
    "(SELECT count(*) FROM claim_subject), (SELECT count(*) FROM review), (SELECT count(*) FROM circuit)"
)


def rows(engine):
    with engine.connect() as conn:
        return tuple(conn.exec_driver_sql(ROWS).one())


def new_claim(api, token, label="car detector", **extra):
    data = as_user(
        api,
        token,
        CREATE,
        {"input": {"label": label, "kind": "FEATURE", "subjects": ["InceptionV1 4c:447"], "body": "cars", **extra}},
    )
    assert "errors" not in data, data
    return data["data"]["createClaim"]


@pytest.fixture(scope="module")
def second_model(api, engine, tiny_arch):
    """A second imported model (its own key), so that mixing two models' neurons in one claim is testable."""
    from kb.app.model_import import import_model

    import_model(engine, "test:tiny", key="tiny-mix", weights="random")
    api.app.state.graphs.catalog(refresh=True)
    ok = gql(api, '{ neuron(key: "tiny-mix/c1:0") { key } }')
    assert ok["data"]["neuron"]["key"] == "tiny-mix/c1:0", ok
    return "tiny-mix"


def test_history_loses_nothing(api, accounts):
    ed = accounts["editor"]["token"]
    c = new_claim(
        api,
        ed,
        evidence=[
            {"kind": "CITATION", "doi": "doi:10.23915/distill.00024.006"},
            {"kind": "FEATURE_VISUALIZATION", "neuron": "InceptionV1 4c:447", "note": "cars"},
        ],
    )
    assert c["revision"] == 1 and c["status"] == "PROPOSED"
    r2 = as_user(api, ed, UPDATE, {"key": c["key"], "rev": 1, "patch": {"label": "car detector v2"}})["data"]
    assert r2["updateClaim"]["revision"] == 2
    stale = as_user(api, ed, UPDATE, {"key": c["key"], "rev": 1, "patch": {"body": "lost?"}})["errors"][0]
    assert stale["extensions"] == {"code": "EDIT_CONFLICT", "currentRevision": 2}
    as_user(api, ed, UPDATE, {"key": c["key"], "rev": 2, "patch": {"body": "wheels and windows\n"}})
    retract = as_user(api, ed, STATUS, {"key": c["key"], "rev": 3, "s": "RETRACTED"})["data"]["setClaimStatus"]
    assert retract == {"key": c["key"], "revision": 4, "status": "RETRACTED"}
    data = gql(
        api,
        """query($k: String!) { claim(key: $k) { revision status
        revisions { key revision label body status author { name } evidence { kind doi neuron } }
        diff(from: 1, to: 3) { field before after patch } } }""",
        {"k": c["key"]},
    )["data"]["claim"]
    assert [r["revision"] for r in data["revisions"]] == [1, 2, 3, 4]
    assert data["revisions"][0]["label"] == "car detector" and data["revisions"][0]["body"] == "cars"
    assert data["revisions"][0]["evidence"][0] == {
        "kind": "CITATION",
        "doi": "10.23915/distill.00024.006",
        "neuron": None,
    }
    assert data["revisions"][1]["evidence"][1]["neuron"] == "inceptionv1/mixed4c:447"
    assert {d["field"] for d in data["diff"]} == {"label", "body"}
    assert "+wheels and windows" in next(d for d in data["diff"] if d["field"] == "body")["patch"]
    old = gql(
        api,
        "query($k: String!) { claimRevision(key: $k) { key label citation { key url bibtex } } }",
        {"k": c["key"] + "@1"},
    )["data"]["claimRevision"]
    assert old["label"] == "car detector" and old["citation"]["key"] == c["key"] + "@1"
    assert "@misc{claim_" in old["citation"]["bibtex"] and old["citation"]["url"].endswith(
        f"/c/{c['key'].split(':')[1]}/1"
    )


def test_permissions(api, accounts):
    ed, ed2, mod = accounts["editor"]["token"], accounts["editor2"]["token"], accounts["moderator"]["token"]
    c = new_claim(api, ed)
    err = as_user(api, ed2, UPDATE, {"key": c["key"], "rev": 1, "patch": {"label": "mine now"}})["errors"][0]
    assert err["extensions"]["code"] == "FORBIDDEN"
    ok = as_user(api, mod, UPDATE, {"key": c["key"], "rev": 1, "patch": {"label": "moderated"}})["data"]
    assert ok["updateClaim"]["revision"] == 2
    err = as_user(api, ed, STATUS, {"key": c["key"], "rev": 2, "s": "SUPPORTED"})["errors"][0]
    assert err["extensions"]["code"] == "FORBIDDEN"
    ok = as_user(api, mod, STATUS, {"key": c["key"], "rev": 2, "s": "SUPPORTED"})["data"]["setClaimStatus"]
    assert ok["status"] == "SUPPORTED"
    err = as_user(
        api,
        accounts["viewer"]["token"],
        CREATE,
        {"input": {"label": "x", "kind": "FEATURE", "subjects": ["InceptionV1 4c:1"]}},
    )
    assert err["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    editor = accounts["editor"]["token"]
    altered = editor[:-1] + ("1" if editor.endswith("0") else "0")  # one character off (a token may end in "0")
    for token in (None, "ckb_notavalidtoken", altered, "ckb_" + "A" * 32 + "_000000"):
        err = as_user(
            api, token, CREATE, {"input": {"label": "x", "kind": "FEATURE", "subjects": ["InceptionV1 4c:1"]}}
        )
        assert err["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", token


def test_revoked_token(api, engine):
    from kb.claims import accounts as acc

    with engine.begin() as conn:
        acc.create_user(conn, "revokee", "editor")
        token = acc.create_token(conn, "revokee")
    assert as_user(api, token, "{ me { name } }")["data"]["me"]["name"] == "revokee"
    with engine.begin() as conn:
        acc.revoke_token(conn, token[:12])
    err = as_user(api, token, "{ me { name } }")["errors"][0]
    assert err["extensions"]["code"] == "UNAUTHENTICATED" and "revoked" in err["message"]


def test_token_format_is_checked_without_the_database():
    from kb.claims import accounts as acc

    token = acc.new_token()
    assert token.startswith("ckb_") and acc.well_formed(token)
    typo = token[:10] + ("a" if token[10] != "a" else "b") + token[11:]
    assert not acc.well_formed(typo)
    assert not acc.well_formed(token[:-2])


def test_reviews_one_per_user_with_history(api, accounts):
    c = new_claim(api, accounts["editor"]["token"])
    for who, verdict in (("editor2", "DISPUTE"), ("moderator", "SUPPORT"), ("editor2", "SUPPORT")):
        data = as_user(api, accounts[who]["token"], REVIEW, {"key": c["key"], "v": verdict, "c": f"{who} says"})
        assert "errors" not in data, data
    assert data["data"]["reviewClaim"]["revision"] == 2
    claim = gql(
        api,
        """query($k: String!) { claim(key: $k) { supportCount disputeCount
        reviews { verdict reviewer { name } history { revision verdict } } } }""",
        {"k": c["key"]},
    )["data"]["claim"]
    assert claim["supportCount"] == 2 and claim["disputeCount"] == 0 and len(claim["reviews"]) == 2
    mine = next(r for r in claim["reviews"] if r["reviewer"]["name"] == accounts["editor2"]["name"])
    assert [h["verdict"] for h in mine["history"]] == ["DISPUTE", "SUPPORT"]


def test_circuit_check_against_the_weights(api, accounts):
    q = """mutation($input: CircuitInput!) { createCircuit(input: $input) { key model neurons { key }
            check { allExist edges { source target exists weight sign rank inputs } } } }"""
    data = as_user(
        api,
        accounts["editor"]["token"],
        q,
        {
            "input": {
                "name": "car",
                "edges": [
                    {"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447", "note": "wheels"},
                    {"source": "InceptionV1 4b:237", "target": "InceptionV1 4c:447", "note": "windows"},
                    {"source": "InceptionV1 4a:1", "target": "InceptionV1 4c:447", "note": "skips a layer"},
                ],
            }
        },
    )
    circuit = data["data"]["createCircuit"]
    assert circuit["model"] == "inceptionv1" and len(circuit["neurons"]) == 4
    graph = api.app.state.graphs.graph("inceptionv1")
    target = graph.ordinal("mixed4c", 447)
    ranked = [int(graph.inputs.other[p]) for p in graph.inputs.positions(target)]
    for edge, unit in zip(circuit["check"]["edges"][:2], (373, 237), strict=True):
        source = graph.ordinal("mixed4b", unit)
        assert edge["exists"] and edge["inputs"] == 512
        assert edge["rank"] == ranked.index(source) + 1
        assert edge["sign"] == ("POSITIVE" if edge["weight"] > 0 else "NEGATIVE")
    assert circuit["check"]["edges"][2]["exists"] is False and circuit["check"]["allExist"] is False
    claim = new_claim(api, accounts["editor"]["token"], label="car from wheels and windows", circuit=circuit["key"])
    got = gql(api, "query($k: String!) { claim(key: $k) { circuit { key check { allExist } } } }", {"k": claim["key"]})[
        "data"
    ]["claim"]
    assert got["circuit"]["key"] == circuit["key"]


@pytest.mark.parametrize("case", ["unknown neuron", "empty label", "bad evidence", "other model mix", "no subject"])
def test_bad_input_leaves_no_rows(api, accounts, engine, second_model, case):
    inputs = {
        "unknown neuron": (
            {"label": "x", "kind": "FEATURE", "subjects": ["InceptionV1 4c:447", "InceptionV1 9z:1"]},
            "NOT_FOUND",
        ),
        "empty label": ({"label": "   ", "kind": "FEATURE", "subjects": ["InceptionV1 4c:447"]}, "BAD_INPUT"),
        "bad evidence": (
            {
                "label": "x",
                "kind": "FEATURE",
                "subjects": ["InceptionV1 4c:447"],
                "evidence": [{"kind": "CITATION", "url": "javascript:alert(1)"}],
            },
            "BAD_INPUT",
        ),
        "other model mix": (
            {"label": "x", "kind": "FEATURE", "subjects": ["InceptionV1 4c:447", "tiny-mix/c1:0"]},
            "BAD_INPUT",
        ),
        "no subject": ({"label": "x", "kind": "FEATURE", "subjects": []}, "BAD_INPUT"),
    }
    payload, code = inputs[case]
    before = rows(engine)
    err = as_user(api, accounts["editor"]["token"], CREATE, {"input": payload})["errors"][0]
    assert err["extensions"]["code"] == code, err
    assert rows(engine) == before


def test_two_megabyte_body_and_stale_edit_leave_no_rows(api, accounts, engine):
    c = new_claim(api, accounts["editor"]["token"])
    before = rows(engine)
    r = api.post(
        "/graphql",
        json={"query": UPDATE, "variables": {"key": c["key"], "rev": 1, "patch": {"body": "x" * (2 << 20)}}},
        headers={"authorization": f"Bearer {accounts['editor']['token']}"},
    )
    assert r.status_code == 413 and r.json()["errors"][0]["extensions"]["code"] == "TOO_LARGE"
    err = as_user(api, accounts["editor"]["token"], UPDATE, {"key": c["key"], "rev": 7, "patch": {"label": "y"}})
    assert err["errors"][0]["extensions"]["code"] == "EDIT_CONFLICT"
    assert rows(engine) == before


def test_mutations_only_by_post_with_json(api, accounts):
    q = 'mutation { createClaim(input: {label: "x", kind: FEATURE, subjects: ["InceptionV1 4c:1"]}) { key } }'
    r = api.get("/graphql", params={"query": q}, headers={"authorization": f"Bearer {accounts['editor']['token']}"})
    assert r.status_code in (400, 405)
    r = api.post("/graphql", data={"query": q}, headers={"authorization": f"Bearer {accounts['editor']['token']}"})
    assert r.status_code == 415
    assert api.get("/graphql", params={"query": "{ models { key } }"}).status_code == 200


def test_rate_limit(engine, accounts, inceptionv1):
    from starlette.testclient import TestClient

    from kb.claims import claims as claim_domain
    from kb.claims.accounts import Account
    from kb.db.catalog import load_catalog
    from kb.settings import Settings
    from kb.web.app import create_app

    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False), rate_limit_per_minute=1, rate_limit_burst=2
    )
    with TestClient(create_app(settings, engine=engine, warm=False)) as client:
        token = accounts["editor"]["token"]
        with engine.begin() as conn:  # a claim of editor2's, made here: no test depends on another's claims
            author = conn.exec_driver_sql(f"SELECT id FROM kb_user WHERE name = '{accounts['editor2']['name']}'")
            claim_id = claim_domain.create_claim(
                conn,
                load_catalog(conn),
                Account(author.scalar_one(), accounts["editor2"]["name"], "editor"),
                label="rate limited",
                kind="FEATURE",
                subjects=["inceptionv1/mixed4c:3"],
            )
        q = f'mutation {{ reviewClaim(key: "claim:{claim_id}", verdict: SUPPORT) {{ revision }} }}'
        codes = [
            (as_user(client, token, q).get("errors") or [{"extensions": {"code": None}}])[0]["extensions"]["code"]
            for _ in range(3)
        ]
        assert codes[:2] == [None, None] and codes[2] == "RATE_LIMITED"
        other = as_user(client, accounts["moderator"]["token"], q)
        assert "errors" not in other  # the limit is per token


def test_role_matrix_generated_from_the_schema(api, accounts, engine):
    """Every mutation declares its least role; each role gets exactly what the declaration says."""
    from kb.schema import build_schema
    from kb.schema.auth import Requires

    schema = build_schema()
    mutation_type = schema.get_type_by_name("Mutation")
    declared = {}
    for field in mutation_type.fields:
        perms = [p for p in field.permission_classes if issubclass(p, Requires)]
        assert perms, f"mutation {field.python_name} declares no role"
        declared[schema.config.name_converter.get_graphql_name(field)] = perms[0].role
    rank = {"viewer": 0, "editor": 1, "moderator": 2, "admin": 3}
    for name, least in sorted(declared.items()):
        for who in ("anonymous", "viewer", "editor", "moderator", "admin"):
            token = accounts[who]["token"] if who != "anonymous" else None
            query, variables = _example(api, accounts, name, who)
            result = as_user(api, token, query, variables)
            code = (result.get("errors") or [{"extensions": {"code": None}}])[0]["extensions"]["code"]
            if who == "anonymous":
                assert code == "UNAUTHENTICATED", (name, who, result)
            elif rank[accounts[who]["role"]] < rank[least]:
                assert code == "FORBIDDEN", (name, who, result)
            else:
                assert code is None, (name, who, result)


def _example(api, accounts, mutation: str, who: str) -> tuple[str, dict]:
    """A valid call of each mutation for ``who`` (claims it edits are its own, made by the editor if needed)."""
    owner = accounts[who]["token"] if who in ("editor", "moderator", "admin") else accounts["editor"]["token"]
    if mutation == "createClaim":
        return CREATE, {"input": {"label": f"by {who}", "kind": "FEATURE", "subjects": ["InceptionV1 4c:2"]}}
    if mutation == "requestRender":
        return (
            "mutation($n: [String!]) { requestRender(kind: WEIGHTS, neurons: $n) { id } }",
            {"n": ["InceptionV1 4c:2"]},
        )
    if mutation == "requestLayerRender":
        return (
            'mutation($p: RenderParamsInput) { requestLayerRender(kind: DEEPDREAM, layer: "InceptionV1 4c", '
            "params: $p) { id } }",
            {"p": {"size": 32, "steps": 1, "upsample": 0}},
        )
    if mutation == "cancelRenders":  # the requester's own job (the viewer's call is refused before the job is read)
        asker = accounts[who]["token"] if who in ("editor", "moderator", "admin") else accounts["editor"]["token"]
        unit = 40 + ("anonymous", "viewer", "editor", "moderator", "admin").index(who)
        asked = as_user(
            api,
            asker,
            "mutation($n: [String!]) { requestRender(kind: WEIGHTS, neurons: $n) { id } }",
            {"n": [f"InceptionV1 4c:{unit}"]},
        )["data"]["requestRender"]
        assert asked, f"no job was made for 4c:{unit}"
        return "mutation($i: [Int!]!) { cancelRenders(ids: $i) { id status } }", {"i": [j["id"] for j in asked]}
    if mutation == "createCircuit":
        return (
            "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
            {"i": {"name": "c", "neurons": ["InceptionV1 4c:2"]}},
        )
    if mutation == "updateCircuit":  # circuits are edited together: any editor may edit anyone's
        made = as_user(
            api,
            accounts["editor"]["token"],
            "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
            {"i": {"name": "c", "neurons": ["InceptionV1 4c:2"]}},
        )["data"]["createCircuit"]["key"]
        return (
            'mutation($k: String!) { updateCircuit(key: $k, expectedRevision: 1, patch: {name: "d"}) { key } }',
            {"k": made},
        )
    if mutation == "checkCircuit":  # any editor checks any circuit; the same revision and parameters: one job
        return (
            "mutation($k: String!, $d: String!) { "
            "checkCircuit(key: $k, dataset: $d, ablation: ZERO, images: 2) { id } }",
            {"k": _checked_circuit(api, accounts), "d": _two_images(api)},
        )
    if mutation == "reviewClaim":  # nobody reviews their own claim
        owner = accounts["editor2"]["token"]
    claim = new_claim(api, owner, label=f"for {mutation} by {who}")
    if mutation == "updateClaim":
        return UPDATE, {"key": claim["key"], "rev": 1, "patch": {"label": "edited"}}
    if mutation == "setClaimStatus":
        return STATUS, {"key": claim["key"], "rev": 1, "s": "RETRACTED"}
    if mutation == "reviewClaim":
        return REVIEW, {"key": claim["key"], "v": "SUPPORT", "c": ""}
    raise AssertionError(f"no example call for mutation {mutation}: add one to this test")


def _checked_circuit(api, accounts) -> str:
    return as_user(
        api,
        accounts["editor"]["token"],
        "mutation($i: CircuitInput!) { createCircuit(input: $i) { key } }",
        {"i": {"name": "car", "edges": [{"source": "InceptionV1 4b:373", "target": "InceptionV1 4c:447"}]}},
    )["data"]["createCircuit"]["key"]


def _two_images(api) -> str:
    """A data set of two noise images (checkCircuit's example), registered once."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import sqlalchemy as sa
    from PIL import Image

    from kb.db.render_tables import dataset_table
    from kb.db.tables import utcnow

    engine = api.app.state.graphs.engine
    with engine.begin() as conn:
        if conn.execute(sa.select(dataset_table.c.id).where(dataset_table.c.name == "two-noise")).first() is None:
            folder = Path(tempfile.mkdtemp(prefix="kb-two-noise-"))
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
            conn.execute(
                sa.insert(dataset_table).values(name="two-noise", path=str(folder), images=2, created_at=utcnow())
            )
    return "two-noise"


def test_claim_pages_do_not_query_per_claim(api, accounts, engine):
    """A page of claims with their circuits and review histories: as many SQL statements for 8 claims as
    for 2 (DataLoaders), not one more per claim."""
    q = """mutation($input: CircuitInput!) { createCircuit(input: $input) { key } }"""
    circuit = as_user(
        api,
        accounts["editor"]["token"],
        q,
        {"input": {"name": "pair", "edges": [{"source": "InceptionV1 4b:1", "target": "InceptionV1 4c:2"}]}},
    )["data"]["createCircuit"]["key"]
    for i in range(8):  # the only MECHANISM claims in the test database
        key = new_claim(api, accounts["editor"]["token"], label=f"batched {i}", circuit=circuit, kind="MECHANISM")[
            "key"
        ]
        for who in ("editor2", "moderator"):
            as_user(api, accounts[who]["token"], REVIEW, {"key": key, "v": "SUPPORT", "c": "ok"})
    page = """query($n: Int!) { claims(first: $n, kind: MECHANISM) { edges { node {
        key circuit { key } reviews { reviewer { name } history { verdict } } } } } }"""

    def statements(n):
        with sql_statements(engine) as seen:
            nodes = [e["node"] for e in gql(api, page, {"n": n})["data"]["claims"]["edges"]]
        assert len(nodes) == n and all(c["circuit"]["key"] == circuit and len(c["reviews"]) == 2 for c in nodes)
        assert all([h["verdict"] for h in r["history"]] == ["SUPPORT"] for c in nodes for r in c["reviews"])
        return len(seen)

    assert statements(2) == statements(8)
