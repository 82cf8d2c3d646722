"""Schema migrations with Alembic: ``kb db upgrade`` is the explicit step; commands check the revision."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from alembic import command


class SchemaOutOfDate(RuntimeError):
    pass


def script_location() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "_alembic", here.parent.parent / "alembic"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the alembic migrations folder is missing from this installation")


# Made by hand in the migrations, so the models cannot declare them: left out of autogenerate on purpose.
_HAND_MADE_TABLES = re.compile(r"claim_fts(_\w+)?|connection_m\d+")  # SQLite's FTS5; PostgreSQL's per-model partitions
_HAND_MADE_POSTGRES = {("column", "search"), ("index", "ix_claim_search")}


def autogenerate_filter(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for ``dialect``: what autogenerate compares.

    Left out: SQLite's FTS5 tables ``claim_fts*``; PostgreSQL's partitions ``connection_m{id}`` (made by the importer,
    indexed one by one), and the generated column ``claim.search`` and its index.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and name and _HAND_MADE_TABLES.fullmatch(name):
            return False
        if type_ == "index" and name and _HAND_MADE_TABLES.fullmatch(obj.table.name):
            return False
        return not (dialect == "postgresql" and (type_, name) in _HAND_MADE_POSTGRES)

    return include


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head(url: str) -> str | None:
    """The newest migration's revision (None only if there are none)."""
    return ScriptDirectory.from_config(config(url)).get_current_head()


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def ensure_current(engine: sa.Engine, url: str, auto: bool) -> None:
    """Upgrade (embedded SQLite) or say exactly what to run (a shared PostgreSQL: an explicit step)."""
    have, want = current(engine), head(url)
    if have == want:
        return
    if auto:
        upgrade(url)
        return
    where = sa.engine.make_url(url).render_as_string(hide_password=True)
    raise SchemaOutOfDate(
        f"the database {where} is at schema revision {have or 'none'}, this code needs {want}: run `kb db upgrade`"
    )
