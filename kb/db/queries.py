"""Read queries on the graph, shared by the CLI and the API. SQLAlchemy Core; no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kb.db.tables import connection_table, layer_table, model_table, neuron_table
from kb.graph.keys import NeuronKey


@dataclass(frozen=True)
class NeuronRow:
    id: int
    model_id: int
    layer_id: int
    index: int
    model: str
    layer: str
    sha256: str

    @property
    def key(self) -> NeuronKey:
        return NeuronKey(self.model, self.layer, self.index)


@dataclass(frozen=True)
class Edge:
    neighbor: NeuronRow
    weight: float
    magnitude: float
    method: str


def _neuron_select():
    n, lt, m = neuron_table, layer_table, model_table
    return (
        sa.select(
            n.c.id,
            n.c.model_id,
            n.c.layer_id,
            n.c.index,
            m.c.key.label("model"),
            lt.c.key.label("layer"),
            m.c.sha256,
        )
        .join(lt, lt.c.id == n.c.layer_id)
        .join(m, m.c.id == n.c.model_id)
    )


def neuron(conn: sa.Connection, key: NeuronKey) -> NeuronRow | None:
    row = conn.execute(
        _neuron_select().where(
            model_table.c.key == key.model, layer_table.c.key == key.layer, neuron_table.c.index == key.index
        )
    ).first()
    return NeuronRow(*row) if row else None


def neighbors(
    conn: sa.Connection, of: NeuronRow, direction: str, limit: int, order: str = "weight", sign: str = "any"
) -> list[Edge]:
    """Top ``limit`` inputs (direction "inputs") or outputs of a unit; order "weight" lists the most excitatory
    first, sign "negative" the most inhibitory first, "magnitude" the strongest either way."""
    c = connection_table
    mine, other = (c.c.target_id, c.c.source_id) if direction == "inputs" else (c.c.source_id, c.c.target_id)
    column = c.c.magnitude if order == "magnitude" else c.c.weight
    q = sa.select(other.label("other"), c.c.weight, c.c.magnitude, c.c.method).where(
        c.c.model_id == of.model_id, mine == of.id
    )
    if sign == "positive":
        q = q.where(c.c.weight > 0)
    elif sign == "negative":
        q = q.where(c.c.weight < 0)
    q = q.order_by(column.asc() if (sign == "negative" and order == "weight") else column.desc(), other).limit(limit)
    edges = conn.execute(q).all()
    if not edges:
        return []
    rows = {
        r.id: NeuronRow(*r)
        for r in conn.execute(_neuron_select().where(neuron_table.c.id.in_([e.other for e in edges])))
    }
    return [Edge(rows[e.other], e.weight, e.magnitude, e.method) for e in edges]
