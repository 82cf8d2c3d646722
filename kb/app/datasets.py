"""Data sets (folders of images for dataset examples and circuit checks), one function per use case: the CLI
(``kb dataset``) calls these; the render forms and the API read the same rows through kb.render.datasets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from kb.db.render_tables import dataset_table
from kb.errors import Problem
from kb.graph import zoo
from kb.render.datasets import add_dataset, dataset_by_name


class BadDataset(Problem):
    """Not a folder, no images in it, or the name is taken: nothing was registered."""


@dataclass(frozen=True)
class Dataset:
    name: str
    images: int
    path: Path


@dataclass(frozen=True)
class Added:
    dataset: Dataset
    unreadable: list[Path]  # registered all the same: a dataset pass skips them (a job fails when none is left)


def scan(path: Path) -> list[Path]:
    """The image files below ``path`` (.jpg .jpeg .png .webp .bmp, recursively); BadDataset if none or no folder."""
    from kb.render.dataset_examples import image_files

    if not path.is_dir():
        raise BadDataset(f"{path} is not a folder")
    files = image_files(path)
    if not files:
        raise BadDataset(f"{path} holds no .jpg, .jpeg, .png, .webp or .bmp files")
    return files


def add(
    engine: sa.Engine, name: str, path: Path, files: list[Path], progress: Callable[[int], None] | None = None
) -> Added:
    """Registers ``files`` (from ``scan``) as data set NAME, after reading each one's header (``progress(1)`` per
    file); BadDataset if the name is taken."""
    from PIL import Image, UnidentifiedImageError

    unreadable = []
    for f in files:
        try:
            with Image.open(f):
                pass
        except (UnidentifiedImageError, OSError):
            unreadable.append(f)
        if progress is not None:
            progress(1)
    with engine.begin() as conn:
        if not add_dataset(conn, name, path, len(files)):
            raise BadDataset(f"dataset {name!r} already exists")
    return Added(Dataset(name, len(files), path.resolve()), unreadable)


def datasets(engine: sa.Engine) -> list[Dataset]:
    """Every registered data set, by name."""
    t = dataset_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.name, t.c.images, t.c.path).order_by(t.c.name))
        return [Dataset(r.name, r.images, Path(r.path)) for r in rows]


@dataclass(frozen=True)
class ModelDataset:
    """The data set of the images a model's weights were trained on."""

    name: str
    path: str  # the folder registered under ``name``
    outcome: Literal["added", "registered", "taken"]  # added now; there before; the name is another folder's


def add_model_dataset(engine: sa.Engine, source: str, data_dir: Path) -> ModelDataset | None:
    """After ``kb import SOURCE``: the images the architecture's weights were trained on (``Architecture.dataset``:
    demo:digits), written under ``data_dir/datasets/NAME`` and registered as data set NAME unless that name is
    taken (then left as it is); None for an architecture without one."""
    arch = zoo.get(source)
    if arch.dataset is None:
        return None
    from kb.render.dataset_examples import image_files  # torch: only where models are imported

    name, write = arch.dataset
    folder = write(data_dir / "datasets" / name).resolve()
    with engine.begin() as conn:
        if add_dataset(conn, name, folder, len(image_files(folder))):
            return ModelDataset(name, str(folder), "added")
        taken = dataset_by_name(conn, name)
    assert taken is not None  # add_dataset found the name taken, in this transaction
    path = str(taken["path"])
    return ModelDataset(name, path, "registered" if path == str(folder) else "taken")
