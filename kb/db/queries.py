"""Read queries on the graph, shared by the CLI and the API. SQLAlchemy Core; no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kb.db.tables import Connection, Layer, Model, Neuron
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
    return (
        sa.select(
            Neuron.id,
            Neuron.model_id,
            Neuron.layer_id,
            Neuron.index,
            Model.key.label("model"),
            Layer.key.label("layer"),
            Model.sha256,
        )
        .join(Layer, Layer.id == Neuron.layer_id)
        .join(Model, Model.id == Neuron.model_id)
    )


def neuron(conn: sa.Connection, key: NeuronKey) -> NeuronRow | None:
    row = conn.execute(
        _neuron_select().where(Model.key == key.model, Layer.key == key.layer, Neuron.index == key.index)
    ).first()
    return NeuronRow(*row) if row else None


def neighbors(
    conn: sa.Connection, of: NeuronRow, direction: str, limit: int, order: str = "weight", sign: str = "any"
) -> list[Edge]:
    """Top ``limit`` inputs (direction "inputs") or outputs of a unit; order "weight" lists the most excitatory
    first, sign "negative" the most inhibitory first, "magnitude" the strongest either way."""
    c = Connection.__table__
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
        for r in conn.execute(_neuron_select().where(Neuron.__table__.c.id.in_([e.other for e in edges])))
    }
    return [Edge(rows[e.other], e.weight, e.magnitude, e.method) for e in edges]
