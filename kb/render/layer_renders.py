"""A layer's renders as its page shows them: each whole-layer request (one kind and parameters, asked for in the
bulk lane) with how far it is, and the open jobs of one that a person may cancel.

A request is the layer's jobs of one (kind, parameters hash): the units rendered before with the same parameters
are reused by a layer request, so "rendered" counts every DONE job of that kind and parameters in the layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kb.db.render_tables import render_job_table
from kb.db.tables import utcnow

OPEN = ("QUEUED", "RUNNING")
RECENT = timedelta(days=1)  # a request is shown while open, and for a day after its last job was asked for or ended
SHOWN = 5  # requests listed at most, newest first
_STATUSES = ("DONE", "RUNNING", "QUEUED", "FAILED", "CANCELLED")


@dataclass
class LayerRequest:
    kind: str
    params: dict[str, Any]
    params_hash: str
    done: int
    running: int
    queued: int
    failed: int
    cancelled: int
    mine_open: int  # of the open ones, asked for by the reader

    @property
    def id(self) -> str:
        """What a cancel form names: the kind and parameters hash."""
        return f"{self.kind}:{self.params_hash}"

    @property
    def open(self) -> int:
        return self.running + self.queued


def layer_requests(
    conn: sa.Connection, model_sha256: str, layer_key: str, reader: int | None = None, now: datetime | None = None
) -> list[LayerRequest]:
    """The layer's recent whole-layer requests (those with a job in the bulk lane), newest first."""
    t = render_job_table
    since = (now or utcnow()) - RECENT
    layer = (t.c.model_sha256 == model_sha256, t.c.layer_key == layer_key)
    recent = (
        sa.select(t.c.kind, t.c.params_hash, sa.func.max(t.c.id).label("newest"))
        .where(
            *layer,
            t.c.lane == "bulk",
            sa.or_(t.c.status.in_(OPEN), t.c.created_at >= since, t.c.finished_at >= since),
        )
        .group_by(t.c.kind, t.c.params_hash)
        .order_by(sa.desc("newest"))
        .limit(SHOWN)
    ).subquery()
    mine = sa.and_(t.c.status.in_(OPEN), t.c.requested_by == reader) if reader is not None else sa.false()
    counts = (
        sa.select(
            t.c.kind,
            t.c.params_hash,
            recent.c.newest,
            *(sa.func.sum(sa.case((t.c.status == s, 1), else_=0)).label(s.lower()) for s in _STATUSES),
            sa.func.sum(sa.case((mine, 1), else_=0)).label("mine_open"),
        )
        .join(recent, sa.and_(recent.c.kind == t.c.kind, recent.c.params_hash == t.c.params_hash))
        .where(*layer)
        .group_by(t.c.kind, t.c.params_hash, recent.c.newest)
        .order_by(recent.c.newest.desc())
    )
    rows = list(conn.execute(counts))
    params = {
        r.id: r.params for r in conn.execute(sa.select(t.c.id, t.c.params).where(t.c.id.in_([r.newest for r in rows])))
    }
    return [
        LayerRequest(
            kind=r.kind,
            params=params[r.newest],
            params_hash=r.params_hash,
            done=int(r.done),
            running=int(r.running),
            queued=int(r.queued),
            failed=int(r.failed),
            cancelled=int(r.cancelled),
            mine_open=int(r.mine_open),
        )
        for r in rows
    ]


def open_jobs(
    conn: sa.Connection, model_sha256: str, layer_key: str, request_id: str, requester: int | None
) -> list[int]:
    """The open job ids of one of the layer's requests (``LayerRequest.id``): the requester's own, or everyone's
    (``requester`` None: a moderator)."""
    kind, _, params_hash = request_id.partition(":")
    t = render_job_table
    q = sa.select(t.c.id).where(
        t.c.model_sha256 == model_sha256,
        t.c.layer_key == layer_key,
        t.c.kind == kind,
        t.c.params_hash == params_hash,
        t.c.status.in_(OPEN),
    )
    if requester is not None:
        q = q.where(t.c.requested_by == requester)
    return list(conn.execute(q.order_by(t.c.id)).scalars())
