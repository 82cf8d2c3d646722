"""The rules of asking for renders and cancelling them (what may be saved, in which lane, who may cancel what) and
sending saved jobs to the broker. The use cases that apply them, each in its transaction, are kb.app.renders':
the API (requestRender, cancelRenders), the pages and the CLI (`kb render`, `kb render cancel`) call those, and
turn the Problems raised here into a coded GraphQL error or one line on stderr."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from kb.errors import Problem
from kb.render import jobs, lanes
from kb.render.params import KINDS, LAYER_KINDS, RenderParams
from kb.settings import Settings

log = logging.getLogger("kb.render")


class RenderProblem(Problem):
    code = "BAD_INPUT"


class NotFound(RenderProblem):
    code = "NOT_FOUND"


class Forbidden(RenderProblem):
    code = "FORBIDDEN"


@dataclass
class Requested:
    rows: list[jobs.Job]  # one job per unit, in order
    lane: str
    queued: list[int] = field(default_factory=list)  # jobs this request queued (new, or ended and asked again)
    unsent: list[int] = field(default_factory=list)  # of those, saved but not sent: the sweeper sends them


def check(
    engine: sa.Engine,
    settings: Settings,
    units: list[jobs.Unit],
    kind: str,
    params: RenderParams,
    *,
    layer: bool = False,
    lane: str | None = None,
) -> str:
    """The lane of a request that may be saved (``layer``: the units are a whole layer, the bulk lane; a few
    units are interactive; ``lane`` says it instead), or the RenderProblem that refuses it: a kind that does not
    fit the units, parameters out of bounds, no units, a data set or uploaded image that is not there."""
    whole = kind in LAYER_KINDS
    if any((u.unit == jobs.LAYER_UNIT) != whole for u in units):
        raise RenderProblem(
            f"{kind} renders one picture of a whole layer: ask with requestLayerRender (kb render --layer L --kind "
            f"{kind.lower()})"
            if whole
            else f"{kind} renders units: one of {', '.join(KINDS)} for each unit"
        )
    params.check(kind).within(kind, settings)
    if not units:
        raise RenderProblem("name neurons or a layer to render")
    if kind == "CARICATURE" and params.upload:
        _check_upload(engine, params.upload)
    elif kind in ("DATASET_EXAMPLES", "CARICATURE"):
        _check_dataset(engine, params)
    lane = lane or lanes.lane_for(layer, len(units), settings.render_interactive_units)
    if lane not in lanes.RANK:
        raise RenderProblem(f"lane must be one of {', '.join(lanes.LANES)}")
    return lane


def send(engine: sa.Engine, out: Requested, batch: int | None = None) -> Requested:
    """Send the jobs the request queued (``out.queued``) to the broker, after their commit; those the broker did
    not take stay QUEUED (``out.unsent``): a worker's sweeper sends them."""
    if out.queued:
        from kb.render.enqueue import enqueue

        sending = set(out.queued)
        try:
            enqueue([r for r in out.rows if r.id in sending], batch, engine=engine)
        except Exception as exc:  # saved: the sweeper sends what the broker did not take
            log.warning(
                "jobs %s are saved but the broker did not take them (%s: %s); a worker's sweeper sends them",
                out.queued[:20],
                type(exc).__name__,
                exc,
            )
            out.unsent = out.queued
    return out


def check_layer_kind(kind: str) -> None:
    """A layer's picture is one of LAYER_KINDS."""
    if kind not in LAYER_KINDS:
        raise RenderProblem(f"a layer's picture is one of {', '.join(LAYER_KINDS)}, not {kind}")


def layer_unit(model_key: str, model_sha256: str, layer_key: str) -> jobs.Unit:
    """The job key of a whole layer's picture."""
    return jobs.Unit(model_key, model_sha256, layer_key, jobs.LAYER_UNIT)


def _check_dataset(engine: sa.Engine, params: RenderParams) -> None:
    """The dataset exists, and for CARICATURE (``params.image`` >= 0) it holds that image: else NOT_FOUND."""
    from kb.render.datasets import dataset_by_name

    with engine.connect() as conn:
        ds = dataset_by_name(conn, params.dataset)
    if ds is None:
        raise NotFound(f"no dataset {params.dataset!r}: add one with kb dataset add NAME PATH")
    if params.image >= ds["images"]:
        raise NotFound(
            f"dataset {params.dataset!r} has {ds['images']} images (0..{ds['images'] - 1}): no image {params.image}"
        )


def _check_upload(engine: sa.Engine, sha256: str) -> None:
    """The caricature's target was uploaded here: else NOT_FOUND."""
    from kb.render.uploads import find_upload

    if find_upload(engine, sha256) is None:
        raise NotFound(
            f"no uploaded image {sha256}: upload it first (the layer page, POST /uploads, kb render --image-file)"
        )


def check_cancel(rows: list[jobs.Job], ids: list[int], by: int | None, moderator: bool) -> None:
    """Whether ``by`` may cancel the jobs ``ids`` (``rows``: those found): NOT_FOUND for an id with no job;
    FORBIDDEN, for all of them, if any is someone else's and ``by`` is not a moderator (nor the operator's CLI)."""
    if not ids:
        raise RenderProblem("name the jobs to cancel")
    missing = sorted(set(ids) - {r.id for r in rows})
    if missing:
        raise NotFound(f"no render job {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
    if not moderator:
        theirs = [r.id for r in rows if r.requested_by is None or r.requested_by != by]
        if theirs:
            raise Forbidden(
                f"render job {theirs[0]} was asked for by someone else: only they and moderators may cancel it"
            )
