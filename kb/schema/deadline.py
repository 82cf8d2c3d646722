"""The request's deadline: set where a request starts executing, checked where work can stop early.

A ContextVar, so it follows the request into the tasks and DataLoader batches of the thread that runs it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from kb.schema.errors import RequestTimeout

DEADLINE: ContextVar[float | None] = ContextVar("kb_deadline", default=None)


def expired() -> bool:
    d = DEADLINE.get()
    return d is not None and time.monotonic() > d


def check() -> None:
    """Raise TIMEOUT once the request's time is up (cheap: one clock read)."""
    d = DEADLINE.get()
    if d is not None and time.monotonic() > d:
        raise RequestTimeout("the request took longer than its time limit; ask for less")
