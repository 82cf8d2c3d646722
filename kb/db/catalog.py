"""The resolver's catalog (models and their layers) read from the database."""

from __future__ import annotations

import sqlalchemy as sa

from kb.db.tables import Layer, Model
from kb.graph.keys import Catalog, LayerRef, ModelRef


def load_catalog(conn: sa.Connection) -> Catalog:
    layers: dict[int, list[LayerRef]] = {}
    for row in conn.execute(
        sa.select(Layer.model_id, Layer.key, Layer.module_path, Layer.units, Layer.aliases).order_by(
            Layer.model_id, Layer.position
        )
    ):
        layers.setdefault(row.model_id, []).append(
            LayerRef(row.key, row.module_path, row.units, tuple(row.aliases or ()))
        )
    models = [
        ModelRef(row.key, row.sha256, tuple(layers.get(row.id, ())), row.removed_at is not None)
        for row in conn.execute(sa.select(Model.id, Model.key, Model.sha256, Model.removed_at))
    ]
    return Catalog(models)
