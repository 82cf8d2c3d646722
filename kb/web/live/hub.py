"""One change follower per server process, fanning new activity rows out to the open live streams.

On PostgreSQL a thread holds one connection that LISTENs on ``kb_activity``: a change committed by any process
(another API process, a render worker) wakes it, and it reads exactly the rows named by the notifications (ids
are not in commit order on PostgreSQL, so "every id above the last" could skip one). After a lost connection it
reconnects and catches up from the last id it saw. On SQLite (one writer at a time, so ids are in commit order)
the thread polls for ids above the last. The thread runs only while a stream is open.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

from kb.claims import activity

log = logging.getLogger("kb.live")


@dataclass(frozen=True)
class Filter:
    """Which changes a stream wants; empty: all. A change matches if it matches any one given."""

    neurons: frozenset[str] = frozenset()
    claims: frozenset[int] = frozenset()
    circuits: frozenset[int] = frozenset()
    models: frozenset[str] = frozenset()

    def empty(self) -> bool:
        return not (self.neurons or self.claims or self.circuits or self.models)

    def matches(self, row: dict) -> bool:
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
    loop: asyncio.AbstractEventLoop
    filter: Filter
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    overflowed: bool = False

    def offer(self, row: dict) -> None:  # on the subscriber's loop
        try:
            self.queue.put_nowait(row)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream ends; the browser reconnects with Last-Event-ID and catches up


class Hub:
    def __init__(self, engine: sa.Engine, poll_s: float = 1.0):
        self.engine = engine
        self.poll_s = poll_s
        self.subscribers: set[Subscriber] = set()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.last = 0

    def subscribe(self, flt: Filter, loop: asyncio.AbstractEventLoop) -> Subscriber:
        sub = Subscriber(loop, flt)
        with self.lock:
            self.subscribers.add(sub)
            if self.thread is None or not self.thread.is_alive():
                self.stopping.clear()
                with self.engine.connect() as conn:
                    self.last = activity.last_id(conn)
                self.thread = threading.Thread(target=self._run, name="kb-live", daemon=True)
                self.thread.start()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self.lock:
            self.subscribers.discard(sub)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _idle(self) -> bool:
        with self.lock:
            if not self.subscribers:
                self.thread = None
                return True
        return False

    def _dispatch(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.last = max(self.last, max(r["id"] for r in rows))
        with self.lock:
            subs = list(self.subscribers)
        for row in rows:
            for sub in subs:
                if sub.filter.matches(row):
                    sub.loop.call_soon_threadsafe(sub.offer, row)

    def _run(self) -> None:
        try:
            if self.engine.dialect.name == "postgresql":
                self._listen()
            else:
                self._poll()
        except Exception:
            log.exception("the live-update follower stopped")
            with self.lock:
                self.thread = None

    def _poll(self) -> None:
        while not self.stopping.wait(self.poll_s):
            if self._idle():
                return
            with self.engine.connect() as conn:
                self._dispatch(activity.after(conn, self.last))

    def _listen(self) -> None:
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as pg:
                    pg.execute(f"LISTEN {activity.CHANNEL}")
                    with self.engine.connect() as conn:  # what committed before LISTEN took effect
                        self._dispatch(activity.after(conn, self.last))
                    while not self.stopping.is_set():
                        for note in pg.notifies(timeout=1.0):
                            if note.payload.isdigit():
                                with self.engine.connect() as conn:
                                    self._dispatch(activity.by_ids(conn, [int(note.payload)]))
                        if self._idle():
                            return
            except psycopg.OperationalError as exc:
                log.warning("live updates: lost the LISTEN connection (%s); reconnecting", exc)
                self.stopping.wait(1.0)
