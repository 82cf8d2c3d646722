"""Celery tasks: thin, idempotent, they take job ids. The work is kb.render.runner's; the state is the job rows.
Acknowledged late, requeued when their worker is lost (kb.render.celery_app, which registers them on its app)."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task

RENDER_JOBS = "kb.render.render_jobs"


def render_jobs(task: Task, job_ids: list[int]) -> None:
    """Run ``job_ids`` (kb.render.runner); a transient failure is sent again, by ``task``, later."""
    from kb.db.engine import engine_for
    from kb.render import jobs, runner
    from kb.settings import get_settings

    settings = get_settings()
    t0 = time.monotonic()
    outcome = runner.run(job_ids, worker=task.request.hostname)
    runner.log_outcome(outcome, time.monotonic() - t0, settings)
    for job_id, attempts in outcome.retry:  # a transient failure: again later, backing off by attempt
        task.apply_async(args=[[job_id]], countdown=jobs.retry_delay(attempts, settings.render_retry_base_s))
    if outcome.retry:
        with engine_for(settings.db_url).begin() as conn:
            jobs.sent(conn, [j for j, _ in outcome.retry])


def register(app: Celery) -> Any:
    """Register the render task on ``app`` alone (not shared: an app made later does not get it); returns it."""
    options = {"name": RENDER_JOBS, "bind": True, "acks_late": True, "reject_on_worker_lost": True, "shared": False}
    return app.task(**options)(render_jobs)


def render_task(app: Celery) -> Any:
    """``app``'s render task (registered by kb.render.celery_app.make_celery)."""
    return app.tasks[RENDER_JOBS]
