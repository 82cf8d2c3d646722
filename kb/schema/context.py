"""The typed per-request context: the shared graph cache, per-request DataLoaders, the request itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import strawberry
from strawberry.dataloader import DataLoader

from kb.db.graph_cache import GraphCache
from kb.db.tables import Layer
from kb.settings import Settings


class Loaders:
    """Per-request DataLoaders: what a request reads from SQL is batched, one statement per batch.

    Graph topology and weights come from the in-memory graph cache (one bulk read per model version, ever),
    so neighbors, subgraphs and paths issue no SQL at all once a model is loaded.
    """

    def __init__(self, graphs: GraphCache):
        self.graphs = graphs
        self.layer_details = DataLoader(load_fn=self._layer_details)

    async def _layer_details(self, ids: list[int]) -> list[dict]:
        t = Layer.__table__
        with self.graphs.engine.connect() as conn:
            rows = {r.id: dict(r._mapping) for r in conn.execute(sa.select(t).where(t.c.id.in_(ids)))}
        return [rows[i] for i in ids]


@dataclass
class Context:
    graphs: GraphCache
    settings: Settings
    request: Any = None
    response: Any = None
    loaders: Loaders = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.loaders is None:
            self.loaders = Loaders(self.graphs)


Info = strawberry.Info[Context, None]
