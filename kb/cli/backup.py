"""``kb backup`` and ``kb restore``: a copy of the whole database, for the same backend (kb.app.backup)."""

from __future__ import annotations

from pathlib import Path

import typer

from kb.app import backup as copies
from kb.cli.errors import expected
from kb.settings import get_settings


@expected()
def backup_command(file: Path = typer.Argument(..., help="the backup to write (replaced if it exists)")) -> None:
    """Copy the whole database to FILE, safely while kb serve runs: SQLite's online backup for the embedded
    database, pg_dump for PostgreSQL. Accounts keep their passwords and tokens; row ids are kept."""
    done = copies.backup(get_settings().db_url, file)
    typer.echo(f"{done.database} backed up to {done.file} ({done.size / 1e6:.1f} MB, {done.backend})")


@expected()
def restore_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a file written by kb backup"),
    replace: bool = typer.Option(False, "--replace", help="overwrite a database that already holds data"),
) -> None:
    """Replace the database by a backup of the same backend (refused if it holds data, without --replace);
    then bring its schema up to this version of kb. Stop kb serve first."""
    done = copies.restore(get_settings().db_url, file, replace=replace)
    typer.echo(f"{done.file} restored into {done.database}; schema at {done.schema}")
