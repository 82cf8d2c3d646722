"""Engines and sessions, for PostgreSQL (production) and SQLite (the embedded default)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from kb.db import io_guard
from kb.settings import get_settings


class GuardedPool(QueuePool):
    """QueuePool that hands out no connection inside ``io_guard.no_io()`` (before any ping or wait)."""

    def connect(self) -> PoolProxiedConnection:
        io_guard.check("a database connection")
        return super().connect()


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def driver_connection(conn: sa.Connection) -> Any:
    """The database driver's own connection under ``conn`` (psycopg's, for COPY; sqlite3's, for bulk reads)."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the database connection was closed")
    return raw


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool = {"poolclass": GuardedPool} if path and path != ":memory:" else {}
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, poolclass=GuardedPool)


@lru_cache(maxsize=8)
def engine_for(url: str) -> sa.Engine:
    return make_engine(url)


def get_engine() -> sa.Engine:
    return engine_for(get_settings().db_url)
