"""``kb db``: the schema (Alembic migrations as an explicit step)."""

from __future__ import annotations

import sqlalchemy as sa
import typer

from kb.db import migrate
from kb.db.engine import get_engine
from kb.settings import get_settings

app = typer.Typer(help="Database schema.", no_args_is_help=True)


def open_engine() -> sa.Engine:
    """The engine, its schema current: upgraded automatically for the embedded SQLite (or KB_AUTO_UPGRADE=1),
    otherwise an error naming the command to run."""
    settings = get_settings()
    engine = get_engine()
    auto = settings.auto_upgrade if settings.auto_upgrade is not None else settings.is_sqlite
    migrate.ensure_current(engine, settings.db_url, auto)
    return engine


@app.command()
def upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply migrations up to REVISION."""
    url = get_settings().db_url
    migrate.upgrade(url, revision)
    typer.echo(f"schema at {migrate.current(get_engine())}")


@app.command()
def current() -> None:
    """Print the schema revision of the database and the one this code needs."""
    url = get_settings().db_url
    typer.echo(f"database {migrate.current(get_engine()) or 'empty'}; code needs {migrate.head(url)}")
