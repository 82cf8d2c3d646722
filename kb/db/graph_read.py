"""Reading a model version's graph from the database: what its graph file must hold (``expected``), the file
built a chunk of target units at a time (``write_graph_file``), or the whole graph in memory
(``read_model_graph``, when no graph file can be used). PostgreSQL sends the edges as one aggregated bytea per
chunk, SQLite as rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa

from kb.db.engine import driver_connection
from kb.db.tables import layer_link_table, layer_table, model_table, neuron_table
from kb.graph import graph_file
from kb.graph.store import LayerInfo, ModelGraph, build

Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # target ids, source ids, weights, magnitudes
_RECORD = np.dtype([("t", ">i4"), ("s", ">i4"), ("w", ">f4"), ("g", ">f4")])


def _edges_pg(conn: sa.Connection, model_id: int) -> Edges:
    return _range_pg(conn, model_id, -(2**31), 2**31 - 1)


def _edges_sqlite(conn: sa.Connection, model_id: int) -> Edges:
    cur = driver_connection(conn).execute(
        "SELECT target_id, source_id, weight, magnitude FROM connection WHERE target_id IN "
        "(SELECT id FROM neuron WHERE model_id = ?)",
        (model_id,),
    )
    rows = cur.fetchall()
    if not rows:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),) * 2
    arr = np.array(rows, dtype=np.float64)
    return (
        arr[:, 0].astype(np.int64),
        arr[:, 1].astype(np.int64),
        arr[:, 2].astype(np.float32),
        arr[:, 3].astype(np.float32),
    )


def read_model_graph(conn: sa.Connection, model_key: str) -> ModelGraph | None:
    m, lt, n, k = model_table, layer_table, neuron_table, layer_link_table
    model = conn.execute(
        sa.select(m.c.id, m.c.key, m.c.sha256).where(m.c.key == model_key, m.c.removed_at.is_(None))
    ).first()
    if model is None:
        return None
    layers: list[LayerInfo] = []
    first = 0
    for row in conn.execute(
        sa.select(lt.c.id, lt.c.key, lt.c.position, lt.c.units).where(lt.c.model_id == model.id).order_by(lt.c.position)
    ):
        layers.append(LayerInfo(row.id, row.key, len(layers), row.units, first))
        first += row.units
    position = {layer.id: layer.position for layer in layers}
    ids = np.zeros(first, dtype=np.int64)
    base = {layer.id: layer.first for layer in layers}
    for nid, lid, index in conn.execute(sa.select(n.c.id, n.c.layer_id, n.c.index).where(n.c.model_id == model.id)):
        ids[base[lid] + index] = nid
    methods = {
        (position[s], position[t]): meth
        for s, t, meth in conn.execute(
            sa.select(k.c.source_layer_id, k.c.target_layer_id, k.c.method).where(k.c.model_id == model.id)
        )
    }
    reader = _edges_pg if conn.dialect.name == "postgresql" else _edges_sqlite
    target, source, weight, magnitude = reader(conn, model.id)
    order = np.argsort(ids)
    sorted_ids = ids[order]

    def to_ordinal(x: np.ndarray) -> np.ndarray:
        return order[np.searchsorted(sorted_ids, x)].astype(np.int32)

    return build(
        model.id,
        model.key,
        model.sha256,
        layers,
        ids,
        to_ordinal(target),
        to_ordinal(source),
        weight,
        magnitude,
        methods,
    )


# -- graph files -----------------------------------------------------------------------------------------


def expected(conn: sa.Connection, model_key: str) -> graph_file.Expected | None:
    """What a model version's graph file must hold, from the database: a few small reads (no edges)."""
    m, lt, n, k = model_table, layer_table, neuron_table, layer_link_table
    model = conn.execute(
        sa.select(m.c.id, m.c.key, m.c.sha256).where(m.c.key == model_key, m.c.removed_at.is_(None))
    ).first()
    if model is None:
        return None
    layers: list[LayerInfo] = []
    first = 0
    for row in conn.execute(
        sa.select(lt.c.id, lt.c.key, lt.c.units).where(lt.c.model_id == model.id).order_by(lt.c.position)
    ):
        layers.append(LayerInfo(row.id, row.key, len(layers), row.units, first))
        first += row.units
    position = {layer.id: layer.position for layer in layers}
    base = {layer.id: layer.first for layer in layers}
    ids = np.zeros(first, dtype=np.int64)
    for nid, lid, index in conn.execute(sa.select(n.c.id, n.c.layer_id, n.c.index).where(n.c.model_id == model.id)):
        ids[base[lid] + index] = nid
    links = sorted(
        graph_file.Link(position[s], position[t], meth)
        for s, t, meth in conn.execute(
            sa.select(k.c.source_layer_id, k.c.target_layer_id, k.c.method).where(k.c.model_id == model.id)
        )
    )
    return graph_file.Expected(model.id, model.key, model.sha256, layers, links, ids)


