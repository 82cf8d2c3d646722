"""GraphQL types of the graph: Model, Layer, Neuron (Relay nodes), their neighbor connections, weight edges.

Resolvers are thin: they read the in-memory graph (kb.graph.store via kb.serving.graph_cache) and the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import relay

from kb.graph import store
from kb.graph.keys import KeyProblem, NeuronKey
from kb.graph.store import ModelGraph
from kb.schema.context import Info
from kb.schema.deadline import check
from kb.schema.errors import limit, not_found
from kb.schema.pagination import PageInfo, cursor, page_info, window

if TYPE_CHECKING:
    from kb.schema.claim_types import Citation, Claim
    from kb.schema.render_types import LayerRenderKind, LayerView, RenderKind, UnitVisualization, Visualization


SHOWCASE_MAX = 24  # units in a model's showcase


@strawberry.enum(description="How neighbors are ranked.")
class NeighborOrder(Enum):
    WEIGHT = "weight"  # net excitation first; with sign NEGATIVE, the most inhibitory first
    MAGNITUDE = "magnitude"  # ||K||₂, strongest either way first


@strawberry.enum(description="Which neighbors to keep, by the sign of the weight.")
class Sign(Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    ANY = "any"


@strawberry.enum(description="Which way a subgraph grows from its roots.")
class Direction(Enum):
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"
    BOTH = "both"


class KeyedNode(relay.Node):
    """Relay nodes whose global ID wraps their stable key (so IDs survive export and re-import)."""

    @classmethod
    def resolve_id(cls, root, *, info) -> str:
        return root.key

    @classmethod
    def resolve_id_attr(cls) -> str:
        return "key"


@strawberry.type(description="A model version: an architecture with pinned weights.")
class Model(KeyedNode):
    key: str = strawberry.field(description="the model key, e.g. inceptionv1")
    source: str = strawberry.field(description="e.g. lucent:inceptionv1, torchvision:googlenet")
    sha256: str = strawberry.field(description="sha256 of the weights (state dict in canonical order)")
    weights: str = strawberry.field(description="how the weights were obtained")
    input_shape: list[int]
    description: str
    imported_at: datetime
    removed: bool

    @strawberry.field(description="Seeded random weights (an offline test import): its features mean nothing.")
    def weights_are_random(self) -> bool:
        return self.weights.startswith("random")

    @strawberry.field(description="First 12 hex digits of sha256: the pin in pinned keys.")
    def short_hash(self) -> str:
        return self.sha256[:12]

    @strawberry.field(description="Significant layers in network order.")
    def layers(self, info: Info) -> list[Layer]:
        if self.removed:
            return []
        g = info.context.graphs.graph(self.key)
        return [Layer.of(g, layer.position) for layer in g.layers]

    @strawberry.field(
        description="Units with a finished feature visualization of these weights (any parameters; one "
        "statement for all the models of a query)."
    )
    async def rendered_units(self, info: Info) -> int:
        return await info.context.loaders.rendered_units.load(self.sha256)

    @strawberry.field(description="Claims about the model, whatever their status (one statement for all models).")
    async def claim_count(self, info: Info) -> int:
        return await info.context.loaders.claim_count.load(self.key)

    @strawberry.field(description="Circuits of the model (one statement for all models).")
    async def circuit_count(self, info: Info) -> int:
        return await info.context.loaders.circuit_count.load(self.key)

    @strawberry.field(
        description=f"Up to `first` (at most {SHOWCASE_MAX}) units with a feature visualization, taken in turn "
        "from each layer that has any, in network order: the model's strip of pictures on the front page (one "
        "statement for all models)."
    )
    async def showcase(self, info: Info, first: int = 8) -> list[Neuron]:
        if not 0 <= first <= SHOWCASE_MAX:
            raise limit(f"showcase takes first 0..{SHOWCASE_MAX}")
        if self.removed or first == 0:
            return []
        units = await info.context.loaders.showcase.load((self.sha256, first))
        g = info.context.graphs.graph(self.key)
        ordinals = []
        for layer, index in units:
            try:
                ordinals.append(g.ordinal(layer, index))
            except (KeyError, IndexError):  # a render of a layer or unit these weights' graph does not have
                continue
        return [Neuron.at(g, o) for o in sorted(ordinals)]

    @classmethod
    def of_row(cls, row: dict) -> Model:
        return cls(
            key=row["key"],
            source=row["source"],
            sha256=row["sha256"],
            weights=row["weights"],
            input_shape=list(row["input_shape"]),
            description=row["description"] or "",
            imported_at=row["imported_at"],
            removed=row["removed_at"] is not None,
        )

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        out = []
        for key in node_ids:
            row = info.context.graphs.model_row(key)
            if row is None and required:
                raise not_found(f"no model {key!r}")
            out.append(cls.of_row(row) if row else None)
        return out


@strawberry.type(description="A significant layer of a model version.")
class Layer(KeyedNode):
    key: str = strawberry.field(description="model/layer, e.g. inceptionv1/mixed4c")
    name: str = strawberry.field(description="the layer's declared name, e.g. mixed4c")
    position: int = strawberry.field(description="0-based order among the model's significant layers")
    units: int
    _graph: strawberry.Private[ModelGraph]
    _layer_id: strawberry.Private[int]

    @classmethod
    def of(cls, g: ModelGraph, position: int) -> Layer:
        layer = g.layers[position]
        return cls(
            key=f"{g.key}/{layer.key}",
            name=layer.key,
            position=layer.position,
            units=layer.units,
            _graph=g,
            _layer_id=layer.id,
        )

    @strawberry.field
    def model(self, info: Info) -> Model:
        return Model.of_row(info.context.graphs.model_row(self._graph.key))

    @strawberry.field(description="Module path whose output holds the units (hook here).")
    async def module_path(self, info: Info) -> str:
        return (await info.context.loaders.layer_details.load(self._layer_id))["module_path"]

    @strawberry.field
    async def kind(self, info: Info) -> str:
        return (await info.context.loaders.layer_details.load(self._layer_id))["kind"]

    @strawberry.field(description="Output shape without the batch dimension.")
    async def output_shape(self, info: Info) -> list[int]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["output_shape"])

    @strawberry.field(description="Other names the resolver accepts, e.g. 4c.")
    async def aliases(self, info: Info) -> list[str]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["aliases"])

    @strawberry.field
    async def tags(self, info: Info) -> list[str]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["tags"])

    @strawberry.field(description="Finished renders of the layer's units (one statement for the layer), by unit.")
    def visualizations(
        self,
        info: Info,
        kind: Annotated[RenderKind, strawberry.lazy("kb.schema.render_types")] | None = None,
    ) -> list[Annotated[UnitVisualization, strawberry.lazy("kb.schema.render_types")]]:
        from kb.schema.render_types import layer_visualizations

        return layer_visualizations(info, self, kind)

    @strawberry.field(description="Finished pictures of the whole layer: its deep dream and caricatures.")
    def views(
        self,
        info: Info,
        kind: Annotated[LayerRenderKind, strawberry.lazy("kb.schema.render_types")] | None = None,
    ) -> list[Annotated[LayerView, strawberry.lazy("kb.schema.render_types")]]:
        from kb.schema.render_types import layer_views

        return layer_views(info, self, kind)

    @strawberry.field(description="The layer's units, in index order.")
    def neurons(self, first: int | None = None, after: str | None = None) -> NeuronConnection:
        g, layer = self._graph, self._graph.layers[self.position]
        start, stop = window(first, after, layer.units)
        edges = [NeuronEdge(cursor=cursor(i), node=Neuron.at(g, layer.first + i)) for i in range(start, stop)]
        return NeuronConnection(edges=edges, page_info=page_info(start, stop, layer.units), total_count=layer.units)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        out = []
        for text in node_ids:
            try:
                lk = info.context.graphs.resolve_layer(text)
                g = info.context.graphs.graph(lk.model)
                out.append(cls.of(g, next(layer.position for layer in g.layers if layer.key == lk.layer)))
            except KeyProblem:
                if required:
                    raise
                out.append(None)
        return out


@strawberry.type(description="A unit (channel) of a significant layer, citable by its stable key.")
class Neuron(KeyedNode):
    key: str = strawberry.field(description="canonical key, e.g. inceptionv1/mixed4c:447")
    index: int = strawberry.field(description="0-based channel index, as in the checkpoint")
    _graph: strawberry.Private[ModelGraph]
    _ordinal: strawberry.Private[int]

    @classmethod
    def at(cls, g: ModelGraph, ordinal: int) -> Neuron:
        layer, index = g.unit(ordinal)
        return cls(key=f"{g.key}/{layer.key}:{index}", index=index, _graph=g, _ordinal=int(ordinal))

    @classmethod
    def of_key(cls, g: ModelGraph, key: NeuronKey) -> Neuron:
        return cls.at(g, g.ordinal(key.layer, key.index))

    @property
    def _key(self) -> NeuronKey:
        layer, index = self._graph.unit(self._ordinal)
        return NeuronKey(self._graph.key, layer.key, index)

    @strawberry.field(description="The key pinned to these weights: model@hash/layer:index.")
    def pinned_key(self) -> str:
        return self._key.pinned(self._graph.sha256)

    @strawberry.field(description="The neuron's stable web address.")
    def url(self, info: Info) -> str:
        return info.context.settings.public_url.rstrip("/") + self._key.path()

    @strawberry.field
    def layer(self) -> Layer:
        return Layer.of(self._graph, int(self._graph.layer_of[self._ordinal]))

    @strawberry.field
    def model(self, info: Info) -> Model:
        return Model.of_row(info.context.graphs.model_row(self._graph.key))

    @strawberry.field(description="Units of the previous significant layer that feed this one.")
    def inputs(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        order_by: NeighborOrder = NeighborOrder.WEIGHT,
        sign: Sign = Sign.ANY,
    ) -> NeighborConnection:
        return neighbor_connection(info, self, "inputs", first, after, order_by, sign)

    @strawberry.field(description="Units of the next significant layer that this one feeds.")
    def outputs(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        order_by: NeighborOrder = NeighborOrder.WEIGHT,
        sign: Sign = Sign.ANY,
    ) -> NeighborConnection:
        return neighbor_connection(info, self, "outputs", first, after, order_by, sign)

    @strawberry.field(description="Claims about this neuron (as a subject of their current revision).")
    async def claims(self, info: Info) -> list[Annotated[Claim, strawberry.lazy("kb.schema.claim_types")]]:
        from kb.schema.claim_types import Claim

        key = self._key
        rows = await info.context.loaders.claims_of_neuron.load((key.model, key.layer, key.index))
        return [Claim.of(r) for r in rows]

    @strawberry.field(description="Finished renders of this neuron (feature visualisations, weights...).")
    async def visualizations(
        self,
        info: Info,
        kind: Annotated[RenderKind, strawberry.lazy("kb.schema.render_types")] | None = None,
    ) -> list[Annotated[Visualization, strawberry.lazy("kb.schema.render_types")]]:
        from kb.schema.render_types import visualizations

        return await visualizations(info, self, kind)

    @strawberry.field(description="How to cite this neuron: pinned key, URL, BibTeX.")
    def citation(self, info: Info) -> Annotated[Citation, strawberry.lazy("kb.schema.claim_types")]:
        from kb.schema.claim_types import neuron_citation

        return neuron_citation(info, self)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False):
        out = []
        for text in node_ids:
            try:
                key = info.context.graphs.resolve(text)
                out.append(cls.of_key(info.context.graphs.graph(key.model), key))
            except KeyProblem:
                if required:
                    raise
                out.append(None)
        return out


def neighbor_connection(info: Info, of: Neuron, way: str, first, after, order_by: NeighborOrder, sign: Sign):
    """A page of a unit's inputs or outputs, ordered and filtered by sign (the graph in memory; no SQL)."""
    check()
    g = of._graph
    rows: store.Rows = getattr(g, way)
    positions = rows.positions(of._ordinal, order_by.value, sign.value)
    total = len(positions)
    start, stop = window(first, after, total)
    edges = []
    for offset in range(start, stop):
        p = positions[offset]
        other = int(rows.other[p])
        src, tgt = (other, of._ordinal) if way == "inputs" else (of._ordinal, other)
        edges.append(
            NeighborEdge(
                cursor=cursor(offset),
                weight=float(rows.weight[p]),
                magnitude=float(rows.magnitude[p]),
                method=g.method(src, tgt),
                node=Neuron.at(g, other),
                _graph=g,
                _source=src,
                _target=tgt,
            )
        )
    return NeighborConnection(edges=edges, page_info=page_info(start, stop, total), total_count=total)


