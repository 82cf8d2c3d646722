"""Work that must not wait on the database: a guard that turns any connection checkout into ``NeedsIO``.

The API answers small compiled queries on its event loop, where waiting for a connection or a query would stall
every other request. Such work runs inside ``no_io()``; the engines' pool (kb.db.engine.GuardedPool) refuses a
checkout there, before any ping or wait, and the graph cache refuses to wait on a graph another thread is
reading. The caller catches ``NeedsIO`` and runs the same work again on a worker thread, where the guard is off.
Reads from memory (a loaded graph, a fresh catalog) never raise, so the common request never leaves the loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_FORBIDDEN: ContextVar[bool] = ContextVar("kb_no_io", default=False)


class NeedsIO(Exception):
    """Raised where work would wait on the database (or a file) while ``no_io()`` is in force."""


@contextmanager
def no_io() -> Iterator[None]:
    token = _FORBIDDEN.set(True)
    try:
        yield
    finally:
        _FORBIDDEN.reset(token)


def check(what: str = "the database") -> None:
    if _FORBIDDEN.get():
        raise NeedsIO(what)
