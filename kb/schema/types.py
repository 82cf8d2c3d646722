"""GraphQL types of the Relay nodes: the graph's (Model, Layer, Neuron, their neighbor connections, weight edges)
and the claims' about it (Claim, ClaimRevision, Circuit, their connections).

They refer to each other (Neuron.claims and Claim.subjects, Claim.circuit and Circuit.claims), so they live in one
module; the types they list that refer to no node come from the modules below it (claim_types, circuit_types,
experiment_types, picture_types), and nothing here is imported lazily.

Resolvers are thin: the graph's reads (a unit by key, its neighbours, kernels, its citation) are the use cases of
kb.app.graph_reads, whose results they wrap in these types; the rest read the catalog and the claim layer
(kb.claims).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import strawberry
from strawberry import relay

from kb.app import graph_reads
from kb.app.graph_reads import Unit
from kb.claims import circuits as circuit_domain
from kb.claims import edge_lists
from kb.claims.claims import claims_by_id, parse_circuit_key, parse_key
from kb.claims.claims import diff as diff_fields
from kb.claims.reviews import content_authors
from kb.claims.rows import CircuitRow, ClaimRevisionRow, ClaimRow
from kb.graph.keys import KeyProblem, NeuronKey
from kb.graph.store import ModelGraph
from kb.schema import deadline
from kb.schema.circuit_types import CircuitDiff, CircuitRevision, diff_of, revision_of, revisions_of
from kb.schema.claim_types import (
    CircuitCheck,
    CircuitEdge,
    Citation,
    ClaimKind,
    ClaimStatus,
    EdgeCheck,
    Evidence,
    FieldChange,
    Person,
    Review,
    _person,
    _shown,
    as_utc,
    bib_escape,
    bib_key,
    pin_key,
)
from kb.schema.context import Info
from kb.schema.deadline import check
from kb.schema.errors import CodedError, bad_input, limit, not_found
from kb.schema.experiment_types import Experiment, experiments_of
from kb.schema.fields import field
from kb.schema.pagination import PageInfo, cursor, page_info, window
from kb.schema.picture_types import (
    LayerRenderKind,
    LayerView,
    RenderKind,
    UnitVisualization,
    Visualization,
    layer_views,
    layer_visualizations,
    visualizations,
)

if TYPE_CHECKING:
    import sqlalchemy as sa


R = TypeVar("R")  # a row type of kb.claims.rows
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
    def resolve_id(cls, root: Any, *, info: Info) -> str:
        key: str = root.key  # every KeyedNode type has a key field
        return key

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

    @field(description="Seeded random weights (an offline test import): its features mean nothing.")
    def weights_are_random(self) -> bool:
        return self.weights.startswith("random")

    @field(description="First 12 hex digits of sha256: the pin in pinned keys.")
    def short_hash(self) -> str:
        return self.sha256[:12]

    @field(description="Significant layers in network order.")
    def layers(self, info: Info) -> list[Layer]:
        if self.removed:
            return []
        g = info.context.graphs.graph(self.key)
        return [Layer.of(g, layer.position) for layer in g.layers]

    @field(
        description="Units with a finished feature visualization of these weights (any parameters; one "
        "statement for all the models of a query)."
    )
    async def rendered_units(self, info: Info) -> int:
        return await info.context.loaders.rendered_units.load(self.sha256)

    @field(description="Claims about the model, whatever their status (one statement for all models).")
    async def claim_count(self, info: Info) -> int:
        return await info.context.loaders.claim_count.load(self.key)

    @field(description="Circuits of the model (one statement for all models).")
    async def circuit_count(self, info: Info) -> int:
        return await info.context.loaders.circuit_count.load(self.key)

    @field(
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
    def of_row(cls, row: dict[str, Any]) -> Model:
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
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False) -> list[Model | None]:  # type: ignore[override]
        out: list[Model | None] = []
        for key in node_ids:
            row = info.context.graphs.model_row(key)
            if row is None and required:
                raise not_found(f"no model {key!r}")
            out.append(cls.of_row(row) if row else None)
        return out


def _model_of(info: Info, g: ModelGraph) -> Model:
    """The model of a graph read here: its row is in the catalog (a removed model's as its tombstone)."""
    row = info.context.graphs.model_row(g.key)
    assert row is not None  # fails only for a model deleted while this request held its graph: INTERNAL
    return Model.of_row(row)


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

    @field()
    def model(self, info: Info) -> Model:
        return _model_of(info, self._graph)

    @field(description="Module path whose output holds the units (hook here).")
    async def module_path(self, info: Info) -> str:
        path: str = (await info.context.loaders.layer_details.load(self._layer_id))["module_path"]
        return path

    @strawberry.field
    async def kind(self, info: Info) -> str:
        kind: str = (await info.context.loaders.layer_details.load(self._layer_id))["kind"]
        return kind

    @field(description="Output shape without the batch dimension.")
    async def output_shape(self, info: Info) -> list[int]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["output_shape"])

    @field(description="Other names the resolver accepts, e.g. 4c.")
    async def aliases(self, info: Info) -> list[str]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["aliases"])

    @strawberry.field
    async def tags(self, info: Info) -> list[str]:
        return list((await info.context.loaders.layer_details.load(self._layer_id))["tags"])

    @field(description="Finished renders of the layer's units (one statement for the layer), by unit.")
    def visualizations(
        self,
        info: Info,
        kind: RenderKind | None = None,
    ) -> list[UnitVisualization]:
        return layer_visualizations(info, self._graph, self.position, kind)

    @field(description="Finished pictures of the whole layer: its deep dream and caricatures.")
    def views(
        self,
        info: Info,
        kind: LayerRenderKind | None = None,
    ) -> list[LayerView]:
        return layer_views(info, self._graph, self.position, kind)

    @field(description="The layer's units, in index order.")
    def neurons(self, first: int | None = None, after: str | None = None) -> NeuronConnection:
        g, layer = self._graph, self._graph.layers[self.position]
        start, stop = window(first, after, layer.units)
        edges = [NeuronEdge(cursor=cursor(i), node=Neuron.at(g, layer.first + i)) for i in range(start, stop)]
        return NeuronConnection(edges=edges, page_info=page_info(start, stop, layer.units), total_count=layer.units)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False) -> list[Layer | None]:  # type: ignore[override]
        out: list[Layer | None] = []
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

    @classmethod
    def of_unit(cls, unit: Unit) -> Neuron:
        return cls(key=unit.key, index=unit.index, _graph=unit.graph, _ordinal=unit.ordinal)

    @property
    def _unit(self) -> Unit:
        return Unit(self.key, self.index, self._graph, self._ordinal)

    @property
    def _key(self) -> NeuronKey:
        layer, index = self._graph.unit(self._ordinal)
        return NeuronKey(self._graph.key, layer.key, index)

    @field(description="The key pinned to these weights: model@hash/layer:index.")
    def pinned_key(self) -> str:
        return self._key.pinned(self._graph.sha256)

    @field(description="The neuron's stable web address.")
    def url(self, info: Info) -> str:
        return info.context.settings.public_url.rstrip("/") + self._key.path()

    @field()
    def layer(self) -> Layer:
        return Layer.of(self._graph, int(self._graph.layer_of[self._ordinal]))

    @field()
    def model(self, info: Info) -> Model:
        return _model_of(info, self._graph)

    @field(description="Units of the previous significant layer that feed this one.")
    def inputs(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        order_by: NeighborOrder = NeighborOrder.WEIGHT,
        sign: Sign = Sign.ANY,
    ) -> NeighborConnection:
        return _neighbors(info, self, "inputs", first, after, order_by, sign)

    @field(description="Units of the next significant layer that this one feeds.")
    def outputs(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        order_by: NeighborOrder = NeighborOrder.WEIGHT,
        sign: Sign = Sign.ANY,
    ) -> NeighborConnection:
        return _neighbors(info, self, "outputs", first, after, order_by, sign)

    @field(description="Claims about this neuron (as a subject of their current revision).")
    async def claims(self, info: Info) -> list[Claim]:
        key = self._key
        rows = await info.context.loaders.claims_of_neuron.load((key.model, key.layer, key.index))
        return [Claim.of(r) for r in rows]

    @field(description="Finished renders of this neuron (feature visualisations, weights...).")
    async def visualizations(
        self,
        info: Info,
        kind: RenderKind | None = None,
    ) -> list[Visualization]:
        return await visualizations(info, self._graph, self._key, kind)

    @field(description="How to cite this neuron: pinned key, URL, BibTeX.")
    def citation(self, info: Info) -> Citation:
        c = graph_reads.citation(info.context.graphs, info.context.settings.public_url, self._unit)
        return Citation(key=c.key, url=c.url, bibtex=c.bibtex, text=c.text)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False) -> list[Neuron | None]:  # type: ignore[override]
        out: list[Neuron | None] = []
        for text in node_ids:
            try:
                out.append(cls.of_unit(graph_reads.resolve(info.context.graphs, text)))
            except KeyProblem:
                if required:
                    raise
                out.append(None)
        return out


