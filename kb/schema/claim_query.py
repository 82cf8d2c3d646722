"""Query fields of the claim layer: claims by key, lists and search (claims and neurons), circuits, me."""

from __future__ import annotations

import strawberry

from kb.claims import circuits as circuit_domain
from kb.claims import claims as claim_domain
from kb.claims import search
from kb.claims.errors import ClaimProblem
from kb.graph.keys import KeyProblem
from kb.schema.claim_types import ClaimKind, ClaimStatus, Person
from kb.schema.context import Info
from kb.schema.errors import CodedError
from kb.schema.fields import field
from kb.schema.pagination import cursor, page_info, window
from kb.schema.types import (
    Circuit,
    CircuitConnection,
    CircuitEdgeOfConnection,
    Claim,
    ClaimConnection,
    ClaimEdge,
    ClaimRevision,
    Neuron,
    NeuronConnection,
    NeuronEdge,
)


def _filters(
    info: Info, model: str | None, layer: str | None, kind: ClaimKind | None, status: ClaimStatus | None
) -> search.Filters:
    layer_key = None
    if layer:
        lk = info.context.graphs.resolve_layer(layer, model)
        model, layer_key = lk.model, lk.layer
    elif model:
        model = info.context.graphs.catalog().model(model).key
    return search.Filters(
        model=model, layer=layer_key, kind=kind.value if kind else None, status=status.value if status else None
    )


def _claims_page(info: Info, ids: list[int], start: int, total: int) -> ClaimConnection:
    with info.context.engine.connect() as conn:
        rows = claim_domain.claims_by_id(conn, ids)
    edges = [ClaimEdge(cursor=cursor(start + i), node=Claim.of(rows[cid])) for i, cid in enumerate(ids)]
    return ClaimConnection(edges=edges, page_info=page_info(start, start + len(ids), total), total_count=total)


@strawberry.type
class ClaimQuery:
    @field(description="A claim by key: claim:17 (claim:17@3 gives the claim; see revisionAt).")
    def claim(self, info: Info, key: str) -> Claim:
        claim_id, _ = claim_domain.parse_revision_key(key)
        with info.context.engine.connect() as conn:
            row = claim_domain.claims_by_id(conn, [claim_id]).get(claim_id)
        if row is None:
            raise CodedError(f"no claim:{claim_id}", "NOT_FOUND")
        return Claim.of(row)

    @field(description="One immutable revision by its citable key, e.g. claim:17@3.")
    def claim_revision(self, info: Info, key: str) -> ClaimRevision:
        claim_id, revision = claim_domain.parse_revision_key(key)
        if revision is None:
            raise ClaimProblem("a revision key looks like claim:17@3")
        with info.context.engine.connect() as conn:
            revs = claim_domain.revisions(conn, [claim_id])[claim_id]
        if not 1 <= revision <= len(revs):
            raise CodedError(f"no claim:{claim_id}@{revision}", "NOT_FOUND")
        return ClaimRevision.of(revs[revision - 1])

    @field(
        description="Claims, oldest first (newestFirst: the newest first), filtered by model, layer, kind and status."
    )
    def claims(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        model: str | None = None,
        layer: str | None = None,
        kind: ClaimKind | None = None,
        status: ClaimStatus | None = None,
        newest_first: bool = False,
    ) -> ClaimConnection:
        f = _filters(info, model, layer, kind, status)
        with info.context.engine.connect() as conn:
            total = search.filtered_claim_count(conn, f)
            start, stop = window(first, after, total)
            ids = search.filtered_claim_ids(conn, f, start, stop - start, newest_first)
        return _claims_page(info, ids, start, total)

    @field(description="Claims whose label or body match the text (full-text search, best first).")
    def search_claims(
        self,
        info: Info,
        text: str,
        first: int | None = None,
        after: str | None = None,
        model: str | None = None,
        layer: str | None = None,
        kind: ClaimKind | None = None,
        status: ClaimStatus | None = None,
    ) -> ClaimConnection:
        f = _filters(info, model, layer, kind, status)
        start, stop = window(first, after, 10**9)
        with info.context.engine.connect() as conn:
            ids, total = search.search_claims(conn, text, f, start, stop - start)
        return _claims_page(info, ids, start, total)

    @field(description="Neurons that matching claims are about, best-matching claim first.")
    def search_neurons(
        self,
        info: Info,
        text: str,
        first: int | None = None,
        after: str | None = None,
        model: str | None = None,
        layer: str | None = None,
        kind: ClaimKind | None = None,
        status: ClaimStatus | None = None,
    ) -> NeuronConnection:
        f = _filters(info, model, layer, kind, status)
        start, stop = window(first, after, 10**9)
        with info.context.engine.connect() as conn:
            keys, total = search.search_neurons(conn, text, f, start, stop - start)
        edges = []
        for i, k in enumerate(keys):
            try:
                nk = info.context.graphs.resolve(k)
            except KeyProblem:
                continue
            edges.append(
                NeuronEdge(cursor=cursor(start + i), node=Neuron.of_key(info.context.graphs.graph(nk.model), nk))
            )
        return NeuronConnection(edges=edges, page_info=page_info(start, start + len(keys), total), total_count=total)

    @field(description="A circuit by key: circuit:3 (its current revision) or circuit:3@2 (that one).")
    def circuit(self, info: Info, key: str) -> Circuit:
        with info.context.engine.connect() as conn:
            return Circuit.of(circuit_domain.at_revision(conn, *circuit_domain.parse_key(key)))

    @field(description="Circuits, newest first, of one model and/or containing one neuron.")
    def circuits(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        model: str | None = None,
        neuron: str | None = None,
    ) -> CircuitConnection:
        graphs = info.context.graphs
        model = graphs.catalog().model(model).key if model else None
        neuron = str(graphs.resolve(neuron)) if neuron else None
        start, stop = window(first, after, 10**9)
        with info.context.engine.connect() as conn:
            rows, total = circuit_domain.listing(conn, model, neuron, start, stop - start)
        edges = [CircuitEdgeOfConnection(cursor=cursor(start + i), node=Circuit.of(r)) for i, r in enumerate(rows)]
        return CircuitConnection(edges=edges, page_info=page_info(start, start + len(rows), total), total_count=total)

    @field(description="The account behind the request's token.")
    def me(self, info: Info) -> Person:
        account = info.context.account()
        return Person(name=account.name, display_name=account.name)
