"""Claim files: a trailer that catches truncation, every record validated before anything is written, one-line
errors with the line and the field, exit 1; export -> import into a fresh database (either backend) recreates
every row of every claim table, circuit revisions and the feed included; export -> import -> export is
byte-identical; a format 1 file still imports."""

import hashlib
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BACKEND
from databases import fresh_databases
from experiment_rows import insert_experiment

from kb.claims import accounts as acc
from kb.claims import activity, circuits, reviews, sessions, transfer
from kb.claims import claims as domain
from kb.claims.accounts import Account
from kb.claims.errors import BadInput
from kb.db import annotation_tables, claim_tables, experiment_tables, render_tables, tables
from kb.db.catalog import load_catalog
from kb.db.claim_tables import circuit_table, user_table
from kb.db.engine import engine_for
from kb.db.tables import TableModel, utcnow

V1_FILE = Path(__file__).parent / "data" / "claims-v1.jsonl"  # written by the format 1 code (its own round trip)

# Every table module, as alembic/env.py imports them: TableModel.metadata holds the tables of those imported.
TABLE_MODULES = (tables, claim_tables, annotation_tables, render_tables, experiment_tables)


def kb(url, *args, data_dir):
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": url, "KB_DATA_DIR": str(data_dir)}
    return subprocess.run([str(exe), *args], env=env, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def exported(engine, db_url, inceptionv1, tmp_path_factory):
    """An export of the session database: users (one disabled, one with a password), circuits with several
    revisions (edges, notes and neurons changed), claims of several revisions (one about a circuit), reviews
    whose verdict changed, and the feed those changes wrote (as the API writes it)."""
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        ada = Account(acc.create_user(conn, f"ada-{suffix}", "editor", "Ada L."), f"ada-{suffix}", "editor")
        rev = Account(acc.create_user(conn, f"rev-{suffix}", "editor"), f"rev-{suffix}", "editor")
        mod = Account(acc.create_user(conn, f"mo-{suffix}", "moderator"), f"mo-{suffix}", "moderator")
        gone = acc.create_user(conn, f"gone-{suffix}", "viewer")
        conn.execute(sa.update(user_table).where(user_table.c.id == gone).values(disabled_at=utcnow()))
        sessions.set_password(conn, ada.name, "a password that is not exported")
        acc.create_token(conn, ada.name)
        catalog = load_catalog(conn)
        for i in range(3):
            cid = domain.create_claim(
                conn, catalog, ada, label=f"file {i} ✓", kind="FEATURE", subjects=[f"inceptionv1/mixed4c:{i}"]
            )
            activity.claim_changed(conn, ada, cid)
            domain.update_claim(conn, catalog, ada, cid, 1, {"body": "two\nlines"})
            activity.claim_changed(conn, ada, cid)
            reviews.review_claim(conn, rev, cid, "SUPPORT", "looks right")
            activity.reviewed(conn, rev, cid, "SUPPORT")
            domain.set_status(conn, mod, cid, 2, "SUPPORTED")
            activity.claim_changed(conn, mod, cid)
        reviews.review_claim(conn, rev, cid, "DISPUTE", "on second thoughts")
        activity.reviewed(conn, rev, cid, "DISPUTE")
        car = circuits.create_circuit(
            conn,
            catalog,
            ada,
            "car detector",
            ["inceptionv1/mixed4b:373", "inceptionv1/mixed4b:1"],
            [{"source": "inceptionv1/mixed4b:373", "target": "inceptionv1/mixed4c:447", "note": "wheels"}],
            message="first cut",
        )
        edits = [
            {"edges": [{"source": "inceptionv1/mixed4b:237", "target": "inceptionv1/mixed4c:447", "note": "windows"}]},
            {"description": "a car detector", "removeNeurons": ["inceptionv1/mixed4b:1"]},
            {"edges": [{"source": "inceptionv1/mixed4b:373", "target": "inceptionv1/mixed4c:447", "note": "wheel"}]},
        ]
        for r, patch in enumerate(edits, start=1):
            circuits.update_circuit(conn, catalog, rev if r % 2 else ada, car, r, patch, message=f"edit {r}")
        circuits.create_circuit(conn, catalog, rev, "lone", ["inceptionv1/mixed3b:10"], [])
        experiment = _an_experiment(conn, car, ada)
        about = domain.create_claim(
            conn,
            catalog,
            rev,
            label="a car from wheels and windows",
            kind="CIRCUIT",
            circuit=f"circuit:{car}",
            evidence=[{"kind": "EXPERIMENT", "experiment": experiment, "note": "sufficient and necessary"}],
        )
        activity.claim_changed(conn, rev, about)
    folder = tmp_path_factory.mktemp("files")
    out = folder / "claims.jsonl"
    r = kb(db_url, "claims", "export", "--output", str(out), data_dir=folder)
    assert r.returncode == 0, r.stderr
    return out


def _an_experiment(conn, circuit_id: int, by: Account) -> str:
    """A check's row as a worker writes it (kb.experiments.store.write), of circuit revision 2."""
    params = {
        "circuit": f"circuit:{circuit_id}@2",
        "dataset": "noise",
        "ablation": "mean",
        "images": 64,
        "seed": 0,
        "draws": 10,
        "reduction": "mean",
    }
    spread = {"mean": 0.05, "std": 0.03, "draws": 10, "values": [0.05] * 10}
    result = {
        "target": "inceptionv1/mixed4c:447",
        "source_layer": "inceptionv1/mixed4b",
        "source_units": 512,
        "sources": ["inceptionv1/mixed4b:237", "inceptionv1/mixed4b:373"],
        "m_full": 1.5,
        "m_empty": 0.25,
        "m_circuit": 1.25,
        "m_without_circuit": 0.5,
        "sufficiency": 0.8,
        "necessity": 0.8,
        "random": {"sets": [[1, 2]] * 10, "sufficiency": spread, "necessity": spread},
        "edges": [{"source": "inceptionv1/mixed4b:237", "m_without": 1.0, "effect": 0.4}],
    }
    eid = insert_experiment(conn, circuit_id, 2, params, result, requested_by=by.id)
    return f"experiment:{eid}"


@pytest.fixture(scope="module")
def fresh_db(tmp_path_factory):
    with fresh_databases(tmp_path_factory) as make:
        yield make


@pytest.fixture(scope="module")
def empty_db(fresh_db):
    return fresh_db()


def _rows(url) -> tuple:
    with engine_for(url).connect() as conn:
        return tuple(
            conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM kb_user), (SELECT count(*) FROM claim), "
                "(SELECT count(*) FROM claim_revision), (SELECT count(*) FROM review), (SELECT count(*) FROM circuit), "
                "(SELECT count(*) FROM circuit_revision), (SELECT count(*) FROM activity)"
            ).one()
        )


