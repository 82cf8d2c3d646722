"""SQLite's ways to take connection rows, side by side in one run: ``executemany`` (one statement per row, fed
by an iterator whose id objects are shared) against INSERTs of many rows (``kb.db.bulk.sqlite_insert``'s way),
into a fresh WITHOUT ROWID table keyed as the importer's, in key order, 1024 sources per target. Usage:

    python bench/sqlite_feed.py [--rows 8000000] [--batches 100 500 1000 4000]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from itertools import chain, repeat
from pathlib import Path

import numpy as np

SOURCES = 1024
TABLE = (
    "CREATE TABLE connection (model_id INTEGER NOT NULL, target_id INTEGER NOT NULL, source_id INTEGER NOT NULL, "
    "weight REAL NOT NULL, magnitude REAL NOT NULL, PRIMARY KEY (target_id, source_id)) WITHOUT ROWID"
)


def pieces(rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    step = (1 << 18) // SOURCES
    w = np.random.default_rng(0).standard_normal((step, SOURCES)).astype(np.float32)
    targets = rows // SOURCES
    return [
        (np.arange(lo, min(targets, lo + step), dtype=np.int32) + 100_000, w[: min(step, targets - lo)])
        for lo in range(0, targets, step)
    ]


def executemany(db: sqlite3.Connection, targets: np.ndarray, w: np.ndarray) -> None:
    sources = (np.arange(SOURCES) + 1).tolist()
    rows = zip(
        repeat(1),
        chain.from_iterable(repeat(t, SOURCES) for t in targets.tolist()),
        chain.from_iterable(repeat(sources, len(targets))),
        w.reshape(-1).tolist(),
        np.abs(w).reshape(-1).tolist(),
    )
    db.executemany("INSERT INTO connection VALUES (?, ?, ?, ?, ?)", rows)


def values(batch: int) -> Callable[[sqlite3.Connection, np.ndarray, np.ndarray], None]:
    def write(db: sqlite3.Connection, targets: np.ndarray, w: np.ndarray) -> None:
        n = len(targets) * SOURCES
        flat: list[object] = [None] * (4 * n)
        flat[0::4] = np.repeat(targets, SOURCES).tolist()
        flat[1::4] = (np.arange(SOURCES) + 1).tolist() * len(targets)
        flat[2::4] = w.reshape(-1).tolist()
        flat[3::4] = np.abs(w).reshape(-1).tolist()
        for lo in range(0, n, batch):
            k = min(batch, n - lo)
            sql = "INSERT INTO connection VALUES " + ",".join(["(1,?,?,?,?)"] * k)
            db.execute(sql, flat[4 * lo : 4 * (lo + k)])

    return write


def run(name: str, write: Callable[[sqlite3.Connection, np.ndarray, np.ndarray], None], rows: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(Path(d) / "feed.sqlite", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
            db.execute(f"PRAGMA {pragma}")
        db.execute(TABLE)
        work = pieces(rows)
        t = time.perf_counter()
        db.execute("BEGIN")
        for targets, w in work:
            write(db, targets, w)
        db.execute("COMMIT")
        elapsed = time.perf_counter() - t
        count, total = db.execute("SELECT count(*), sum(weight) FROM connection").fetchone()
        db.close()
    print(f"{name:<22} {count:>10,} rows {elapsed:6.1f} s {count / elapsed:>11,.0f} rows/s (weights sum {total:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8_000_000)
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 500, 1000, 4000])
    args = ap.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}; rows in key order, {SOURCES} sources per target; commit included")
    run("executemany", executemany, args.rows)
    for b in args.batches:
        run(f"INSERT of {b} rows", values(b), args.rows)


if __name__ == "__main__":
    main()
