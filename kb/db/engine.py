"""Engines and sessions, for PostgreSQL (production) and SQLite (the embedded default)."""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from kb.db import io_guard
from kb.errors import Problem
from kb.settings import Settings, get_settings

log = logging.getLogger("kb.db")


# Connections beyond one per API thread: sign-in lookups and /health (Starlette's thread pool), the live-events
# follower, the start-up graph reads, and a request's occasional second connection.
POOL_RESERVE = 8


class PoolExhausted(Problem):
    """Every connection of the pool stayed in use for the pool's whole timeout: the server is busy."""

    code = "UNAVAILABLE"


class GuardedPool(QueuePool):
    """QueuePool that hands out no connection inside ``io_guard.no_io()`` (before any ping or wait), and whose
    exhaustion is ``PoolExhausted`` (UNAVAILABLE, with a hint of when to retry), not SQLAlchemy's TimeoutError."""

    def connect(self) -> PoolProxiedConnection:
        io_guard.check("a database connection")
        try:
            return super().connect()
        except sa.exc.TimeoutError:
            wait = max(1, math.ceil(self.timeout()))
            log.warning("database pool exhausted: %d connections in use for %.1f s", self.checkedout(), self.timeout())
            raise PoolExhausted(
                f"the server is busy (every database connection is in use): retry in {wait} s", retryAfter=wait
            ) from None


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


def make_engine(url: str, settings: Settings | None = None) -> sa.Engine:
    """An engine whose pool holds a connection for each API thread (``KB_API_THREADS``) plus ``POOL_RESERVE``,
    and makes a request wait at most ``Settings.pool_timeout_s`` for one (well inside the request's limit)."""
    settings = settings or get_settings()
    pool: dict[str, Any] = {
        "poolclass": GuardedPool,
        "pool_size": max(1, settings.api_threads),
        "max_overflow": POOL_RESERVE,
        "pool_timeout": settings.pool_timeout_s,
    }
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            pool = {}  # SQLAlchemy's own pool for an in-memory database (one connection per thread)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, **pool)


@lru_cache(maxsize=8)
def engine_for(url: str) -> sa.Engine:
    return make_engine(url)


def get_engine() -> sa.Engine:
    return engine_for(get_settings().db_url)
