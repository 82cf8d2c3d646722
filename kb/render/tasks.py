"""Celery tasks: thin, idempotent, they take job ids. The work is kb.render.runner's; the state is the job rows."""

from __future__ import annotations

import logging
import time

from kb.render.celery_app import app

log = logging.getLogger("kb.render.jobs")


@app.task(name="kb.render.render_jobs", bind=True, acks_late=True, reject_on_worker_lost=True)
def render_jobs(self, job_ids: list[int]) -> None:
    from kb.db.engine import engine_for
    from kb.render import jobs, runner
    from kb.settings import get_settings

    settings = get_settings()
    t0 = time.monotonic()
    outcome = runner.run(job_ids, worker=self.request.hostname)
    _log(outcome, time.monotonic() - t0)
    for job_id, attempts in outcome.retry:  # a transient failure: again later, backing off by attempt
        render_jobs.apply_async(args=[[job_id]], countdown=jobs.retry_delay(attempts, settings.render_retry_base_s))
    if outcome.retry:
        with engine_for(settings.db_url).begin() as conn:
            jobs.sent(conn, [j for j, _ in outcome.retry])


@app.task(name="kb.render.sweep")
def sweep() -> int:
    """Re-enqueue jobs stuck RUNNING past their deadline (a lost worker) or never picked up."""
    from kb.render.enqueue import sweep_once

    return sweep_once()


def _log(outcome, seconds: float) -> None:
    """One line per job this task ran: its unit, kind and how it ended."""
    from kb.db.engine import engine_for
    from kb.render import jobs
    from kb.settings import get_settings

    ended = {**dict.fromkeys(outcome.done, "done"), **dict.fromkeys(outcome.failed, "FAILED")}
    ended.update({job_id: f"failed, attempt {n} (will retry)" for job_id, n in outcome.retry})
    if not ended or not log.isEnabledFor(logging.INFO):
        return
    with engine_for(get_settings().db_url).connect() as conn:
        rows = jobs.get(conn, list(ended))
    for r in rows:
        log.info(
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
