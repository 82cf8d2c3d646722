"""What the API serves the graph from: the catalog and each model version's graph, read once and kept.

A model version's weights never change, so nothing here is ever invalidated by an edit; the catalog is
re-read every ``catalog_ttl`` seconds, and once in its lifetime for a key it does not know (another process may
have imported a model). After that, a key it does not know is unknown until the catalog is read again (a model
imported meanwhile shows within ``catalog_ttl``), and the keys that failed are remembered with their error (a
negative cache, one per catalog): unknown keys, however many and however different, cost no reads and no SQL.

With a graphs folder, a model's graph is memory-mapped from its graph file (``kb.graph.graph_file``), which is
checked against the database first (ids, weights hash, layers, links, counts, neuron ids; its own checksum) and
rebuilt from the database when it is missing, stale or corrupt, one process at a time (a lock file beside it).
Every server process maps the same file, so the pages are shared.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa

from kb.db import graph_read, io_guard
from kb.db.catalog import load_catalog
from kb.db.graph_read import read_model_graph
from kb.db.tables import layer_link_table, model_table
from kb.graph import graph_file
from kb.graph import program as programs
from kb.graph.keys import Catalog, KeyProblem, LayerKey, NeuronKey, NotFound
from kb.graph.store import ModelGraph

log = logging.getLogger("kb.graphs")
T = TypeVar("T")
Lookup = tuple[str, str, str | None]  # (what: neuron, layer or model, the key as given, the default model)
MAX_UNKNOWN = 10_000  # unknown keys remembered per catalog (more cost a look-up in it each, but no read)


class GraphCache:
    def __init__(
        self, engine: sa.Engine, catalog_ttl: float = 30.0, kernel_cache: int = 4096, graphs_dir: Path | None = None
    ):
        self.engine = engine
        self.graphs_dir = Path(graphs_dir) if graphs_dir is not None else None
        self.rebuilt: list[tuple[str, str]] = []  # (model key, why) for every graph file this process rebuilt
        self.catalog_ttl = catalog_ttl
        # The catalog and the model rows, read together and replaced together (one assignment): a reader never
        # pairs one refresh's catalog with another's rows. One read at a time (the lock): a thread that finds the
        # catalog stale while another reads it answers from the one it has; one that must have a newer one (a
        # key it does not know, or no catalog yet) waits for the read under way if that began after it asked.
        self._snapshot: tuple[Catalog, dict[str, dict[str, Any]]] | None = None
        self._catalog_at = 0.0
        self._catalog_lock = threading.Lock()
        self._snapshot_read = 0  # which read (of catalog_reads) made the snapshot
        self._unknown: _Unknown | None = None  # the current catalog's negative cache
        self._graphs: dict[str, ModelGraph] = {}
        self._programs: dict[tuple[str, int], programs.LinkProgram] = {}
        self._kernels: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # least recently used first
        self._kernel_cache = kernel_cache
        self._kernels_lock = threading.Lock()  # held for the dictionary's operations only, never for I/O
        self._lock = threading.RLock()
        self._model_locks: dict[str, threading.Lock] = {}  # one model's load does not hold up another's
        self.loads = 0  # how many model graphs were read (tests and benchmarks look)
        self.catalog_reads = 0  # how many times the catalog was read

    # -- catalog -----------------------------------------------------------------------------------------
    def catalog(self, refresh: bool = False) -> Catalog:
        return self._current(refresh)[0]

    def _current(self, refresh: bool = False) -> tuple[Catalog, dict[str, dict[str, Any]]]:
        """The catalog and the model rows of one read; read again when stale, or when ``refresh`` asks (another
        process may have imported a model): then from a read begun after this call."""
        snapshot = self._snapshot
        if snapshot is not None and not refresh and time.monotonic() - self._catalog_at <= self.catalog_ttl:
            return snapshot
        io_guard.check("the catalog")  # before the lock: another thread may be reading it
        ticket = self.catalog_reads
        if snapshot is not None and not refresh:
            if not self._catalog_lock.acquire(blocking=False):
                return snapshot  # only stale, and another thread is reading it: this one keeps the one it has
        else:
            self._catalog_lock.acquire()
        try:
            if self._snapshot is not None and (
                self._snapshot_read > ticket  # read while this thread waited, begun after it asked
                or (not refresh and time.monotonic() - self._catalog_at <= self.catalog_ttl)
            ):
                return self._snapshot
            self.catalog_reads += 1
            read = self.catalog_reads
            with self.engine.connect() as conn:
                if conn.dialect.name == "postgresql":  # the catalog and the rows from one snapshot of the database
                    conn.execution_options(isolation_level="REPEATABLE READ")
                catalog = load_catalog(conn)
                models = {r.key: dict(r._mapping) for r in conn.execute(sa.select(model_table))}
            self._snapshot, self._snapshot_read = (catalog, models), read
            self._catalog_at = time.monotonic()
            for key in list(self._graphs):
                if key not in models or models[key]["removed_at"] is not None:
                    self._graphs.pop(key, None)
            return catalog, models
        finally:
            self._catalog_lock.release()

    def resolve(self, text: str, default_model: str | None = None) -> NeuronKey:
        return self._lookup(("neuron", text, default_model), lambda c: c.neuron(text, default_model))

    def resolve_layer(self, text: str, default_model: str | None = None) -> LayerKey:
        return self._lookup(("layer", text, default_model), lambda c: c.layer(text, default_model))

    def model_row_of(self, key: str) -> dict[str, Any]:
        """The model row (a removed one too, as its tombstone) of a model key; raises NotFound."""

        def find(catalog: Catalog) -> dict[str, Any]:
            row = self.model_row(key.strip().lower())
            if row is None:
                catalog.model(key)  # NotFound with a suggestion
                raise NotFound(f"no model {key!r}")
            return row

        return self._lookup(("model", key, None), find)

    def _lookup(self, what: Lookup, find: Callable[[Catalog], T]) -> T:
        """``find`` in the catalog; where it raises a KeyProblem, in the catalog read again, once in its lifetime."""
        reads = self.catalog_reads
        catalog = self.catalog()
        unknown = self._unknown_in(catalog)
        unknown.raise_if_known(what)
        try:
            return find(catalog)
        except KeyProblem as problem:
            if unknown.final or self._read_since(catalog, reads):  # read after this lookup began: as fresh as can be
                unknown.final = True
                unknown.remember(what, problem)
                raise
        catalog = self.catalog(refresh=True)
        unknown = self._unknown_in(catalog)
        unknown.final = True
        try:
            return find(catalog)
        except KeyProblem as problem:
            unknown.remember(what, problem)
            raise

    def _read_since(self, catalog: Catalog, reads: int) -> bool:
        """Whether ``catalog`` came from a read begun after ``reads`` reads had begun (not one under way then)."""
        snapshot = self._snapshot
        return snapshot is not None and snapshot[0] is catalog and self._snapshot_read > reads

    def _unknown_in(self, catalog: Catalog) -> _Unknown:
        unknown = self._unknown
        if unknown is None or unknown.catalog is not catalog:
            unknown = self._unknown = _Unknown(catalog)
        return unknown

    def model_row(self, key: str) -> dict[str, Any] | None:
        return self._current()[1].get(key)

    def model_rows(self) -> list[dict[str, Any]]:
        return sorted(self._current()[1].values(), key=lambda r: r["key"])

    # -- graphs ------------------------------------------------------------------------------------------
    def graph(self, model_key: str) -> ModelGraph:
        g = self._graphs.get(model_key)
        if g is not None:
            return g
        io_guard.check(f"the graph of {model_key}")  # before the lock: another thread may be reading it
        with self._lock:
            lock = self._model_locks.setdefault(model_key, threading.Lock())
        with lock:
            g = self._graphs.get(model_key)
            if g is None:
                with self.engine.connect() as conn:
                    g = self._read(conn, model_key)
                if g is None:
                    raise LookupError(f"no model {model_key!r}")
                self._graphs[model_key] = g
                self.loads += 1
        return g

    def _read(self, conn: sa.Connection, model_key: str) -> ModelGraph | None:
        if self.graphs_dir is None:
            return read_model_graph(conn, model_key)
        expected = graph_read.expected(conn, model_key)
        if expected is None:
            return None
        path = self.graphs_dir / graph_file.file_name(expected.key, expected.sha256)
        try:
            return _mapped(path, expected)
        except graph_file.GraphFileProblem as problem:
            why = str(problem)
        try:
            self.graphs_dir.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(f".{path.name}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one process rebuilds; the others then map its file
                try:
                    return _mapped(path, expected)
                except graph_file.GraphFileProblem:
                    pass
                log.warning("rebuilding the graph file of %s: %s", model_key, why)
                t = time.perf_counter()
                graph_read.write_graph_file(conn, expected, path)
                self.rebuilt.append((model_key, why))
                log.warning("graph file %s written in %.1f s", path.name, time.perf_counter() - t)
                return _mapped(path, expected)
        except (OSError, ValueError) as exc:  # an unwritable folder, or a graph the file cannot hold
            log.error("no graph file for %s (%s); reading it into memory", model_key, exc)
            return read_model_graph(conn, model_key)

    def loaded(self) -> int:
        """How many model graphs are in memory (health shows it: the first query of a model waits for its read)."""
        return len(self._graphs)

    def memory(self) -> list[dict[str, Any]]:
        """Each loaded graph: where its arrays live (a mapped file, shared between processes, or this heap)."""
        return [
            {
                "model": key,
                "sha256": g.sha256[:12],
                "units": g.units,
                "edges": int(g.inputs.indptr[-1]),
                "bytes": g.nbytes,
                "file": Path(g.file).name if g.file else None,
            }
            for key, g in sorted(dict(self._graphs).items())  # a copy: another thread may add a graph
        ]

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
            t = layer_link_table
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
        with self._kernels_lock:  # another thread may evict this key between a lookup and its move to the end
            k = self._kernels.get(key)
            if k is not None:
                self._kernels.move_to_end(key)
        if k is None:
            p = self.program(g, t_layer.position)  # may read the database: outside the lock
            if p is None or s_layer.position != t_layer.position - 1:
                raise LookupError("no connection between these units")
            k = p.kernel(t_index).weight[0]
            with self._kernels_lock:
                self._kernels[key] = k
                while len(self._kernels) > self._kernel_cache:
                    self._kernels.popitem(last=False)
        kernel: np.ndarray = k[s_index]
        return kernel


@dataclass(eq=False)
class _Unknown:
    """One catalog's negative cache: the keys it does not know, each with its problem, and whether it was read
    since a key was not found (``final``: then no key it does not know makes it read again)."""

    catalog: Catalog
    final: bool = False
    problems: dict[Lookup, tuple[type[KeyProblem], str, str | None]] = field(default_factory=dict)

    def raise_if_known(self, what: Lookup) -> None:
        known = self.problems.get(what)
        if known is not None:
            kind, message, suggestion = known
            raise kind(message, suggestion)

    def remember(self, what: Lookup, problem: KeyProblem) -> None:
        if len(self.problems) < MAX_UNKNOWN:
            self.problems[what] = (type(problem), problem.message, problem.suggestion)


def _mapped(path: Path, expected: graph_file.Expected) -> ModelGraph:
    mapped = graph_file.open_file(path)
    graph_file.check(mapped, expected)
    return graph_file.to_graph(mapped)
