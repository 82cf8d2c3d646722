"""Schema migrations with Alembic: ``kb db upgrade`` is the explicit step; commands check the revision."""

from __future__ import annotations

from pathlib import Path

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


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head(url: str) -> str:
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
