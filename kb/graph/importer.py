"""``kb import``: build a model's graph (layers, units, weighted connections) and write it in one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sqlalchemy as sa

from kb.db import bulk
from kb.db.tables import Model
from kb.graph import extract, program, zoo
from kb.graph.keys import MODEL_KEY
from kb.graph.weights import load, state_dict_sha256


class ImportProblem(ValueError):
    pass


class Reporter:
    """What the importer tells about long steps; the CLI shows them as progress bars."""

    def stage(self, name: str, total: int | None = None) -> Callable[[int], None]:
        return lambda n: None

    def done(self, name: str) -> None:
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


def compute_edges(links: list[extract.Link], reporter: Reporter | None = None) -> list[bulk.EdgeBlock]:
    """Every (source unit, target unit) pair of each link with its weight and magnitude."""
    reporter = reporter or Reporter()
    blocks = []
    for link in links:
        p = link.program
        n = p.in_channels
        stage = f"weights {link.source} → {link.target}"
        tick = reporter.stage(stage, p.out_channels)
        tgt, w, g = [], [], []
        for targets, weight, magnitude in p.expand():
            tgt.append(np.repeat(targets.astype(np.int32), n))
            w.append(weight.reshape(-1))
            g.append(magnitude.reshape(-1))
            tick(len(targets))
        target = np.concatenate(tgt)
        source = np.tile(np.arange(n, dtype=np.int32), p.out_channels)
        blocks.append(
            bulk.EdgeBlock(link.source, link.target, p.method, target, source, np.concatenate(w), np.concatenate(g))
        )
        reporter.done(stage)
    return blocks


def check_key(key: str) -> None:
    if not MODEL_KEY.match(key) or len(key) > 64:
        raise ImportProblem(
            f"model key {key!r} is not valid: lowercase letters, digits, '_' and '-', "
            f"starting with a letter or digit, at most 64 characters"
        )


def existing(conn: sa.Connection, key: str):
    t = Model.__table__
    return conn.execute(sa.select(t.c.sha256, t.c.removed_at, t.c.source).where(t.c.key == key)).first()


def import_model(
    engine: sa.Engine,
    source: str,
    key: str | None = None,
    weights: str | None = None,
    seed: int | None = None,
    reporter: Reporter | None = None,
) -> ImportReport:
    reporter = reporter or Reporter()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        arch = zoo.get(source)
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
    shapes, links = extract.links(model, arch)
    blocks = compute_edges(links, reporter)
    timings["compute edges"] = time.perf_counter() - t
    report.layers, report.units = len(shapes), sum(s.units for s in shapes)
    report.edges = sum(len(b) for b in blocks)

    t = time.perf_counter()
    write_graph(engine, arch, key, sha, described, shapes, links, blocks, reporter)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report.seconds = timings
    return report


def write_graph(engine, arch, key, sha, described, shapes, links, blocks, reporter: Reporter) -> None:
    specs = {s.name: s for s in arch.layers}
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
        rows = []
        for link in links:
            meta, arrays = program.dumps(link.program)
            rows.append(
                {
                    "model_id": model_id,
                    "source_layer_id": layer_ids[link.source],
                    "target_layer_id": layer_ids[link.target],
                    "method": link.program.method,
                    "notes": list(link.program.notes),
                    "program": meta,
                    "arrays": arrays,
                }
            )
        bulk.insert_links(conn, rows)
        current: dict[str, Callable[[int], None]] = {}

        def per_layer():  # one stage per layer; when the last block is written, the indexes are built
            for b in blocks:
                stage = f"write {b.source_layer} → {b.target_layer}"
                current["tick"] = reporter.stage(stage, len(b))
                yield b, neuron_ids[layer_ids[b.source_layer]], neuron_ids[layer_ids[b.target_layer]]
                reporter.done(stage)
            current["tick"] = reporter.stage("index and commit")

        bulk.insert_connections(conn, model_id, per_layer(), lambda n: current["tick"](n))
    reporter.done("index and commit")


def remove_model(engine: sa.Engine, key: str, reason: str) -> None:
    t = Model.__table__
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.c.id, t.c.removed_at).where(t.c.key == key)).first()
        if row is None:
            raise ImportProblem(f"no model {key!r}")
        if row.removed_at is not None:
            raise ImportProblem(f"model {key!r} was already removed")
        bulk.delete_graph(conn, row.id)
        conn.execute(sa.update(t).where(t.c.id == row.id).values(removed_at=sa.func.now(), removed_reason=reason))
