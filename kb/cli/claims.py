"""``kb import-families`` and ``kb claims export|import``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kb.app import claim_files
from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.progress import Phases

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
    engine = open_engine()
    with Phases() as phases:
        report = claim_files.import_families(engine, folder, model, source, names, title or None, phases)
    typer.echo(f"{report.created} families imported, {report.unchanged} already there, from {report.files} files")


@claims_app.command("export")
@expected()
def export(output: Path | None = typer.Option(None, "--output", "-o", help="default: standard output")) -> None:
    """Users (no passwords or tokens), circuits and claims with every revision, reviews with their history,
    and the activity feed, as JSON Lines (format circuit-kb/claims@2) with a trailer."""
    engine = open_engine()
    with Phases() as phases:
        done = claim_files.export_claims(engine, phases)
    if output:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(done.text, encoding="utf-8")
        tmp.replace(output)
        typer.echo(f"{done.records} records and a trailer written to {output}", err=True)
    else:
        sys.stdout.write(done.text)


@claims_app.command("import")
@expected()
def import_(file: Path = typer.Argument(..., exists=True, dir_okay=False)) -> None:
    """Import an export (format 2, or 1) into a database with no claims or circuits yet, keys and revisions
    kept: every record is checked first, then all are written in one transaction (a truncated or invalid file
    writes nothing)."""
    data = file.read_bytes()
    engine = open_engine()
    with Phases() as phases:
        done = claim_files.import_claims(engine, data, file.name, phases)
    typer.echo(done.summary)
