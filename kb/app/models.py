"""The models in the knowledge base, as the operator lists them (``kb models``): one function, one read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from kb.db.tables import layer_table, model_table


@dataclass(frozen=True)
class ModelSummary:
    key: str
    source: str
    sha256: str
    weights: str
    removed_at: datetime | None
    layers: int
    units: int


def models(engine: sa.Engine) -> list[ModelSummary]:
    """Every model version, removed ones too, by key, with its count of layers and units."""
    m, lt = model_table, layer_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                m.c.key,
                m.c.source,
                m.c.sha256,
                m.c.weights,
                m.c.removed_at,
                sa.func.count(lt.c.id),
                sa.func.coalesce(sa.func.sum(lt.c.units), 0),
            )
            .select_from(m.outerjoin(lt, lt.c.model_id == m.c.id))
            .group_by(m.c.id)
            .order_by(m.c.key)
        ).all()
    return [ModelSummary(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6])) for r in rows]
