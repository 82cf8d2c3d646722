"""Keep-alive for the jobs a worker renders: their lease renewed and their progress written from a thread, which
also notices when they are cancelled: the optimisation then stops at its next progress point (``Cancelled``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from kb import metrics
from kb.render import jobs

log = logging.getLogger("kb.render")

Progress = Callable[[int, int], None]  # (step, total): a render's progress (KeepAlive.progress)


class Cancelled(Exception):
    """Every job of the batch being rendered was cancelled: stop the optimisation."""


class KeepAlive:
    """While a group renders, a thread renews the jobs' lease (and writes their progress) every third of it,
    so a slow step or a slow model load never looks like a lost worker, and a dead worker stops renewing.
    Progress is also written each time it passes another 5% of the steps (the optimisation never waits for it:
    it wakes this thread). Each write reads back which jobs are still RUNNING; once none is, the next call to
    ``progress`` raises ``Cancelled``."""

    STEP = 0.05

    def __init__(self, engine: sa.Engine, ids: list[int], lease_s: float, worker: str = ""):
        self.engine, self.ids, self.lease_s, self.worker = engine, ids, lease_s, worker
        self.fraction = 0.0
        self.reported = 0
        self.cancelled = False
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kb-keepalive", daemon=True)

    def progress(self, step: int, total: int) -> None:
        if self.cancelled:
            raise Cancelled(f"jobs {self.ids} were cancelled")
        self.fraction = step / total * 0.99  # 1.0 once stored
        bucket = int(step / total / self.STEP + 1e-9)
        if bucket > self.reported:
            self.reported = bucket
            self.wake.set()

    def _run(self) -> None:
        next_beat = time.monotonic() + self.lease_s / 3
        while not self.stop.is_set():
            self.wake.wait(max(0.0, next_beat - time.monotonic()))
            self.wake.clear()
            if self.stop.is_set():
                return
            next_beat = time.monotonic() + self.lease_s / 3
            try:
                with self.engine.begin() as conn:
                    alive = jobs.heartbeat(conn, self.ids, self.fraction, self.lease_s)
                self.cancelled = not alive
                metrics.WORKER_HEARTBEAT.labels(self.worker).set(time.time())
            except Exception:
                log.warning("heartbeat for jobs %s failed", self.ids, exc_info=True)

    def __enter__(self) -> KeepAlive:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.wake.set()
        self.thread.join(timeout=30)
