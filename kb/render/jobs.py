"""Render jobs as rows: the database, not the broker, is the source of truth.

A job moves QUEUED → RUNNING → DONE, or back to QUEUED for another attempt, or to FAILED after its last one, or
to CANCELLED (``cancel``) from QUEUED or RUNNING: a running one stops at its next progress point and lands nothing.
Every transition is a conditional UPDATE, so a job delivered twice (a redelivered message, a sweeper's
re-enqueue) is started once, and a finished job is never redone. Enqueueing happens after the commit.

The attempts cap holds for lost workers too: a job left RUNNING past its lease with no attempt left ends
FAILED ("worker lost N times") instead of being started again, so a unit whose render kills its worker (out of
memory) does not kill worker after worker. ``enqueued_at`` is when its message was last sent and
``next_attempt_at`` when a retry is due; the sweeper re-sends any QUEUED job whose message may be lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from kb.db.render_tables import artifact_table, render_job_table
from kb.db.tables import utcnow
from kb.render.params import params_hash
from kb.render.quota import Quota, check_queue, check_seeds, lock_account

LAYER_UNIT = -1  # the ``unit`` of a job for a whole layer (DEEPDREAM, CARICATURE: kb.render.layer_views)
AGAIN = ("FAILED", "CANCELLED")  # ended without an image: asked for again, queued afresh
ENDED = ("DONE", "FAILED", "CANCELLED")
ModelRow = sa.Row[Any]  # a row of the model table (kb.db.tables.model_table), as a worker reads it


class Permanent(Exception):
    """A job that cannot succeed however often it is tried: it ends FAILED at once. Raised only as one of the two
    named reasons below; any other exception is taken as transient and retried up to the job's cap
    (``max_attempts``, with a back-off: ``retry_delay``)."""


class InvalidUnit(Permanent):
    """The unit is not there: its model is gone from the database, its layer or index is not in the model, or it
    has no inputs to draw."""


class InvalidKind(Permanent):
    """The kind cannot be rendered with these parameters: an unknown kind, a data set or uploaded image that is
    not there, parameters the kind does not take."""


@dataclass(frozen=True)
class Unit:
    model_key: str
    model_sha256: str
    layer_key: str
    unit: int  # LAYER_UNIT: the whole layer


@dataclass(frozen=True)
class Job:
    """A render job's row as the API, the pages and the CLI read it (every column of render_job): typed, and
    frozen, so a reader cannot mistake it for the row's state after it was read."""

    id: int
    kind: str
    model_key: str
    model_sha256: str
    layer_key: str
    unit: int  # LAYER_UNIT: the whole layer
    params: dict[str, Any]
    params_hash: str
    status: str  # QUEUED RUNNING DONE FAILED CANCELLED
    attempts: int
    max_attempts: int
    progress: float
    error: str | None
    artifact_id: int | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline: datetime | None
    enqueued_at: datetime | None
    next_attempt_at: datetime | None
    requested_by: int | None  # None: the operator's CLI
    batch_id: int | None
    lane: str

    @classmethod
    def of(cls, row: sa.Row[Any]) -> Job:
        """From a row of ``select(render_job_table)``."""
        m = row._mapping
        return cls(**{name: m[name] for name in _JOB_FIELDS})

    @property
    def ended(self) -> bool:
        return self.status in ENDED


_JOB_FIELDS = tuple(f.name for f in fields(Job))  # read once: Job.of runs per row of every job list


def request(
    conn: sa.Connection,
    units: list[Unit],
    kind: str,
    params: dict[str, Any],
    requester: int | None = None,
    quota: Quota | None = None,
    lane: str = "interactive",
) -> tuple[list[int], list[int]]:
    """(job ids, one per unit in order; the ids that need enqueueing). Existing jobs are reused; a FAILED or
    CANCELLED one is given a fresh set of attempts, and a QUEUED one asked for in a better ``lane`` moves up.
    New jobs, and ended ones asked for again, record ``requester`` and ``lane`` and count against the
    requester's ``quota`` (kb.render.quota): past it, QuotaExceeded and nothing is queued."""
    from kb.render.lanes import better

    t = render_job_table
    h = params_hash(kind, params)
    if requester is not None and quota is not None and quota.queued is not None:
        lock_account(conn, requester)
    found: list[tuple[Unit, tuple[sa.ColumnElement[bool], ...], sa.Row[int, str, str] | None]] = []
    for u in units:
        key: tuple[sa.ColumnElement[bool], ...] = (
            t.c.model_sha256 == u.model_sha256,
            t.c.layer_key == u.layer_key,
            t.c.unit == u.unit,
            t.c.kind == kind,
            t.c.params_hash == h,
        )
        found.append((u, key, conn.execute(sa.select(t.c.id, t.c.status, t.c.lane).where(*key)).first()))
    if quota is not None:
        new = [u for u, _, row in found if row is None]
        if quota.seeds is not None and "seed" in params and new:
            check_seeds(conn, new, kind, params["seed"], quota.seeds)
        if requester is not None and quota.queued is not None:
            again = sum(row is not None and row.status in AGAIN for _, _, row in found)
            check_queue(conn, requester, len(new) + again, quota.queued)
    ids, enqueue = [], []
    for u, key, row in found:
        if row is None:
            try:
                with conn.begin_nested():
                    job_id = conn.execute(
                        sa.insert(t)
                        .values(
                            kind=kind,
                            model_key=u.model_key,
                            model_sha256=u.model_sha256,
                            layer_key=u.layer_key,
                            unit=u.unit,
                            params=params,
                            params_hash=h,
                            status="QUEUED",
                            created_at=utcnow(),
                            requested_by=requester,
                            lane=lane,
                        )
                        .returning(t.c.id)
                    ).scalar_one()
                enqueue.append(job_id)
            except sa.exc.IntegrityError:  # asked for at the same moment by someone else: theirs
                job_id = conn.execute(sa.select(t.c.id).where(*key)).scalar_one()
            ids.append(job_id)
            continue
        if row.status in AGAIN:
            conn.execute(
                sa.update(t)
                .where(t.c.id == row.id, t.c.status == row.status)
                .values(
                    status="QUEUED",
                    attempts=0,
                    error=None,
                    progress=0.0,
                    next_attempt_at=None,
                    finished_at=None,
                    requested_by=requester,
                    batch_id=None,
                    lane=lane,
                )
            )
            enqueue.append(row.id)
        elif row.status == "QUEUED" and better(lane, row.lane):
            conn.execute(sa.update(t).where(t.c.id == row.id, t.c.status == "QUEUED").values(lane=lane))
            enqueue.append(row.id)  # its message may be behind the bulk work it now passes
        ids.append(row.id)
    if len(enqueue) > 1:  # a bulk request: one activity entry when its last job ends (kb.claims.activity)
        conn.execute(sa.update(t).where(t.c.id.in_(enqueue)).values(batch_id=min(enqueue)))
    return ids, enqueue


