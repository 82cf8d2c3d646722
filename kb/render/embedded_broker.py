"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file in the data folder (KB_BROKER_URL empty).

Left to itself the transport creates its tables on a process's first use (CREATE TABLE, which races another
process's: "table kombu_queue already exists") and a queue's row on the first message sent to it (an INSERT that
races another's: IntegrityError on the unique name, which kombu does not catch), so two processes sending the
first message on a fresh data folder at once could lose one. ``prepare`` does both once per process, up front,
under an exclusive lock on a file beside the database, before the process's first send and before a worker's
first poll; after that the transport only reads those rows, and concurrent sends queue on SQLite's own write
lock (waited on for ``BUSY_TIMEOUT_S``, not pysqlite's 5 s, so a loaded machine does not turn a wait into a
lost request).

Another embedded transport was not needed: with the tables and rows made once, SQLite serialises the sends.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

PREFIX = "sqla+sqlite:///"
BUSY_TIMEOUT_S = 60.0
QUEUES = ("render",)

_ready: set[str] = set()
_mutex = threading.Lock()


def is_embedded(url: str) -> bool:
    return url.startswith(PREFIX)


def transport_options() -> dict[str, Any]:
    """Passed by kombu's SQLAlchemy transport to create_engine."""
    return {"connect_args": {"timeout": BUSY_TIMEOUT_S}}


def prepare(app: Celery, queues: tuple[str, ...] = QUEUES) -> None:
    """Create the broker's tables and ``queues``' rows, once per process, under the lock (no-op for Redis)."""
    url = app.conf.broker_url or ""
    if not is_embedded(url) or url in _ready:
        return
    from kombu.entity import Exchange, Queue

    with _mutex:
        if url in _ready:
            return
        path = Path(url[len(PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f"{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            with app.connection_for_write() as conn:
                channel = conn.default_channel  # its first session creates the tables (checkfirst)
                for name in queues:
                    Queue(name, Exchange(name, type="direct"), routing_key=name).bind(channel).declare()
        _ready.add(url)
