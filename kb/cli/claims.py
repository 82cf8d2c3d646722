"""``kb import-families`` and ``kb claims export|import``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from kb.claims import families, transfer
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.progress import Phases
from kb.db.catalog import load_catalog

claims_app = typer.Typer(
    help="Claims: export and import (JSON Lines, every revision and review).", no_args_is_help=True
)


@expected()
def import_families_command(
    folder: Path = typer.Argument(..., help="a folder of layer files (e.g. kb/data/distill-early-vision)"),
    model: str = typer.Option(..., "--model", help="the imported model the units belong to"),
    source: str = typer.Option(..., "--source", help="what to cite, e.g. doi:10.23915/distill.00024.002"),
    authors: str = typer.Option(
        "", "--authors", help="the source's authors, separated by ';' (cited as the claims' authors)"
    ),
    title: str = typer.Option("", "--title", help="the source's title"),
) -> None:
    """Import neuron families as FAMILY claims (a re-run changes nothing); you are credited as curator."""
    if not folder.is_dir():
        raise CliProblem(f"{folder} is not a folder")
    names = [a.strip() for a in authors.split(";") if a.strip()]
    with open_engine().begin() as conn, Phases() as phases:
        report = families.import_families(
            conn,
            load_catalog(conn),
            folder,
            model,
            source,
            names,
            title or None,
            progress=lambda layer, n: phases.next(f"families {layer}", n),
        )
    typer.echo(f"{report.created} families imported, {report.unchanged} already there, from {report.files} files")


@claims_app.command("export")
@expected()
def export(output: Path | None = typer.Option(None, "--output", "-o", help="default: standard output")) -> None:
    """Users (no passwords or tokens), circuits and claims with every revision, reviews with their history,
    and the activity feed, as JSON Lines (format circuit-kb/claims@2) with a trailer."""
    with open_engine().connect() as conn, Phases() as phases:
        tick = phases.stage("exporting claims")
        lines = []
        for line in transfer.export_lines(conn):
            lines.append(line)
            tick(1)
    text = "".join(line + "\n" for line in lines)
    if output:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
        typer.echo(f"{len(lines) - 2} records and a trailer written to {output}", err=True)
    else:
        sys.stdout.write(text)


@claims_app.command("import")
@expected()
def import_(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import an export (format 2, or 1) into a database with no claims or circuits yet, keys and revisions
    kept: every record is checked first, then all are written in one transaction (a truncated or invalid file
    writes nothing)."""
    with file.open("rb") as fh:
        raw = fh.read().split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    with open_engine().begin() as conn, Phases() as phases:
        tick = phases.stage(f"importing {file.name}", len(raw))

        def lines() -> Iterator[bytes]:
            for line in raw:
                yield line
                tick(1)

        counts = transfer.import_lines(conn, lines())
        phases.next("committing")
    typer.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
