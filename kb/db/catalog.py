"""The resolver's catalog (models and their layers) read from the database, and layers' details by id."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

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


def layers_by_id(conn: sa.Connection, layer_ids: Collection[int]) -> dict[int, dict[str, Any]]:
    """The layer rows (module path, kind, output shape, aliases, tags...) of these ids, in one statement."""
    if not layer_ids:
        return {}
    lt = layer_table
    return {r.id: dict(r._mapping) for r in conn.execute(sa.select(lt).where(lt.c.id.in_(set(layer_ids))))}
