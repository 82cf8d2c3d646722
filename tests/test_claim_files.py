"""Claim files: a trailer that catches truncation, every record validated before anything is written, one-line
errors with the line and the field, exit 1, and export -> import -> export byte-identical."""

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ADMIN_URL, BACKEND

from kb.claims import accounts as acc
from kb.claims import claims as domain
from kb.claims import reviews, transfer
from kb.claims.accounts import Account
from kb.claims.errors import BadInput
from kb.db import migrate
from kb.db.catalog import load_catalog
from kb.db.engine import engine_for, make_engine


def kb(url, *args, data_dir):
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": url, "KB_DATA_DIR": str(data_dir)}
    return subprocess.run([str(exe), *args], env=env, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def exported(engine, db_url, inceptionv1, tmp_path_factory):
    """An export of the session database with claims of several revisions, reviews and a circuit."""
    suffix = secrets.token_hex(3)
    with engine.begin() as conn:
        ada = Account(acc.create_user(conn, f"ada-{suffix}", "editor", "Ada L."), f"ada-{suffix}", "editor")
        rev = Account(acc.create_user(conn, f"rev-{suffix}", "editor"), f"rev-{suffix}", "editor")
        mod = Account(acc.create_user(conn, f"mo-{suffix}", "moderator"), f"mo-{suffix}", "moderator")
        catalog = load_catalog(conn)
        for i in range(3):
            cid = domain.create_claim(
                conn, catalog, ada, label=f"file {i} ✓", kind="FEATURE", subjects=[f"inceptionv1/mixed4c:{i}"]
            )
            domain.update_claim(conn, catalog, ada, cid, 1, {"body": "two\nlines"})
            reviews.review_claim(conn, rev, cid, "SUPPORT", "looks right")
            domain.set_status(conn, mod, cid, 2, "SUPPORTED")
    folder = tmp_path_factory.mktemp("files")
    out = folder / "claims.jsonl"
    r = kb(db_url, "claims", "export", "--output", str(out), data_dir=folder)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory):
    if BACKEND == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'empty.sqlite'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"kb_files_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    engine_for(url).dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rows(url) -> tuple:
    with engine_for(url).connect() as conn:
        return tuple(
            conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM kb_user), (SELECT count(*) FROM claim), "
                "(SELECT count(*) FROM claim_revision), (SELECT count(*) FROM review), (SELECT count(*) FROM circuit)"
            ).one()
        )


def _signed(lines: list[bytes]) -> bytes:
    """Records with a trailer recomputed over them: the file passes the trailer check, its records must not."""
    digest, counts = hashlib.sha256(), {"user": 0, "circuit": 0, "claim": 0}
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


def test_subjects_must_resolve_where_the_model_is_known(engine, exported):
    records = transfer.read_file(exported.read_bytes().rstrip(b"\n").split(b"\n"))
    for _, obj in records:
        if obj["type"] == "claim":
            obj["revisions"][0]["subjects"] = ["inceptionv1/mixed4c:99999"]
            break
    with engine.connect() as conn, pytest.raises(BadInput, match=r"line \d+: revisions\[0\]\.subjects\[0\]"):
        transfer._validate(conn, records, set())


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
