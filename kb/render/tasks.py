"""Celery tasks: thin, idempotent, they take job ids. The work is kb.render.runner's; the state is the job rows.
Acknowledged late, requeued when their worker is lost (kb.render.celery_app)."""

from __future__ import annotations

import time

from kb.render.celery_app import app


@app.task(name="kb.render.render_jobs", bind=True, acks_late=True, reject_on_worker_lost=True)
def render_jobs(self, job_ids: list[int]) -> None:
    from kb.db.engine import engine_for
    from kb.render import jobs, runner
    from kb.settings import get_settings

    settings = get_settings()
    t0 = time.monotonic()
    outcome = runner.run(job_ids, worker=self.request.hostname)
    runner.log_outcome(outcome, time.monotonic() - t0, settings)
    for job_id, attempts in outcome.retry:  # a transient failure: again later, backing off by attempt
        render_jobs.apply_async(args=[[job_id]], countdown=jobs.retry_delay(attempts, settings.render_retry_base_s))
    if outcome.retry:
        with engine_for(settings.db_url).begin() as conn:
            jobs.sent(conn, [j for j, _ in outcome.retry])
