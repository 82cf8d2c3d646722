"""Test fixtures: a fresh database per test session, on PostgreSQL or SQLite.

KB_TEST_DATABASE=postgresql (default when a server answers at KB_TEST_PG_URL) or sqlite. CI runs both.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from kb.db import migrate
from kb.db.engine import engine_for, make_engine
from kb.settings import get_settings

# Nothing a test does touches the user's own data folder (~/.local/share/circuit-kb) or storage: every test
# process, and every `kb` process a test starts, gets a temporary one (removed at exit).
_DATA_DIR = tempfile.mkdtemp(prefix="kb-test-data-")
os.environ["KB_DATA_DIR"] = _DATA_DIR
os.environ.pop("KB_STORAGE_DIR", None)
os.environ.pop("KB_DATABASE_URL", None)
atexit.register(shutil.rmtree, _DATA_DIR, True)
get_settings.cache_clear()

ADMIN_URL = os.environ.get("KB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Render jobs go to a real Redis (a database of its own for the tests; workers are started by the tests).
os.environ.setdefault("KB_BROKER_URL", os.environ.get("KB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))
# Pages ask for the thumbnails their cards lack (kb.web.thumbnails) only in the tests about that
# (tests/test_view_thumbnails.py): elsewhere a page view would queue render jobs the test did not ask for.
os.environ.setdefault("KB_VIEW_THUMBNAILS", "false")
BACKEND = os.environ.get("KB_TEST_DATABASE", "postgresql")
# Files the code writes to its data folder (serving graph files, artifacts) go to a folder of this session's.
os.environ.setdefault("KB_DATA_DIR", tempfile.mkdtemp(prefix="kb-test-data-"))


def pytest_report_header(config):
    return f"database backend: {BACKEND}"


# Tests marked database_free compute with torch or numpy alone: the same on either backend. bin/test runs them in
# its PostgreSQL pass and skips them in the SQLite pass (KB_TEST_DATABASE_FREE=skip), which halves their CI time; a
# run of one backend alone runs them. A database_free test that asks for a database fixture is an error.
_DATABASE_FIXTURES = {"db_url", "engine", "api", "client", "accounts", "imported", "digits_import"}


def pytest_collection_modifyitems(config, items):
    skip = os.environ.get("KB_TEST_DATABASE_FREE") == "skip"
    for item in items:
        if item.get_closest_marker("database_free") is None:
            continue
        used = _DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(f"{item.nodeid} is marked database_free but uses {sorted(used)}")
        if skip:
            item.add_marker(pytest.mark.skip(reason="database-free: ran in the first backend's pass"))


@pytest.fixture(scope="session")
def db_url(tmp_path_factory):
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'kb.sqlite'}"
        return
    name = f"kb_test_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    engine_for.cache_clear()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


_SESSION_ENGINE: list[sa.Engine] = []  # the session's engine, once a test asked for it


@pytest.fixture(scope="session")
def engine(db_url):
    migrate.upgrade(db_url)
    _SESSION_ENGINE.append(engine_for(db_url))
    return _SESSION_ENGINE[0]


def _last_job_id() -> int:
    with _SESSION_ENGINE[0].connect() as conn:
        return conn.execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM render_job")).scalar_one()


@pytest.fixture(scope="module", autouse=True)
def no_render_job_left_queued():
    """Render jobs a module left queued or running (its workers are gone by then) end FAILED with it: else a later
    module's server (its sweeper re-sends QUEUED jobs) would hand them to its one CPU worker, ahead of its own."""
    start = _last_job_id() if _SESSION_ENGINE else 0
    yield
    if _SESSION_ENGINE:
        with _SESSION_ENGINE[0].begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE render_job SET status = 'FAILED', error = 'left queued by a test module' "
                    "WHERE id > :start AND status IN ('QUEUED', 'RUNNING')"
                ),
                {"start": start},
            )


@pytest.fixture
def kb_env(db_url, engine, tmp_path, monkeypatch):
    """Environment for CLI runs against the session database."""
    monkeypatch.setenv("KB_DATABASE_URL", db_url)
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield {"KB_DATABASE_URL": db_url, "KB_DATA_DIR": str(tmp_path / "data")}
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def tiny_arch():
    import tiny

    return tiny.register()


@pytest.fixture(scope="session")
def inceptionv1(db_url, engine):
    """lucent:inceptionv1 with seeded random weights, imported once per session by the real CLI."""
    import subprocess

    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": db_url}
    result = subprocess.run(
        [str(exe), "import", "lucent:inceptionv1", "--weights", "random", "--seed", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="session")
def api(engine, inceptionv1):
    """A Starlette TestClient on the app (lifespan run: the graphs are read at start-up)."""
    from starlette.testclient import TestClient

    from kb.settings import Settings
    from kb.web.app import create_app

    # the session's app serves every module: its mutation limits are out of the way (one module's editor must not
    # use up the next one's budget); the tests of the limits build apps of their own with tight ones
    app = create_app(
        Settings(
            database_url=str(engine.url.render_as_string(hide_password=False)),
            public_url="https://kb.example.org",
            rate_limit_per_minute=1_000_000,
            rate_limit_burst=1_000_000,
        ),
        engine=engine,
        warm=False,
    )
    app.state.graphs.warm()
    with TestClient(app) as client:
        yield client


def gql(client, query: str, variables: dict | None = None, status: int = 200) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="session")
def accounts(engine):
    """One account and token per role (unique names per session), plus a second editor."""
    from kb.claims import accounts as acc

    suffix = secrets.token_hex(3)
    out = {}
    with engine.begin() as conn:
        for name, role in (
            ("viewer", "viewer"),
            ("editor", "editor"),
            ("editor2", "editor"),
            ("moderator", "moderator"),
            ("admin", "admin"),
        ):
            user = f"{name}-{suffix}"
            acc.create_user(conn, user, role)
            out[name] = {"name": user, "role": role, "token": acc.create_token(conn, user)}
    return out


def as_user(client, token: str | None, query: str, variables: dict | None = None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@contextmanager
def sql_statements(engine: sa.Engine):
    """The SQL statements sent on ``engine`` inside the block (a list, filled as they go)."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


@pytest.fixture(scope="session")
def digits_model():
    """demo:digits trained once per session from seed 0 (kb.graph.zoo.digits_training.Trained: the network, the
    images, the labels, the held-out split and accuracy), cached in the session's data folder, where
    `kb import demo:digits` finds it (``digits_import``) instead of training again."""
    from kb.graph.zoo.digits_training import trained

    return trained(0, Path(_DATA_DIR) / "demo")


@pytest.fixture(scope="session")
def digits_import(db_url, engine, digits_model):
    """`kb import demo:digits` by the real CLI into the session database (the weights ``digits_model`` cached):
    the model ``digits`` and the data set ``digits`` (its 1,797 images as PNG files). Returns the CLI's result."""
    import subprocess

    exe = Path(sys.executable).parent / "kb"
    env = {**os.environ, "KB_DATABASE_URL": db_url, "KB_DATA_DIR": _DATA_DIR}
    result = subprocess.run([str(exe), "import", "demo:digits"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result
