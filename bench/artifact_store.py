"""The two artifact stores side by side (kb.render.storage): 10,000 thumbnail-sized artifacts (5-10 KB of random
bytes behind a PNG signature: incompressible, as PNGs are) written and then read, through ``files`` (a temporary
folder, fsync per file) and ``database`` (a new PostgreSQL database, one transaction per artifact, as a worker
lands one). Reads go in another order than the writes. Prints MB/s and artifacts/s of each, the ratio, and the
load average (the machine may be shared).

    .venv/bin/python bench/artifact_store.py [--n 10000] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import tempfile
import time

import sqlalchemy as sa

PNG = b"\x89PNG\r\n\x1a\n"


def timed(label: str, fn, items) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    for item in items:
        total += fn(item)
    return time.perf_counter() - start, total


def line(label: str, seconds: float, n: int, total: int) -> str:
    return f"{label:<16} {seconds:7.2f} s  {n / seconds:9.0f} artifacts/s  {total / seconds / 1e6:7.2f} MB/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()

    from kb.db import migrate
    from kb.db.engine import make_engine
    from kb.render.storage_db import DatabaseStorage
    from kb.render.storage_files import LocalStorage

    rng = random.Random(27)
    blobs = [PNG + secrets.token_bytes(rng.randint(5000, 10000) - len(PNG)) for _ in range(args.n)]
    mb = sum(map(len, blobs)) / 1e6
    name = f"kb_bench_store_{secrets.token_hex(3)}"
    admin = make_engine(args.pg).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    folder = tempfile.mkdtemp(prefix="kb-bench-store-")
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        stores = {"files": LocalStorage(folder), "database": DatabaseStorage(engine)}
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        print(f"{args.n} artifacts, {mb:.1f} MB ({mb * 1e3 / args.n:.1f} KB each); PostgreSQL {version}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        shas: dict[str, list[str]] = {}
        results = {}
        for kind, store in stores.items():
            names: list[str] = []

            def put(data, store=store, names=names):
                names.append(store.put(data, ".png"))
                return len(data)

            results[kind, "write"] = timed(kind, put, blobs)
            shas[kind] = names
        order = list(shas["files"])
        random.Random(1).shuffle(order)
        for kind, store in stores.items():
            results[kind, "read"] = timed(kind, lambda sha, store=store: len(store.read(sha, ".png")), order)
        for op in ("write", "read"):
            for kind in stores:
                seconds, total = results[kind, op]
                print(line(f"{op} {kind}", seconds, args.n, total))
            ratio = results["database", op][0] / results["files", op][0]
            print(f"{op}: database takes {ratio:.2f}x the time of files")
        again, _ = timed("again", lambda data: len(stores["database"].put(data, ".png")) and 0, blobs[:1000])
        print(f"put again (already stored, database): {1000 / again:.0f} artifacts/s")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        engine.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


if __name__ == "__main__":
    main()
