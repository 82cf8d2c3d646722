"""The neuron page's data, the same dict the GraphQL query ``pages.NEURON`` returns, built by calling the schema's
resolvers directly (as kb.schema.compiled does) instead of through graphql-core's executor.

The page shows 72 neighbour cards, 36 kernels and the unit's renders, claims, circuits and citation; through the
generic executor that is ~3,000 field completions (every kernel value is one), about 130 ms here, most of the
page's time. Called directly, the same resolvers and DataLoaders (one statement for every card's pictures, one
for every card's claims) take a few milliseconds. tests/test_pages.py checks that both give the same data.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any, cast

from kb.claims import circuits as circuit_domain
from kb.claims.reviews import content_authors, last_content_revision
from kb.schema.context import Context, Info
from kb.schema.picture_types import Visualization, visualizations
from kb.schema.query import resolve_neuron
from kb.schema.types import Claim, Layer, NeighborOrder, Neuron, Sign, edge_kernel, neighbor_connection, neuron_citation

PER_TAB = 10
LISTS = (  # (alias, way, order, sign, with kernels): as in pages.NEURON
    ("inExcite", "inputs", NeighborOrder.WEIGHT, Sign.POSITIVE, True),
    ("inInhibit", "inputs", NeighborOrder.WEIGHT, Sign.NEGATIVE, True),
    ("inStrong", "inputs", NeighborOrder.MAGNITUDE, Sign.ANY, True),
    ("outExcite", "outputs", NeighborOrder.WEIGHT, Sign.POSITIVE, False),
    ("outInhibit", "outputs", NeighborOrder.WEIGHT, Sign.NEGATIVE, False),
    ("outStrong", "outputs", NeighborOrder.MAGNITUDE, Sign.ANY, False),
)


class _Info:
    """What the resolvers read from ``info``: the context."""

    __slots__ = ("context",)

    def __init__(self, context: Context) -> None:
        self.context = context


def _info(context: Context) -> Info:
    """An ``info`` for the resolvers: they read only its context (a strawberry Info needs the executor's)."""
    return cast(Info, _Info(context))


def _kind(v: Visualization) -> str:
    kind: Enum = v.kind  # RenderKind, an Enum made at import (strawberry.enum): mypy sees no class
    return kind.name


def _vis(v: Visualization, with_size: bool) -> dict[str, Any]:
    artifact: dict[str, Any] = {"url": v.artifact.url}
    if with_size:
        artifact.update(width=v.artifact.width, height=v.artifact.height)
    return {"kind": _kind(v), "params": v.params, "artifact": artifact}


async def _cards(info: Info, nodes: list[Neuron]) -> dict[str, dict[str, Any]]:
    """Each distinct unit's card: its feature visualizations and its claims (two batched statements)."""
    unique = list({n.key: n for n in nodes}.values())
    loaders = info.context.loaders
    pictures, claims = await asyncio.gather(
        asyncio.gather(*(visualizations(info, n._graph, n._key, None) for n in unique)),
        asyncio.gather(*(loaders.claims_of_neuron.load((n._key.model, n._key.layer, n._key.index)) for n in unique)),
    )
    return {
        n.key: {
            "key": n.key,
            "visualizations": [_vis(v, False) for v in vs if _kind(v) == "FEATURE_VIS"],
            "claims": [
                {"key": c.key, "label": c.label, "status": c.status.name, "kind": c.kind.name}
                for c in map(Claim.of, rows)
            ],
            "_all": vs,
            "_claims": rows,
        }
        for n, vs, rows in zip(unique, pictures, claims, strict=True)
    }


async def neuron(context: Context, text: str) -> dict[str, Any]:
    """The neuron page's data for a key in any accepted form; a CodedError when there is no such unit."""
    info = _info(context)
    n = resolve_neuron(info, text)
    g = n._graph
    lists: dict[str, dict[str, Any]] = {}
    nodes = [n]
    for alias, way, order, sign, kernels in LISTS:
        conn = neighbor_connection(info, n, way, PER_TAB, None, order, sign)
        edges = []
        for e in conn.edges:
            edge: dict[str, Any] = {"weight": e.weight, "magnitude": e.magnitude, "method": e.method}
            if kernels:
                edge["kernel"] = edge_kernel(info, g, e._source, e._target)
            edge["node"] = e.node
            edges.append(edge)
            nodes.append(e.node)
        lists[alias] = {"totalCount": conn.total_count, "edges": edges}
    cards = await _cards(info, nodes)
    for listed in lists.values():
        for edge in listed["edges"]:
            card = cards[edge["node"].key]
            edge["node"] = {k: card[k] for k in ("key", "visualizations", "claims")}
    own = cards[n.key]
    layer = Layer.of(g, int(g.layer_of[n._ordinal]))
    row = context.graphs.model_row(g.key)
    assert row is not None  # the model of a graph just read is in the catalog
    citation = neuron_citation(info, n)
    with context.graphs.engine.connect() as db:
        circuits, _ = circuit_domain.listing(db, None, n.key, 0, 20)
    return {
        "neuron": {
            "key": n.key,
            "pinnedKey": n._key.pinned(g.sha256),
            "index": n.index,
            "layer": {"key": layer.key, "name": layer.name, "units": layer.units},
            "model": {
                "key": row["key"],
                "source": row["source"],
                "shortHash": row["sha256"][:12],
                "weights": row["weights"],
                "weightsAreRandom": row["weights"].startswith("random"),
            },
            **lists,
            "claims": [
                {
                    "key": c.key,
                    "label": c.label,
                    "kind": c.kind.name,
                    "status": c.status.name,
                    "revision": c.revision,
                    "supportCount": c.support_count,
                    "disputeCount": c.dispute_count,
                }
                for c in map(Claim.of, own["_claims"])
            ],
            "visualizations": [_vis(v, True) for v in own["_all"]],
            "citation": {"text": citation.text, "bibtex": citation.bibtex},
        },
        "circuits": {"edges": [{"node": {"key": f"circuit:{c['id']}", "name": c["name"]}} for c in circuits]},
    }


async def reviewing(context: Context, claim_keys: list[str], user_id: int) -> dict[str, dict[str, Any]]:
    """For a signed-in reader: of each claim (claim:N), whether they are among its content authors (who cannot
    review it) and their own current review (verdict, comment, stale) or None. Two batched statements."""
    ids = [int(k.split(":", 1)[1]) for k in claim_keys]
    loaders = context.loaders
    revisions, reviews = await asyncio.gather(loaders.revisions.load_many(ids), loaders.reviews.load_many(ids))
    out: dict[str, dict[str, Any]] = {}
    for key, revs, rows in zip(claim_keys, revisions, reviews, strict=True):
        mine = next((r for r in rows if r["user_id"] == user_id), None)
        out[key] = {
            "authored": user_id in content_authors(revs),
            "review": None
            if mine is None
            else {
                "verdict": mine["verdict"],
                "comment": mine["comment"],
                "stale": (mine.get("claim_revision") or 0) < last_content_revision(revs),
            },
        }
    return out
