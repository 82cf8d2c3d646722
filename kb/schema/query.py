"""The query root: models, layers and neurons by key (any accepted form), subgraphs and paths."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry import relay

from kb.graph import circuits
from kb.graph.keys import NeuronKey
from kb.schema.context import Info
from kb.schema.errors import bad_input, limit
from kb.schema.fields import field
from kb.schema.types import Direction, Layer, Model, NeighborOrder, Neuron, Path, Sign, Subgraph, WeightEdge

MAX_KEYS = 100
MAX_DEPTH = 4
MAX_PER_NODE = 20


def _resolve(info: Info, text: str, model: str | None = None) -> NeuronKey:
    return info.context.graphs.resolve(text, model)


def resolve_neuron(info: Info, text: str, model: str | None = None) -> Neuron:
    """The neuron of any accepted key form (``model`` completes keys like mixed4c:447)."""
    key = _resolve(info, text, model)
    return Neuron.of_key(info.context.graphs.graph(key.model), key)


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
        if len(keys) > MAX_KEYS:
            raise limit(f"at most {MAX_KEYS} keys per request (asked for {len(keys)})")
        return [resolve_neuron(info, k, model) for k in keys]

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
        if not 1 <= depth <= MAX_DEPTH:
            raise limit(f"depth must be 1..{MAX_DEPTH}") if depth > MAX_DEPTH else bad_input("depth must be at least 1")
        if not 1 <= per_node <= MAX_PER_NODE:
            raise (
                limit(f"perNode must be 1..{MAX_PER_NODE}")
                if per_node > MAX_PER_NODE
                else bad_input("perNode must be at least 1")
            )
        if not roots or len(roots) > MAX_KEYS:
            raise bad_input("roots must name 1 to 100 neurons")
        keys = [_resolve(info, r) for r in roots]
        models = {k.model for k in keys}
        if len(models) != 1:
            raise bad_input("all roots must belong to one model")
        g = info.context.graphs.graph(keys[0].model)
        sub = circuits.subgraph(
            g,
            [g.ordinal(k.layer, k.index) for k in keys],
            direction.value,
            depth,
            per_node,
            order_by.value,
            sign.value,
        )
        return Subgraph(nodes=[Neuron.at(g, n) for n in sub.nodes], edges=[WeightEdge.of(g, e) for e in sub.edges])

    @field(
        name="path",
        description="The strongest excitatory chain between two units of different "
        "layers: the path maximising the product of its (positive) weights, "
        "listed from the earlier layer to the later one.",
    )
    def path(self, info: Info, from_: Annotated[str, strawberry.argument(name="from")], to: str) -> Path:
        a, b = _resolve(info, from_), _resolve(info, to)
        if a.model != b.model:
            raise bad_input("a path joins units of one model")
        g = info.context.graphs.graph(a.model)
        p = circuits.strongest_path(g, g.ordinal(a.layer, a.index), g.ordinal(b.layer, b.index))
        nodes = [Neuron.at(g, p.edges[0].source)] + [Neuron.at(g, e.target) for e in p.edges]
        return Path(nodes=nodes, edges=[WeightEdge.of(g, e) for e in p.edges], score=p.score)
