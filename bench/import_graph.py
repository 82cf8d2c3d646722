"""Full imports (`kb import ... --weights random --seed 0`) into fresh PostgreSQL and SQLite databases, against
the bulk-write floor measured in the same run, and optionally against a baseline checkout of the code.

Each import runs as its own `kb import` process under `/usr/bin/time -v` (peak RSS); the import prints its own
wall time (weights loaded to commit, without Python's start-up) and its write time. Before each import the
database is settled (``settle``: PostgreSQL's CHECKPOINT, then sync), untimed. The floor is a binary COPY
(PostgreSQL) or the importer's INSERTs of 500 rows (SQLite) of synthetic rows of the same shape into a table
with no index, so "of floor" says how close an import's rows/s come to what the database can take at all. A
naive ORM insert of a sample (SQLModel objects, one commit) is printed for scale. Usage:

    python bench/import_graph.py [--models lucent:inceptionv1 torchvision:vgg16 torchvision:resnet50]
        [--databases postgresql sqlite] [--baseline /path/to/old/checkout] [--sample 20000]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session

from kb.db import bulk, migrate
from kb.db.engine import make_engine
from kb.db.tables import Connection

PG_ADMIN = os.environ.get("KB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGETS = {"postgresql": {"lucent:inceptionv1": 10.0, "torchvision:resnet50": 25.0, "torchvision:vgg16": 30.0}}
RSS_TARGET_MB = 1536
SQLITE_RATIO = 2.0  # an import into SQLite takes at most twice as long as into PostgreSQL


def copy_floor(engine: sa.Engine, n: int = 1 << 22) -> float:
    """rows/s of the bare bulk write: n synthetic connection rows into a fresh table with no index."""
    rng = np.random.default_rng(0)
    t_ids, s_ids = rng.integers(1, 1 << 30, n, dtype=np.int32), rng.integers(1, 1 << 30, n, dtype=np.int32)
    w, g = rng.standard_normal(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    step = 1 << 18
    with engine.connect() as conn:
        tx = conn.begin()
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("CREATE TABLE floor_bench (LIKE connection INCLUDING DEFAULTS)")
            raw = conn.connection.driver_connection
            t = time.perf_counter()
            with (
                raw.cursor() as cur,
                cur.copy(
                    "COPY floor_bench (model_id, target_id, source_id, weight, magnitude) "
                    "FROM STDIN (FORMAT BINARY, FREEZE)"
                ) as copy,
            ):
                copy.write(bulk._PG_HEADER)
                for lo in range(0, n, step):
                    sl = slice(lo, lo + step)
                    block = bulk.EdgeBlock(  # a block as an import writes it: 512 sources into each target
                        t_ids[sl][::512], s_ids[:512], w[sl].reshape(-1, 512), g[sl].reshape(-1, 512)
                    )
                    copy.write(bulk.pg_binary_rows(1, block).data.cast("B"))
                copy.write(bulk._PG_TRAILER)
        else:
            conn.exec_driver_sql(
                "CREATE TABLE floor_bench (model_id INT, target_id INT, source_id INT, weight REAL, magnitude REAL)"
            )
            cur = conn.connection.driver_connection.cursor()
            t = time.perf_counter()
            for lo in range(0, n, step):
                sl = slice(lo, lo + step)
                block = bulk.EdgeBlock(t_ids[sl][::512], s_ids[:512], w[sl].reshape(-1, 512), g[sl].reshape(-1, 512))
                bulk.sqlite_insert(cur, 1, block, table="floor_bench")  # as an import writes it
        elapsed = time.perf_counter() - t
        tx.rollback()
    return n / elapsed


def orm_sample(engine: sa.Engine, n: int) -> float:
    """rows/s of the naive path: ORM objects for n edges, one commit."""
    fake_model = 10_000_000  # a model id no import uses; removed afterwards
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE connection_bench PARTITION OF connection FOR VALUES IN ({fake_model})")
    rows = [
        Connection(model_id=fake_model, target_id=i + 1, source_id=-(i + 1), weight=0.5, magnitude=0.5)
        for i in range(n)
    ]
    t = time.perf_counter()
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    elapsed = time.perf_counter() - t
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("DROP TABLE connection_bench")
        else:
            conn.exec_driver_sql(f"DELETE FROM connection WHERE model_id = {fake_model}")
    return n / elapsed


_IMPORTED = re.compile(r"(\d+) connections in ([\d.]+)s \(weights ([\d.]+)s, write ([\d.]+)s\)")


def kb_import(url: str, source: str, code: Path, data_dir: str) -> dict:
    env = {**os.environ, "KB_DATABASE_URL": url, "KB_DATA_DIR": data_dir, "PYTHONPATH": str(code)}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "kb", "import", source, "--weights", "random", "--seed", "0"]
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)
    wall = time.perf_counter() - t
    m = _IMPORTED.search(out.stdout)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if out.returncode or not m:
        raise SystemExit(f"kb import {source} failed:\n{out.stdout}\n{out.stderr[-2000:]}")
    return {
        "rows": int(m.group(1)),
        "total": float(m.group(2)),
        "weights": float(m.group(3)),
        "write": float(m.group(4)),
        "process": wall,
        "rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"),
    }


def fresh_database(kind: str):
    if kind == "postgresql":
        name = f"kb_bench_{secrets.token_hex(3)}"
        admin = make_engine(PG_ADMIN).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)

        def drop():
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()

        return url, drop
    url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    return url, lambda: None


def disk_write_rate(mb: int = 256) -> float:
    """MB/s of a synced write of ``mb`` MB to a temporary file: PostgreSQL's imports wait for their WAL to reach
    the disk, so on a slow or busy disk they are bound by it. On a VM much of this write may land in the host's
    cache (here 140-2010 MB/s while a 2 GB `dd ... conv=fdatasync` gave 95 MB/s): a low figure flags a busy disk,
    a high one proves little."""
    piece = np.random.default_rng(0).bytes(8 << 20)
    fd, path = tempfile.mkstemp(prefix="kb-disk-bench-")
    try:
        t = time.perf_counter()
        for _ in range(mb // 8):
            os.write(fd, piece)
        os.fsync(fd)
        return mb / (time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)


def settle(engine: sa.Engine) -> None:
    """Untimed, before each import: the writes the last one left behind reach the disk first (PostgreSQL writes
    its data files after the commit, at its next checkpoint; SQLite writes them at the commit), so that each
    import is timed from a settled database, as a researcher's one import would be."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    os.sync()


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["lucent:inceptionv1", "torchvision:googlenet"])
    ap.add_argument("--databases", nargs="+", default=["postgresql", "sqlite"])
    ap.add_argument("--baseline", type=Path, help="a checkout of the code to compare with (PYTHONPATH for its runs)")
    ap.add_argument("--sample", type=int, default=20_000, help="rows of the naive ORM insert (0: skip)")
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent
    codes = [("this", here)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    print(f"load average (1, 5, 15 min) at start: {uptime()}; {os.cpu_count()} CPUs")
    print(f"disk: a synced 256 MB write at {disk_write_rate():.0f} MB/s")
    print(
        f"{'db':<11} {'code':<9} {'import':<22} {'rows':>10} {'total s':>8} {'write s':>8} {'rows/s':>10} "
        f"{'of floor':>8} {'peak MB':>8} {'target s':>8}"
    )
    totals: dict[tuple[str, str, str], float] = {}  # (database, code, model) -> total seconds
    for kind in args.databases:
        for label, code in codes:
            url, drop = fresh_database(kind)
            try:
                migrate.upgrade(url)
                engine = make_engine(url)
                floor = copy_floor(engine)
                print(f"{kind:<11} {label:<9} {'bulk-write floor':<22} {'':>10} {'':>8} {'':>8} {floor:>10,.0f}")
                with tempfile.TemporaryDirectory() as data_dir:
                    for source in args.models:
                        settle(engine)
                        r = kb_import(url, source, code, data_dir)
                        rate = r["rows"] / r["total"]
                        totals[kind, label, source] = r["total"]
                        target = TARGETS.get(kind, {}).get(source)
                        print(
                            f"{kind:<11} {label:<9} {source:<22} {r['rows']:>10,} {r['total']:>8.1f} "
                            f"{r['write']:>8.1f} {rate:>10,.0f} {rate / floor:>8.0%} {r['rss_mb']:>8.0f} "
                            f"{target if target else '-':>8}",
                            flush=True,
                        )
                if args.sample and label == "this":
                    orm = orm_sample(engine, args.sample)
                    print(f"{kind:<11} {label:<9} {'ORM sample':<22} {args.sample:>10,} {'':>8} {'':>8} {orm:>10,.0f}")
                engine.dispose()
            finally:
                drop()
    for label, _ in codes:
        for source in args.models:
            pg, lite = totals.get(("postgresql", label, source)), totals.get(("sqlite", label, source))
            if pg and lite:
                print(f"sqlite / postgresql  {label:<9} {source:<22} {lite / pg:>5.2f}x  (target <= {SQLITE_RATIO}x)")
    print(f"disk at end: a synced 256 MB write at {disk_write_rate():.0f} MB/s")
    print(f"load average at end: {uptime()}; peak RSS target {RSS_TARGET_MB} MB")


if __name__ == "__main__":
    main()
