"""``kb backup`` and ``kb restore``: a copy of the whole database, for the same backend (kb.db.backup)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import typer

from kb.cli.errors import expected
from kb.db import backup as copies
from kb.db import migrate
from kb.db.engine import engine_for
from kb.settings import get_settings


def _where(url: str) -> str:
    """The database, for people: the SQLite file, or the PostgreSQL URL with its password hidden."""
    if copies.backend(url) == "sqlite":
        return str(sa.engine.make_url(url).database)
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@expected()
def backup_command(file: Path = typer.Argument(..., help="the backup to write (replaced if it exists)")) -> None:
    """Copy the whole database to FILE, safely while kb serve runs: SQLite's online backup for the embedded
    database, pg_dump for PostgreSQL. Accounts keep their passwords and tokens; row ids are kept."""
    url = get_settings().db_url
    size = copies.backup(url, file)
    typer.echo(f"{_where(url)} backed up to {file} ({size / 1e6:.1f} MB, {copies.backend(url)})")


@expected()
def restore_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a file written by kb backup"),
    replace: bool = typer.Option(False, "--replace", help="overwrite a database that already holds data"),
) -> None:
    """Replace the database by a backup of the same backend (refused if it holds data, without --replace);
    then bring its schema up to this version of kb. Stop kb serve first."""
    url = get_settings().db_url
    copies.restore(url, file, replace=replace)
    engine_for(url).dispose()
    migrate.upgrade(url)
    typer.echo(f"{file} restored into {_where(url)}; schema at {migrate.current(engine_for(url))}")
