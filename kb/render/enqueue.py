"""Enqueueing render jobs (after the database commit), and the sweeper."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from kb.db.engine import engine_for
from kb.render import jobs
from kb.settings import get_settings

log = logging.getLogger("kb.render")


def enqueue(job_rows: list[dict], batch: int | None = None) -> int:
    """Send jobs to the render queue, batched by (model, layer, kind, parameters). Returns tasks sent."""
    from kb.render.tasks import render_jobs

    batch = batch or get_settings().render_batch
    groups: dict[tuple, list[int]] = defaultdict(list)
    for j in job_rows:
        groups[(j["model_sha256"], j["layer_key"], j["kind"], j["params_hash"])].append(j["id"])
    sent = 0
    for ids in groups.values():
        for lo in range(0, len(ids), batch):
            render_jobs.apply_async(args=[ids[lo : lo + batch]])
            sent += 1
    return sent


def sweep_once() -> int:
    settings = get_settings()
    engine = engine_for(settings.db_url)
    with engine.connect() as conn:
        ids = jobs.stuck(conn, queued_older_than_s=max(60.0, settings.render_lease_s))
        rows = jobs.get(conn, ids)
    if rows:
        log.warning("re-enqueueing %d stuck render jobs", len(rows))
        enqueue(rows)
    return len(rows)


def start_sweeper(interval_s: float) -> threading.Event:
    """A daemon thread in each worker that sweeps every ``interval_s`` (sweeps are idempotent)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(interval_s):
            try:
                sweep_once()
            except Exception:
                log.exception("sweep failed")

    threading.Thread(target=loop, name="kb-sweeper", daemon=True).start()
    return stop
