"""Runs render jobs in a worker process: claims them, renders each group, and records how each attempt ended.

Knows the database, not Celery: the task (kb.render.tasks) is a thin shell around ``run``. The concerns it
strings together have their own modules: ``keepalive`` (lease and progress while a group renders), ``pictures``
(by kind, with ``model_cache`` and ``dataset_cache``), ``artifacts`` (PNGs in storage, artifact rows, DONE).
"""

from __future__ import annotations

import logging
import socket
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from kb.db.engine import engine_for
from kb.db.tables import model_table
from kb.render import artifacts, jobs
from kb.render.jobs import Permanent
from kb.render.keepalive import KeepAlive
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
    global ACTIVE
    ACTIVE += 1
    try:
        return _run(job_ids, worker, settings)
    finally:
        ACTIVE -= 1


def _run(job_ids: list[int], worker: str | None = None, settings: Settings | None = None) -> Outcome:
    settings = settings or get_settings()
    engine = engine_for(settings.db_url)
    worker = worker or socket.gethostname()
    log.info("received jobs %s", job_ids)
    with engine.begin() as conn:
        started = jobs.start(conn, job_ids, worker, settings.render_lease_s)
    skipped = sorted(set(job_ids) - {j["id"] for j in started})
    if skipped:
        log.info("jobs %s: nothing to do (done, failed, or running elsewhere)", skipped)
    for j in started:
        log.info(
            "job %d started: %s %s/%s:%d, attempt %d of %d",
            j["id"],
            j["kind"],
            j["model_key"],
            j["layer_key"],
            j["unit"],
            j["attempts"],
            j["max_attempts"],
        )
    outcome = Outcome()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in started:
        groups[(job["model_sha256"], job["layer_key"], job["kind"], job["params_hash"])].append(job)
    for group in groups.values():
        try:
            _render_group(engine, settings, group)
            outcome.done += [j["id"] for j in group]
            for j in group:
                log.info("job %d done", j["id"])
        except Exception as exc:
            permanent = isinstance(exc, (Permanent, ValueError, KeyError, IndexError))
            log.exception("render of jobs %s failed", [j["id"] for j in group])
            message = f"{type(exc).__name__}: {exc}"[:2000]
            with engine.begin() as conn:
                for j in group:
                    delay = jobs.retry_delay(j["attempts"], settings.render_retry_base_s)
                    if jobs.fail(conn, j["id"], message, not permanent, delay):
                        outcome.retry.append((j["id"], j["attempts"]))
                        log.warning("job %d failed (attempt %d), again in %.1f s", j["id"], j["attempts"], delay)
                    else:
                        outcome.failed.append(j["id"])
                        log.warning("job %d FAILED after %d attempts: %s", j["id"], j["attempts"], message[:200])
    return outcome


def _render_group(engine: sa.Engine, settings: Settings, group: list[dict]) -> None:
    first = group[0]
    m = model_table
    with engine.connect() as conn:
        model_row = conn.execute(sa.select(m).where(m.c.sha256 == first["model_sha256"])).first()
    if model_row is None or model_row.removed_at is not None:
        raise Permanent(f"model {first['model_key']}@{first['model_sha256'][:12]} is not in the database")
    with KeepAlive(engine, [j["id"] for j in group], settings.render_lease_s) as alive:
        made = pictures(engine, settings, model_row, group, alive.progress)
    artifacts.store(engine, settings, group, made)


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
            r["id"],
            r["kind"],
            r["model_key"],
            r["layer_key"],
            r["unit"],
            ended[r["id"]],
            len(rows),
            seconds,
            f": {r['error'][:200]}" if r["error"] and r["status"] != "DONE" else "",
        )
