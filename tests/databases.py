"""New, empty databases beside the session's one: for moves (export -> import, backup -> restore)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import ADMIN_URL, BACKEND

from kb.db import migrate
from kb.db.engine import engine_for, make_engine


def fresh(backend: str, folder: Path, migrated: bool = True) -> tuple[str, Callable[[], None]]:
    """A new database of this backend (migrated to head, or with no tables at all): its URL and its drop."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / f'fresh-{secrets.token_hex(3)}.sqlite'}"
        if migrated:
            migrate.upgrade(url)
        return url, lambda: engine_for(url).dispose()
    name = f"kb_fresh_{secrets.token_hex(4)}"
    admin = make_engine(ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    if migrated:
        migrate.upgrade(url)

    def drop() -> None:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url, drop


@contextmanager
def fresh_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """make(backend=the session's, migrated=True): a new empty database; all are dropped when the block ends."""
    drops = []

    def make(backend: str = BACKEND, migrated: bool = True) -> str:
        url, drop = fresh(backend, tmp_path_factory.mktemp("fresh"), migrated)
        drops.append(drop)
        return url

    try:
        yield make
    finally:
        for drop in drops:
            drop()
