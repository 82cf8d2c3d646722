"""The neuron page's data, one use case: a unit with its layer and model, its strongest inputs and outputs ranked
three ways (with the inputs' kernels), a card for each of them (its feature visualizations and claim chips), its
own renders, claims, circuits and citation.

It is what the GraphQL query kb.web.pages.NEURON answers, to the value (tests/test_pages.py checks both against
each other), read without the executor: the page's 72 neighbour cards and 36 kernels are ~3,000 field completions
through it, most of the page's time. The neighbours come from kb.app.graph_reads (the graph in memory); the SQL is
three statements on one connection, whatever the number of cards: every card's renders, every card's claims, the
unit's circuits.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kb.app import graph_reads, pictures
from kb.app.graph_reads import Order, SignFilter, Unit, Way
from kb.app.pictures import Visualization
from kb.claims import circuits as circuit_domain
from kb.claims.claims import claims_about_neurons
from kb.claims.rows import ClaimRow
from kb.serving.graph_cache import GraphCache

PER_TAB = 10  # neighbours per list
CIRCUITS = 20  # circuits with the unit, newest first
CARD_KIND = "FEATURE_VIS"  # a card shows its unit's feature visualizations only


@dataclass(frozen=True, slots=True)
class ClaimSummary:
    """A claim about a unit, as its chip and its line show it."""

    key: str  # claim:N
    label: str
    kind: str
    status: str
    revision: int
    support_count: int
    dispute_count: int


@dataclass(frozen=True, slots=True)
class Card:
    """A neighbour's card: its key, its feature visualizations, the claims about it."""

    key: str
    visualizations: list[Visualization]
    claims: list[ClaimSummary]


@dataclass(frozen=True, slots=True)
class Edge:
    """A connection to a neighbour, with the neighbour's card (``kernel``: the inputs' lists only)."""

    weight: float
    magnitude: float
    method: str
    kernel: list[list[float]] | None
    node: Card


@dataclass(frozen=True, slots=True)
class Neighbours:
    """The first PER_TAB of a ranked list of neighbours, and how many the list has."""

    total_count: int
    edges: list[Edge]


@dataclass(frozen=True, slots=True)
class LayerSummary:
    key: str  # model/layer
    name: str
    units: int


@dataclass(frozen=True, slots=True)
class ModelSummary:
    key: str
    source: str
    short_hash: str  # the weights' sha256, first 12 hex digits: the pin of pinned keys
    weights: str  # how the weights were obtained
    weights_are_random: bool  # seeded random weights (a test import): its features mean nothing


@dataclass(frozen=True, slots=True)
class CircuitLink:
    key: str  # circuit:N
    name: str


@dataclass(frozen=True)
class NeuronPage:
    key: str
    pinned_key: str
    index: int
    layer: LayerSummary
    model: ModelSummary
    in_excite: Neighbours  # inputs by weight, positive ones (with kernels)
    in_inhibit: Neighbours  # inputs by weight, negative ones, the most inhibitory first (with kernels)
    in_strong: Neighbours  # inputs by magnitude, either sign (with kernels)
    out_excite: Neighbours
    out_inhibit: Neighbours
    out_strong: Neighbours
    claims: list[ClaimSummary]  # about this unit, oldest first
    visualizations: list[Visualization]  # every finished render of the unit, in job order
    citation: graph_reads.Citation
    circuits: list[CircuitLink]  # with this unit, newest first (at most CIRCUITS)


# The lists, as NeuronPage names them: (way, order, sign, with kernels)
LISTS: dict[str, tuple[Way, Order, SignFilter, bool]] = {
    "in_excite": ("inputs", Order.WEIGHT, SignFilter.POSITIVE, True),
    "in_inhibit": ("inputs", Order.WEIGHT, SignFilter.NEGATIVE, True),
    "in_strong": ("inputs", Order.MAGNITUDE, SignFilter.ANY, True),
    "out_excite": ("outputs", Order.WEIGHT, SignFilter.POSITIVE, False),
    "out_inhibit": ("outputs", Order.WEIGHT, SignFilter.NEGATIVE, False),
    "out_strong": ("outputs", Order.MAGNITUDE, SignFilter.ANY, False),
}


def _claim(row: ClaimRow) -> ClaimSummary:
    return ClaimSummary(
        key=f"claim:{row.id}",
        label=row.label,
        kind=row.kind,
        status=row.status,
        revision=row.revision,
        support_count=row.support_count,
        dispute_count=row.dispute_count,
    )


def neuron_page(engine: sa.Engine, graphs: GraphCache, public_url: str, text: str) -> NeuronPage:
    """The page of the unit of a key in any accepted form (BAD_KEY or NOT_FOUND: kb.graph.keys.KeyProblem);
    ``public_url``: the server's (KB_PUBLIC_URL), for the renders' and the citation's URLs."""
    unit = graph_reads.resolve(graphs, text)
    g = unit.graph
    lists = {
        name: graph_reads.neighbours(graphs, unit, way, PER_TAB, None, order, sign, kernels)
        for name, (way, order, sign, kernels) in LISTS.items()
    }
    units: dict[str, Unit] = {unit.key: unit}
    for page in lists.values():
        for e in page.edges:
            units.setdefault(e.unit.key, e.unit)
    at = {k: (u.layer.key, u.index) for k, u in units.items()}  # each card's (layer, index)
    with engine.connect() as conn:  # read only: three statements, whatever the number of cards
        renders = pictures.of_units(conn, public_url, [(g.sha256, *at[k]) for k in units])
        claims = claims_about_neurons(conn, [(g.key, *at[k]) for k in units])
        circuits, _ = circuit_domain.listing(conn, None, unit.key, 0, CIRCUITS)
    cards = {
        k: Card(
            key=k,
            visualizations=[v for v in renders[(g.sha256, *at[k])] if v.kind == CARD_KIND],
            claims=[_claim(r) for r in claims[(g.key, *at[k])]],
        )
        for k in units
    }
    shown = {
        name: Neighbours(
            total_count=page.total,
            edges=[Edge(e.weight, e.magnitude, e.method, e.kernel, cards[e.unit.key]) for e in page.edges],
        )
        for name, page in lists.items()
    }
    layer = unit.layer
    row = graphs.model_row(g.key)
    assert row is not None  # the model of a graph just read is in the catalog
    return NeuronPage(
        key=unit.key,
        pinned_key=unit.pinned_key,
        index=unit.index,
        layer=LayerSummary(key=f"{g.key}/{layer.key}", name=layer.key, units=layer.units),
        model=ModelSummary(
            key=row["key"],
            source=row["source"],
            short_hash=row["sha256"][:12],
            weights=row["weights"],
            weights_are_random=row["weights"].startswith("random"),
        ),
        in_excite=shown["in_excite"],
        in_inhibit=shown["in_inhibit"],
        in_strong=shown["in_strong"],
        out_excite=shown["out_excite"],
        out_inhibit=shown["out_inhibit"],
        out_strong=shown["out_strong"],
        claims=cards[unit.key].claims,
        visualizations=renders[(g.sha256, layer.key, unit.index)],
        citation=graph_reads.citation(graphs, public_url, unit),
        circuits=[CircuitLink(key=f"circuit:{c.id}", name=c.name) for c in circuits],
    )
