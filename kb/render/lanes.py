"""Render lanes: which due jobs a worker takes next. The job table is the queue; a broker message only wakes a
worker, which then takes work here, one device batch at a time, until none is left.

- ``interactive``: a few units asked for from a page, the CLI without ``--layer``, the client;
- ``view``: thumbnails asked for by pages as people browse;
- ``bulk``: a layer or a model (or more units than ``render_interactive_units``).

A worker takes the oldest due job of the first lane that has one, and the due jobs of the same model, layer,
kind and parameters after it. Because it asks again after every device batch, a running bulk layer yields
between its batches: an interactive job waits behind one batch at most. In the bulk lane accounts take turns:
the account with the fewest bulk jobs running now, then the one whose last bulk batch started longest ago
(the operator's CLI, with no account, is one more).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kb.db.render_tables import render_job_table
from kb.db.tables import utcnow

LANES = ("interactive", "view", "bulk")
RANK = {lane: i for i, lane in enumerate(LANES)}
# how far back a bulk account's last batch counts for its turn (older: as if never served)
FAIRNESS_WINDOW = timedelta(days=1)


def lane_for(layer: bool, units: int, interactive_units: int) -> str:
    return "bulk" if layer or units > interactive_units else "interactive"


def better(a: str, b: str) -> bool:
    """Lane ``a`` is served before lane ``b``."""
    return RANK[a] < RANK[b]


def due(now: datetime | None = None) -> sa.ColumnElement[bool]:
    """Jobs a worker may start now: QUEUED and due, or RUNNING past their lease with an attempt left."""
    t = render_job_table
    now = now or utcnow()
    return sa.or_(
        sa.and_(t.c.status == "QUEUED", sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at <= now)),
        sa.and_(t.c.status == "RUNNING", t.c.deadline < now, t.c.attempts < t.c.max_attempts),
    )


def _same_account(requester: int | None) -> sa.ColumnElement[bool]:
    t = render_job_table
    return t.c.requested_by.is_(None) if requester is None else t.c.requested_by == requester


def _bulk_turn(conn: sa.Connection, ready: sa.ColumnElement[bool], now: datetime) -> int | None:
    """The first due bulk job of the account whose turn it is."""
    t = render_job_table
    waiting = conn.execute(sa.select(t.c.requested_by, sa.func.min(t.c.id)).where(ready).group_by(t.c.requested_by))
    firsts: dict[int | None, int] = {r[0]: r[1] for r in waiting}
    if len(firsts) <= 1:
        return next(iter(firsts.values()), None)
    served = conn.execute(
        sa.select(
            t.c.requested_by,
            sa.func.sum(sa.case((t.c.status == "RUNNING", 1), else_=0)),
            sa.func.max(t.c.started_at),
        )
        .where(t.c.lane == "bulk", t.c.started_at > now - FAIRNESS_WINDOW)
        .group_by(t.c.requested_by)
    )
    service = {who: (running or 0, last) for who, running, last in served}
    never = (0, None)

    def turn(who: int | None) -> tuple[int, bool, datetime, int]:
        running, last = service.get(who, never)
        return (running, last is not None, last or now, firsts[who])

    return firsts[min(firsts, key=turn)]


def next_group(conn: sa.Connection, limit: int, lock: bool = False) -> list[dict[str, Any]]:
    """Up to ``limit`` due jobs to run next, all of one (model, layer, kind, parameters), first one first.

    ``lock`` (PostgreSQL; ignored on SQLite, whose writers take turns anyway): the rows are locked FOR UPDATE, and
    rows another worker's transaction holds are skipped (SKIP LOCKED), so that a worker choosing and claiming in
    one transaction (kb.render.runner) never chooses what another is claiming; bench/job_claims.py measures it."""
    t = render_job_table
    now = utcnow()
    skip_locked = lock and conn.dialect.name == "postgresql"
    for lane in LANES:
        ready = sa.and_(t.c.lane == lane, due(now))
        if lane == "bulk":
            first_id = _bulk_turn(conn, ready, now)
        else:
            earliest = sa.select(t.c.id).where(ready).order_by(t.c.id).limit(1)
            first_id = conn.execute(earliest.with_for_update(skip_locked=True) if skip_locked else earliest).scalar()
        if first_id is None:
            continue
        first = conn.execute(sa.select(t).where(t.c.id == first_id)).one()
        same = [
            ready,
            t.c.id >= first_id,
            t.c.model_sha256 == first.model_sha256,
            t.c.layer_key == first.layer_key,
            t.c.kind == first.kind,
            t.c.params_hash == first.params_hash,
        ]
        if lane == "bulk":
            same.append(_same_account(first.requested_by))
        chosen = sa.select(t).where(*same).order_by(t.c.id).limit(limit)
        rows = [
            dict(r._mapping) for r in conn.execute(chosen.with_for_update(skip_locked=True) if skip_locked else chosen)
        ]
        if rows:
            return rows
        # the bulk turn's group is being claimed by another worker right now (its rows are locked): the next lane
    return []
