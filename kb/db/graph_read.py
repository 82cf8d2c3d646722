"""Reading a model version's whole graph in one bulk statement (PostgreSQL binary COPY, SQLite fetch)."""

from __future__ import annotations

import io

import numpy as np
import sqlalchemy as sa

from kb.db.tables import Layer, LayerLink, Model, Neuron
from kb.graph.store import LayerInfo, ModelGraph, build


def _edges_pg(conn: sa.Connection, model_id: int):
    raw = conn.connection.driver_connection
    buf = io.BytesIO()
    with (
        raw.cursor() as cur,
        cur.copy(
            f"COPY (SELECT target_id, source_id, weight, magnitude FROM connection "
            f"WHERE model_id = {int(model_id)}) TO STDOUT (FORMAT BINARY)"
        ) as copy,
    ):
        for chunk in copy:
            buf.write(chunk)
    data = buf.getbuffer()
    header = 19  # signature (11) + flags (4) + extension length (4), no extension
    dt = np.dtype(
        [
            ("n", ">i2"),
            ("l1", ">i4"),
            ("t", ">i4"),
            ("l2", ">i4"),
            ("s", ">i4"),
            ("l3", ">i4"),
            ("w", ">f4"),
            ("l4", ">i4"),
            ("g", ">f4"),
        ]
    )
    count = (len(data) - header - 2) // dt.itemsize
    rows = np.frombuffer(data, dtype=dt, count=count, offset=header)
    return (
        rows["t"].astype(np.int64),
        rows["s"].astype(np.int64),
        rows["w"].astype(np.float32),
        rows["g"].astype(np.float32),
    )


def _edges_sqlite(conn: sa.Connection, model_id: int):
    cur = conn.connection.driver_connection.execute(
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
    m, l, n, k = Model.__table__, Layer.__table__, Neuron.__table__, LayerLink.__table__
    model = conn.execute(
        sa.select(m.c.id, m.c.key, m.c.sha256).where(m.c.key == model_key, m.c.removed_at.is_(None))
    ).first()
    if model is None:
        return None
    layers, first = [], 0
    for row in conn.execute(
        sa.select(l.c.id, l.c.key, l.c.position, l.c.units).where(l.c.model_id == model.id).order_by(l.c.position)
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
    to_ordinal = lambda x: order[np.searchsorted(sorted_ids, x)].astype(np.int32)  # noqa: E731
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
