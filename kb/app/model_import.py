"""``kb import``: build a model's graph (layers, units, weighted connections) and write it in one transaction.

The connections are streamed: a thread computes each link's weights a chunk of target units at a time while
the main thread encodes the previous chunk for the database (PostgreSQL binary COPY, sent from a thread of its
own; SQLite INSERTs of 500 rows each). When a graphs folder is given, the serving graph file
(``kb.graph.graph_file``) is written from the same chunks in another thread, and the link programs are dumped
from a third; no step holds a whole model's edges (``kb.pipeline`` runs the threads).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import sqlalchemy as sa
from threadpoolctl import threadpool_limits

from kb.app.reporting import Quiet, Reporter
from kb.db import bulk
from kb.db.tables import Model, model_table
from kb.graph import extract, graph_file, program, zoo
from kb.graph.keys import MODEL_KEY
from kb.graph.store import LayerInfo
from kb.graph.weights import load, state_dict_sha256
from kb.graph.zoo.spec import Architecture
from kb.pipeline import Behind, prefetch

log = logging.getLogger("kb.import")


class ImportProblem(ValueError):
    pass


@dataclass
class ImportReport:
    key: str
    source: str
    sha256: str
    weights: str
    layers: int = 0
    units: int = 0
    edges: int = 0
    already: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    graph_file: Path | None = None


Chunk = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # (link index, targets, weight, magnitude)


def link_chunks(
    links: list[extract.Link],
    reporter: Reporter | None = None,
    release: bool = False,
    after_link: Callable[[int], None] | None = None,
) -> Iterator[Chunk]:
    """(link index, target units, weight[targets, sources], magnitude[targets, sources]) for every pair of
    units of each link, a chunk of target units at a time. With ``release``, each link is removed from the front
    of ``links`` once it is done, so that its weights can be freed (VGG16's fc6: 0.4 GB) before the next.
    ``after_link(i)`` is called once link ``i`` is done, before the next one starts."""
    reporter = reporter or Quiet()
    for i in range(len(links)):
        link = links[0] if release else links[i]
        stage = f"weights {link.source} → {link.target}"
        tick = reporter.stage(stage, link.program.out_channels)
        for targets, weight, magnitude in link.program.expand():
            yield i, targets, weight, magnitude
            tick(len(targets))
        reporter.done(stage)
        del link
        if release:
            del links[0]
        if after_link is not None:
            after_link(i)


def check_key(key: str) -> None:
    if not MODEL_KEY.match(key) or len(key) > 64:
        raise ImportProblem(
            f"model key {key!r} is not valid: lowercase letters, digits, '_' and '-', "
            f"starting with a letter or digit, at most 64 characters"
        )


def existing(conn: sa.Connection, key: str) -> sa.Row[str, datetime | None, str] | None:
    """The model row under ``key``, if any: (sha256, removed_at, source)."""
    t = model_table
    return conn.execute(sa.select(t.c.sha256, t.c.removed_at, t.c.source).where(t.c.key == key)).first()


def import_model(
    engine: sa.Engine,
    source: str,
    key: str | None = None,
    weights: str | None = None,
    seed: int | None = None,
    reporter: Reporter | None = None,
    graphs_dir: Path | None = None,
    layers: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> ImportReport:
    """Imports a model version; with ``graphs_dir``, also writes its serving graph file there. ``layers`` (module
    paths and globs, comma-separated) and ``input_shape`` choose for models outside the zoo (``kb.graph.zoo``)."""
    reporter = reporter or Quiet()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        arch = zoo.get(source, layers, input_shape)
    except zoo.UnknownArchitecture as exc:
        raise ImportProblem(str(exc)) from None
    key = key or arch.name
    check_key(key)
    with engine.connect() as conn:
        if (row := existing(conn, key)) is not None and row.removed_at is not None:
            raise ImportProblem(f"model key {key!r} belonged to a removed model and is never reused; choose --key")
    reporter.stage("loading weights")
    model, described = load(arch, weights, seed)
    sha = state_dict_sha256(model.state_dict())
    reporter.done("loading weights")
    timings["load weights"] = time.perf_counter() - t0
    report = ImportReport(key, arch.source, sha, described)
    with engine.connect() as conn:
        row = existing(conn, key)
    if row is not None:
        if row.sha256 == sha and row.source == arch.source:
            report.already = True
            return report
        raise ImportProblem(
            f"model key {key!r} is taken by {row.source} with weights {row.sha256[:12]}; "
            f"these weights are {sha[:12]}: import them under another --key"
        )

    t = time.perf_counter()
    reporter.stage("reading the layers")
    shapes, links = extract.links(model, arch)
    reporter.done("reading the layers")
    del model  # the link programs hold copies of the weights they need
    gc.collect()
    timings["extract"] = time.perf_counter() - t
    report.layers, report.units = len(shapes), sum(s.units for s in shapes)

    t = time.perf_counter()
    # One BLAS thread while the edges are computed beside the database's COPY: OpenBLAS's idle threads spin, and
    # on two cores they took the server process's CPU (ResNet50's COPY ran 13.9 s with two threads, 8.6 s with one).
    with threadpool_limits(limits=1, user_api="blas"):
        report.edges, report.graph_file, busy = write_graph(
            engine, arch, key, sha, described, shapes, links, reporter, graphs_dir
        )
    timings["write"] = time.perf_counter() - t
    timings["compute edges"] = busy  # inside the write, overlapped with it
    timings["total"] = time.perf_counter() - t0
    report.seconds = timings
    return report


def write_graph(
    engine: sa.Engine,
    arch: Architecture,
    key: str,
    sha: str,
    described: str,
    shapes: list[extract.LayerShape],
    links: list[extract.Link],
    reporter: Reporter,
    graphs_dir: Path | None = None,
) -> tuple[int, Path | None, float]:
    """Writes everything in one transaction; returns (connections, the graph file or None, seconds computing)."""
    specs = {s.name: s for s in arch.layers}
    writer: graph_file.Writer | None = None
    busy = [0.0]
    with engine.begin() as conn:
        model_id = bulk.insert_model(
            conn,
            Model(
                key=key,
                source=arch.source,
                sha256=sha,
                weights=described,
                input_shape=list(arch.input_shape),
                description=arch.description,
            ),
        )
        layer_ids = bulk.insert_layers(
            conn,
            model_id,
            [
                {
                    "key": s.name,
                    "module_path": specs[s.name].module,
                    "position": i,
                    "kind": specs[s.name].kind,
                    "units": s.units,
                    "output_shape": list(s.shape),
                    "aliases": list(specs[s.name].aliases),
                    "tags": list(specs[s.name].tags),
                }
                for i, s in enumerate(shapes)
            ],
        )
        neuron_ids = bulk.insert_neurons(conn, model_id, {layer_ids[s.name]: s.units for s in shapes})
        link_rows = [
            {
                "model_id": model_id,
                "source_layer_id": layer_ids[k.source],
                "target_layer_id": layer_ids[k.target],
                "method": k.program.method,
                "notes": list(k.program.notes),
            }
            for k in links
        ]
        # The link programs go to one temporary file from a thread while the edges are computed (VGG16's fc6
        # program alone is 0.4 GB), and into the database after the connections, while the graph file catches up.
        programs = _ProgramDump(links)
        if graphs_dir is not None:
            writer = _file_writer(graphs_dir, model_id, key, sha, shapes, links, layer_ids, neuron_ids)
        total = sum(k.program.in_channels * k.program.out_channels for k in links)
        tick = reporter.stage("writing connections", total)

        ids = [(neuron_ids[layer_ids[k.target]], neuron_ids[layer_ids[k.source]]) for k in links]

        def timed_chunks() -> Iterator[Chunk]:
            # a link's edges wait for the programs before it to be on file, so that no program is held on: VGG16's
            # fc6 (0.4 GB) was still being written while fc7's edges were made (peak RSS up to 1509 MiB; 1385 now)
            chunks = link_chunks(links, reporter, release=True, after_link=programs.wait_written)
            while True:
                t = time.perf_counter()
                item = next(chunks, None)
                busy[0] += time.perf_counter() - t
                if item is None:
                    return
                yield item

        unsealed: list[OSError] = []  # why the graph file could not be sealed, if it could not

        def add_to_file(chunk: Chunk | None) -> None:  # None: the last chunk was added
            if writer is None:
                return
            if chunk is not None:
                writer.add(*chunk)
                return
            try:
                writer.seal()  # the checksum and fsync, while the database builds the index
            except OSError as exc:  # the database still gets the model; a server rebuilds the file on first use
                unsealed.append(exc)

        # The graph file is written from the chunks in a thread of its own, behind the COPY and on through the
        # index build; the chunks it has yet to take are kept (at most the model's edges, 8 bytes each).
        file_behind: Behind[Chunk | None] = Behind(add_to_file, name="kb-graph-file")

        def blocks() -> Iterator[bulk.EdgeBlock]:
            for chunk in prefetch(timed_chunks(), name="kb-import-weights"):
                file_behind(chunk)
                i, targets, weight, magnitude = chunk
                target_ids, source_ids = ids[i]
                yield bulk.EdgeBlock(target_ids[targets], source_ids, weight, magnitude)
            file_behind(None)
            reporter.stage("index and commit")  # the last rows are in: the index is built, then the commit

        try:
            with file_behind, programs:
                written = bulk.copy_connections(conn, model_id, blocks(), tick)
                for row, (meta, offset, size) in zip(link_rows, programs.result(), strict=True):
                    bulk.insert_link_streamed(conn, {**row, "program": meta}, programs.file_at(offset), size)
                bulk.index_connections(conn, model_id)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        reporter.done("writing connections")
    path = None
    if writer is not None:
        try:
            if unsealed:
                raise unsealed[0]
            path = writer.publish()
        except OSError as exc:  # the database has the model; a server rebuilds the file on first use
            log.warning("the graph file was not written: %s", exc)
            writer.abort()
    return written, path, busy[0]


class _ProgramDump:
    """Writes each link's program (``kb.graph.program.dump``) to one temporary file, in a thread; ``result()``
    gives (JSON structure, offset, size) per link. A program is released once it is written and its edges computed.
    """

    def __init__(self, links: list[extract.Link]):
        self._links = list(links)
        self._stop = threading.Event()
        self._stack = contextlib.ExitStack()
        self._written = 0  # links whose programs are on file (and released)
        self._progress = threading.Condition()

    def _dump(self, pending: list[extract.Link]) -> list[tuple[program.Meta, int, int]]:
        out = []
        while pending and not self._stop.is_set():
            link = pending.pop(0)
            offset = self._file.tell()
            meta = program.dump(link.program, self._file)
            out.append((meta, offset, self._file.tell() - offset))
            del link
            with self._progress:
                self._written += 1
                self._progress.notify_all()
        return out

    def wait_written(self, link: int) -> None:
        """Returns once the program of link ``link`` (an index) is on file, or the dump has ended or failed."""
        with self._progress:
            while not (self._written > link or self._future.done() or self._stop.is_set()):
                self._progress.wait(0.1)  # woken by each program written; a failed dump is seen within 0.1 s

    def result(self) -> list[tuple[program.Meta, int, int]]:
        return self._future.result()

    def file_at(self, offset: int) -> BinaryIO:
        self._file.seek(offset)
        return self._file

    def __enter__(self) -> _ProgramDump:
        self._file = self._stack.enter_context(tempfile.TemporaryFile())
        pool = self._stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="kb-dump-programs"))
        self._stack.callback(self._stop.set)  # runs first: a failed import stops the dump at the next program
        self._future = pool.submit(self._dump, self._links)
        self._links = []
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _file_writer(
    graphs_dir: Path,
    model_id: int,
    key: str,
    sha: str,
    shapes: list[extract.LayerShape],
    links: list[extract.Link],
    layer_ids: dict[str, int],
    neuron_ids: dict[int, np.ndarray],
) -> graph_file.Writer:
    layers, first = [], 0
    for i, s in enumerate(shapes):
        layers.append(LayerInfo(layer_ids[s.name], s.name, i, s.units, first))
        first += s.units
    position = {s.name: i for i, s in enumerate(shapes)}
    expected = graph_file.Expected(
        model_id,
        key,
        sha,
        layers,
        [graph_file.Link(position[k.source], position[k.target], k.program.method) for k in links],
        np.concatenate([neuron_ids[layer_ids[s.name]] for s in shapes]).astype(np.int64),
    )
    path = Path(graphs_dir) / graph_file.file_name(key, sha)
    return graph_file.Writer(path, expected)


def remove_model(engine: sa.Engine, key: str, reason: str, graphs_dir: Path | None = None) -> list[Path]:
    """Removes a model's graph (the model row stays as a tombstone) and deletes its graph files; returns them."""
    t = model_table
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.c.id, t.c.removed_at, t.c.sha256).where(t.c.key == key)).first()
        if row is None:
            raise ImportProblem(f"no model {key!r}")
        if row.removed_at is not None:
            raise ImportProblem(f"model {key!r} was already removed")
        bulk.delete_graph(conn, row.id)
        conn.execute(sa.update(t).where(t.c.id == row.id).values(removed_at=sa.func.now(), removed_reason=reason))
    removed = []
    if graphs_dir is not None:  # processes that still map it keep their pages until they drop the model
        name = graph_file.file_name(key, row.sha256)
        main = Path(graphs_dir) / name
        for path in (main, graph_file.stamp_path(main), main.with_name(f".{name}.lock")):
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed
