"""Families from the literature, search, and export → import → export."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ADMIN_URL, BACKEND, as_user, gql

from kb.claims.families import read_families
from kb.db import migrate
from kb.db.engine import make_engine

FAMILIES = Path(__file__).resolve().parents[1] / "kb" / "data" / "distill-early-vision"  # shipped with the project
SOURCE = "doi:10.23915/distill.00024.002"
AUTHORS = "Chris Olah; Nick Cammarata; Ludwig Schubert; Gabriel Goh; Michael Petrov; Shan Carter"
TITLE = "An Overview of Early Vision in InceptionV1"
CITE = ("--authors", AUTHORS, "--title", TITLE)


def kb(db_url, *args):
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run(
        [str(exe), *args], env={**os.environ, "KB_DATABASE_URL": db_url}, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def families(db_url, inceptionv1):
    first = kb(db_url, "import-families", str(FAMILIES), "--model", "inceptionv1", "--source", SOURCE, *CITE)
    assert first.returncode == 0, first.stderr
    return first


def test_trailing_commas_are_read(tmp_path):
    (tmp_path / "mixed3b.json").write_text('[{"name": "A", "units": [1, 2, ], "comment": "c"},\n]')
    assert read_families(tmp_path / "mixed3b.json") == [{"name": "A", "units": [1, 2], "comment": "c"}]


def test_families_import_is_idempotent(families, db_url, engine):
    assert families.stdout.startswith("113 families imported")
    with engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT count(*), max(revision) FROM claim_revision").one()
    again = kb(db_url, "import-families", str(FAMILIES), "--model", "inceptionv1", "--source", SOURCE, *CITE)
    assert again.returncode == 0 and again.stdout.startswith("0 families imported, 113 already there")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*), max(revision) FROM claim_revision").one() == before


def test_curves_on_3b_379(families, api):
    data = gql(api, '{ neuron(key: "InceptionV1 3b:379") { claims { label kind body evidence { kind doi } } } }')
    claims = data["data"]["neuron"]["claims"]
    curves = next(c for c in claims if c["label"] == "Curves")
    assert curves["kind"] == "FAMILY" and curves["evidence"] == [
        {"kind": "CITATION", "doi": "10.23915/distill.00024.002"}
    ]
    car = gql(api, '{ neuron(key: "InceptionV1 4c:447") { claims { label } } }')["data"]["neuron"]["claims"]
    assert "Car" in {c["label"] for c in car}


def test_families_cite_the_papers_authors_with_the_importer_as_curator(families, api):
    claims = gql(
        api,
        """{ neuron(key: "InceptionV1 3b:379") { claims { key label author { name }
            citation { text bibtex } } } }""",
    )["data"]["neuron"]["claims"]
    curves = next(c for c in claims if c["label"] == "Curves")
    text, bibtex = curves["citation"]["text"], curves["citation"]["bibtex"]
    assert text.startswith(
        'Chris Olah, Nick Cammarata, Ludwig Schubert, Gabriel Goh, Michael Petrov, Shan Carter, "Curves"'
    )
    assert f"in {TITLE} (doi:10.23915/distill.00024.002); curated by Families importer" in text
    assert "author = {Chris Olah and Nick Cammarata and" in bibtex and "doi = {10.23915/distill.00024.002}" in bibtex
    assert "curated by Families importer" in bibtex
    page = api.get(f"/c/{curves['key'].split(':')[1]}").text
    assert "Chris Olah, Nick Cammarata" in page


def test_search_claims_and_neurons(families, api):
    q = """query($t: String!, $layer: String, $kind: ClaimKind) { searchClaims(text: $t, layer: $layer, kind: $kind,
             first: 50) { totalCount edges { node { key label kind subjects { key } } } } }"""
    curves = gql(api, q, {"t": "curve"})["data"]["searchClaims"]
    labels = [e["node"]["label"] for e in curves["edges"]]
    assert "Curves" in labels and curves["totalCount"] >= 2
    in_3b = gql(api, q, {"t": "curve", "layer": "InceptionV1 3b", "kind": "FAMILY"})["data"]["searchClaims"]
    assert in_3b["totalCount"] >= 1
    assert all(any(s["key"].startswith("inceptionv1/mixed3b:") for s in e["node"]["subjects"]) for e in in_3b["edges"])
    assert gql(api, q, {"t": "curve", "kind": "POLYSEMANTIC"})["data"]["searchClaims"]["totalCount"] == 0
    neurons = gql(
        api,
        """{ searchNeurons(text: "curve", layer: "InceptionV1 3b", first: 100) { totalCount
                  edges { node { key } } } }""",
    )["data"]["searchNeurons"]
    keys = [e["node"]["key"] for e in neurons["edges"]]
    assert "inceptionv1/mixed3b:379" in keys and all(k.startswith("inceptionv1/mixed3b:") for k in keys)
    err = gql(api, '{ searchClaims(text: "  !! ") { totalCount } }')["errors"][0]
    assert err["extensions"]["code"] == "BAD_INPUT"
    page1 = gql(api, "{ claims(first: 3, kind: FAMILY) { totalCount pageInfo { endCursor } edges { node { key } } } }")
    assert page1["data"]["claims"]["totalCount"] >= 113


def test_status_filter(families, api, accounts):
    mod = accounts["moderator"]["token"]
    key = gql(api, '{ searchClaims(text: "curve", first: 1) { edges { node { key revision } } } }')["data"][
        "searchClaims"
    ]["edges"][0]["node"]
    done = as_user(
        api,
        mod,
        """mutation($k: String!, $r: Int!) { setClaimStatus(key: $k, expectedRevision: $r,
                   status: SUPPORTED) { status } }""",
        {"k": key["key"], "r": key["revision"]},
    )
    assert done["data"]["setClaimStatus"]["status"] == "SUPPORTED"
    supported = gql(api, '{ searchClaims(text: "curve", status: SUPPORTED) { edges { node { key } } } }')
    assert key["key"] in [e["node"]["key"] for e in supported["data"]["searchClaims"]["edges"]]


def _empty_db(tmp_path):
    if BACKEND == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite'}", None
    name = f"kb_roundtrip_{os.getpid()}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False), (admin, name)


def test_export_import_export_is_identical(families, db_url, tmp_path, api, accounts, engine):
    with engine.connect() as conn:  # a family's claim (whatever else the session made first)
        first_family = conn.exec_driver_sql("SELECT min(id) FROM claim WHERE origin IS NOT NULL").scalar_one()
    reviewed = as_user(
        api,
        accounts["editor2"]["token"],
        """mutation($k: String!) { reviewClaim(key: $k, verdict: DISPUTE, comment: "not sure") { revision } }""",
        {"k": f"claim:{first_family}"},
    )
    assert "errors" not in reviewed, reviewed
    first = tmp_path / "claims.jsonl"
    r = kb(db_url, "claims", "export", "--output", str(first))
    assert r.returncode == 0, r.stderr
    url, cleanup = _empty_db(tmp_path)
    try:
        migrate.upgrade(url)
        r = kb(url, "claims", "import", str(first))
        assert r.returncode == 0, r.stderr
        second = kb(url, "claims", "export")
        assert second.returncode == 0
        assert second.stdout == first.read_text()
        again = kb(url, "claims", "import", str(first))
        assert again.returncode == 1 and "already holds claims" in again.stderr
    finally:
        if cleanup:
            from kb.db.engine import engine_for

            engine_for(url).dispose()
            admin, name = cleanup
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    text = first.read_text()
    assert '"type":"claim"' in text and '"revisions":[' in text and '"history":[' in text and "ckb_" not in text
