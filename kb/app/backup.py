"""Backup and restore of the whole database (``kb backup``, ``kb restore``), one function per use case. The copy
itself is kb.db.backup's (SQLite's online backup, pg_dump / pg_restore); a restore is one use case with the schema
upgrade after it, so that what it leaves is a database this version of kb opens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kb.db import backup as copies
from kb.db import migrate
from kb.db.engine import engine_for


def where(url: str) -> str:
    """The database, for people: the SQLite file, or the PostgreSQL URL with its password hidden."""
    if copies.backend(url) == "sqlite":
        return str(sa.engine.make_url(url).database)
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@dataclass(frozen=True)
class BackedUp:
    database: str  # where(url)
    file: Path
    size: int  # bytes
    backend: str  # sqlite or postgresql


@dataclass(frozen=True)
class Restored:
    file: Path
    database: str  # where(url)
    schema: str | None  # the schema revision after the upgrade


def backup(url: str, file: Path) -> BackedUp:
    """The whole database at ``url`` copied to ``file`` (replaced if it exists, only once the copy is complete),
    safely while kb serve runs. Accounts keep their passwords and tokens; row ids are kept."""
    size = copies.backup(url, file)
    return BackedUp(where(url), file, size, copies.backend(url))


def restore(url: str, file: Path, *, replace: bool = False) -> Restored:
    """The database at ``url`` replaced by the backup ``file`` of the same backend (BackupProblem if it holds
    data and not ``replace``, or if the file is not such a backup), then its schema upgraded to this kb's. The
    engine pooled for ``url`` is disposed of first: its connections saw the database before."""
    copies.restore(url, file, replace=replace)
    engine_for(url).dispose()
    migrate.upgrade(url)
    return Restored(file, where(url), migrate.current(engine_for(url)))