def _signed(lines: list[bytes]) -> bytes:
    """Records with a trailer recomputed over them: the file passes the trailer check, its records must not."""
    digest, counts = hashlib.sha256(), dict.fromkeys(transfer.READERS[transfer.FORMAT], 0)
    for line in lines:
        digest.update(line + b"\n")
        try:
            kind = json.loads(line).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind in counts:
            counts[kind] += 1
    trailer = json.dumps({"type": "trailer", "counts": counts, "sha256": digest.hexdigest()}, sort_keys=True)
    return b"".join(line + b"\n" for line in lines) + trailer.encode() + b"\n"


def _claim_line(lines: list[bytes]) -> int:
    return next(i for i, line in enumerate(lines) if b'"type":"claim"' in line and b"file 1" in line)


def _edit(lines, index, fn) -> list[bytes]:
    obj = json.loads(lines[index])
    fn(obj)
    out = list(lines)
    out[index] = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return out


def _corrupt(case: str, lines: list[bytes]) -> tuple[bytes, str]:
    """The file for each case, and what the one-line error must name."""
    c = _claim_line(lines)
    user = next(i for i, line in enumerate(lines) if b'"type":"user"' in line)
    n = c + 1
    if case == "truncated at a line":
        return b"".join(line + b"\n" for line in lines[: len(lines) // 2]), "truncated"
    if case == "truncated mid-line":
        whole = b"".join(line + b"\n" for line in lines)
        return whole[: len(whole) - 40], "truncated"
    if case == "empty":
        return b"", "empty"
    if case == "edited after export":
        edited = _edit(lines, c, lambda o: o["revisions"][0].update(label="changed"))
        return b"".join(line + b"\n" for line in edited), "sha256"
    if case == "revision gap":
        return _signed(_edit(lines[:-1], c, lambda o: o["revisions"][1].update(revision=3))), (
            f"line {n}: revisions[1].revision"
        )
    if case == "kind BOGUS":
        return _signed(_edit(lines[:-1], c, lambda o: o["revisions"][0].update(kind="BOGUS"))), (
            f"line {n}: revisions[0].kind"
        )
    if case == "role superuser":
        return _signed(_edit(lines[:-1], user, lambda o: o.update(role="superuser"))), f"line {user + 1}: role"
    if case == "missing key":
        return _signed(_edit(lines[:-1], c, lambda o: o.pop("key"))), f"line {n}: key: missing"
    if case == "unknown user":
        return _signed(_edit(lines[:-1], c, lambda o: o["revisions"][1].update(author="nobody"))), (
            f"line {n}: revisions[1].author"
        )
    if case == "bad date":
        return _signed(_edit(lines[:-1], c, lambda o: o.update(created_at="yesterday"))), f"line {n}: created_at"
    if case == "not UTF-8":
        bad = list(lines[:-1])
        bad[c] = bad[c].replace("✓".encode(), b"\xff\xfe")
        return _signed(bad), f"line {n}: not UTF-8"
    if case == "duplicate claim":
        return _signed([*lines[:-1], lines[c]]), f"line {len(lines)}: key: claim:"
    if case == "bad verdict":
        return _signed(_edit(lines[:-1], c, lambda o: o["reviews"][0]["history"][0].update(verdict="MAYBE"))), (
            f"line {n}: reviews[0].history[0].verdict"
        )
    cars = [i for i, line in enumerate(lines) if b'"type":"circuit"' in line and b"car detector" in line]
    car = max(cars, key=lambda i: len(json.loads(lines[i])["revisions"]))  # this module's (others name theirs so)
    if case == "circuit revision gap":
        return _signed(
            _edit(lines[:-1], car, lambda o: o["revisions"].pop(1))
        ), f"line {car + 1}: revisions[1].revision"
    if case == "circuit edge of another model":
        return _signed(
            _edit(lines[:-1], car, lambda o: o["revisions"][2]["edges"][0].update(source="vgg16/conv1_1:0"))
        ), f"line {car + 1}: revisions[2].edges[0].source"
    feed = next(i for i, line in enumerate(lines) if b'"type":"activity"' in line)
    if case == "activity about a claim not in the file":
        return _signed(_edit(lines[:-1], feed, lambda o: o.update(claim="claim:999999"))), f"line {feed + 1}: claim"
    if case == "an experiment of a circuit not in the file":
        record = json.dumps({"type": "experiment", "key": "experiment:99", "circuit": "circuit:999999@1"}).encode()
        return _signed([*lines[:car], record, *lines[car:-1]]), f"line {car + 1}: circuit: circuit:999999 is not"
    if case == "unknown format":
        return _signed(_edit(lines[:-1], 0, lambda o: o.update(format="circuit-kb/claims@9"))), "line 1: format"
    raise AssertionError(case)


CASES = [
    "truncated at a line",
    "truncated mid-line",
    "empty",
    "edited after export",
    "revision gap",
    "kind BOGUS",
    "role superuser",
    "missing key",
    "unknown user",
    "bad date",
    "not UTF-8",
    "duplicate claim",
    "bad verdict",
    "circuit revision gap",
    "circuit edge of another model",
    "activity about a claim not in the file",
    "an experiment of a circuit not in the file",
    "unknown format",
]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_file_writes_nothing_and_says_where(exported, empty_db, tmp_path, case):
    lines = exported.read_bytes().rstrip(b"\n").split(b"\n")
    assert json.loads(lines[-1])["type"] == "trailer"
    data, expect = _corrupt(case, lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(data)
    before = _rows(empty_db)
    r = kb(empty_db, "claims", "import", str(bad), data_dir=tmp_path)
    err = r.stderr.decode()
    assert r.returncode == 1, (case, err)
    # progress lines may come first (kb/cli/progress.py); the error is one line, the last, with no traceback
    *progress, last = err.strip().splitlines()
    assert "Traceback" not in err and not any(line.startswith("error") for line in progress), err
    assert last.startswith("error: ") and expect in last, (case, err)
    assert _rows(empty_db) == before


def test_export_import_export_is_byte_identical(exported, empty_db, tmp_path):
    r = kb(empty_db, "claims", "import", str(exported), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    again = kb(empty_db, "claims", "export", data_dir=tmp_path)
    assert again.returncode == 0 and again.stdout == exported.read_bytes()
    twice = kb(empty_db, "claims", "import", str(exported), data_dir=tmp_path)
    assert twice.returncode == 1 and b"already holds claims" in twice.stderr
    trailer = json.loads(exported.read_bytes().rstrip(b"\n").split(b"\n")[-1])
    assert trailer["counts"]["claim"] == _rows(empty_db)[1]


# Every table is compared after export -> import, or named here with the reason it is not.
COMPARED = (
    "kb_user",
    "circuit",
    "circuit_revision",
    "circuit_edge_list",
    "claim",
    "claim_revision",
    "claim_subject",
    "experiment",
    "review",
    "review_revision",
    "activity",
)
NOT_EXPORTED = {
    "api_token": "secrets: tokens are not exported (kb backup keeps them)",
    "web_session": "secrets: sign-in sessions",
    "signin_failure": "a rate limit's short-lived log",
}
# the graph, renders and their images (render bundles carry those: kb renders export)
OTHER_LAYERS = {
    "model",
    "layer",
    "neuron",
    "layer_link",
    "connection",
    "dataset",
    "artifact",
    "artifact_blob",
    "artifact_chunk",
    "render_job",
}
# Surrogate columns that legitimately differ: user ids (every column holding one is compared as the user's
# name) and the feed's ids and commit sequence (compared by order: an import commits its rows in file order).
# Secrets: password hashes are not exported.
USER_COLUMNS = {"created_by", "author_id", "user_id", "actor_id", "requested_by"}
# an experiment's job is a render job, which claim files do not carry: imported, it has none
IGNORED = {
    ("kb_user", "id"),
    ("kb_user", "password_hash"),
    ("activity", "id"),
    ("activity", "seq"),
    ("experiment", "job_id"),
}
STATE = ("id", "revision", "name", "description", "neurons", "edges")  # what circuit:N@R shows


def _value(v):
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)
    return v


def _tables(url) -> dict[str, list]:
    """Every row of every claim-layer table, user ids as names, in a backend-independent order."""
    out = {}
    with engine_for(url).connect() as conn:
        names = dict(conn.execute(sa.select(user_table.c.id, user_table.c.name)).all())
        for name in COMPARED:
            table = TableModel.metadata.tables[name]
            query = sa.select(table)
            if name == "activity":  # the feed in its order; render lines are not exported (nor their jobs)
                query = query.where(table.c.kind != "RENDER").order_by(table.c.id)
            rows = []
            for row in conn.execute(query):
                rows.append(
                    tuple(
                        (col, names.get(v) if col in USER_COLUMNS and v is not None else _value(v))
                        for col, v in row._mapping.items()
                        if (name, col) not in IGNORED
                    )
                )
            out[name] = rows if name == "activity" else sorted(rows, key=repr)
    return out


def test_every_table_is_compared_or_excluded_with_a_reason():
    assert set(TableModel.metadata.tables) == set(COMPARED) | set(NOT_EXPORTED) | OTHER_LAYERS


@pytest.mark.parametrize("target", ["same backend", "other backend"])
def test_import_recreates_every_row_of_every_claim_table(exported, db_url, fresh_db, tmp_path, target):
    """export -> import into a fresh database (of either backend) -> the tables hold the same rows: circuits
    with every revision (circuit:N@R resolves), claims and revisions, reviews and their history, users, the feed."""
    other = {"sqlite": "postgresql", "postgresql": "sqlite"}[BACKEND]
    url = fresh_db(BACKEND if target == "same backend" else other)
    r = kb(url, "claims", "import", str(exported), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    before, after = _tables(db_url), _tables(url)
    assert len(before["circuit_revision"]) >= 5 and len(before["activity"]) >= 10  # the fixture has history
    for name in COMPARED:
        assert after[name] == before[name], name
    with engine_for(db_url).connect() as old, engine_for(url).connect() as new:
        for (cid,) in old.execute(sa.select(circuit_table.c.id)):
            last = circuits.get(old, cid).revision
            for rev in range(1, last + 1):
                was, now = circuits.at_revision(old, cid, rev), circuits.at_revision(new, cid, rev)
                assert {k: getattr(now, k) for k in STATE} == {k: getattr(was, k) for k in STATE}
    with engine_for(url).connect() as conn:  # new keys go on after the imported ones (not rolled back here)
        c = circuit_table
        last = conn.execute(sa.select(sa.func.max(c.c.id))).scalar_one()
        row = {k: v for k, v in conn.execute(sa.select(c).where(c.c.id == last)).one()._asdict().items() if k != "id"}
        assert conn.execute(sa.insert(c).values(row).returning(c.c.id)).scalar_one() > last
        conn.rollback()


def test_a_version_1_file_still_imports(fresh_db, tmp_path):
    """A file written by format 1 (circuits in their current state only): its circuits become revision 1."""
    url = fresh_db()
    r = kb(url, "claims", "import", str(V1_FILE), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    with engine_for(url).connect() as conn:
        assert [(r.revision, r.author, r.message) for r in circuits.revisions(conn, [4])[4]] == [(1, "ada", "")]
        assert circuits.at_revision(conn, 4, 1).edges[1]["note"] == "windows"
        assert conn.execute(sa.select(sa.func.count()).select_from(circuit_table)).scalar_one() == 1
    again = tmp_path / "v2.jsonl"
    assert kb(url, "claims", "export", "--output", str(again), data_dir=tmp_path).returncode == 0
    assert json.loads(again.read_text().splitlines()[0])["format"] == "circuit-kb/claims@2"
    moved = fresh_db()
    assert kb(moved, "claims", "import", str(again), data_dir=tmp_path).returncode == 0
    assert _tables(moved) == _tables(url)


def test_subjects_must_resolve_where_the_model_is_known(engine, exported):
    records = transfer.read_file(exported.read_bytes().rstrip(b"\n").split(b"\n"))
    for _, obj in records:
        if obj["type"] == "claim":
            obj["revisions"][0]["subjects"] = ["inceptionv1/mixed4c:99999"]
            break
    with engine.connect() as conn, pytest.raises(BadInput, match=r"line \d+: revisions\[0\]\.subjects\[0\]"):
        transfer.validate(conn, records, set())


def test_no_traceback_from_the_cli_on_bad_input(db_url, inceptionv1, tmp_path):
    for args in (
        ("user", "create", "x-y", "--role", "superuser"),
        ("neuron", "inceptionv1/mixed4c:99999"),
        ("import-families", str(tmp_path), "--model", "inceptionv1", "--source", "doi:10.1/x"),
        ("claims", "import", str(tmp_path / "missing.jsonl")),
    ):
        r = kb(db_url, *args, data_dir=tmp_path)
        err = r.stderr.decode()
        assert r.returncode != 0 and "Traceback" not in err and err.strip(), (args, err)
