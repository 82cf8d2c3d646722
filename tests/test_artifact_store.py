"""The artifact store (kb.render.storage): files or the knowledge base's own database, picked by
KB_ARTIFACT_STORE (default: files on SQLite, the database on PostgreSQL). Both stores on the session's database;
the web route serving from the database store; ``kb artifacts migrate`` files -> database -> files."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BACKEND
from databases import fresh_databases
from front_renders import THUMBNAIL, picture
from stores import store_for

from kb.db.catalog import load_catalog
from kb.db.engine import engine_for
from kb.render import artifacts, jobs
from kb.render.storage import ArtifactMissing, storage_from_settings, store_of
from kb.render.storage_db import CHUNK, DatabaseStorage
from kb.render.storage_files import LocalStorage
from kb.settings import Settings


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _store(kind: str, engine: sa.Engine, tmp_path: Path):
    return store_of(kind, Settings(database_url=_url(engine), storage_dir=tmp_path / "files"), engine)


def _kb(env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "kb"
    return subprocess.run(
        [str(exe), *args], env={**os.environ, "KB_BROKER_URL": "", **env}, capture_output=True, text=True, timeout=120
    )


# ------------------------------------------------------------------------------------------------ the setting


@pytest.mark.database_free
def test_the_setting_defaults_by_database_and_refuses_other_stores():
    assert Settings(database_url="sqlite:///x.sqlite").store == "files"
    assert Settings(database_url="postgresql+psycopg://kb@db/kb").store == "database"
    assert Settings(database_url="postgresql+psycopg://kb@db/kb", artifact_store="files").store == "files"
    assert Settings(database_url="sqlite:///x.sqlite", artifact_store=" Database ").store == "database"
    assert Settings(database_url="postgresql+psycopg://kb@db/kb", artifact_store="").store == "database"
    with pytest.raises(ValueError, match=r"must be files or database, or empty \(s3:// stores are not built yet\)"):
        Settings(artifact_store="s3://bucket/kb")
    with pytest.raises(ValueError, match="KB_ARTIFACT_STORE is 'disk': it must be files or database"):
        Settings(artifact_store="disk")
    r = _kb({"KB_ARTIFACT_STORE": "s3://bucket"}, "artifacts", "migrate", "--to", "files")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith("error: KB_ARTIFACT_STORE is 's3://bucket': it must be files or database"), r.stderr
    assert "s3:// stores are not built yet" in r.stderr


def test_the_default_store_of_the_session_database(engine):
    store = storage_from_settings(Settings(database_url=_url(engine)), engine)
    assert isinstance(store, DatabaseStorage if BACKEND == "postgresql" else LocalStorage)


# ----------------------------------------------------------------------------------------------- both stores


@pytest.mark.parametrize("kind", ["files", "database"])
def test_put_exists_read_size_delete_round_trip(kind, engine, tmp_path):
    store = _store(kind, engine, tmp_path)
    small = secrets.token_bytes(7000)
    large = secrets.token_bytes(2 * CHUNK + 1234)  # three chunks in the database
    for data in (small, large, b""):
        sha = hashlib.sha256(data).hexdigest()
        assert not store.exists(sha, ".png") and store.size(sha, ".png") is None
        with pytest.raises(ArtifactMissing):
            store.read(sha, ".png")
        with pytest.raises(ArtifactMissing):
            b"".join(store.chunks(sha, ".png"))
        assert store.put(data, ".png") == sha
        assert store.put(data, ".png") == sha  # again: a no-op
        assert store.exists(sha, ".png") and not store.exists(sha, ".bin")  # the suffix is part of the key
        assert store.size(sha, ".png") == len(data)
        assert store.read(sha, ".png") == data and b"".join(store.chunks(sha, ".png")) == data
    if kind == "database":
        pieces = list(store.chunks(hashlib.sha256(large).hexdigest(), ".png"))
        assert [len(p) for p in pieces] == [CHUNK, CHUNK, 1234]
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT count(*) FROM artifact_chunk WHERE sha256 = :s"),
                {"s": hashlib.sha256(large).hexdigest()},
            ).scalar_one()
        assert rows == 3  # the second put wrote nothing
    sha = hashlib.sha256(small).hexdigest()
    store.delete(sha, ".png")
    store.delete(sha, ".png")  # twice: nothing to remove
    assert not store.exists(sha, ".png") and store.read(hashlib.sha256(large).hexdigest(), ".png") == large


@pytest.mark.parametrize("kind", ["files", "database"])
def test_concurrent_puts_of_the_same_bytes_all_succeed(kind, engine, tmp_path):
    store = _store(kind, engine, tmp_path)
    data = secrets.token_bytes(CHUNK + 10)
    start, got, errors = threading.Barrier(6), [], []

    def put():
        start.wait()
        try:
            got.append(store.put(data, ".png"))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sha = hashlib.sha256(data).hexdigest()
    assert errors == [] and got == [sha] * 6
    assert store.read(sha, ".png") == data


def test_a_put_in_the_callers_transaction_commits_with_it(engine):
    store = DatabaseStorage(engine)
    kept, dropped = secrets.token_bytes(3000), secrets.token_bytes(3000)

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), engine.begin() as conn:
        store.put(dropped, ".png", conn)
        raise Rollback
    with engine.begin() as conn:
        store.put(kept, ".png", conn)
        store.put(kept, ".png", conn)  # again in the same transaction: found, not written twice
    assert not store.exists(hashlib.sha256(dropped).hexdigest(), ".png")
    assert store.read(hashlib.sha256(kept).hexdigest(), ".png") == kept


# ---------------------------------------------------------------------------------------- served by the route


def _render(engine: sa.Engine, settings: Settings) -> str:
    """A feature visualization landed the way a worker lands one (kb.render.artifacts.store); its sha256."""
    with engine.connect() as conn:
        model_sha = load_catalog(conn).model("inceptionv1").sha256
    params = {**THUMBNAIL, "seed": secrets.randbelow(2**31)}
    with engine.begin() as conn:
        ids, _ = jobs.request(conn, [jobs.Unit("inceptionv1", model_sha, "mixed3a", 7)], "FEATURE_VIS", params)
    with engine.begin() as conn:
        started = jobs.start(conn, ids, "test-worker", 60)
    assert artifacts.store(engine, settings, started, [picture(params["seed"], 64)]) == ids
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT a.sha256 FROM artifact a JOIN render_job j ON j.artifact_id = a.id WHERE j.id = :j"),
            {"j": ids[0]},
        ).scalar_one()


def _forget(engine: sa.Engine, sha: str) -> None:
    """The render's rows gone again: later tests' servers (test_browser's, with a storage folder of their own)
    would show its thumbnail on the model page and miss its image (404)."""
    with engine.begin() as conn:
        artifact = conn.execute(sa.text("SELECT id FROM artifact WHERE sha256 = :s"), {"s": sha}).scalar_one()
        conn.execute(sa.text("DELETE FROM render_job WHERE artifact_id = :a"), {"a": artifact})
        conn.execute(sa.text("DELETE FROM artifact WHERE id = :a"), {"a": artifact})


def test_the_route_serves_the_database_store_with_its_cache_headers(engine, inceptionv1):
    settings = Settings(database_url=_url(engine), artifact_store="database", render_device="cpu")
    sha = _render(engine, settings)  # on SQLite too: written in the worker's own transaction
    try:
        _serves(engine, settings, sha)
    finally:
        _forget(engine, sha)


def _serves(engine: sa.Engine, settings: Settings, sha: str) -> None:
    from starlette.testclient import TestClient

    from kb.web.app import create_app
    from kb.web.artifacts import STREAM_ABOVE

    store = DatabaseStorage(engine)
    data = store.read(sha, ".png")
    assert hashlib.sha256(data).hexdigest() == sha and data[:8] == b"\x89PNG\r\n\x1a\n"
    store_for(engine).put(data, ".png")  # the session's servers (files on SQLite) may show it meanwhile: in theirs
    large = secrets.token_bytes(STREAM_ABOVE + CHUNK + 5)  # streamed, a chunk at a time
    big = store.put(large, ".png")
    app = create_app(settings, engine=engine, warm=False)
    with TestClient(app) as client:
        r = client.get(f"/artifacts/{sha}.png")
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["etag"] == f'"{sha}"' and r.headers["content-length"] == str(len(data))
        again = client.get(f"/artifacts/{sha}.png", headers={"if-none-match": f'"{sha}"'})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == f'"{sha}"'
        other = client.get(f"/artifacts/{sha}.png", headers={"if-none-match": '"0000"'})
        assert other.status_code == 200 and other.content == data
        streamed = client.get(f"/artifacts/{big}.png")
        assert streamed.status_code == 200 and streamed.content == large
        assert streamed.headers["content-length"] == str(len(large)) and streamed.headers["etag"] == f'"{big}"'
        for missing in ("0" * 64 + ".png", f"{sha}.jpg", f"{sha[:-1]}.png", f"{sha.upper()}.png"):
            assert client.get(f"/artifacts/{missing}").status_code == 404, missing
        files = create_app(Settings(database_url=_url(engine), artifact_store="files"), engine=engine, warm=False)
    with TestClient(files) as client:  # a server whose store is files does not see the database's
        assert client.get(f"/artifacts/{big}.png").status_code == 404


# ------------------------------------------------------------------------------------------ kb artifacts migrate


def _artifact_row(engine: sa.Engine, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO artifact (sha256, content_type, bytes, width, height, kind, params, versions, meta, "
                "created_at) VALUES (:s, 'image/png', :b, 8, 8, 'UPLOAD', '{}', '{}', '{}', CURRENT_TIMESTAMP)"
            ),
            {"s": sha, "b": len(data)},
        )
    return sha


@pytest.fixture
def fresh_kb(tmp_path, tmp_path_factory):
    """A new, migrated database of the session's backend (only this test's artifact rows)."""
    with fresh_databases(tmp_path_factory) as make:
        url = make()
        yield url, engine_for(url)


def test_migrate_files_to_database_and_back_checks_every_sha256(fresh_kb, tmp_path):
    url, engine = fresh_kb
    first, second = tmp_path / "files", tmp_path / "files-again"
    env = {"KB_DATABASE_URL": url, "KB_DATA_DIR": str(tmp_path / "data"), "KB_STORAGE_DIR": str(first)}
    blobs = [secrets.token_bytes(6000), secrets.token_bytes(CHUNK * 2 + 7)]
    files, db = LocalStorage(first), DatabaseStorage(engine)
    shas = [_artifact_row(engine, data) for data in blobs]
    for data in blobs:
        files.put(data, ".png")
    total = sum(map(len, blobs))

    r = _kb(env, "artifacts", "migrate", "--from", "files", "--to", "database")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"files -> database: copied 2, already there 0, {total} bytes ({total / 1e6:.2f} MB)"
    ]
    assert [db.read(s, ".png") for s in shas] == blobs
    again = _kb(env, "artifacts", "migrate", "--from", "files", "--to", "database")
    assert again.returncode == 0 and "copied 0, already there 2, 0 bytes" in again.stdout, again.stderr

    back = {**env, "KB_STORAGE_DIR": str(second), "KB_ARTIFACT_STORE": "database"}  # --from: the store in use
    r = _kb(back, "artifacts", "migrate", "--to", "files")
    assert r.returncode == 0 and r.stdout.startswith("database -> files: copied 2, already there 0"), r.stderr
    for sha in shas:
        assert hashlib.sha256((second / sha[:2] / f"{sha}.png").read_bytes()).hexdigest() == sha
    assert files.exists(shas[0], ".png")  # nothing is deleted from the source

    # a damaged file and a missing one: the sound ones are copied, then one line names both, exit 1
    damaged, lost, sound = secrets.token_bytes(900), secrets.token_bytes(900), secrets.token_bytes(900)
    bad_sha, lost_sha, sound_sha = (_artifact_row(engine, d) for d in (damaged, lost, sound))
    target = second / bad_sha[:2] / f"{bad_sha}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 0xFF]))
    LocalStorage(second).put(sound, ".png")
    r = _kb(
        {**env, "KB_STORAGE_DIR": str(second), "KB_ARTIFACT_STORE": "files"}, "artifacts", "migrate", "--to", "database"
    )
    assert r.returncode == 1, r.stdout
    assert r.stdout.startswith("files -> database: copied 1, already there 2")
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: not copied: ") and f"1 missing from folder {second}: {lost_sha}" in line, line
    assert f"1 not hashing to their sha256: {bad_sha}" in line, line
    assert db.exists(sound_sha, ".png") and not db.exists(bad_sha, ".png") and not db.exists(lost_sha, ".png")
    for hash_ in (bad_sha, hashlib.sha256(target.read_bytes()).hexdigest()):
        assert not db.exists(hash_, ".png")  # a damaged file is not copied under any name

    for args, says in (
        (["--to", "files", "--from", "files"], "error: --from and --to are both files: nothing to copy"),
        (["--to", "s3://x"], "error: --to must be files or database, not 's3://x'"),
    ):
        r = _kb(env, "artifacts", "migrate", *args)
        assert r.returncode == 1 and r.stderr.strip() == says, r.stderr
