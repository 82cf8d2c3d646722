"""The index of a model's connection partition on PostgreSQL: what each choice costs the import and what it gives
the reads, side by side on the same rows.

Imports ``--model`` (default torchvision:vgg16, random weights, seed 0) into a fresh database with this code,
then, for each index in turn (the importer's, whatever it is, is dropped first), inside one transaction per
index:

- builds it, after a CHECKPOINT (untimed), and prints the build's seconds, the WAL it wrote (LSN difference) and
  its size: what the import pays at its end;
- commits it, then times building the model's graph file from the database (``write_graph_file``, which reads
  chunks of target ranges: what a server does when a file is missing or stale), twice;
- times a unit's top 10 inputs by target id (what a PostgREST-style API such as the PostGraphile baseline of
  ``bench/neighbors.py`` asks; Circuit KB's own server answers from the graph file), over about 40 units of
  every layer with inputs.

Usage (under 4 minutes for VGG16 here):

    .venv/bin/python bench/connection_index.py [--model torchvision:vgg16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from kb.db import bulk, graph_read, migrate
from kb.db.engine import make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_graph import fresh_database, kb_import, uptime

INDEXES = {
    "primary key (target_id, source_id)": "ALTER TABLE {part} ADD PRIMARY KEY (target_id, source_id) "
    "WITH (fillfactor = 100)",
    "B-tree on target_id": "CREATE INDEX {part}_bench ON {part} (target_id) WITH (fillfactor = 100)",
    "BRIN on target_id, 128 pages": "CREATE INDEX {part}_bench ON {part} USING brin (target_id)",
    "BRIN on target_id, 8 pages": "CREATE INDEX {part}_bench ON {part} USING brin (target_id) "
    "WITH (pages_per_range = 8)",
}


def drop_indexes(conn: sa.Connection, part: str) -> None:
    for (name,) in conn.exec_driver_sql(f"SELECT conname FROM pg_constraint WHERE conrelid = '{part}'::regclass"):
        conn.exec_driver_sql(f"ALTER TABLE {part} DROP CONSTRAINT {name}")
    for (name,) in conn.exec_driver_sql(f"SELECT indexname FROM pg_indexes WHERE tablename = '{part}'"):
        conn.exec_driver_sql(f"DROP INDEX {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="torchvision:vgg16")
    args = ap.parse_args()
    print(f"load average (1, 5, 15 min) at start: {uptime()}; {os.cpu_count()} CPUs")
    url, drop = fresh_database("postgresql")
    try:
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory() as data_dir:  # the import's graph file (VGG16: 0.65 GB) goes with it
            r = kb_import(url, args.model, Path(__file__).resolve().parent.parent, data_dir)
        print(f"imported {args.model}: {r['rows']:,} connections in {r['total']:.1f} s (write {r['write']:.1f} s)")
        engine = make_engine(url)
        with engine.connect() as conn:
            model_id, key = conn.exec_driver_sql("SELECT id, key FROM model").one()
            part = bulk.partition_name(model_id)
            heap = conn.exec_driver_sql(f"SELECT pg_relation_size('{part}')").scalar_one()
            targets = (
                conn.exec_driver_sql(
                    "SELECT n.id FROM neuron n JOIN layer l ON l.id = n.layer_id WHERE l.position > 0 "
                    "AND mod(n.index, l.units / 40 + 1) = 0 ORDER BY n.id"
                )
                .scalars()
                .all()
            )
        print(f"{key}: partition {part}, heap {heap / 2**20:.0f} MiB; top 10 inputs of {len(targets)} units")
        print(f"{'index':<36} {'build s':>8} {'WAL MB':>8} {'size MB':>8} {'graph file s':>14} {'top-10 ms':>10}")
        for label, ddl in INDEXES.items():
            with engine.connect() as conn:
                conn.exec_driver_sql("CHECKPOINT")
                conn.commit()
                with conn.begin():
                    conn.exec_driver_sql(f"ALTER TABLE connection DETACH PARTITION {part}")
                    drop_indexes(conn, part)
                    lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one()
                    t = time.perf_counter()
                    conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
                    conn.exec_driver_sql(ddl.format(part=part))
                    build = time.perf_counter() - t
                    wal = conn.exec_driver_sql(f"SELECT pg_current_wal_lsn() - '{lsn}'").scalar_one()
                    size = conn.exec_driver_sql(
                        f"SELECT sum(pg_relation_size(indexrelid)) FROM pg_index WHERE indrelid = '{part}'::regclass"
                    ).scalar_one()
                    conn.exec_driver_sql(f"ALTER TABLE connection ATTACH PARTITION {part} FOR VALUES IN ({model_id})")
                    conn.exec_driver_sql(f"ANALYZE {part}")
                files = []
                for _ in range(2):
                    x = graph_read.expected(conn, key)
                    with tempfile.TemporaryDirectory() as d:
                        t = time.perf_counter()
                        graph_read.write_graph_file(conn, x, Path(d) / "graph")
                        files.append(time.perf_counter() - t)
                lookups = []
                for target in targets:
                    t = time.perf_counter()
                    conn.exec_driver_sql(
                        f"SELECT source_id, weight, magnitude FROM connection WHERE target_id = {target} "
                        "ORDER BY weight DESC, source_id LIMIT 10"
                    ).all()
                    lookups.append(time.perf_counter() - t)
                conn.rollback()
            shown = " / ".join(f"{s:.1f}" for s in files)
            print(
                f"{label:<36} {build:>8.1f} {float(wal) / 1e6:>8.1f} {float(size) / 1e6:>8.1f} {shown:>14} "
                f"{statistics.median(lookups) * 1000:>10.2f}",
                flush=True,
            )
        engine.dispose()
    finally:
        drop()
    print(f"load average at end: {uptime()}; top-10 ms: median over the units, from the server's cache")


if __name__ == "__main__":
    main()
