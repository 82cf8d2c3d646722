"""``kb neuron``: a neuron key in any form resolved, with what the command line shows of it (its pinned key, the
claims about it, its strongest connections), in one use case. The unit and its connections are kb.app.graph_reads'
(the API's ranking, from the serving graph file or the database's rows); the claims are read in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from kb.app import graph_reads
from kb.app.graph_reads import Neighbour, Unit, Way
from kb.app.paging import MAX_PAGE, cursor
from kb.claims.claims import claims_about_neurons
from kb.claims.rows import ClaimRow
from kb.graph.keys import NotFound
from kb.serving.graph_cache import GraphCache


@dataclass(frozen=True)
class NeuronLookup:
    unit: Unit  # its canonical key, its pinned key, its layer
    claims: list[ClaimRow]  # whose current revision is about this neuron, oldest first
    inputs: list[Neighbour]  # the strongest by weight, in the API's order
    outputs: list[Neighbour]


def _top(graphs: GraphCache, unit: Unit, way: Way, n: int) -> list[Neighbour]:
    """The unit's first ``n`` inputs or outputs by weight: the API's pages (at most MAX_PAGE each), one after
    the other, so that the command line ranks as the API does and may show more than a page."""
    edges: list[Neighbour] = []
    after = None
    while len(edges) < n:
        page = graph_reads.neighbours(graphs, unit, way, first=min(MAX_PAGE, n - len(edges)), after=after)
        edges.extend(page.edges)
        if not page.edges or page.stop >= page.total:
            break
        after = cursor(page.edges[-1].offset)
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
    found = graphs.resolve(key, model)
    try:
        g = graphs.graph(found.model)
    except LookupError:
        raise NotFound(f"{found} is not in the database") from None
    unit = Unit.at(g, g.ordinal(found.layer, found.index))
    triple = (found.model, found.layer, found.index)
    with engine.connect() as conn:
        claims = claims_about_neurons(conn, [triple])[triple]
    return NeuronLookup(
        unit,
        claims,
        _top(graphs, unit, "inputs", inputs),
        _top(graphs, unit, "outputs", outputs),
    )
