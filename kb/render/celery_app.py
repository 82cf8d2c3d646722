"""The Celery app: Redis in production (KB_BROKER_URL), kombu's SQLAlchemy transport on a SQLite file in the
embedded default (its tables made up front: kb.render.embedded_broker). Tasks are acknowledged late (after they
finish), one prefetched at a time, and requeued when the worker running them is lost.

Nothing is made at import: ``make_celery`` makes an app from the settings it is given, its task registered on it
(kb.render.tasks.register), and ``celery_app`` is this process's app, made on first use by whoever needs one (the
worker command, the enqueue path). Tasks are registered on the app passed, not found through Celery's "current
app" (Celery's application guide, "Breaking the chain")."""

from __future__ import annotations

import threading

from celery import Celery

from kb.render import embedded_broker
from kb.settings import Settings, get_settings

_app: Celery | None = None
_app_lock = threading.Lock()


def make_celery(settings: Settings | None = None) -> Celery:
    """A new app configured by ``settings`` (default: the process's), with kb's render task registered on it."""
    from kb.render import tasks

    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("kb", broker=settings.broker)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="render",
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # Redis redelivers a task its worker never acknowledged (a killed worker) after this long; kombu's
        # SQLAlchemy transport passes its options on to create_engine: SQLite's busy timeout (kb.render.embedded_broker)
        broker_transport_options={"visibility_timeout": settings.render_visibility_timeout_s}
        if settings.broker.startswith(("redis", "rediss"))
        else embedded_broker.transport_options()
        if embedded_broker.is_embedded(settings.broker)
        else {},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    tasks.register(app)
    return app


def celery_app() -> Celery:
    """This process's app (``make_celery()``), made once, on first use."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = make_celery()
    return _app
