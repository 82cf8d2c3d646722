"""Execution off the event loop: every GraphQL execution runs on a bounded pool of threads, under a deadline.

Resolvers read the database (synchronously) and the in-memory graph (CPU); run on the event loop they would
stall every other request, /health included. Here the loop hands each execution to a worker thread (one with
its own event loop for strawberry's async execution) and waits for it at most the request's time limit; then
the client gets TIMEOUT. The worker sees the deadline too (kb.schema.deadline): the compiled executor,
the DataLoaders and SQLite's progress handler stop there, PostgreSQL by its statement_timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kb.schema.deadline import DEADLINE
from kb.schema.errors import RequestTimeout


class OffLoop:
    def __init__(self, threads: int = 8, timeout_s: float = 10.0):
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="kb-exec")
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        return loop

    def _run(self, deadline: float, fn: Callable[..., Any], args: tuple[Any, ...], is_async: bool) -> Any:
        if time.monotonic() > deadline:  # waited for a thread past the deadline: the client has its answer
            raise RequestTimeout("the server is busy: the request waited past its time limit")
        token = DEADLINE.set(deadline)
        try:
            if is_async:
                return self._loop().run_until_complete(fn(*args))
            return fn(*args)
        finally:
            DEADLINE.reset(token)

    async def call(self, fn: Callable[..., Any], *args: Any, is_async: bool = False, abandon: bool = True) -> Any:
        """fn(*args) on a worker thread (awaited there if is_async); RequestTimeout past the time limit.

        With abandon=False (mutations) the answer waits for the thread: past the deadline the work stops at its
        next check and rolls back, so a client is never told TIMEOUT about a change that then commits.
        """
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.timeout_s
        future = loop.run_in_executor(self.pool, self._run, deadline, fn, args, is_async)
        if not abandon:
            return await future
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise RequestTimeout(
                f"the request took longer than {self.timeout_s:g} s: ask for less (smaller first, perNode, depth)"
            ) from None

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