def _neighbors(
    info: Info,
    of: Neuron,
    way: graph_reads.Way,
    first: int | None,
    after: str | None,
    order_by: NeighborOrder,
    sign: Sign,
) -> NeighborConnection:
    """A page of a unit's inputs or outputs (kb.app.graph_reads.neighbours: the graph in memory, no SQL)."""
    check()
    page = graph_reads.neighbours(
        info.context.graphs,
        of._unit,
        way,
        first,
        after,
        graph_reads.Order(order_by.value),
        graph_reads.SignFilter(sign.value),
    )
    edges = [
        NeighborEdge(
            cursor=cursor(e.offset),
            weight=e.weight,
            magnitude=e.magnitude,
            method=e.method,
            node=Neuron.of_unit(e.unit),
            _graph=of._graph,
            _source=e.source,
            _target=e.target,
        )
        for e in page.edges
    ]
    return NeighborConnection(
        edges=edges, page_info=page_info(page.start, page.stop, page.total), total_count=page.total
    )


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

    @field(description="The spatial kernel K from source to target, as rows.")
    def kernel(self, info: Info) -> list[list[float]]:
        return graph_reads.kernel(info.context.graphs, self._graph, self._source, self._target)


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

    @field(description="The spatial kernel K from source to target, as rows.")
    def kernel(self, info: Info) -> list[list[float]]:
        return graph_reads.kernel(info.context.graphs, self._graph, self.source._ordinal, self.target._ordinal)

    @classmethod
    def of(cls, e: graph_reads.WeightedEdge) -> WeightEdge:
        return cls(
            source=Neuron.of_unit(e.source),
            target=Neuron.of_unit(e.target),
            weight=e.weight,
            magnitude=e.magnitude,
            method=e.method,
            _graph=e.source.graph,
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


@strawberry.type(description="An immutable revision of a claim: citable as claim:N@R.")
class ClaimRevision:
    revision: int
    created_at: datetime
    message: str
    label: str
    body: str
    kind: ClaimKind
    status: ClaimStatus
    confidence: float | None
    subjects: list[str] = strawberry.field(description="canonical neuron keys")
    _row: strawberry.Private[ClaimRevisionRow]

    @classmethod
    def of(cls, row: ClaimRevisionRow) -> ClaimRevision:
        return cls(
            revision=row.revision,
            created_at=as_utc(row.created_at),
            message=row.message,
            label=row.label,
            body=row.body,
            kind=ClaimKind[row.kind],
            status=ClaimStatus[row.status],
            confidence=row.confidence,
            subjects=list(row.subjects),
            _row=row,
        )

    @field()
    def key(self) -> str:
        return self._key()

    def _key(self) -> str:
        return f"claim:{self._row.claim_id}@{self.revision}"

    @field(
        description="The circuit this revision is about, as it was at the revision it pins (circuit:N@R): a later "
        "edit of the circuit does not change it (`latestRevision` says whether a newer one exists)."
    )
    async def circuit(self, info: Info) -> Circuit | None:
        return await pinned_circuit(info, self._row)

    @field(description="circuit:N@R: the circuit revision this claim revision is about (null: none).")
    def circuit_key(self) -> str | None:
        return pin_key(self._row)

    @field()
    def evidence(self) -> list[Evidence]:
        return [Evidence.of(e) for e in self._row.evidence]

    @field(description="What changed from the revision before this one (null for revision 1).")
    async def diff_from_previous(self, info: Info) -> list[FieldChange] | None:
        if self.revision == 1:
            return None
        revs = await info.context.loaders.revisions.load(self._row.claim_id)
        return [FieldChange(**c) for c in diff_fields(revs[self.revision - 2], self._row, deadline.check)]

    @strawberry.field
    async def author(self, info: Info) -> Person:
        return await _person(info, self._row.author_id)

    @field(
        description="The content authors up to this revision, in order of first contribution "
        "(a change of status alone makes nobody an author)."
    )
    async def authors(self, info: Info) -> list[Person]:
        return await self._authors(info)

    async def _authors(self, info: Info) -> list[Person]:
        return [await _person(info, i) for i in await self._author_ids(info)]

    async def _author_ids(self, info: Info) -> list[int]:
        revs = await info.context.loaders.revisions.load(self._row.claim_id)
        return content_authors(revs[: self.revision])

    async def _source(self, info: Info) -> dict[str, Any] | None:
        """For an imported claim (families from a paper): the CITATION it came from, if it names its authors."""
        claim = await info.context.loaders.claim.load(self._row.claim_id)
        if not claim or not claim.origin:
            return None
        return next((e for e in self._row.evidence if e.get("kind") == "CITATION" and e.get("authors")), None)

    @field(
        description="How to cite exactly this revision: its content authors, or for an imported "
        "claim the source's authors and DOI, with the importing account as curator."
    )
    async def citation(self, info: Info) -> Citation:
        return await self._citation(info)

    async def _citation(self, info: Info) -> Citation:
        people = [_shown(await _person(info, i)) for i in await self._author_ids(info)]
        source = await self._source(info)
        key = self._key()
        url = f"{info.context.settings.public_url.rstrip('/')}/c/{self._row.claim_id}/{self.revision}"
        day = f"{self.created_at:%Y-%m-%d}"
        if source:
            names = list(source["authors"])
            ref = source.get("title") or ""
            where = f"doi:{source['doi']}" if source.get("doi") else source.get("url", "")
            text = (
                f'{", ".join(names)}, "{self.label}"'
                + (f", in {ref}" if ref else "")
                + f" ({where}); curated by {', '.join(people)} in Circuit KB {key} ({day}), {url}"
            )
            extra = (f"  doi = {{{bib_escape(source['doi'])}}},\n" if source.get("doi") else "") + (
                f"  note = {{{bib_escape('In ' + ref + '; ' if ref else '')}curated by "
                f"{bib_escape(', '.join(people))} in Circuit KB}},\n"
            )
        else:
            names = people
            text = f'{", ".join(names)}, "{self.label}", Circuit KB {key} ({day}), {url}'
            extra = ""
        bibtex = (
            f"@misc{{{bib_key(key)},\n  title = {{{bib_escape(self.label)}}},\n"
            f"  author = {{{bib_escape(' and '.join(names))}}},\n"
            f"  howpublished = {{Circuit KB {bib_escape(key)}, \\url{{{url}}}}},\n"
            + extra
            + f"  year = {{{self.created_at.year}}}\n}}"
        )
        return Citation(key=key, url=url, bibtex=bibtex, text=text)


async def pinned_circuit(info: Info, row: ClaimRow | ClaimRevisionRow) -> Circuit | None:
    """The circuit of a claim (revision) row at its pinned revision (the current one where none is pinned)."""
    if not row.circuit_id:
        return None
    found = await info.context.loaders.circuit_at.load((row.circuit_id, row.circuit_revision))
    return Circuit.of(found) if found is not None else None


def _neurons(info: Info, keys: Iterable[str]) -> list[Neuron]:
    out = []
    for k in keys:
        try:
            key = info.context.graphs.resolve(k)
            out.append(Neuron.of_key(info.context.graphs.graph(key.model), key))
        except (KeyProblem, LookupError):
            continue  # a subject of a removed model: the claim keeps the key, the graph has no unit
    return out


@strawberry.type(description="A claim about neurons or a circuit, with its evidence, reviews and full history.")
class Claim(KeyedNode):
    key: str = strawberry.field(description="claim:N")
    label: str
    body: str = strawberry.field(description="markdown")
    kind: ClaimKind
    status: ClaimStatus
    confidence: float | None
    revision: int = strawberry.field(description="the current revision number")
    model: str
    created_at: datetime
    updated_at: datetime
    support_count: int
    dispute_count: int
    _row: strawberry.Private[ClaimRow]

    @classmethod
    def of(cls, row: ClaimRow) -> Claim:
        return cls(
            key=f"claim:{row.id}",
            label=row.label,
            body=row.body,
            kind=ClaimKind[row.kind],
            status=ClaimStatus[row.status],
            confidence=row.confidence,
            revision=row.revision,
            model=row.model_key,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            support_count=row.support_count,
            dispute_count=row.dispute_count,
            _row=row,
        )

    async def _current(self, info: Info) -> ClaimRevisionRow:
        revs = await info.context.loaders.revisions.load(self._row.id)
        return revs[-1]

    @strawberry.field
    async def author(self, info: Info) -> Person:
        return await _person(info, self._row.created_by)

    @field(description="The content authors, in order of first contribution (`author` created it).")
    async def authors(self, info: Info) -> list[Person]:
        return await ClaimRevision.of(await self._current(info))._authors(info)

    @field(description="The neurons the current revision is about.")
    async def subjects(self, info: Info) -> list[Neuron]:
        return _neurons(info, (await self._current(info)).subjects)

    @strawberry.field
    async def evidence(self, info: Info) -> list[Evidence]:
        return [Evidence.of(e) for e in (await self._current(info)).evidence]

    @field(description="The circuit the current revision is about, at the revision it pins.")
    async def circuit(self, info: Info) -> Circuit | None:
        return await pinned_circuit(info, self._row)

    @field(description="Every revision, oldest first.")
    async def revisions(self, info: Info) -> list[ClaimRevision]:
        return [ClaimRevision.of(r) for r in await info.context.loaders.revisions.load(self._row.id)]

    @field(name="revisionAt", description="One revision (claim:N@R).")
    async def revision_at(self, info: Info, revision: int) -> ClaimRevision:
        revs = await info.context.loaders.revisions.load(self._row.id)
        if not 1 <= revision <= len(revs):
            raise CodedError(f"{self.key} has revisions 1..{len(revs)}", "NOT_FOUND")
        return ClaimRevision.of(revs[revision - 1])

    @field(description="What changed from one revision to another.")
    async def diff(
        self, info: Info, from_: Annotated[int, strawberry.argument(name="from")], to: int | None = None
    ) -> list[FieldChange]:
        revs = await info.context.loaders.revisions.load(self._row.id)
        to = to or len(revs)
        if not (1 <= from_ <= len(revs) and 1 <= to <= len(revs)):
            raise bad_input(f"{self.key} has revisions 1..{len(revs)}")
        return [FieldChange(**c) for c in diff_fields(revs[from_ - 1], revs[to - 1], deadline.check)]

    @strawberry.field
    async def reviews(self, info: Info) -> list[Review]:
        return [Review.of(r) for r in await info.context.loaders.reviews.load(self._row.id)]

    @field(description="How to cite the current revision.")
    async def citation(self, info: Info) -> Citation:
        return await ClaimRevision.of(await self._current(info))._citation(info)

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False) -> list[Claim | None]:  # type: ignore[override]
        rows = _rows_by_id(info, claims_by_id, [parse_key(nid) for nid in node_ids], required, "claim")
        return [cls.of(r) if r else None for r in rows]


