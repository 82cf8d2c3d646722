"""The query root: models, layers and neurons by key (any accepted form), subgraphs and paths."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay

from kb.app import graph_reads
from kb.app.graph_reads import MAX_DEPTH, MAX_KEYS, MAX_PER_NODE
from kb.schema.context import Info
from kb.schema.fields import field
from kb.schema.types import Direction, Layer, Model, NeighborOrder, Neuron, Path, Sign, Subgraph, WeightEdge

__all__ = ["MAX_DEPTH", "MAX_KEYS", "MAX_PER_NODE", "GraphQuery", "resolve_neuron"]  # the limits: kb.app's


def resolve_neuron(info: Info, text: str, model: str | None = None) -> Neuron:
    """The neuron of any accepted key form (``model`` completes keys like mixed4c:447)."""
    return Neuron.of_unit(graph_reads.resolve(info.context.graphs, text, model))


@strawberry.type
class GraphQuery:
    node: relay.Node | None = relay.node(description="Any object by its global ID.")
    nodes: list[relay.Node | None] = relay.node(description="Objects by global ID.")

    @field(description="Every model version, removed ones included (as tombstones).")
    def models(self, info: Info) -> list[Model]:
        return [Model.of_row(r) for r in info.context.graphs.model_rows()]

    @field(description="A model version by key, e.g. inceptionv1 (a removed one as its tombstone).")
    def model(self, info: Info, key: str) -> Model:
        return Model.of_row(info.context.graphs.model_row_of(key))

    @field(description="A layer by key, e.g. inceptionv1/mixed4c or 'InceptionV1 4c'.")
    def layer(self, info: Info, key: str) -> Layer:
        lk = info.context.graphs.resolve_layer(key)
        g = info.context.graphs.graph(lk.model)
        return Layer.of(g, next(layer.position for layer in g.layers if layer.key == lk.layer))

    @field(
        description="A neuron by any key form: inceptionv1/mixed4c:447, 'InceptionV1 4c:447', "
        "a pinned key, a Microscope path. `model` completes keys like mixed4c:447."
    )
    def neuron(self, info: Info, key: str, model: str | None = None) -> Neuron:
        return resolve_neuron(info, key, model)

    @field(description=f"Neurons by key, in order (at most {MAX_KEYS}).")
    def neurons(self, info: Info, keys: list[str], model: str | None = None) -> list[Neuron]:
        return [Neuron.of_unit(u) for u in graph_reads.resolve_many(info.context.graphs, keys, model)]

    @field(
        description="The candidate circuit around some units: from each node, per hop, its top "
        "perNode edges in the given direction."
    )
    def subgraph(
        self,
        info: Info,
        roots: list[str],
        direction: Direction = Direction.UPSTREAM,
        depth: int = 1,
        per_node: int = 5,
        order_by: NeighborOrder = NeighborOrder.WEIGHT,
        sign: Sign = Sign.ANY,
    ) -> Subgraph:
        sub = graph_reads.subgraph(
            info.context.graphs,
            roots,
            graph_reads.Direction(direction.value),
            depth,
            per_node,
            graph_reads.Order(order_by.value),
            graph_reads.SignFilter(sign.value),
        )
        return Subgraph(nodes=[Neuron.of_unit(u) for u in sub.nodes], edges=[WeightEdge.of(e) for e in sub.edges])

    @field(
        name="path",
        description="The strongest excitatory chain between two units of different "
        "layers: the path maximising the product of its (positive) weights, "
        "listed from the earlier layer to the later one.",
    )
    def path(self, info: Info, from_: Annotated[str, strawberry.argument(name="from")], to: str) -> Path:
        p = graph_reads.path(info.context.graphs, from_, to)
        return Path(
            nodes=[Neuron.of_unit(u) for u in p.nodes], edges=[WeightEdge.of(e) for e in p.edges], score=p.score
        )
