"""Thumbnails asked for as people browse: a page that shows unit cards without the thumbnail preset's picture
(kb.render.thumbnails) asks for them here, in the ``view`` lane (kb.render.lanes: after interactive work, before
bulk), for anyone, signed in or not.

Cheap, bounded and idempotent:

- one statement finds which of the shown units already have the preset's job (queued, running, done, or ended
  without an image: a failed or cancelled thumbnail is not asked again by page views; an editor's request
  queues it afresh); when all have one, that is all the view costs. Otherwise one INSERT adds the others
  (``ON CONFLICT DO NOTHING``: two views asking at once make one job);
- at most ``KB_VIEW_QUEUE_MAX`` view jobs of a model are queued or running: a view asks for as many as fit, in
  the order the page shows them, and beyond that for none. The count and the insert run under a lock of the
  model (PostgreSQL: a transaction advisory lock; SQLite: its write lock, taken first), so views counted at the
  same moment cannot overshoot;
- ``KB_VIEW_THUMBNAILS=false`` turns it off.

View jobs record the signed-in reader (``requested_by``) or None, and never count against an account's render
quota (kb.render.quota counts the other lanes), so browsing cannot use up anyone's quota. The asking either
commits whole or not at all: what it did not save is asked again by the next view.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from kb.db.render_tables import render_job_table
from kb.db.tables import utcnow
from kb.render import thumbnails
from kb.render.jobs import Unit
from kb.settings import Settings

log = logging.getLogger("kb.render")
LANE = "view"
WAITING = ("QUEUED", "RUNNING")


@dataclass
class Asked:
    queued: list[dict[str, Any]] = field(default_factory=list)  # the new jobs (id, unit, ...), in the order asked for
    capped: int = 0  # units left unasked: the model's view queue was full

    @property
    def ids(self) -> list[int]:
        return [j["id"] for j in self.queued]


def _lock_model(conn: sa.Connection, sha256: str) -> None:
    """Views of one model count and insert one after another until commit."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"kb-view-lane:{sha256}".encode()) - 2**31
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    else:  # a write statement takes SQLite's write lock now, not at the insert (after the count)
        t = render_job_table
        conn.execute(sa.update(t).where(sa.false()).values(lane=t.c.lane))


def _insert(conn: sa.Connection) -> PgInsert | SqliteInsert:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(render_job_table)


def _missing(conn: sa.Connection, units: list[Unit], h: str) -> list[Unit]:
    """Those of ``units`` (one model) without the preset's job, in order, each once: one statement."""
    t = render_job_table
    by_layer: dict[str, set[int]] = defaultdict(set)
    for u in units:
        by_layer[u.layer_key].add(u.unit)
    shown = sa.or_(*(sa.and_(t.c.layer_key == layer, t.c.unit.in_(sorted(i))) for layer, i in by_layer.items()))
    have = {
        (layer, unit)
        for layer, unit in conn.execute(
            sa.select(t.c.layer_key, t.c.unit).where(
                t.c.model_sha256 == units[0].model_sha256, t.c.kind == thumbnails.KIND, t.c.params_hash == h, shown
            )
        )
    }
    return list({(u.layer_key, u.unit): u for u in units if (u.layer_key, u.unit) not in have}.values())


def ask_model(
    conn: sa.Connection, units: list[Unit], params: dict[str, Any], h: str, most: int, requester: int | None
) -> Asked:
    """Within one transaction: queue the preset's job for each of ``units`` (one model) that has none. A view
    whose units all have theirs (the usual case) reads once and writes nothing; one with missing units takes the
    model's lock and looks again under it, then counts and inserts."""
    t = render_job_table
    sha = units[0].model_sha256
    missing = _missing(conn, units, h)
    if not missing:
        return Asked()
    _lock_model(conn, sha)
    missing = _missing(conn, missing, h)
    if not missing:
        return Asked()
    waiting = conn.execute(
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.model_sha256 == sha, t.c.lane == LANE, t.c.status.in_(WAITING))
    ).scalar_one()
    room = max(0, most - waiting)
    chosen, capped = missing[:room], max(0, len(missing) - room)
    if not chosen:
        return Asked(capped=capped)
    now = utcnow()
    rows = [
        {
            "kind": thumbnails.KIND,
            "model_key": u.model_key,
            "model_sha256": u.model_sha256,
            "layer_key": u.layer_key,
            "unit": u.unit,
            "params": params,
            "params_hash": h,
            "status": "QUEUED",
            "created_at": now,
            "requested_by": requester,
            "lane": LANE,
        }
        for u in chosen
    ]
    # one statement (SQLAlchemy sends the rows as multi-row VALUES); its compiled form is cached, not built per row
    stmt = _insert(conn).on_conflict_do_nothing().returning(t.c.id, t.c.layer_key, t.c.unit)
    made = {(r.layer_key, r.unit): r.id for r in conn.execute(stmt, rows)}
    queued = [{**r, "id": made[(r["layer_key"], r["unit"])]} for r in rows if (r["layer_key"], r["unit"]) in made]
    return Asked(queued, capped)


def ask_for_thumbnails(engine: sa.Engine, settings: Settings, units: list[Unit], requester: int | None = None) -> Asked:
    """Queue the thumbnail preset's render, in the view lane, for each unit shown without it (per model, capped
    by ``KB_VIEW_QUEUE_MAX``), then wake a worker. Nothing when ``KB_VIEW_THUMBNAILS`` is off."""
    out = Asked()
    if not settings.view_thumbnails or not units:
        return out
    params = thumbnails.preset(settings).check(thumbnails.KIND).within(thumbnails.KIND, settings)
    stored, h = params.relevant(thumbnails.KIND), thumbnails.preset_hash(settings)
    by_model: dict[str, list[Unit]] = defaultdict(list)
    for u in units:
        by_model[u.model_sha256].append(u)
    for group in by_model.values():
        with engine.begin() as conn:
            asked = ask_model(conn, group, stored, h, settings.view_queue_max, requester)
        out.queued += asked.queued
        out.capped += asked.capped
    if out.capped:
        log.info("view lane full (KB_VIEW_QUEUE_MAX=%d): %d thumbnails not asked", settings.view_queue_max, out.capped)
    if out.queued:
        from kb.render.enqueue import enqueue

        try:
            # one message per layer: it only wakes a worker, which takes the due work from the table (kb.render.lanes)
            enqueue(out.queued, batch=len(out.queued), engine=engine)
        except Exception as exc:  # saved: a worker's sweeper sends what the broker did not take
            log.warning(
                "thumbnail jobs %s are saved but the broker did not take them (%s: %s); a worker's sweeper sends them",
                out.ids[:20],
                type(exc).__name__,
                exc,
            )
    return out