def _range_pg(conn: sa.Connection, model_id: int, lo: int, hi: int) -> Edges:
    """One bytea of 16-byte big-endian records, aggregated by the server: a COPY TO would send a message per
    row, and reading millions of messages one by one in Python costs more than the query."""
    raw = driver_connection(conn)
    sql = (
        "SELECT string_agg(int4send(target_id) || int4send(source_id) || float4send(weight) || "
        "float4send(magnitude), ''::bytea) FROM connection "
        f"WHERE model_id = {int(model_id)} AND target_id BETWEEN {int(lo)} AND {int(hi)}"
    )
    with raw.cursor(binary=True) as cur:
        data = cur.execute(sql).fetchone()[0] or b""
    rows = np.frombuffer(data, dtype=_RECORD)
    return rows["t"].astype(np.int64), rows["s"].astype(np.int64), rows["w"], rows["g"]


def _range_sqlite(conn: sa.Connection, model_id: int, lo: int, hi: int) -> Edges:
    cur = driver_connection(conn).execute(
        "SELECT target_id, source_id, weight, magnitude FROM connection WHERE target_id BETWEEN ? AND ?", (lo, hi)
    )
    rows = cur.fetchall()
    if not rows:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),) * 2
    t, s, w, g = zip(*rows, strict=True)
    return np.array(t, np.int64), np.array(s, np.int64), np.array(w, np.float32), np.array(g, np.float32)


def _local(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each of ``wanted`` in ``ids`` (a layer's neuron ids by unit index), -1 where absent."""
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    return np.where(ids[order][pos] == wanted, order[pos], -1)


def write_graph_file(conn: sa.Connection, x: graph_file.Expected, path: Path, chunk_edges: int = 1 << 22) -> Path:
    """Builds a model version's graph file from its connections, a chunk of target units at a time."""
    reader = _range_pg if conn.dialect.name == "postgresql" else _range_sqlite
    writer = graph_file.Writer(path, x)
    try:
        for i, link in enumerate(x.links):
            s, t = x.layers[link.source], x.layers[link.target]
            s_ids, t_ids = x.neuron_ids[s.first : s.first + s.units], x.neuron_ids[t.first : t.first + t.units]
            step = max(1, chunk_edges // max(1, s.units))
            for r0 in range(0, t.units, step):
                rows = np.arange(r0, min(r0 + step, t.units))
                chunk_ids = t_ids[rows]
                target, source, w, g = reader(conn, x.model_id, int(chunk_ids.min()), int(chunk_ids.max()))
                tl, sl = _local(t_ids, target), _local(s_ids, source)
                keep = (tl >= r0) & (tl < r0 + len(rows)) & (sl >= 0)
                if int(keep.sum()) != len(rows) * s.units:
                    raise ValueError(
                        f"{x.key}: {int(keep.sum())} connections into {t.key} units {r0}..{rows[-1]}, "
                        f"expected {len(rows) * s.units} (every pair)"
                    )
                weight = np.empty((len(rows), s.units), np.float32)
                magnitude = np.empty((len(rows), s.units), np.float32)
                weight[tl[keep] - r0, sl[keep]] = w[keep]
                magnitude[tl[keep] - r0, sl[keep]] = g[keep]
                writer.add(i, rows, weight, magnitude)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise
