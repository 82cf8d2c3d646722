"""Asking for renders and cancelling them: the one place the API (requestRender, cancelRenders), the pages and
the CLI (`kb render`, `kb render cancel`) go through. The callers resolve keys to units their own way and turn
the Problems raised here into a coded GraphQL error or one line on stderr."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from kb.errors import Problem
from kb.render import jobs, lanes
from kb.render.params import RenderParams
from kb.render.quota import Quota

log = logging.getLogger("kb.render")


class RenderProblem(Problem):
    code = "BAD_INPUT"


class NotFound(RenderProblem):
    code = "NOT_FOUND"


class Forbidden(RenderProblem):
    code = "FORBIDDEN"


@dataclass
class Requested:
    rows: list[dict]  # one job per unit, in order
    lane: str
    queued: list[int] = field(default_factory=list)  # jobs this request queued (new, or ended and asked again)
    unsent: list[int] = field(default_factory=list)  # of those, saved but not sent: the sweeper sends them


def request_renders(
    engine: sa.Engine,
    settings,
    units: list[jobs.Unit],
    kind: str,
    params: RenderParams,
    *,
    requester: int | None = None,
    quota: Quota | None = None,
    layer: bool = False,
    lane: str | None = None,
    batch: int | None = None,
) -> Requested:
    """Check the parameters, save the jobs (existing ones reused) and send the new ones to the broker. ``layer``:
    the units are a whole layer (the bulk lane; a few units are interactive); ``lane`` says it instead. A job
    saved but not sent (the broker did not answer) is still returned, QUEUED: a worker's sweeper sends it."""
    params.check(kind).within(kind, settings)
    if not units:
        raise RenderProblem("name neurons or a layer to render")
    if kind == "DATASET_EXAMPLES":
        from kb.render.datasets import dataset_by_name

        with engine.connect() as conn:
            if dataset_by_name(conn, params.dataset) is None:
                raise NotFound(f"no dataset {params.dataset!r}: add one with kb dataset add NAME PATH")
    lane = lane or lanes.lane_for(layer, len(units), settings.render_interactive_units)
    if lane not in lanes.RANK:
        raise RenderProblem(f"lane must be one of {', '.join(lanes.LANES)}")
    with engine.begin() as conn:
        ids, queued = jobs.request(conn, units, kind, params.relevant(kind), requester, quota, lane)
    with engine.connect() as conn:
        rows = jobs.get(conn, ids)
    out = Requested(rows, lane, queued)
    if queued:
        from kb.render.enqueue import enqueue

        sending = set(queued)
        try:
            enqueue([r for r in rows if r["id"] in sending], batch, engine=engine)
        except Exception as exc:  # saved: the sweeper sends what the broker did not take
            log.warning(
                "jobs %s are saved but the broker did not take them (%s: %s); a worker's sweeper sends them",
                queued[:20],
                type(exc).__name__,
                exc,
            )
            out.unsent = queued
    return out


def cancel_renders(engine: sa.Engine, ids: list[int], by: int | None, moderator: bool) -> list[dict]:
    """Cancel jobs that are QUEUED or RUNNING (a running one stops at its next progress point and lands
    nothing); ended ones are returned as they are. Allowed to whoever asked for a job (``by``) and to moderators
    (and the operator's CLI: ``moderator``); anyone else's job makes the whole call FORBIDDEN."""
    if not ids:
        raise RenderProblem("name the jobs to cancel")
    with engine.begin() as conn:
        rows = jobs.get(conn, list(dict.fromkeys(ids)))
        missing = sorted(set(ids) - {r["id"] for r in rows})
        if missing:
            raise NotFound(f"no render job {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
        if not moderator:
            theirs = [r["id"] for r in rows if r["requested_by"] is None or r["requested_by"] != by]
            if theirs:
                raise Forbidden(
                    f"render job {theirs[0]} was asked for by someone else: only they and moderators may cancel it"
                )
        cancelled = jobs.cancel(conn, [r["id"] for r in rows])
        if cancelled:
            log.info("jobs %s cancelled", cancelled)
        return jobs.get(conn, [r["id"] for r in rows])
