"""One change follower per server process, fanning new activity rows out to the open live streams.

It reads the feed in commit order (``activity.seq``, see kb.claims.activity), never by id: on PostgreSQL ids are not
in commit order, so "every id above the last" would skip a row that commits late; "every seq above the last" cannot.
On PostgreSQL a thread holds one connection that LISTENs on ``kb_activity``: a change committed by any process
(another API process, a render worker) wakes it, and it reads the rows after the last it dispatched (after a lost
connection it reconnects and does the same). On SQLite the thread polls for them. The thread runs only while a
stream is open. If it fails, it starts again and goes on from the last row it dispatched; if it dies anyway (an
exception no handler takes), the next open stream that notices starts it again (``ensure``), from the same place.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import sqlalchemy as sa

from kb.claims import activity

log = logging.getLogger("kb.live")

Row: TypeAlias = dict[str, Any]  # an activity row, as kb.claims.activity reads it


@dataclass(frozen=True)
class Filter:
    """Which changes a stream wants; empty: all. A change matches if it matches any one given, and is of one of
    ``kinds`` when those are given (CLAIM, REVIEW, CIRCUIT, RENDER: the activity page's filter)."""

    neurons: frozenset[str] = frozenset()
    claims: frozenset[int] = frozenset()
    circuits: frozenset[int] = frozenset()
    models: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    def empty(self) -> bool:
        return not (self.neurons or self.claims or self.circuits or self.models)

    def matches(self, row: Row) -> bool:
        if self.kinds and row["kind"] not in self.kinds:
            return False
        if self.empty():
            return True
        return bool(
            (self.neurons and self.neurons.intersection(row["neurons"]))
            or (row["claim_id"] is not None and row["claim_id"] in self.claims)
            or (row["circuit_id"] is not None and row["circuit_id"] in self.circuits)
            or row["model_key"] in self.models
        )


@dataclass(eq=False)
class Subscriber:
    """One open stream's queue: the rows it wants, in commit order, and ``seq`` marks (ints) that say the follower
    has gone past rows the filter held back, so that the stream's cursor can move past them too."""

    loop: asyncio.AbstractEventLoop
    filter: Filter
    queue: asyncio.Queue[Row | int] = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    overflowed: bool = False

    def offer(self, items: list[Row | int]) -> None:  # on the subscriber's loop
        for item in items:
            try:
                self.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.overflowed = True  # the stream ends; the browser reconnects with Last-Event-ID and catches up
                return


class Hub:
    def __init__(self, engine: sa.Engine, poll_s: float = 1.0, page: int = 500, retry_s: float = 1.0):
        self.engine = engine
        self.poll_s = poll_s
        self.page = page
        self.retry_s = retry_s
        self.subscribers: set[Subscriber] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.last: int | None = None  # the seq of the last row dispatched; None until a follower starts
        self.restarts = 0  # how often the follower started again after failing or dying

    def subscribe(self, flt: Filter, loop: asyncio.AbstractEventLoop) -> Subscriber:
        sub = Subscriber(loop, flt)
        with self.lock:
            self.subscribers.add(sub)
            if not self.alive():
                self.stopping.clear()
            self._ensure()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.lock:
            self.subscribers.discard(sub)

    def alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def ensure(self) -> None:
        """Start the follower again if it died while streams are open (they call this when they notice)."""
        with self.lock:
            self._ensure()

    def _ensure(self) -> None:  # under self.lock
        if not self.subscribers or self.stopping.is_set() or self.alive():
            return
        if self.last is None:  # a new follower: its streams get what commits from now on
            with self.engine.connect() as conn:
                self.last = activity.last_seq(conn)
        else:  # the last one died with streams open: go on from its last row, so they miss nothing
            self.restarts += 1
            log.warning("the live-update follower had died; starting it again after seq %d", self.last)
        self.thread = threading.Thread(target=self._run, name="kb-live", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _idle(self) -> bool:
        with self.lock:
            if not self.subscribers:
                self.thread = None
                self.last = None
                return True
        return False

    def _dispatch(self, rows: list[Row]) -> None:
        if not rows:
            return
        top: int = rows[-1]["seq"]
        with self.lock:
            subs = list(self.subscribers)
        for sub in subs:
            mine = [r for r in rows if sub.filter.matches(r)]
            items: list[Row | int] = [*mine] if mine and mine[-1]["seq"] == top else [*mine, top]
            sub.loop.call_soon_threadsafe(sub.offer, items)
        self.last = top

    def _catch_up(self) -> None:
        """Dispatch every row committed after the last one dispatched, in commit order, a page at a time."""
        assert self.last is not None
        while True:
            with self.engine.connect() as conn:
                rows = activity.after(conn, self.last, self.page)
            self._dispatch(rows)
            if len(rows) < self.page:
                return

    def _run(self) -> None:
        while True:
            try:
                if self.engine.dialect.name == "postgresql":
                    self._listen()
                else:
                    self._poll()
                return  # no stream is open, or the server stops
            except Exception as exc:
                log.warning("the live-update follower failed (%s); starting it again", exc, exc_info=True)
            with self.lock:
                self.restarts += 1
            if self.stopping.wait(self.retry_s) or self._idle():
                return

    def _poll(self) -> None:
        while not self.stopping.wait(self.poll_s):
            if self._idle():
                return
            self._catch_up()

    def _listen(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(f"LISTEN {activity.CHANNEL}")
            self._catch_up()  # what committed before LISTEN took effect (or while the last follower was down)
            while not self.stopping.is_set():
                if any(True for _ in pg.notifies(timeout=1.0, stop_after=1)):
                    self._catch_up()  # one read for whatever committed: the payloads (ids) are not needed
                if self._idle():
                    return
