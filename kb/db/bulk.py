"""Bulk writing of a model's graph in one transaction: PostgreSQL binary COPY, SQLite INSERTs of 500 rows each.

A failed import leaves nothing behind: every row (model, layers, neurons, links, connections) is written
inside the caller's transaction, and the model's unique key makes a concurrent import of the same key fail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, BinaryIO

import numpy as np
import sqlalchemy as sa

from kb.db.engine import driver_connection
from kb.db.tables import Model, layer_link_table, layer_table, model_table, neuron_table
from kb.pipeline import Behind

Progress = Callable[[int], None]


@dataclass
class EdgeBlock:
    """The connections of one link into some of its target units, from every unit of its source layer:
    ``weight[i, j]`` is the weight from neuron ``source_ids[j]`` into neuron ``target_ids[i]``."""

    target_ids: np.ndarray  # int32 [k]
    source_ids: np.ndarray  # int32 [n]
    weight: np.ndarray  # float32 [k, n]
    magnitude: np.ndarray  # float32 [k, n]

    def __len__(self) -> int:
        return int(self.weight.size)

    def pieces(self, rows: int) -> Iterator[EdgeBlock]:
        """The block in pieces of whole target units, each of about ``rows`` connections at most."""
        step = max(1, rows // max(1, len(self.source_ids)))
        for lo in range(0, len(self.target_ids), step):
            sl = slice(lo, lo + step)
            yield EdgeBlock(self.target_ids[sl], self.source_ids, self.weight[sl], self.magnitude[sl])


_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_PG_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PIECE_ROWS = 1 << 18  # connections per write: a COPY message of 11 MB, 525 SQLite INSERTs
_PG_ROW = np.dtype(  # a binary COPY tuple: the field count, then each field's length and value, big-endian
    [
        ("n", ">i2"),
        ("l0", ">i4"),
        ("model", ">i4"),
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


def pg_binary_rows(model_id: int, block: EdgeBlock) -> np.ndarray:
    """The block's rows of (model_id int4, target_id int4, source_id int4, weight float4, magnitude float4) in
    PostgreSQL's binary COPY format, built with numpy (broadcasting the ids) rather than row by row in Python."""
    rows = np.empty(block.weight.shape, dtype=_PG_ROW)
    rows[...] = np.array((5, 4, model_id, 4, 0, 4, 0, 4, 0.0, 4, 0.0), dtype=_PG_ROW)
    rows["t"] = block.target_ids[:, None]
    rows["s"] = block.source_ids[None, :]
    rows["w"] = block.weight
    rows["g"] = block.magnitude
    return rows


def insert_model(conn: sa.Connection, row: Model) -> int:
    values = {c.name: getattr(row, c.name) for c in model_table.columns if c.name != "id"}
    model_id: int = conn.execute(sa.insert(model_table).values(**values).returning(model_table.c.id)).scalar_one()
    return model_id


def insert_layers(conn: sa.Connection, model_id: int, layers: list[dict[str, Any]]) -> dict[str, int]:
    conn.execute(sa.insert(layer_table), [{**layer, "model_id": model_id} for layer in layers])
    t = layer_table
    rows = conn.execute(sa.select(t.c.key, t.c.id).where(t.c.model_id == model_id)).all()
    return dict(rows)


def insert_neurons(conn: sa.Connection, model_id: int, layer_units: dict[int, int]) -> dict[int, np.ndarray]:
    """Neuron rows for every unit; returns layer id -> array of neuron ids indexed by unit index."""
    if conn.dialect.name == "postgresql":
        raw = driver_connection(conn)
        with raw.cursor() as cur, cur.copy('COPY neuron (model_id, layer_id, "index") FROM STDIN') as copy:
            for layer_id, units in layer_units.items():
                for i in range(units):
                    copy.write_row((model_id, layer_id, i))
    else:
        conn.exec_driver_sql(
            'INSERT INTO neuron (model_id, layer_id, "index") VALUES (?, ?, ?)',
            [(model_id, lid, i) for lid, units in layer_units.items() for i in range(units)],
        )
    t = neuron_table
    out = {lid: np.zeros(units, dtype=np.int32) for lid, units in layer_units.items()}
    for nid, lid, index in conn.execute(sa.select(t.c.id, t.c.layer_id, t.c.index).where(t.c.model_id == model_id)):
        out[lid][index] = nid
    return out


