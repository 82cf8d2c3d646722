"""How render workers claim jobs from the job table, under contention: the renderer's claim (kb.render.runner._claim:
on PostgreSQL, ``SELECT ... FOR UPDATE SKIP LOCKED``, chosen and claimed in one transaction; rows another worker
holds are skipped) against its way before (choose a group in one transaction, claim it with a conditional UPDATE in
the next; a worker that lost the race chooses again), side by side in the same run, on a fresh database each.

    .venv/bin/python bench/job_claims.py [--workers 4] [--jobs 2000] [--group 8] [--work-ms 0]
                                         [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Each worker is a process that loops until no job is due: claim a group (up to --group jobs of one layer), "render"
it for --work-ms, mark it DONE. Prints wall time, claims per second, the claims lost to another worker (each a wasted
round of queries) and jobs claimed twice (must be 0). ``--work-ms 0`` is the worst case for contention; a real
render takes seconds, so the figure that matters at real sizes is the lost-claim count, not the rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import subprocess
import time

import sqlalchemy as sa


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def fresh_database(admin_url: str) -> tuple[str, sa.Engine]:
    from kb.db import migrate
    from kb.db.engine import make_engine

    name = f"kb_bench_claims_{secrets.token_hex(4)}"
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url, admin


def fill(url: str, jobs: int, group: int) -> None:
    from kb.db.engine import make_engine
    from kb.db.render_tables import render_job_table
    from kb.db.tables import utcnow

    engine = make_engine(url)
    rows = [
        {
            "kind": "FEATURE_VIS",
            "model_key": "bench",
            "model_sha256": "0" * 64,
            "layer_key": f"layer{i // group}",
            "unit": i % group,
            "params": {},
            "params_hash": "p",
            "status": "QUEUED",
            "lane": "bulk",
            "created_at": utcnow(),
        }
        for i in range(jobs)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(render_job_table), rows)
    engine.dispose()


def _claim_apart(engine: sa.Engine, worker: str, group: int) -> tuple[list[int], int]:
    """The renderer's claim before SKIP LOCKED, the baseline: choose a group (lanes.next_group) in one transaction,
    claim it (jobs.start) in the next; a worker that lost the race chooses again."""
    from kb.render import jobs, lanes

    missed = 0
    while True:
        with engine.begin() as conn:
            jobs.fail_lost(conn)
            chosen = lanes.next_group(conn, group)
        if not chosen:
            return [], missed
        with engine.begin() as conn:
            started = jobs.start(conn, [j["id"] for j in chosen], worker, 600)
        if started:
            return [j["id"] for j in started], missed
        missed += 1


_SETTINGS: dict = {}


def _claim_runner(engine: sa.Engine, worker: str, group: int) -> tuple[list[int], int]:
    """kb.render.runner's claim as it is: on PostgreSQL, chosen and claimed in one transaction, SKIP LOCKED."""
    from kb.render import runner
    from kb.settings import Settings

    settings = _SETTINGS.get(group) or _SETTINGS.setdefault(
        group, Settings(database_url=engine.url.render_as_string(hide_password=False), render_batch=group)
    )
    missed = 0
    while True:
        claimed = runner._claim(engine, settings, worker)
        if claimed is None:
            return [], missed
        if claimed[1]:
            return [j["id"] for j in claimed[1]], missed
        missed += 1


def worker(url: str, how: str, group: int, work_ms: float, out) -> None:
    from kb.db.engine import make_engine
    from kb.db.render_tables import render_job_table as t

    engine = make_engine(url)
    claim = _claim_apart if how == "apart" else _claim_runner
    name = f"{how}-{os.getpid()}"
    claimed, missed, claims = [], 0, 0
    while True:
        ids, lost = claim(engine, name, group)
        missed += lost
        if not ids:
            break
        claims += 1
        claimed += ids
        if work_ms:
            time.sleep(work_ms / 1000)  # the render
        with engine.begin() as conn:
            conn.execute(sa.update(t).where(t.c.id.in_(ids)).values(status="DONE"))
    engine.dispose()
    out.put((claimed, missed, claims))


def run(admin_url: str, how: str, args) -> dict:
    url, admin = fresh_database(admin_url)
    try:
        fill(url, args.jobs, args.group)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [
            ctx.Process(target=worker, args=(url, how, args.group, args.work_ms, out)) for _ in range(args.workers)
        ]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        wall = time.perf_counter() - t0
        for p in procs:
            p.join()
    finally:
        name = sa.engine.make_url(url).database
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    ids = [i for claimed, _, _ in results for i in claimed]
    return {
        "wall": wall,
        "jobs": len(set(ids)),
        "twice": len(ids) - len(set(ids)),
        "missed": sum(m for _, m, _ in results),
        "claims": sum(c for _, _, c in results),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--work-ms", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--pg-url", default=os.environ.get("KB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    )
    args = ap.parse_args()
    print(f"# {uptime()}")
    print(
        f"PostgreSQL, {args.workers} worker processes, {args.jobs} jobs in groups of {args.group} (one layer each), "
        f"{args.work_ms:g} ms of work per group; alternating rounds"
    )
    seen: dict[str, list[dict]] = {"apart": [], "runner": []}
    for _ in range(args.rounds):
        for how in seen:
            r = run(args.pg_url, how, args)
            seen[how].append(r)
            print(
                f"  {how:<12} {r['wall']:6.2f} s  {r['jobs'] / r['wall']:7.0f} jobs/s  {r['claims']:5d} claims  "
                f"{r['missed']:5d} lost races  {r['twice']} claimed twice  ({r['jobs']} jobs done)",
                flush=True,
            )
    best = {how: min(r["wall"] for r in rs) for how, rs in seen.items()}
    print(f"runner / apart wall (best of {args.rounds}): {best['runner'] / best['apart']:.2f}")
    print(f"# {uptime()}")


if __name__ == "__main__":
    main()
