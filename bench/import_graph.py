"""Full import of lucent:inceptionv1 (and optionally googlenet) into PostgreSQL and SQLite.

Prints, per database: wall time of the whole import, edge computation and load separately, and rows/s of the
load, against a naive ORM insert (SQLModel objects, session.add_all + commit) of a sample of the same rows
measured in the same run. Usage:

    python bench/import_graph.py [--models lucent:inceptionv1 torchvision:googlenet] [--sample 20000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time

import sqlalchemy as sa
from sqlmodel import Session

from kb.db import migrate
from kb.db.engine import make_engine
from kb.db.tables import Connection
from kb.graph.importer import import_model

PG_ADMIN = os.environ.get("KB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def orm_sample(engine: sa.Engine, n: int) -> float:
    """rows/s of the naive path: ORM objects for n edges of the imported model, one commit."""
    with engine.connect() as conn:
        (model_id,) = conn.exec_driver_sql("SELECT min(id) FROM model").one()
        ids = [r[0] for r in conn.exec_driver_sql(f"SELECT id FROM neuron WHERE model_id = {model_id} ORDER BY id")]
    fake_model = 10_000_000  # a model id no import uses; removed afterwards
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE connection_bench PARTITION OF connection FOR VALUES IN ({fake_model})")
    rows = [
        Connection(
            model_id=fake_model,
            target_id=ids[i % len(ids)],
            source_id=-(i + 1),
            weight=0.5,
            magnitude=0.5,
            method="expanded",
        )
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


def run(kind: str, sources: list[str], sample: int) -> list[tuple]:
    if kind == "postgresql":
        name = f"kb_bench_{secrets.token_hex(3)}"
        admin = make_engine(PG_ADMIN).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    else:
        tmp = tempfile.mkdtemp()
        url = f"sqlite:///{tmp}/bench.sqlite"
    migrate.upgrade(url)
    engine = make_engine(url)
    out = []
    try:
        for source in sources:
            r = import_model(engine, source, weights="random", seed=0)
            load_rate = r.edges / r.seconds["write"]
            out.append(
                (
                    kind,
                    source,
                    r.units,
                    r.edges,
                    r.seconds["total"],
                    r.seconds["load weights"],
                    r.seconds["compute edges"],
                    r.seconds["write"],
                    load_rate,
                )
            )
        orm_rate = orm_sample(engine, sample)
        out.append((kind, f"ORM sample ({sample} rows)", None, sample, None, None, None, sample / orm_rate, orm_rate))
    finally:
        engine.dispose()
        if kind == "postgresql":
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["lucent:inceptionv1", "torchvision:googlenet"])
    ap.add_argument("--sample", type=int, default=20_000)
    ap.add_argument("--databases", nargs="+", default=["postgresql", "sqlite"])
    args = ap.parse_args()
    print(
        f"{'db':<11} {'import':<28} {'units':>6} {'rows':>9} {'total s':>8} {'load wts':>8} "
        f"{'edges s':>8} {'write s':>8} {'rows/s':>10}"
    )
    for kind in args.databases:
        rows = run(kind, args.models, args.sample)
        for db, what, units, n, total, lw, comp, write, rate in rows:

            def f(v, spec):
                return format(v, spec) if v is not None else "-".rjust(int(spec[1:].split(".")[0].rstrip(",")))

            print(
                f"{db:<11} {what:<28} {f(units, '>6')} {n:>9} {f(total, '>8.2f')} {f(lw, '>8.2f')} "
                f"{f(comp, '>8.2f')} {write:>8.2f} {rate:>10,.0f}"
            )
        bulk_rate = rows[0][-1]
        print(
            f"{kind}: bulk load {bulk_rate:,.0f} rows/s vs ORM {rows[-1][-1]:,.0f} rows/s = "
            f"{bulk_rate / rows[-1][-1]:.1f}x"
        )


if __name__ == "__main__":
    main()
