"""`kb backup` / `kb restore`, for real on the session's backend (SQLite's online backup API; pg_dump and
pg_restore): a backup taken while a writer holds an open transaction restores into a new database with every
row of every table (ids, password and token hashes included) and none of the uncommitted ones; a restore over
data, of the other backend's file, or of a file that is no backup is refused in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BACKEND
from databases import fresh_databases

from kb.claims import accounts as acc
from kb.claims import sessions
from kb.db import annotation_tables, claim_tables, render_tables, tables
from kb.db.engine import engine_for
from kb.db.tables import TableModel

V1_FILE = Path(__file__).parent / "data" / "claims-v1.jsonl"
PASSWORD = "correct horse battery"

# Every table module, as alembic/env.py imports them: TableModel.metadata holds the tables of those imported.
TABLE_MODULES = (tables, claim_tables, annotation_tables, render_tables)


def kb(url, *args, data_dir):
    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": url, "KB_DATA_DIR": str(data_dir)}
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fresh_db(tmp_path_factory):
    with fresh_databases(tmp_path_factory) as make:
        yield make


def _everything(url) -> dict[str, list]:
    """Every row of every table the code declares, and the schema revision: ids and secrets included."""
    with engine_for(url).connect() as conn:
        out = {"alembic_version": conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()}
        for name, table in TableModel.metadata.tables.items():
            out[name] = sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
    return out


@pytest.fixture(scope="module")
def source(fresh_db, tmp_path_factory):
    """A database with claims, a circuit, reviews, a password and a token: (url, token)."""
    url = fresh_db()
    r = kb(url, "claims", "import", str(V1_FILE), data_dir=tmp_path_factory.mktemp("data"))
    assert r.returncode == 0, r.stderr
    with engine_for(url).begin() as conn:
        sessions.set_password(conn, "ada", PASSWORD)
        token = acc.create_token(conn, "grace", "kept by a backup")
    return url, token


def test_a_backup_taken_during_a_write_restores_every_committed_row(source, fresh_db, tmp_path):
    url, token = source
    file = tmp_path / "kb.backup"
    writer = engine_for(url).connect()
    try:
        writer.begin()  # a server's write in flight: the backup neither waits for it nor holds it
        acc.create_user(writer, "late", "editor")
        committed = _everything(url)
        r = kb(url, "backup", str(file), data_dir=tmp_path)
        assert r.returncode == 0, r.stderr
        writer.commit()
    finally:
        writer.close()
    assert file.read_bytes()[:5] == (b"SQLit" if BACKEND == "sqlite" else b"PGDMP")
    target = fresh_db()
    r = kb(target, "restore", str(file), data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    restored = _everything(target)
    assert restored == committed
    assert sum(len(rows) for rows in restored.values()) > 15 and restored["circuit_revision"]
    with engine_for(target).begin() as conn:  # accounts keep their secrets: the same token and password work
        assert acc.authenticate(conn, token).name == "grace"
        assert sessions.check_password(conn, "ada", PASSWORD).name == "ada"
        assert "late" not in {row.name for row in conn.execute(sa.select(acc.user_table.c.name))}


def test_restore_refuses_data_the_other_backend_and_other_files(source, fresh_db, tmp_path):
    url, _ = source
    file = tmp_path / "kb.backup"
    assert kb(url, "backup", str(file), data_dir=tmp_path).returncode == 0
    busy = fresh_db()
    assert kb(busy, "claims", "import", str(V1_FILE), data_dir=tmp_path).returncode == 0
    before = _everything(busy)
    other = tmp_path / "other.backup"
    other.write_bytes(b"SQLite format 3\x00" if BACKEND == "postgresql" else b"PGDMP\x01\x0e")
    junk = tmp_path / "junk.backup"
    junk.write_bytes(b"not a backup\n")
    for path, expect in (
        (file, "already holds 3 users, 1 circuits, 2 claims"),
        (other, "move between backends with kb claims export"),
        (junk, "is not a backup made by kb backup"),
    ):
        r = kb(busy, "restore", str(path), data_dir=tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and expect in last, r.stderr
        assert _everything(busy) == before
    r = kb(busy, "restore", str(file), "--replace", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _everything(busy) == _everything(url)