def _rows_by_id(
    info: Info,
    by_id: Callable[[sa.Connection, list[int]], dict[int, R]],
    ids: list[int],
    required: bool,
    kind: str,
) -> list[R | None]:
    """Rows by id in the order asked, one statement for them all (None where absent; NOT_FOUND if required)."""
    found: dict[int, R] = {}
    if ids:
        with info.context.engine.connect() as conn:
            found = by_id(conn, ids)
    missing = [i for i in ids if i not in found]
    if required and missing:
        raise CodedError(f"no {kind}:{missing[0]}", "NOT_FOUND")
    return [found.get(i) for i in ids]


@strawberry.type
class ClaimEdge:
    cursor: str
    node: Claim


@strawberry.type
class ClaimConnection:
    edges: list[ClaimEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type(description="A named subgraph that claims can be about: circuit:N.")
class Circuit(KeyedNode):
    key: str
    name: str
    description: str
    model: str
    revision: int = strawberry.field(description="the revision shown (the current one unless asked for circuit:N@R)")
    _row: strawberry.Private[CircuitRow]

    @classmethod
    def of(cls, row: CircuitRow) -> Circuit:
        return cls(
            key=f"circuit:{row.id}",
            name=row.name,
            description=row.description,
            model=row.model_key,
            revision=row.revision,
            _row=row,
        )

    @field(description="The stated edges of the revision shown (counted at their size in the answer).")
    def edges(self, info: Info) -> list[CircuitEdge]:
        info.context.answer.charge(edge_lists.size(self._row.edges), f"{self.key}@{self.revision}'s edges")
        return [CircuitEdge(**e) for e in self._row.edges]

    @field(description="circuit:N@R of the revision shown.")
    def revision_key(self) -> str:
        return f"{self.key}@{self.revision}"

    @field(description="The circuit's newest revision: above `revision` when this shows an older one.")
    def latest_revision(self) -> int:
        return self._latest_revision()

    def _latest_revision(self) -> int:
        return self._row.current_revision

    @field(description="Every revision, oldest first (each citable as circuit:N@R).")
    def revisions(self, info: Info) -> list[CircuitRevision]:
        return revisions_of(info, self._row.id)

    @field(name="revisionAt", description="One revision (circuit:N@R).")
    def revision_at(self, info: Info, revision: int) -> CircuitRevision:
        return revision_of(info, self._row.id, revision)

    @field(description="What changed from one revision to another (to: the current one if left out).")
    def diff(
        self, info: Info, from_: Annotated[int, strawberry.argument(name="from")], to: int | None = None
    ) -> CircuitDiff:
        return diff_of(info, self._row.id, from_, to)

    @field()
    def neurons(self, info: Info) -> list[Neuron]:
        return _neurons(info, self._row.neurons)

    @field(
        description="Its checks by experiment, of every revision: the revision shown's and newer first "
        "(olderRevision marks a check of an older one)."
    )
    def experiments(self, info: Info) -> list[Experiment]:
        return experiments_of(info, self._row.id, self._latest_revision())

    @field()
    def created_at(self) -> datetime:
        return self._row.created_at

    @field(description="The circuit's web page.")
    def url(self, info: Info) -> str:
        return f"{info.context.settings.public_url.rstrip('/')}/circuits/{self._row.id}"

    @field(description="Current claims about this circuit, oldest first.")
    def claims(self, info: Info) -> list[Claim]:
        with info.context.engine.connect() as conn:
            return [Claim.of(r) for r in circuit_domain.claims_about(conn, self._row.id)]

    @field(description="Each stated edge against the weights: exists, weight, sign, rank.")
    def check(self, info: Info) -> CircuitCheck:
        graph = info.context.graphs.graph(self.model)
        info.context.answer.charge(edge_lists.size(self._row.edges), f"{self.key}@{self.revision}'s check")
        return CircuitCheck(edges=[EdgeCheck(**vars(e)) for e in circuit_domain.check(graph, self._row)])

    @classmethod
    def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str], required: bool = False) -> list[Circuit | None]:  # type: ignore[override]
        ids = [parse_circuit_key(nid) for nid in node_ids]
        rows = _rows_by_id(info, circuit_domain.circuits_by_id, ids, required, "circuit")
        return [cls.of(r) if r else None for r in rows]


@strawberry.type
class CircuitEdgeOfConnection:
    cursor: str
    node: Circuit


@strawberry.type
class CircuitConnection:
    edges: list[CircuitEdgeOfConnection]
    page_info: PageInfo
    total_count: int
