"""Waiting for a state a test can observe (a row, a job's status, a port, a flag), with a deadline.

A test that sleeps and then looks is either slow (the sleep is long) or flaky (it is not long enough on a loaded
machine). These poll what the test waits for instead, and fail with a message naming it (and what was seen last).
The states polled here are another process's or thread's (a server, a worker, the database): nothing in this
process can tell the test when they change, so the poll's pause is the one sleep left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], object], timeout: float, what: str, every: float = 0.2) -> T:
    """``fetch()`` until ``done`` holds for what it returned, which is returned; AssertionError naming ``what``
    and the last value fetched after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {value!r}"[:4000])
        time.sleep(every)  # the state is another process's (or thread's): polled


def wait_until(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """``predicate()`` until it returns something true, which is returned; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    return poll(predicate, bool, timeout, what, every)


async def wait_until_async(predicate: Callable[[], Awaitable[T]], timeout: float, what: str, every: float = 0.2) -> T:
    """As ``wait_until``, for a coroutine predicate on the running loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {value!r}"[:4000])
        await asyncio.sleep(every)  # the state is another process's: polled
