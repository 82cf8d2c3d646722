"""Datasets of images for dataset examples, as the API and the command line look them up."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kb.db.render_tables import dataset_table
from kb.db.tables import utcnow

if TYPE_CHECKING:
    from kb.graph.zoo.spec import Architecture


def dataset_by_name(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    """The dataset row (path, image count...) of this name, or None."""
    t = dataset_table
    row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def dataset_names(conn: sa.Connection) -> list[str]:
    """The data sets added (``kb dataset add``), by name."""
    t = dataset_table
    return list(conn.execute(sa.select(t.c.name).order_by(t.c.name)).scalars())


def add_dataset(conn: sa.Connection, name: str, path: Path, images: int) -> bool:
    """Registers folder ``path`` (``images`` images) as data set ``name``; False, writing nothing, if the name is
    taken."""
    t = dataset_table
    if conn.execute(sa.select(t.c.id).where(t.c.name == name)).first():
        return False
    conn.execute(sa.insert(t).values(name=name, path=str(path.resolve()), images=images, created_at=utcnow()))
    return True


def add_architecture_dataset(engine: sa.Engine, arch: Architecture, data_dir: Path) -> tuple[str, str] | None:
    """The images an architecture's weights were trained on (``Architecture.dataset``: demo:digits), written
    under ``data_dir/datasets/NAME`` and registered as data set NAME unless that name is taken. (name, what
    happened: "added FOLDER", "registered FOLDER" before, or "taken by FOLDER"), or None without one."""
    if arch.dataset is None:
        return None
    from kb.render.dataset_examples import image_files  # torch: only where models are imported

    name, write = arch.dataset
    folder = write(data_dir / "datasets" / name).resolve()
    with engine.begin() as conn:
        if add_dataset(conn, name, folder, len(image_files(folder))):
            return name, f"added {folder}"
        path = conn.execute(sa.select(dataset_table.c.path).where(dataset_table.c.name == name)).scalar_one()
    return name, f"registered {path}" if path == str(folder) else f"taken by {path}"