def insert_links(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(sa.insert(layer_link_table), rows)


def insert_link_streamed(
    conn: sa.Connection, row: dict[str, Any], arrays: BinaryIO, size: int, piece: int = 16 << 20
) -> None:
    """One layer_link row whose ``arrays`` (``size`` bytes) are read from the file ``arrays`` in pieces, so that
    VGG16's 0.4 GB fc6 program is never a second time in memory: on PostgreSQL a binary COPY sends them, on
    SQLite the row gets a zeroblob that is then written through an incremental blob handle."""
    if conn.dialect.name == "sqlite":
        t = layer_link_table
        row_id = conn.execute(sa.insert(t).values(**row, arrays=sa.func.zeroblob(size)).returning(t.c.id)).scalar_one()
        with driver_connection(conn).blobopen("layer_link", "arrays", row_id) as blob:
            _copy_pieces(arrays, size, piece, blob.write)
        return
    if conn.dialect.name != "postgresql":
        insert_links(conn, [{**row, "arrays": arrays.read(size)}])
        return

    def text(value: object) -> bytes:
        data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
        return len(data).to_bytes(4, "big") + data

    def int4(value: int) -> bytes:
        return (4).to_bytes(4, "big") + int(value).to_bytes(4, "big", signed=True)

    raw = driver_connection(conn)
    columns = "model_id, source_layer_id, target_layer_id, method, notes, program, arrays"
    with raw.cursor() as cur, cur.copy(f"COPY layer_link ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(_PG_HEADER + (7).to_bytes(2, "big"))
        copy.write(int4(row["model_id"]) + int4(row["source_layer_id"]) + int4(row["target_layer_id"]))
        copy.write(text(row["method"]) + text(row["notes"]) + text(row["program"]) + size.to_bytes(4, "big"))
        _copy_pieces(arrays, size, piece, copy.write)
        copy.write(_PG_TRAILER)


def _copy_pieces(source: BinaryIO, size: int, piece: int, write: Callable[[bytes], object]) -> None:
    left = size
    while left:
        data = source.read(min(piece, left))
        if not data:
            raise ValueError(f"the program's arrays ended {left} bytes early")
        write(data)
        left -= len(data)


def partition_name(model_id: int) -> str:
    return f"connection_m{int(model_id)}"


def copy_connections(
    conn: sa.Connection, model_id: int, blocks: Iterable[EdgeBlock], progress: Progress | None = None
) -> int:
    """Writes the blocks' connections; returns the rows written. ``index_connections`` finishes the job.

    PostgreSQL: binary COPY into a new partition with no index; ``index_connections`` then builds its index once
    and attaches it; all inside the caller's transaction.
    The partition is created in that transaction, so the COPY may FREEZE its rows (no hint-bit rewrite of every
    page on the first read, no freezing vacuum later).
    """
    total = 0
    if conn.dialect.name == "postgresql":
        part = partition_name(model_id)
        conn.exec_driver_sql(  # the partition's constraint from the start: attaching it then needs no scan
            f"CREATE TABLE {part} (LIKE connection INCLUDING DEFAULTS, "
            f"CONSTRAINT {part}_model CHECK (model_id = {int(model_id)}))"
        )
        raw = driver_connection(conn)
        with (
            raw.cursor() as cur,
            cur.copy(
                f"COPY {part} (model_id, target_id, source_id, weight, magnitude) FROM STDIN (FORMAT BINARY, FREEZE)"
            ) as copy,
        ):
            copy.write(_PG_HEADER)

            def send(rows: np.ndarray) -> None:
                copy.write(rows.data.cast("B"))

            with Behind(send, depth=4, name="kb-copy-sender") as behind:  # the server takes rows as more are made
                for block in blocks:
                    for piece in block.pieces(_PIECE_ROWS):
                        behind(pg_binary_rows(model_id, piece))
                        total += len(piece)
                        if progress:
                            progress(len(piece))
            copy.write(_PG_TRAILER)
        return total
    # 64 MiB of page cache for this connection: VGG16 peaked at 1.6 GB with 256 MiB, and was not faster
    conn.exec_driver_sql("PRAGMA cache_size=-65536")
    cur = driver_connection(conn).cursor()
    try:
        for block in blocks:
            for piece in block.pieces(_PIECE_ROWS):
                sqlite_insert(cur, model_id, piece)
                total += len(piece)
                if progress:
                    progress(len(piece))
    finally:
        cur.close()
    return total


_SQLITE_BATCH = 500  # rows per INSERT: 2,000 parameters (SQLite allows 32,766 since 3.32, 999 before)


def _sqlite_values(table: str, model_id: int, rows: int) -> str:
    values = ",".join([f"({int(model_id)},?,?,?,?)"] * rows)
    return f"INSERT INTO {table} (model_id, target_id, source_id, weight, magnitude) VALUES {values}"


def sqlite_insert(cursor: Any, model_id: int, block: EdgeBlock, table: str = "connection") -> None:
    """Inserts the block's rows with a sqlite3 cursor, 500 rows to a statement (fewer where the connection allows
    fewer than 2,000 parameters).

    One statement per row (``executemany``) spends most of its time starting and ending the statement and finding
    the insert's place in the key from its root; one statement of many rows keeps its cursor at the end of the key,
    where rows in key order go (``bench/sqlite_feed.py``, 8 M rows with the commit: 635 k rows/s by
    ``executemany``, 1.34 M rows/s with 500 rows to a statement).
    The parameters are one flat list made by slice assignments; each target's id object is repeated over its
    sources and the sources' id objects over the targets, so only the two floats of a row are new objects."""
    k, n = block.weight.shape
    rows = k * n
    # an older SQLite allows 999 parameters to a statement: then 249 rows
    batch = max(1, min(_SQLITE_BATCH, cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 4))
    flat: list[Any] = [None] * (4 * rows)
    flat[0::4] = list(chain.from_iterable(repeat(t, n) for t in block.target_ids.tolist()))
    flat[1::4] = block.source_ids.tolist() * k
    flat[2::4] = block.weight.reshape(-1).tolist()
    flat[3::4] = block.magnitude.reshape(-1).tolist()
    whole = rows - rows % batch
    if whole:
        sql = _sqlite_values(table, model_id, batch)
        step = 4 * batch
        for lo in range(0, 4 * whole, step):
            cursor.execute(sql, flat[lo : lo + step])
    if rows > whole:
        cursor.execute(_sqlite_values(table, model_id, rows - whole), flat[4 * whole :])


def index_connections(conn: sa.Connection, model_id: int) -> None:
    """PostgreSQL: a BRIN index on ``target_id`` for the model's new partition, then the partition is attached and
    analysed. SQLite's table is indexed (by its primary key) as it is written.

    The rows went in in target order, so a summary of each 128 pages' smallest and largest target serves every read
    the database gets, which are all by range of targets (a graph file's chunks). Measured on VGG16's 20.5 M rows
    in two runs of ``bench/connection_index.py``: a primary key on (target_id, source_id) took 7.6-8.5 s, 415-418
    MB of WAL and 415 MB; this index 2.4-2.6 s, 0.1 MB of WAL and 128 kB, and the graph file builds from it in
    13.4-14.9 s against 14.8-20.5 s. No pair is written twice: the importer makes each (target, source) once by
    construction, and a test counts them on both databases (SQLite's table keeps its key: rows are stored in it).
    """
    if conn.dialect.name != "postgresql":
        return
    part = partition_name(model_id)
    conn.exec_driver_sql(f"CREATE INDEX {part}_target ON {part} USING brin (target_id)")
    conn.exec_driver_sql(f"ALTER TABLE connection ATTACH PARTITION {part} FOR VALUES IN ({int(model_id)})")
    conn.exec_driver_sql(f"ANALYZE {part}")


def delete_graph(conn: sa.Connection, model_id: int) -> None:
    """Everything under a model but the model row itself (which stays as a tombstone)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {partition_name(model_id)}")
    else:
        conn.execute(
            sa.text("DELETE FROM connection WHERE target_id IN (SELECT id FROM neuron WHERE model_id = :m)"),
            {"m": model_id},
        )
    for table in ("layer_link", "neuron", "layer"):
        conn.execute(sa.text(f"DELETE FROM {table} WHERE model_id = :m"), {"m": model_id})
