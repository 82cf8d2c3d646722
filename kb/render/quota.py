"""Render quotas: what one request may add to the queue.

An account may have at most ``queued`` unit-jobs queued or running at once (a layer of 512 units counts 512),
and a unit may be rendered with at most ``seeds`` distinct seeds per kind (a new seed makes new jobs; asking
for a seed it already has adds nothing). A request that would pass either is refused whole, with
LIMIT_EXCEEDED, and queues nothing. The count and the inserts run under the account's row lock (an UPDATE of
its ``kb_user`` row, the first write of the transaction: PostgreSQL and SQLite both hold it until commit), so
one account's concurrent requests are counted one after another and cannot overshoot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from kb.db.claim_tables import user_table
from kb.db.render_tables import render_job_table
from kb.errors import Problem
from kb.settings import Settings

if TYPE_CHECKING:
    from kb.render.jobs import Unit

WAITING = ("QUEUED", "RUNNING")


class QuotaExceeded(Problem):
    code = "LIMIT_EXCEEDED"


@dataclass(frozen=True)
class Quota:
    queued: int | None = None  # unit-jobs of one account queued or running; None: no limit (the operator's CLI)
    seeds: int | None = None  # distinct seeds per unit and kind; None: no limit

    @classmethod
    def of(cls, settings: Settings, account: bool = True) -> Quota:
        return cls(queued=settings.render_queue_quota if account else None, seeds=settings.render_max_seeds)


def lock_account(conn: sa.Connection, user_id: int) -> None:
    """Take the account's row lock for this transaction (its quota is counted and spent under it)."""
    u = user_table
    conn.execute(sa.update(u).where(u.c.id == user_id).values(id=u.c.id))


def queued(conn: sa.Connection, user_id: int) -> int:
    """Unit-jobs this account asked for that are queued or running; thumbnails its page views asked for (the view
    lane, kb.render.view_lane) are not the account's work and do not count."""
    t = render_job_table
    return conn.execute(
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.requested_by == user_id, t.c.status.in_(WAITING), t.c.lane != "view")
    ).scalar_one()


def check_queue(conn: sa.Connection, user_id: int, adding: int, quota: int) -> None:
    if not adding:
        return
    waiting = queued(conn, user_id)
    if waiting + adding > quota:
        raise QuotaExceeded(
            f"render quota: this account has {waiting} unit-jobs queued or running and this request would add "
            f"{adding}; KB_RENDER_QUEUE_QUOTA={quota} (ask again when some have finished, or for fewer units)",
            ceiling="KB_RENDER_QUEUE_QUOTA",
            queued=waiting,
        )


def check_seeds(conn: sa.Connection, units: Iterable[Unit], kind: str, seed: int, most: int) -> None:
    """Refuse a new seed for a unit that already has ``most`` distinct seeds of this kind."""
    t = render_job_table
    by_layer: dict[tuple[str, str], set[int]] = defaultdict(set)
    for u in units:
        by_layer[(u.model_sha256, u.layer_key)].add(u.unit)
    for (sha, layer), wanted in by_layer.items():
        seeds: dict[int, set[int]] = defaultdict(set)
        rows = conn.execute(
            sa.select(t.c.unit, t.c.params["seed"].as_integer())
            .distinct()
            .where(t.c.model_sha256 == sha, t.c.layer_key == layer, t.c.kind == kind, t.c.unit.in_(sorted(wanted)))
        )
        for unit, s in rows:
            seeds[unit].add(s)
        full = sorted(u for u, have in seeds.items() if seed not in have and len(have) >= most)
        if full:
            more = f" (and {len(full) - 1} more units)" if len(full) > 1 else ""
            raise QuotaExceeded(
                f"{layer}:{full[0]}{more} already has {most} seeds for {kind}; "
                f"KB_RENDER_MAX_SEEDS={most}: ask for one of its seeds ({sorted(seeds[full[0]])[:most]})",
                ceiling="KB_RENDER_MAX_SEEDS",
            )
