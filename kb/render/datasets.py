"""Datasets of images for dataset examples, as the API and the command line look them up."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kb.db.render_tables import dataset_table


def dataset_by_name(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    """The dataset row (path, image count...) of this name, or None."""
    t = dataset_table
    row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def dataset_names(conn: sa.Connection) -> list[str]:
    """The data sets added (``kb dataset add``), by name."""
    t = dataset_table
    return list(conn.execute(sa.select(t.c.name).order_by(t.c.name)).scalars())
