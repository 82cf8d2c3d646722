"""Reading the weight graph: a unit by any key form, a page of its inputs or outputs, the candidate circuit around
some units, the strongest chain between two, and how to cite a unit. The GraphQL resolvers (kb.schema.types,
kb.schema.query) and the neuron page (kb.app.neuron_page) call these, so that both answer alike.

Everything here reads the model's graph in memory (kb.serving.graph_cache: one bulk read per model version, ever)
and the catalog it keeps: no SQL, hence no transaction. A unit is its graph and its ordinal there (what the graph
code works in), with its canonical key and index beside them (what every answer shows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Literal

from kb.app.errors import BadRequest, OverLimit
from kb.app.paging import window
from kb.claims.bibtex import bib_escape, bib_key
from kb.graph import circuits
from kb.graph.keys import NeuronKey
from kb.graph.store import LayerInfo, ModelGraph, Rows
from kb.serving.graph_cache import GraphCache

MAX_KEYS = 100  # units asked for at once (neurons, a subgraph's roots)
MAX_DEPTH = 4  # a subgraph's hops
MAX_PER_NODE = 20  # a subgraph's edges per unit and hop

Way = Literal["inputs", "outputs"]


class Order(Enum):
    """How neighbours are ranked (the values are kb.graph.store's)."""

    WEIGHT = "weight"  # net excitation first; with sign NEGATIVE, the most inhibitory first
    MAGNITUDE = "magnitude"  # ||K||₂, strongest either way first


class SignFilter(Enum):
    """Which neighbours to keep, by the sign of the weight."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    ANY = "any"


class Direction(Enum):
    """Which way a subgraph grows from its roots."""

    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit (channel) of a model version's graph: its canonical key and index, the graph, its ordinal there."""

    key: str  # inceptionv1/mixed4c:447
    index: int
    graph: ModelGraph = field(compare=False, repr=False)  # one per model key in a GraphCache: the key says which
    ordinal: int

    @classmethod
    def at(cls, g: ModelGraph, ordinal: int) -> Unit:
        layer, index = g.unit(ordinal)
        return cls(f"{g.key}/{layer.key}:{index}", index, g, int(ordinal))

    @property
    def layer(self) -> LayerInfo:
        return self.graph.layers[int(self.graph.layer_of[self.ordinal])]

    @property
    def neuron_key(self) -> NeuronKey:
        return NeuronKey(self.graph.key, self.layer.key, self.index)

    @property
    def pinned_key(self) -> str:
        """The key pinned to these weights: model@hash/layer:index."""
        return self.neuron_key.pinned(self.graph.sha256)


def resolve(graphs: GraphCache, text: str, model: str | None = None) -> Unit:
    """The unit of any accepted key form (``model`` completes keys like mixed4c:447); BAD_KEY or NOT_FOUND
    (kb.graph.keys.KeyProblem) for a key of no unit."""
    key = graphs.resolve(text, model)
    g = graphs.graph(key.model)
    return Unit.at(g, g.ordinal(key.layer, key.index))


def resolve_many(graphs: GraphCache, texts: list[str], model: str | None = None) -> list[Unit]:
    """Units by key, in order: at most MAX_KEYS (LIMIT_EXCEEDED), each as ``resolve`` takes it."""
    if len(texts) > MAX_KEYS:
        raise OverLimit(f"at most {MAX_KEYS} keys per request (asked for {len(texts)})")
    return [resolve(graphs, t, model) for t in texts]


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A weighted connection of a unit to a neighbour in the next or previous significant layer."""

    offset: int  # its place in the ranked, filtered list (what its cursor encodes)
    weight: float  # the kernel's sum: net excitation (negative: inhibition)
    magnitude: float  # the kernel's L2 norm
    method: str  # direct (one conv or linear layer) or expanded (through a block)
    unit: Unit  # the neighbour
    source: int  # the edge's ordinals, in network order
    target: int
    kernel: list[list[float]] | None  # the spatial kernel from source to target, where asked for


@dataclass(frozen=True, slots=True)
class Neighbours:
    """A page of a unit's inputs or outputs: the edges at offsets start..stop of ``total``."""

    edges: list[Neighbour]
    total: int
    start: int
    stop: int


def neighbours(
    graphs: GraphCache,
    unit: Unit,
    way: Way,
    first: int | None = None,
    after: str | None = None,
    order: Order = Order.WEIGHT,
    sign: SignFilter = SignFilter.ANY,
    kernels: bool = False,
) -> Neighbours:
    """A page of ``first`` (kb.app.paging's default and bounds) of a unit's inputs or outputs after the cursor
    ``after``, ranked by ``order`` and filtered by ``sign``; with each edge's kernel when ``kernels``."""
    g = unit.graph
    rows: Rows = g.inputs if way == "inputs" else g.outputs
    positions = rows.positions(unit.ordinal, order.value, sign.value)
    total = len(positions)
    start, stop = window(first, after, total)
    edges: list[Neighbour] = []
    for offset in range(start, stop):
        p = positions[offset]
        other = int(rows.other[p])
        src, tgt = (other, unit.ordinal) if way == "inputs" else (unit.ordinal, other)
        edges.append(
            Neighbour(
                offset=offset,
                weight=float(rows.weight[p]),
                magnitude=float(rows.magnitude[p]),
                method=g.method(src, tgt),
                unit=Unit.at(g, other),
                source=src,
                target=tgt,
                kernel=kernel(graphs, g, src, tgt) if kernels else None,
            )
        )
    return Neighbours(edges, total, start, stop)


def kernel(graphs: GraphCache, g: ModelGraph, source: int, target: int) -> list[list[float]]:
    """The spatial kernel through which unit ``source`` reaches ``target`` (ordinals of ``g``), as rows."""
    rows: list[list[float]] = graphs.kernel(g, source, target).tolist()
    return rows


@dataclass(frozen=True, slots=True)
class WeightedEdge:
    """A weighted connection between two units of one graph (of a subgraph, a path)."""

    source: Unit
    target: Unit
    weight: float
    magnitude: float
    method: str

    @classmethod
    def of(cls, g: ModelGraph, e: circuits.Edge) -> WeightedEdge:
        return cls(Unit.at(g, e.source), Unit.at(g, e.target), e.weight, e.magnitude, g.method(e.source, e.target))


@dataclass(frozen=True)
class Subgraph:
    """Units and the edges between them: a candidate circuit."""

    nodes: list[Unit]
    edges: list[WeightedEdge]


@dataclass(frozen=True)
class Path:
    """The strongest chain of edges between two units, from the earlier layer to the later one."""

    nodes: list[Unit]
    edges: list[WeightedEdge]
    score: float  # the product of the edge weights


def subgraph(
    graphs: GraphCache,
    roots: list[str],
    direction: Direction = Direction.UPSTREAM,
    depth: int = 1,
    per_node: int = 5,
    order: Order = Order.WEIGHT,
    sign: SignFilter = SignFilter.ANY,
) -> Subgraph:
    """The candidate circuit around ``roots`` (keys of one model): from each unit, per hop up to ``depth``, its top
    ``per_node`` edges in ``direction``. Bounds: depth 1..MAX_DEPTH, per_node 1..MAX_PER_NODE (LIMIT_EXCEEDED above,
    BAD_INPUT below), 1..MAX_KEYS roots of one model (BAD_INPUT); kb.graph.circuits bounds the edges."""
    if depth > MAX_DEPTH:
        raise OverLimit(f"depth must be 1..{MAX_DEPTH}")
    if depth < 1:
        raise BadRequest("depth must be at least 1")
    if per_node > MAX_PER_NODE:
        raise OverLimit(f"perNode must be 1..{MAX_PER_NODE}")
    if per_node < 1:
        raise BadRequest("perNode must be at least 1")
    if not roots or len(roots) > MAX_KEYS:
        raise BadRequest(f"roots must name 1 to {MAX_KEYS} neurons")
    keys = [graphs.resolve(r) for r in roots]
    if len({k.model for k in keys}) != 1:  # before any graph is read
        raise BadRequest("all roots must belong to one model")
    g = graphs.graph(keys[0].model)
    ordinals = [g.ordinal(k.layer, k.index) for k in keys]
    sub = circuits.subgraph(g, ordinals, direction.value, depth, per_node, order.value, sign.value)
    return Subgraph([Unit.at(g, n) for n in sub.nodes], [WeightedEdge.of(g, e) for e in sub.edges])


def path(graphs: GraphCache, source: str, target: str) -> Path:
    """The strongest excitatory chain between two units of one model (keys in any form): the path that maximises
    the product of its positive weights. BAD_INPUT for units of two models; kb.graph.circuits' errors where no
    such path is (same layer, no positive chain)."""
    a, b = graphs.resolve(source), graphs.resolve(target)
    if a.model != b.model:  # before any graph is read
        raise BadRequest("a path joins units of one model")
    g = graphs.graph(a.model)
    p = circuits.strongest_path(g, g.ordinal(a.layer, a.index), g.ordinal(b.layer, b.index))
    nodes = [Unit.at(g, p.edges[0].source)] + [Unit.at(g, e.target) for e in p.edges]
    return Path(nodes, [WeightedEdge.of(g, e) for e in p.edges], p.score)


@dataclass(frozen=True)
class Citation:
    """How to cite a unit: its pinned key, its pinned page's URL, a BibTeX entry, a line of text."""

    key: str
    url: str
    bibtex: str
    text: str


def citation(graphs: GraphCache, public_url: str, unit: Unit) -> Citation:
    """The unit's citation, pinned to its weights; ``public_url``: the server's (KB_PUBLIC_URL)."""
    g, key = unit.graph, unit.neuron_key
    pinned = key.pinned(g.sha256)
    url = f"{public_url.rstrip('/')}/n/{g.key}@{g.sha256[:12]}/{key.layer}/{key.index}"
    row = graphs.model_row(g.key) or {}
    imported: datetime = row.get("imported_at") or datetime.now(UTC)
    bibtex = (
        f"@misc{{{bib_key(pinned)},\n  title = {{Neuron {bib_escape(str(key))}}},\n"
        f"  howpublished = {{Circuit KB, \\url{{{url}}}}},\n"
        f"  note = {{Pinned key {bib_escape(pinned)}; model {bib_escape(g.key)} "
        f"({bib_escape(row.get('source', ''))}), weights sha256 {g.sha256}}},\n  year = {{{imported.year}}}\n}}"
    )
    return Citation(key=pinned, url=url, bibtex=bibtex, text=f"{key} (pinned {pinned}), Circuit KB, {url}")
