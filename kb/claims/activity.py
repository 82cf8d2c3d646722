"""The activity feed: one row per change (a claim revision, a review, a circuit revision, a finished render).

Rows are written in the transaction of the change they describe, so the feed never shows a change that was
rolled back and never misses one that committed. On PostgreSQL the same transaction sends
``NOTIFY kb_activity, '<id>'``, which PostgreSQL delivers only at commit: every server process LISTENs and wakes
its live-update streams (kb.web.live). On SQLite the streams poll this table.

Two orders. ``id`` is the order of insertion: the feed pages by it. ``seq`` is the order of commit: live streams
and their resumption (``after``) follow it. On PostgreSQL ids come from a sequence when a row is inserted, and
transactions commit in any order, so a reader that has seen id 12 may later see id 11 appear: "ids after the last
seen" skips rows. ``seq`` is given when the row's transaction commits, by a deferred constraint trigger that first
takes a transaction-level advisory lock (migration 0007); the lock is held until that commit is visible, so the next
committer's ``seq`` is greater and becomes visible later. Whoever has seen ``seq`` N will never see a new row with
a lower one, and "rows after N" is exact. Only the commits of activity rows wait on each other, for the moment of
the commit (not the rest of their transactions). Inside the writing transaction, before its commit, the row's
``seq`` is NULL. On SQLite (one writer at a time, holding the write lock until it commits) a trigger gives it on
insert. Either way the database gives it, to rows written by any code.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kb.claims.accounts import Account
from kb.db.annotation_tables import activity_table
from kb.db.claim_tables import claim_subject_table, claim_table, user_table
from kb.db.tables import utcnow

CHANNEL = "kb_activity"
KINDS = ("CLAIM", "REVIEW", "CIRCUIT", "RENDER")


def record(
    conn: sa.Connection,
    kind: str,
    model_key: str,
    subject: str,
    summary: str = "",
    actor_id: int | None = None,
    neurons: list[str] | None = None,
    claim_id: int | None = None,
    circuit_id: int | None = None,
) -> int:
    assert kind in KINDS, kind
    t = activity_table
    activity_id: int = conn.execute(
        sa.insert(t)
        .values(
            at=utcnow(),
            kind=kind,
            model_key=model_key,
            subject=subject,
            summary=summary[:300],
            actor_id=actor_id,
            neurons=list(neurons or []),
            claim_id=claim_id,
            circuit_id=circuit_id,
        )
        .returning(t.c.id)
    ).scalar_one()
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": str(activity_id)})
    return activity_id


def _claim(conn: sa.Connection, claim_id: int) -> tuple[sa.Row[*tuple[Any, ...]], list[str]]:
    c, s = claim_table, claim_subject_table
    row = conn.execute(
        sa.select(c.c.revision, c.c.label, c.c.status, c.c.model_key, c.c.circuit_id).where(c.c.id == claim_id)
    ).one()
    subjects = [
        f"{m}/{layer}:{i}"
        for m, layer, i in conn.execute(
            sa.select(s.c.model_key, s.c.layer_key, s.c.neuron_index).where(s.c.claim_id == claim_id)
        )
    ]
    return row, subjects


def claim_changed(conn: sa.Connection, actor: Account, claim_id: int) -> int:
    """A claim's new revision (creation, edit or status change)."""
    row, subjects = _claim(conn, claim_id)
    what = "proposed" if row.revision == 1 else f"revision {row.revision} ({row.status.lower()})"
    return record(
        conn,
        "CLAIM",
        row.model_key,
        f"claim:{claim_id}@{row.revision}",
        f'{actor.name}: "{row.label}" {what}',
        actor.id,
        subjects,
        claim_id=claim_id,
        circuit_id=row.circuit_id,
    )


def reviewed(conn: sa.Connection, actor: Account, claim_id: int, verdict: str) -> int:
    row, subjects = _claim(conn, claim_id)
    return record(
        conn,
        "REVIEW",
        row.model_key,
        f"claim:{claim_id}",
        f'{actor.name} {"supports" if verdict == "SUPPORT" else "disputes"} "{row.label}"',
        actor.id,
        subjects,
        claim_id=claim_id,
    )


OPEN = ("QUEUED", "RUNNING")  # the statuses of a job that has not ended


