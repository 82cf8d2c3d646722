"""``kb dataset``: folders of images for dataset examples."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import typer

from kb.cli.db import open_engine
from kb.cli.errors import CliProblem, expected
from kb.cli.progress import Phases
from kb.db.render_tables import dataset_table
from kb.render.datasets import add_dataset

datasets_app = typer.Typer(help="Image folders for dataset examples.", no_args_is_help=True)


@datasets_app.command("add")
@expected()
def add(name: str, path: Path) -> None:
    """Register folder PATH (searched recursively for .jpg/.png/.webp/.bmp) as dataset NAME."""
    from PIL import Image, UnidentifiedImageError

    from kb.render.dataset_examples import image_files

    if not path.is_dir():
        raise CliProblem(f"{path} is not a folder")
    with Phases() as phases:
        phases.next(f"scanning {path}")
        files = image_files(path)
        if not files:
            raise CliProblem(f"{path} holds no .jpg, .jpeg, .png, .webp or .bmp files")
        tick = phases.next("reading image headers", len(files))
        unreadable = []
        for f in files:
            try:
                with Image.open(f):
                    pass
            except (UnidentifiedImageError, OSError):
                unreadable.append(f)
            tick(1)
    if unreadable:  # registered all the same: a dataset pass skips them (and fails a job when none is left)
        typer.echo(
            f"warning: {len(unreadable)} of {len(files)} files are not readable images, e.g. {unreadable[0]}", err=True
        )
    with open_engine().begin() as conn:
        if not add_dataset(conn, name, path, len(files)):
            raise CliProblem(f"dataset {name!r} already exists")
    typer.echo(f"dataset {name}: {len(files)} images in {path.resolve()}")


@datasets_app.command("list")
@expected()
def list_() -> None:
    t = dataset_table
    with open_engine().connect() as conn:
        for row in conn.execute(sa.select(t).order_by(t.c.name)):
            typer.echo(f"{row.name}  {row.images} images  {row.path}")
