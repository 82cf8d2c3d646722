"""Runs render jobs in a worker process: takes due work from the job table one device batch at a time (best lane
first: kb.render.lanes), renders it, and records how each attempt ended.

Knows the database, not Celery: the task (kb.render.tasks) is a thin shell around ``run``. The concerns it
strings together have their own modules: ``keepalive`` (lease and progress while a group renders), ``pictures``
(by kind, with ``model_cache`` and ``dataset_cache``), ``artifacts`` (PNGs in storage, artifact rows, DONE).
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from kb import metrics
from kb.db.engine import engine_for
from kb.db.tables import layer_table, model_table
from kb.experiments.store import KIND as CHECK
from kb.render import artifacts, jobs, lanes
from kb.render.jobs import InvalidKind, InvalidUnit, ModelRow, Permanent
from kb.render.keepalive import Cancelled, KeepAlive
from kb.render.params import ALL_KINDS, LAYER_KINDS
from kb.render.pictures import per_pass as pictures_per_pass
from kb.render.pictures import pictures
from kb.settings import Settings, get_settings

log = logging.getLogger("kb.render")
summary = logging.getLogger("kb.render.jobs")
ACTIVE = 0  # jobs' tasks running in this process now (the sweeper of a one-process worker reads it)


@dataclass
class Outcome:
    done: list[int] = field(default_factory=list)
    retry: list[tuple[int, int]] = field(default_factory=list)  # (job id, attempts so far)
    failed: list[int] = field(default_factory=list)


def run(job_ids: list[int], worker: str | None = None, settings: Settings | None = None) -> Outcome:
    """A message for ``job_ids`` woke this worker: it takes due work from the job table (kb.render.lanes),
    one device batch at a time, best lane first, until none is left; ``job_ids`` among it."""
    global ACTIVE
    ACTIVE += 1
    try:
        return _drain(job_ids, worker, settings)
    finally:
        ACTIVE -= 1


# a batch claimed by another worker between choosing and starting it: choose again, this many times in a row at most
MAX_MISSED_CLAIMS = 100


def _drain(job_ids: list[int], worker: str | None = None, settings: Settings | None = None) -> Outcome:
    settings = settings or get_settings()
    engine = engine_for(settings.db_url)
    worker = worker or socket.gethostname()
    log.info("received jobs %s", job_ids)
    outcome = Outcome()
    missed = 0
    while missed < MAX_MISSED_CLAIMS:
        claimed = _claim(engine, settings, worker)
        if claimed is None:
            break
        model_row, started = claimed
        if not started:
            missed += 1
            continue
        missed = 0
        for j in started:
            log.info(
                "job %d started: %s %s/%s:%d, attempt %d of %d (%s lane)",
                j["id"],
                j["kind"],
                j["model_key"],
                j["layer_key"],
                j["unit"],
                j["attempts"],
                j["max_attempts"],
                j["lane"],
            )
        _run_batch(engine, settings, model_row, started, outcome, worker)
    skipped = sorted(set(job_ids) - set(outcome.done) - set(outcome.failed) - {j for j, _ in outcome.retry})
    if skipped:
        log.info("jobs %s: not run by this message (done, cancelled, not due, or run elsewhere)", skipped)
    return outcome


def _claim(engine: sa.Engine, settings: Settings, worker: str) -> tuple[ModelRow | None, list[dict[str, Any]]] | None:
    """The next device batch, claimed (RUNNING, this worker's lease): ``(model row, started jobs)``; no jobs when
    another worker claimed the chosen ones first; None when nothing is due.

    The job table is the queue; a Celery message only wakes a worker up. On PostgreSQL the group is chosen and
    claimed in one transaction, its rows locked with SKIP LOCKED, so concurrent workers take different rows and
    never lose a race (bench/job_claims.py: 4 workers, 0 lost races against 157 lost in 125 claims when choosing
    and claiming apart). On SQLite, whose writers take turns, choosing reads in one transaction and claiming
    writes in the next (a read transaction that later writes can fail when another writer committed between)."""
    together = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        jobs.fail_lost(conn)
        group = lanes.next_group(conn, settings.render_batch, lock=together)
        if not group:
            return None
        model_row = _model_row(engine, group[0])
        size = _per_pass(settings, model_row, group[0]) or len(group)
        if together:
            return model_row, jobs.start(conn, [j["id"] for j in group[:size]], worker, settings.render_lease_s)
    with engine.begin() as conn:
        return model_row, jobs.start(conn, [j["id"] for j in group[:size]], worker, settings.render_lease_s)


def _model_row(engine: sa.Engine, job: dict[str, Any]) -> ModelRow | None:
    m = model_table
    with engine.connect() as conn:
        return conn.execute(sa.select(m).where(m.c.sha256 == job["model_sha256"])).first()


def _per_pass(settings: Settings, model_row: ModelRow | None, job: dict[str, Any]) -> int | None:
    if model_row is None or model_row.removed_at is not None:
        return None  # the render fails at once, for the whole group
    try:
        return pictures_per_pass(settings, model_row, job)
    except Exception:  # the render itself raises it again, and records it
        log.warning("could not size a device batch for job %d", job["id"], exc_info=True)
        return None


def _run_batch(
    engine: sa.Engine,
    settings: Settings,
    model_row: ModelRow | None,
    batch: list[dict[str, Any]],
    outcome: Outcome,
    worker: str = "",
) -> None:
    started = time.monotonic()
    metrics.WORKER_HEARTBEAT.labels(worker).set(time.time())

    def ended(how: dict[int, str]) -> None:  # each job's wall time: the batch's (its jobs render together)
        seconds = time.monotonic() - started
        for j in batch:
            metrics.RENDER_JOB_SECONDS.labels(j["kind"], j["lane"], how.get(j["id"], "cancelled")).observe(seconds)
        metrics.WORKER_HEARTBEAT.labels(worker).set(time.time())

    try:
        landed = _render_group(engine, settings, model_row, batch, worker)
        outcome.done += landed
        for j in batch:
            log.info("job %d %s", j["id"], "done" if j["id"] in landed else "cancelled")
        ended(dict.fromkeys(landed, "done"))
    except Cancelled:
        log.info("jobs %s cancelled: stopped", [j["id"] for j in batch])
        ended({})
    except Exception as exc:
        permanent = isinstance(exc, Permanent)  # named: InvalidUnit or InvalidKind; anything else is retried
        log.exception("render of jobs %s failed", [j["id"] for j in batch])
        message = f"{type(exc).__name__}: {exc}"[:2000]
        with engine.begin() as conn:
            for j in batch:
                delay = jobs.retry_delay(j["attempts"], settings.render_retry_base_s)
                if jobs.fail(conn, j["id"], message, not permanent, delay):
                    outcome.retry.append((j["id"], j["attempts"]))
                    log.warning("job %d failed (attempt %d), again in %.1f s", j["id"], j["attempts"], delay)
                else:
                    outcome.failed.append(j["id"])
                    log.warning("job %d FAILED after %d attempts: %s", j["id"], j["attempts"], message[:200])
        ended({**{j: "retry" for j, _ in outcome.retry}, **dict.fromkeys(outcome.failed, "failed")})


def _render_group(
    engine: sa.Engine, settings: Settings, model_row: ModelRow | None, group: list[dict[str, Any]], worker: str = ""
) -> list[int]:
    first = group[0]
    if model_row is None or model_row.removed_at is not None:
        raise InvalidUnit(f"model {first['model_key']}@{first['model_sha256'][:12]} is not in the database")
    if first["kind"] == CHECK:  # a circuit check: one job, which lands as an experiment (kb.experiments)
        from kb.render import circuit_checks

        with KeepAlive(engine, [first["id"]], settings.render_lease_s, worker) as alive:
            results, made_by = circuit_checks.run(engine, settings, model_row, first, alive.progress)
        return circuit_checks.land(engine, first, results, made_by)
    check_units(engine, model_row, group)
    with KeepAlive(engine, [j["id"] for j in group], settings.render_lease_s, worker) as alive:
        made = pictures(engine, settings, model_row, group, alive.progress)
    return artifacts.store(engine, settings, group, made)


def check_units(engine: sa.Engine, model_row: ModelRow, group: list[dict[str, Any]]) -> None:
    """Raises InvalidKind or InvalidUnit, before any work, for a group that cannot be rendered: a kind no renderer
    knows, a layer the model does not have, a unit index outside the layer (a whole-layer job's is LAYER_UNIT)."""
    first = group[0]
    if first["kind"] not in ALL_KINDS:
        raise InvalidKind(f"{first['kind']} is not a kind of render (one of {', '.join(ALL_KINDS)})")
    layer = layer_table
    with engine.connect() as conn:
        units = conn.execute(
            sa.select(layer.c.units).where(layer.c.model_id == model_row.id, layer.c.key == first["layer_key"])
        ).scalar()
    if units is None:
        raise InvalidUnit(f"{first['model_key']} has no layer {first['layer_key']!r}")
    whole = first["kind"] in LAYER_KINDS
    for j in group:
        if whole and j["unit"] != jobs.LAYER_UNIT:
            raise InvalidKind(f"{j['kind']} renders a whole layer, not unit {j['unit']}")
        if not whole and not 0 <= j["unit"] < units:
            raise InvalidUnit(f"{first['model_key']}/{first['layer_key']} has {units} units: no unit {j['unit']}")


def log_outcome(outcome: Outcome, seconds: float, settings: Settings | None = None) -> None:
    """One line per job a task ran: its unit, kind and how it ended."""
    ended = {**dict.fromkeys(outcome.done, "done"), **dict.fromkeys(outcome.failed, "FAILED")}
    ended.update({job_id: f"failed, attempt {n} (will retry)" for job_id, n in outcome.retry})
    if not ended or not summary.isEnabledFor(logging.INFO):
        return
    with engine_for((settings or get_settings()).db_url).connect() as conn:
        rows = jobs.get(conn, list(ended))
    for r in rows:
        summary.info(
            "job %d %s %s/%s:%d %s (a task of %d, %.1fs)%s",
            r.id,
            r.kind,
            r.model_key,
            r.layer_key,
            r.unit,
            ended[r.id],
            len(rows),
            seconds,
            f": {r.error[:200]}" if r.error and r.status != "DONE" else "",
        )
