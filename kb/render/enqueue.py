"""Enqueueing render jobs (after the database commit), and the sweeper."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from kb.db.engine import engine_for
from kb.render import jobs
from kb.settings import get_settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("kb.render")


def _batch_key(j: jobs.Job | Mapping[str, Any]) -> tuple[int, tuple[str, str, str, str]]:
    """(job id, the group its message joins): of a Job, or of a row as the view lane inserts it."""
    if isinstance(j, jobs.Job):
        return j.id, (j.model_sha256, j.layer_key, j.kind, j.params_hash)
    return j["id"], (j["model_sha256"], j["layer_key"], j["kind"], j["params_hash"])


def enqueue(
    job_rows: Sequence[jobs.Job | Mapping[str, Any]],
    batch: int | None = None,
    engine: sa.Engine | None = None,
    app: Celery | None = None,
) -> int:
    """Send jobs to the render queue of ``app`` (default: this process's, kb.render.celery_app), batched by
    (model, layer, kind, parameters), and record when (on ``engine``'s database). Returns tasks sent. A message
    wakes a worker, which takes due work from the job table (kb.render.lanes), so the order of messages does not
    decide the order of work."""
    from kb.render.celery_app import celery_app
    from kb.render.embedded_broker import prepare
    from kb.render.tasks import render_task

    app = app or celery_app()
    prepare(app)
    render_jobs = render_task(app)
    batch = batch or get_settings().render_batch
    groups: dict[tuple[str, str, str, str], list[int]] = defaultdict(list)
    keyed = [_batch_key(j) for j in job_rows]
    for job_id, group in keyed:
        groups[group].append(job_id)
    sent = 0
    for ids in groups.values():
        for lo in range(0, len(ids), batch):
            render_jobs.apply_async(args=[ids[lo : lo + batch]])
            sent += 1
    if engine is not None and job_rows:
        with engine.begin() as conn:
            jobs.sent(conn, [job_id for job_id, _ in keyed])
    return sent


def sweep_once(idle: bool = False) -> int:
    """Re-send the jobs whose message may be lost. ``idle``: this worker runs nothing now, so a job due for
    longer than ``render_requeue_idle_s`` would have reached it if its message were in the queue."""
    settings = get_settings()
    engine = engine_for(settings.db_url)
    grace = settings.render_requeue_idle_s if idle else max(60.0, settings.render_lease_s)
    with engine.begin() as conn:
        ids = jobs.stuck(conn, queued_older_than_s=grace)
        rows = jobs.get(conn, ids)
    if rows:
        log.warning("re-sending %d render jobs whose message may be lost: %s", len(rows), ids[:20])
        enqueue(rows, engine=engine)
    return len(rows)


def start_sweeper(interval_s: float, knows_idle: bool = False) -> threading.Event:
    """A daemon thread in each worker that sweeps every ``interval_s`` (sweeps are idempotent). With
    ``knows_idle`` (a one-process worker), it knows when the worker runs no job."""
    stop = threading.Event()

    def loop() -> None:
        from kb.render import runner

        wait = min(interval_s, 5.0)  # the first soon after start: messages lost while no worker ran
        while not stop.wait(wait):
            wait = interval_s
            try:
                sweep_once(idle=knows_idle and runner.ACTIVE == 0)
            except Exception:
                log.exception("sweep failed")

    threading.Thread(target=loop, name="kb-sweeper", daemon=True).start()
    return stop
