"""``kb renders export|import``: a model version's finished renders as one file (kb.render.bundles), for another
knowledge base that holds the same weights."""

from __future__ import annotations

from pathlib import Path

import typer

from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.render import bundles
from kb.render.params import ALL_KINDS
from kb.render.storage import storage_from_settings
from kb.settings import get_settings

KIND_HELP = f"only these kinds (repeatable): {', '.join(ALL_KINDS)}"

renders_app = typer.Typer(
    help="Render bundles: a model's pictures, from one knowledge base to another.", no_args_is_help=True
)


@renders_app.command("export")
@expected()
def export_command(
    model: str = typer.Argument(..., help="the model's key"),
    out: Path = typer.Option(..., "-o", "--output", dir_okay=False, help="the bundle to write (replaced if it exists)"),
    kind: list[str] = typer.Option(None, "--kind", help=KIND_HELP),
) -> None:
    """Write every finished render of MODEL (images, jobs, parameters, versions, device, precision) to a bundle
    keyed by the weights' sha256."""
    if not out.resolve().parent.is_dir():
        raise CliProblem(f"folder {out.resolve().parent} does not exist")
    kinds = [k.upper() for k in kind or []]
    engine = open_engine()
    done = bundles.export(engine, storage_from_settings(get_settings(), engine), model, out, kinds or None)
    typer.echo(
        f"{out}: {done.records} renders ({done.images} images) of {done.model}@{done.sha256[:12]}, "
        f"{done.bytes / 1e6:.2f} MB"
    )


@renders_app.command("import")
@expected()
def import_command(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="a bundle written by kb renders export"),
) -> None:
    """Import a bundle into the model with the same weights (by sha256, whatever its key here): every image and
    record is checked first, then all of it is written or nothing. Importing again changes nothing."""
    engine = open_engine()
    done = bundles.import_bundle(engine, storage_from_settings(get_settings(), engine), file)
    typer.echo(
        f"{file}: {done.records} renders of {done.model}@{done.sha256[:12]} in {done.seconds:.2f}s: "
        f"{done.new_jobs} new, {done.finished_jobs} finished, {done.already} already here; "
        f"{done.new_images} of {done.images} images new"
    )