def edge_kernel(info: Info, g: ModelGraph, source: int, target: int) -> list[list[float]]:
    """The spatial kernel through which unit ``source`` reaches ``target`` (ordinals), as nested lists."""
    return info.context.graphs.kernel(g, source, target).tolist()


@strawberry.type(description="A weighted connection to a neighboring unit.")
class NeighborEdge:
    cursor: str
    weight: float = strawberry.field(description="sum of the kernel: net excitation (negative: inhibition)")
    magnitude: float = strawberry.field(description="L2 norm of the kernel")
    method: str = strawberry.field(description="direct (one conv or linear layer) or expanded (through a block)")
    node: Neuron
    _graph: strawberry.Private[ModelGraph]
    _source: strawberry.Private[int]
    _target: strawberry.Private[int]

    @strawberry.field(description="The spatial kernel K from source to target, as rows.")
    def kernel(self, info: Info) -> list[list[float]]:
        return edge_kernel(info, self._graph, self._source, self._target)


@strawberry.type
class NeighborConnection:
    edges: list[NeighborEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class NeuronEdge:
    cursor: str
    node: Neuron


@strawberry.type
class NeuronConnection:
    edges: list[NeuronEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type(description="A weighted connection between two units (subgraphs, paths, circuits).")
class WeightEdge:
    source: Neuron
    target: Neuron
    weight: float
    magnitude: float
    method: str
    _graph: strawberry.Private[ModelGraph]

    @strawberry.field(description="The spatial kernel K from source to target, as rows.")
    def kernel(self, info: Info) -> list[list[float]]:
        return edge_kernel(info, self._graph, self.source._ordinal, self.target._ordinal)

    @classmethod
    def of(cls, g: ModelGraph, e) -> WeightEdge:
        return cls(
            source=Neuron.at(g, e.source),
            target=Neuron.at(g, e.target),
            weight=e.weight,
            magnitude=e.magnitude,
            method=g.method(e.source, e.target),
            _graph=g,
        )


@strawberry.type(description="Units and the edges between them: a candidate circuit.")
class Subgraph:
    nodes: list[Neuron]
    edges: list[WeightEdge]


@strawberry.type(description="The strongest chain of edges between two units, in network order.")
class Path:
    nodes: list[Neuron]
    edges: list[WeightEdge]
    score: float = strawberry.field(description="product of the edge weights along the path")
