"""The Celery app: Redis in production (KB_BROKER_URL), kombu's SQLAlchemy transport on a SQLite file in the
embedded default (its tables made up front: kb.render.embedded_broker). Tasks are acknowledged late (after they
finish), one prefetched at a time, and requeued when the worker running them is lost."""

from __future__ import annotations

from celery import Celery

from kb.render import embedded_broker
from kb.settings import get_settings


def make_celery() -> Celery:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("kb", broker=settings.broker, include=["kb.render.tasks"])
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
    return app


app = make_celery()
