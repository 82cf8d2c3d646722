"""``kb neuron``: a neuron key in any form resolved, with what the command line shows of it (its pinned key, the
claims about it, its strongest connections), in one use case. The graph comes from the serving graph file (mapped)
or the database's rows, as the API reads it; the claims are read in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kb.claims.claims import claims_about_neurons
from kb.graph.keys import NeuronKey, NotFound
from kb.graph.store import ModelGraph
from kb.serving.graph_cache import GraphCache


@dataclass(frozen=True)
class Connection:
    neighbor: NeuronKey
    weight: float
    magnitude: float  # |K|, the kernel's norm
    method: str  # how the weight was computed (the link's method)


@dataclass(frozen=True)
class ClaimSummary:
    id: int
    status: str
    kind: str
    label: str


@dataclass(frozen=True)
class NeuronLookup:
    key: NeuronKey  # canonical
    pinned: str  # the key pinned to the weights' sha256
    claims: list[ClaimSummary]  # whose current revision is about this neuron, oldest first
    inputs: list[Connection]  # the top ones by weight, in the API's order
    outputs: list[Connection]


def _top(g: ModelGraph, ordinal: int, way: str, n: int) -> list[Connection]:
    """The unit's top ``n`` inputs or outputs by weight, in the API's order (``Rows.positions``, the same graph)."""
    rows = g.inputs if way == "inputs" else g.outputs
    edges = []
    for p in rows.positions(ordinal)[:n]:
        other = int(rows.other[p])
        layer, index = g.unit(other)
        source, target = (other, ordinal) if way == "inputs" else (ordinal, other)
        edges.append(
            Connection(
                NeuronKey(g.key, layer.key, index),
                float(rows.weight[p]),
                float(rows.magnitude[p]),
                g.method(source, target),
            )
        )
    return edges


def look_up_neuron(
    engine: sa.Engine,
    key: str,
    *,
    model: str | None = None,
    inputs: int = 0,
    outputs: int = 0,
    graphs_dir: Path | None = None,
) -> NeuronLookup:
    """The neuron ``key`` (any form; ``model`` for keys without one) with its top ``inputs`` and ``outputs`` by
    weight. NotFound if the key names no neuron of the catalog, or its model's graph is not in the database."""
    graphs = GraphCache(engine, graphs_dir=graphs_dir)
    key_ = graphs.catalog().neuron(key, default_model=model)
    try:
        g = graphs.graph(key_.model)
    except LookupError:
        raise NotFound(f"{key_} is not in the database") from None
    ordinal = g.ordinal(key_.layer, key_.index)
    unit = (key_.model, key_.layer, key_.index)
    with engine.connect() as conn:
        claims = claims_about_neurons(conn, [unit])[unit]
    return NeuronLookup(
        key_,
        key_.pinned(g.sha256),
        [ClaimSummary(c.id, c.status, c.kind, c.label) for c in claims],
        _top(g, ordinal, "inputs", inputs) if inputs else [],
        _top(g, ordinal, "outputs", outputs) if outputs else [],
    )
