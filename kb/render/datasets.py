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
