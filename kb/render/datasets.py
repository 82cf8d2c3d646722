"""Datasets of images for dataset examples, as the API and the command line look them up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kb.db.render_tables import dataset_table
from kb.db.tables import utcnow


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
