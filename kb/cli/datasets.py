"""``kb dataset``: folders of images for dataset examples."""

from __future__ import annotations

from pathlib import Path

import typer

from kb.app import datasets
from kb.cli.db import open_engine
from kb.cli.errors import expected
from kb.cli.progress import Phases

datasets_app = typer.Typer(help="Image folders for dataset examples.", no_args_is_help=True)


@datasets_app.command("add")
@expected()
def add(name: str, path: Path) -> None:
    """Register folder PATH (searched recursively for .jpg/.png/.webp/.bmp) as dataset NAME."""
    engine = open_engine()
    with Phases() as phases:
        phases.next(f"scanning {path}")
        files = datasets.scan(path)
        tick = phases.next("reading image headers", len(files))
        added = datasets.add(engine, name, path, files, tick)
    if added.unreadable:
        typer.echo(
            f"warning: {len(added.unreadable)} of {len(files)} files are not readable images, "
            f"e.g. {added.unreadable[0]}",
            err=True,
        )
    typer.echo(f"dataset {name}: {added.dataset.images} images in {added.dataset.path}")


@datasets_app.command("list")
@expected()
def list_() -> None:
    for ds in datasets.datasets(open_engine()):
        typer.echo(f"{ds.name}  {ds.images} images  {ds.path}")