def _lost(t: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    """RUNNING past its lease: its worker is gone (killed, out of memory, its machine lost)."""
    return sa.and_(t.c.status == "RUNNING", t.c.deadline < now)


def fail_lost(conn: sa.Connection, job_ids: list[int] | None = None) -> list[int]:
    """End FAILED the lost jobs that have no attempt left; returns their ids."""
    t = render_job_table
    now = utcnow()
    where = [_lost(t, now), t.c.attempts >= t.c.max_attempts]
    if job_ids is not None:
        where.append(t.c.id.in_(job_ids))
    ids = [r[0] for r in conn.execute(sa.select(t.c.id).where(*where))]
    for job_id in ids:
        conn.execute(
            sa.update(t)
            .where(t.c.id == job_id, *where)
            .values(
                status="FAILED",
                error=sa.literal("worker lost ")
                + sa.cast(t.c.attempts, sa.String)
                + sa.literal(" times: each attempt ended without its worker reporting back (killed, out of memory?)"),
                deadline=None,
                finished_at=now,
            )
        )
    if ids:
        from kb.claims import activity

        for job_id in ids:
            activity.render_ended(conn, job_id)
    return ids


def start(conn: sa.Connection, job_ids: list[int], worker: str, lease_s: float) -> list[dict[str, Any]]:
    """Claim the jobs this worker may run now (QUEUED, or RUNNING past their deadline with an attempt left)."""
    t = render_job_table
    fail_lost(conn, job_ids)
    now = utcnow()
    started = []
    for job_id in job_ids:
        done = conn.execute(
            sa.update(t)
            .where(
                t.c.id == job_id,
                sa.or_(
                    t.c.status == "QUEUED",
                    sa.and_(_lost(t, now), t.c.attempts < t.c.max_attempts),
                ),
            )
            .values(
                status="RUNNING",
                attempts=t.c.attempts + 1,
                started_at=now,
                worker=worker[:200],
                deadline=now + timedelta(seconds=lease_s),
                progress=0.0,
                next_attempt_at=None,
            )
        ).rowcount
        if done:
            started.append(dict(conn.execute(sa.select(t).where(t.c.id == job_id)).one()._mapping))
    return started


def heartbeat(conn: sa.Connection, job_ids: list[int], progress: float, lease_s: float) -> set[int]:
    """Renew the lease and write the progress of those still RUNNING (not cancelled); returns their ids."""
    t = render_job_table
    conn.execute(
        sa.update(t)
        .where(t.c.id.in_(job_ids), t.c.status == "RUNNING")
        .values(progress=progress, deadline=utcnow() + timedelta(seconds=lease_s))
    )
    return set(conn.execute(sa.select(t.c.id).where(t.c.id.in_(job_ids), t.c.status == "RUNNING")).scalars())


def running(conn: sa.Connection, job_ids: list[int]) -> set[int]:
    t = render_job_table
    return set(conn.execute(sa.select(t.c.id).where(t.c.id.in_(job_ids), t.c.status == "RUNNING")).scalars())


def cancel(conn: sa.Connection, job_ids: list[int]) -> list[int]:
    """QUEUED or RUNNING jobs end CANCELLED (a running one's worker stops at its next progress point and lands
    nothing: ``finish`` only lands a RUNNING job). Returns the ids cancelled now."""
    t = render_job_table
    ids = list(
        conn.execute(
            sa.select(t.c.id).where(t.c.id.in_(job_ids), t.c.status.in_(("QUEUED", "RUNNING"))).order_by(t.c.id)
        ).scalars()
    )
    done = []
    for job_id in ids:
        if conn.execute(
            sa.update(t)
            .where(t.c.id == job_id, t.c.status.in_(("QUEUED", "RUNNING")))
            .values(status="CANCELLED", error="cancelled", deadline=None, next_attempt_at=None, finished_at=utcnow())
        ).rowcount:
            done.append(job_id)
    if done:  # a bulk request whose last open jobs were cancelled has ended: its one activity entry is written now
        from kb.claims import activity

        last_of_batch = {b or i: i for i, b in conn.execute(sa.select(t.c.id, t.c.batch_id).where(t.c.id.in_(done)))}
        for job_id in last_of_batch.values():
            activity.render_ended(conn, job_id)
    return done


def land(conn: sa.Connection, job_id: int) -> bool:
    """Mark a RUNNING job DONE (its artifact attached next, in the same transaction); False if it is no longer
    RUNNING (cancelled, or taken over after its lease lapsed): then nothing of it is to be written. On
    PostgreSQL the update holds the row until commit, so a cancel arriving now waits and finds it DONE."""
    t = render_job_table
    return bool(
        conn.execute(
            sa.update(t)
            .where(t.c.id == job_id, t.c.status == "RUNNING")
            .values(status="DONE", progress=1.0, finished_at=utcnow(), deadline=None, error=None)
        ).rowcount
    )


def finish(
    conn: sa.Connection, job_id: int, artifact: dict[str, Any], write: Callable[[], object] | None = None
) -> int | None:
    """Mark the job DONE if it is still RUNNING, then (only then) call ``write`` (the image's bytes to storage)
    and record the artifact (one row per content hash); returns the artifact id, None if it did not land."""
    if not land(conn, job_id):
        return None
    if write is not None:
        write()
    a, t = artifact_table, render_job_table
    artifact_id: int | None = conn.execute(sa.select(a.c.id).where(a.c.sha256 == artifact["sha256"])).scalar()
    if artifact_id is None:
        try:
            with conn.begin_nested():
                artifact_id = conn.execute(
                    sa.insert(a).values(created_at=utcnow(), **artifact).returning(a.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            artifact_id = conn.execute(sa.select(a.c.id).where(a.c.sha256 == artifact["sha256"])).scalar_one()
    conn.execute(sa.update(t).where(t.c.id == job_id).values(artifact_id=artifact_id))
    from kb.claims import activity  # in the same transaction: the feed and live pages hear of it when it commits

    activity.render_ended(conn, job_id)
    return artifact_id


def fail(conn: sa.Connection, job_id: int, error: str, retryable: bool, retry_in_s: float = 0.0) -> bool:
    """Record a failed attempt; True if the job goes back to QUEUED for another one (due in ``retry_in_s``)."""
    t = render_job_table
    row = conn.execute(sa.select(t.c.attempts, t.c.max_attempts).where(t.c.id == job_id)).one()
    again = retryable and row.attempts < row.max_attempts
    now = utcnow()
    changed = conn.execute(
        sa.update(t)
        .where(t.c.id == job_id, t.c.status == "RUNNING")
        .values(
            status="QUEUED" if again else "FAILED",
            error=error[:2000],
            deadline=None,
            finished_at=None if again else now,
            next_attempt_at=now + timedelta(seconds=retry_in_s) if again else None,
        )
    ).rowcount
    if changed and not again:  # it ended: the last job of a bulk request writes the request's activity entry
        from kb.claims import activity

        activity.render_ended(conn, job_id)
    return again and bool(changed)


def retry_delay(attempts: int, base_s: float) -> float:
    return min(600.0, base_s * 2.0 ** (attempts - 1))


def sent(conn: sa.Connection, job_ids: list[int]) -> None:
    """Their messages went to the broker now."""
    if job_ids:
        t = render_job_table
        conn.execute(sa.update(t).where(t.c.id.in_(job_ids)).values(enqueued_at=utcnow()))


def stuck(conn: sa.Connection, queued_older_than_s: float = 600) -> list[int]:
    """Jobs to enqueue again: RUNNING past their deadline with an attempt left (a lost worker), or QUEUED whose
    message may be lost: due (``next_attempt_at``) and last sent (``enqueued_at``, else created) longer ago than
    ``queued_older_than_s``. Lost jobs with no attempt left end FAILED here."""
    t = render_job_table
    fail_lost(conn)
    now = utcnow()
    late = [r[0] for r in conn.execute(sa.select(t.c.id).where(_lost(t, now), t.c.attempts < t.c.max_attempts))]
    old = now - timedelta(seconds=queued_older_than_s)
    waiting = [
        r[0]
        for r in conn.execute(
            sa.select(t.c.id).where(
                t.c.status == "QUEUED",
                sa.func.coalesce(t.c.enqueued_at, t.c.created_at) < old,
                sa.or_(t.c.next_attempt_at.is_(None), t.c.next_attempt_at < old),
            )
        )
    ]
    return late + waiting


def get(conn: sa.Connection, job_ids: list[int]) -> list[Job]:
    """The jobs of ``job_ids`` that exist, in that order."""
    t = render_job_table
    rows = {r.id: Job.of(r) for r in conn.execute(sa.select(t).where(t.c.id.in_(job_ids)))}
    return [rows[i] for i in job_ids if i in rows]


def done_for_units(
    conn: sa.Connection, units: list[tuple[str, str, int]]
) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Finished jobs with their artifacts for many (model sha256, layer key, unit) at once, in job order."""
    t, a = render_job_table, artifact_table
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {u: [] for u in units}
    q = (
        sa.select(t, a.c.sha256.label("artifact_sha256"), a.c.width, a.c.height, a.c.versions)
        .join(a, a.c.id == t.c.artifact_id)
        .where(sa.tuple_(t.c.model_sha256, t.c.layer_key, t.c.unit).in_(units), t.c.status == "DONE")
        .order_by(t.c.id)
    )
    for r in conn.execute(q):
        row = dict(r._mapping)
        out[(row["model_sha256"], row["layer_key"], row["unit"])].append(row)
    return out


def artifacts(conn: sa.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    a = artifact_table
    return {r.id: dict(r._mapping) for r in conn.execute(sa.select(a).where(a.c.id.in_(ids)))}


def done_for_layer(conn: sa.Connection, model_sha256: str, layer_key: str, kind: str | None) -> list[dict[str, Any]]:
    """Finished jobs with their artifacts for every unit of a layer, by unit, then job order."""
    t, a = render_job_table, artifact_table
    q = (
        sa.select(t, a.c.sha256.label("artifact_sha256"), a.c.width, a.c.height, a.c.versions)
        .join(a, a.c.id == t.c.artifact_id)
        .where(t.c.model_sha256 == model_sha256, t.c.layer_key == layer_key, t.c.status == "DONE", t.c.unit >= 0)
        .order_by(t.c.unit, t.c.id)
    )
    if kind:
        q = q.where(t.c.kind == kind)
    return [dict(r._mapping) for r in conn.execute(q)]


def layer_views(
    conn: sa.Connection, model_sha256: str, layer_key: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """Finished jobs for the whole layer (DEEPDREAM, CARICATURE) with their artifacts, by kind, then job order."""
    t, a = render_job_table, artifact_table
    q = (
        sa.select(t, a.c.sha256.label("artifact_sha256"), a.c.width, a.c.height, a.c.versions)
        .join(a, a.c.id == t.c.artifact_id)
        .where(
            t.c.model_sha256 == model_sha256,
            t.c.layer_key == layer_key,
            t.c.unit == LAYER_UNIT,
            t.c.status == "DONE",
        )
        .order_by(t.c.kind.desc(), t.c.id)
    )
    if kind:
        q = q.where(t.c.kind == kind)
    return [dict(r._mapping) for r in conn.execute(q)]


def uploads(conn: sa.Connection, shas: list[str]) -> dict[str, dict[str, Any]]:
    """Uploaded images (artifact rows of kind UPLOAD: kb.render.uploads) by sha256."""
    if not shas:
        return {}
    a = artifact_table
    q = sa.select(a.c.sha256, a.c.width, a.c.height, a.c.versions).where(
        a.c.sha256.in_(sorted(set(shas))), a.c.kind == "UPLOAD"
    )
    return {r.sha256: dict(r._mapping) for r in conn.execute(q)}


def counts(conn: sa.Connection) -> list[tuple[str, str, int]]:
    """(lane, status, jobs) of every lane and status that has jobs (the render queue's depth: QUEUED)."""
    t = render_job_table
    rows = conn.execute(sa.select(t.c.lane, t.c.status, sa.func.count()).group_by(t.c.lane, t.c.status))
    return [(lane, status, int(n)) for lane, status, n in rows]


def running_workers(conn: sa.Connection) -> list[tuple[str, int]]:
    """(worker, RUNNING jobs) of each worker that holds a lease now."""
    t = render_job_table
    q = sa.select(t.c.worker, sa.func.count()).where(t.c.status == "RUNNING", t.c.worker.is_not(None))
    return [(w, int(n)) for w, n in conn.execute(q.group_by(t.c.worker))]
