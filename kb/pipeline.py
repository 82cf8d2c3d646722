"""Threads that let an import's steps overlap (numpy, socket writes and file writes release the GIL).

``prefetch`` runs a producer ahead of its consumer; ``Behind`` runs a consumer behind its producer. Both hand
an exception to the caller's thread and never leave a thread running once the caller's block is left.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _End:
    pass


def prefetch(items: Iterable[T], depth: int = 2, name: str = "kb-prefetch") -> Iterator[T]:
    """Runs ``items`` in a thread, ``depth`` ahead of the consumer."""
    q: queue.Queue[T | _Failed | _End] = queue.Queue(depth)
    end, stop = _End(), threading.Event()

    def put(x: T | _Failed | _End) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(end)
        except BaseException as exc:  # handed to the consumer
            put(_Failed(exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            x = q.get()
            if isinstance(x, _End):
                return
            if isinstance(x, _Failed):
                raise x.exc
            yield x
    finally:
        stop.set()
        thread.join()


class Behind(Generic[T]):
    """Calls ``fn`` on each item given to it, in order, from a thread of its own, at most ``depth`` items
    behind (0: no bound). A failure is raised to the caller at its next call or when the block ends; the items
    after it are dropped. Leaving the block waits for the items given so far, or drops them if it raised."""

    def __init__(self, fn: Callable[[T], object], depth: int = 0, name: str = "kb-behind"):
        self._fn = fn
        self._queue: queue.Queue[T | _End] = queue.Queue(depth)
        self._failed: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not isinstance(item := self._queue.get(), _End):
            if self._failed is None and not self._cancelled:
                try:
                    self._fn(item)
                except BaseException as exc:  # handed to the caller
                    self._failed = exc

    def __call__(self, item: T) -> None:
        if self._failed is not None:
            raise self._failed
        self._queue.put(item)

    def __enter__(self) -> Behind[T]:
        self._thread.start()
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is not None:
            self._cancelled = True
        self._queue.put(_End())
        self._thread.join()
        if self._failed is not None and exc is None:
            raise self._failed