def render_ended(conn: sa.Connection, job_id: int) -> int | None:
    """A render job ended (DONE, FAILED or another final status), in its transaction. A job of a one-unit request
    is one entry when it is DONE. A job of a bulk request (``batch_id``, kb.render.jobs.request) writes nothing
    until the request's last job ends; that one writes the request's entry: "rendered 512 units of mixed4c".
    Returns the entry's id, or None."""
    from kb.db.render_tables import render_job_table

    t = render_job_table
    job = conn.execute(
        sa.select(t.c.kind, t.c.model_key, t.c.layer_key, t.c.unit, t.c.status, t.c.batch_id, t.c.lane).where(
            t.c.id == job_id
        )
    ).one()
    if job.lane == "view" and job.batch_id is None:  # a page's thumbnail: one entry per device batch, below
        return None
    if job.batch_id is None:
        if job.status != "DONE":
            return None
        if job.unit < 0:  # a picture of the whole layer (kb.render.jobs.LAYER_UNIT): no neuron to list
            layer = f"{job.model_key}/{job.layer_key}"
            return record(conn, "RENDER", job.model_key, f"render:{job_id}", f"{job.kind.lower()} of {layer}", None, [])
        neuron = f"{job.model_key}/{job.layer_key}:{job.unit}"
        return record(
            conn, "RENDER", job.model_key, f"render:{job_id}", f"{job.kind.lower()} of {neuron}", None, [neuron]
        )
    # The jobs of one request end in transactions of their own, on any worker. Each takes the lock of the request's
    # first job before it counts, so they count one after the other, each seeing the ends committed before it:
    # exactly one, the last, finds none left. (SQLite: one writer at a time already.)
    conn.execute(sa.select(t.c.id).where(t.c.id == job.batch_id).with_for_update())
    rows = conn.execute(
        sa.select(t.c.layer_key, t.c.unit, t.c.status, t.c.params).where(t.c.batch_id == job.batch_id).order_by(t.c.id)
    ).all()
    if any(r.status in OPEN for r in rows):
        return None
    done = [r for r in rows if r.status == "DONE"]
    layers = list(dict.fromkeys(r.layer_key for r in rows))
    where = layers[0] if len(layers) == 1 else f"{job.model_key} ({len(layers)} layers)"
    params = rows[0].params or {}
    shown = ", ".join(f"{k} {params[k]}" for k in ("size", "steps") if params.get(k))
    count = f"{len(done):,}" if len(done) == len(rows) else f"{len(done):,} of {len(rows):,}"
    summary = f"rendered {count} unit{'' if len(rows) == 1 else 's'} of {where} ({job.kind.lower()}"
    summary += (f", {shown})" if shown else ")") + (
        f"; {len(rows) - len(done):,} did not finish" if len(done) < len(rows) else ""
    )
    neurons = [f"{job.model_key}/{r.layer_key}:{r.unit}" for r in done]
    return record(conn, "RENDER", job.model_key, f"renders:{job.batch_id}", summary, None, neurons)


def thumbnails_landed(conn: sa.Connection, jobs: list[dict[str, Any]]) -> int | None:
    """Thumbnails that pages asked for (view-lane jobs, kb.render.view_lane) landed together, one device batch of
    one layer: one entry naming every unit, so that open pages showing them swap the pictures in (kb.web.live)
    while the feed gets a line per batch, not per picture. In the batch's transaction."""
    if not jobs:
        return None
    first = jobs[0]
    neurons = [f"{j['model_key']}/{j['layer_key']}:{j['unit']}" for j in jobs]
    p = first["params"] or {}
    shown = ", ".join(f"{k} {p[k]}" for k in ("size", "steps") if p.get(k))
    many = f"{len(jobs)} units of {first['layer_key']}" if len(jobs) > 1 else neurons[0]
    summary = f"thumbnails of {many} ({first['kind'].lower()}" + (f", {shown})" if shown else ")")
    return record(conn, "RENDER", first["model_key"], f"thumbnails:{first['id']}", summary, None, neurons)


def _row(r: sa.Row[Any]) -> dict[str, Any]:
    d = dict(r._mapping)
    d["neurons"] = list(d["neurons"] or [])
    return d


def _select() -> tuple[sa.Select[Any], sa.Table]:
    t, u = activity_table, user_table
    return sa.select(t, u.c.name.label("actor")).outerjoin(u, u.c.id == t.c.actor_id), t


def recent(
    conn: sa.Connection, model: str | None = None, before: int | None = None, limit: int = 50, kind: str | None = None
) -> list[dict[str, Any]]:
    """Newest first: the feed."""
    q, t = _select()
    if model:
        q = q.where(t.c.model_key == model)
    if kind:
        q = q.where(t.c.kind == kind)
    if before:
        q = q.where(t.c.id < before)
    return [_row(r) for r in conn.execute(q.order_by(t.c.id.desc()).limit(limit))]


def after(conn: sa.Connection, seq: int, limit: int = 500) -> list[dict[str, Any]]:
    """In commit order, those committed after the row of ``seq``: what a live stream sends next."""
    q, t = _select()
    return [_row(r) for r in conn.execute(q.where(t.c.seq > seq).order_by(t.c.seq).limit(limit))]


def last_seq(conn: sa.Connection) -> int:
    """The ``seq`` of the last committed row (0: none): a stream that starts here misses nothing after it."""
    t = activity_table
    last: int = conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.c.seq), 0))).scalar_one()
    return last
