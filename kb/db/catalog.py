"""The resolver's catalog (models and their layers) read from the database."""

from __future__ import annotations

import sqlalchemy as sa

from kb.db.tables import layer_table, model_table
from kb.graph.keys import Catalog, LayerRef, ModelRef


def load_catalog(conn: sa.Connection) -> Catalog:
    lt, m = layer_table, model_table
    layers: dict[int, list[LayerRef]] = {}
    for row in conn.execute(
        sa.select(lt.c.model_id, lt.c.key, lt.c.module_path, lt.c.units, lt.c.aliases).order_by(
            lt.c.model_id, lt.c.position
        )
    ):
        layers.setdefault(row.model_id, []).append(
            LayerRef(row.key, row.module_path, row.units, tuple(row.aliases or ()))
        )
    models = [
        ModelRef(row.key, row.sha256, tuple(layers.get(row.id, ())), row.removed_at is not None)
        for row in conn.execute(sa.select(m.c.id, m.c.key, m.c.sha256, m.c.removed_at))
    ]
    return Catalog(models)
