"""What the API serves the graph from: the catalog and each model version's graph, read once and kept.

A model version's weights never change, so nothing here is ever invalidated by an edit; the catalog is
re-read when a key is not found (another process may have imported a model) and when a model was removed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import sqlalchemy as sa

from kb.db.catalog import load_catalog
from kb.db.graph_read import read_model_graph
from kb.db.tables import LayerLink, Model
from kb.graph import program as programs
from kb.graph.keys import Catalog, KeyProblem, LayerKey, NeuronKey
from kb.graph.store import ModelGraph


class GraphCache:
    def __init__(self, engine: sa.Engine, catalog_ttl: float = 30.0, kernel_cache: int = 4096):
        self.engine = engine
        self.catalog_ttl = catalog_ttl
        self._catalog: Catalog | None = None
        self._catalog_at = 0.0
        self._models: dict[str, dict] = {}
        self._graphs: dict[str, ModelGraph] = {}
        self._programs: dict[tuple[str, int], programs.LinkProgram] = {}
        self._kernels: OrderedDict = OrderedDict()
        self._kernel_cache = kernel_cache
        self._lock = threading.RLock()
        self.loads = 0  # how many model graphs were read (tests and benchmarks look)

    # -- catalog -----------------------------------------------------------------------------------------
    def catalog(self, refresh: bool = False) -> Catalog:
        if refresh or self._catalog is None or time.monotonic() - self._catalog_at > self.catalog_ttl:
            with self.engine.connect() as conn:
                self._catalog = load_catalog(conn)
                m = Model.__table__
                self._models = {r.key: dict(r._mapping) for r in conn.execute(sa.select(m))}
            self._catalog_at = time.monotonic()
            for key in list(self._graphs):
                if key not in self._models or self._models[key]["removed_at"] is not None:
                    self._graphs.pop(key, None)
        return self._catalog

    def resolve(self, text: str, default_model: str | None = None) -> NeuronKey:
        try:
            return self.catalog().neuron(text, default_model)
        except KeyProblem:
            return self.catalog(refresh=True).neuron(text, default_model)

    def resolve_layer(self, text: str, default_model: str | None = None) -> LayerKey:
        try:
            return self.catalog().layer(text, default_model)
        except KeyProblem:
            return self.catalog(refresh=True).layer(text, default_model)

    def model_row(self, key: str) -> dict | None:
        self.catalog()
        return self._models.get(key)

    def model_rows(self) -> list[dict]:
        self.catalog()
        return sorted(self._models.values(), key=lambda r: r["key"])

    # -- graphs ------------------------------------------------------------------------------------------
    def graph(self, model_key: str) -> ModelGraph:
        g = self._graphs.get(model_key)
        if g is not None:
            return g
        with self._lock:
            g = self._graphs.get(model_key)
            if g is None:
                with self.engine.connect() as conn:
                    g = read_model_graph(conn, model_key)
                if g is None:
                    raise LookupError(f"no model {model_key!r}")
                self._graphs[model_key] = g
                self.loads += 1
        return g

    def loaded(self) -> int:
        """How many model graphs are in memory (health shows it: the first query of a model waits for its read)."""
        return len(self._graphs)

    def warm(self) -> None:
        """Read every live model's graph (the server does this at start-up, in a thread)."""
        for row in self.model_rows():
            if row["removed_at"] is None:
                self.graph(row["key"])

    # -- kernels -----------------------------------------------------------------------------------------
    def program(self, g: ModelGraph, target_layer_position: int) -> programs.LinkProgram | None:
        key = (g.key, target_layer_position)
        p = self._programs.get(key)
        if p is None and target_layer_position > 0:
            t = LayerLink.__table__
            target_layer = g.layers[target_layer_position]
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(t.c.program, t.c.arrays).where(t.c.target_layer_id == target_layer.id)
                ).first()
            if row is None:
                return None
            p = programs.loads(row.program, row.arrays)
            self._programs[key] = p
        return p

    def kernel(self, g: ModelGraph, source: int, target: int) -> np.ndarray:
        """The spatial kernel through which unit ``source`` reaches unit ``target`` (ordinals)."""
        t_layer, t_index = g.unit(target)
        s_layer, s_index = g.unit(source)
        key = (g.key, target)
        k = self._kernels.get(key)
        if k is None:
            p = self.program(g, t_layer.position)
            if p is None or s_layer.position != t_layer.position - 1:
                raise LookupError("no connection between these units")
            k = p.kernel(t_index).weight[0]
            self._kernels[key] = k
            if len(self._kernels) > self._kernel_cache:
                self._kernels.popitem(last=False)
        else:
            self._kernels.move_to_end(key)
        return k[s_index]
