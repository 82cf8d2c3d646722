"""The activity feed in the API: recent changes, newest first, filterable by model and kind."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from kb.claims import activity
from kb.schema.claim_types import as_utc
from kb.schema.context import Info
from kb.schema.errors import limit

ActivityKind = strawberry.enum(Enum("ActivityKind", {k: k for k in activity.KINDS}))
MAX_FIRST = 200


@strawberry.type(description="One change: a claim revision, a review, a circuit revision or a finished render.")
class ActivityItem:
    id: int = strawberry.field(description="increasing as rows are written (live streams' event ids: commit order)")
    at: datetime
    kind: ActivityKind
    model: str
    subject: str = strawberry.field(description="what changed: claim:N@R, claim:N (a review), circuit:N@R, render:J")
    summary: str
    actor: str | None = strawberry.field(description="the account's name (none for renders)")
    neurons: list[str] = strawberry.field(description="canonical keys of the neurons it touches")

    @classmethod
    def of(cls, row: dict) -> ActivityItem:
        return cls(
            id=row["id"],
            at=as_utc(row["at"]),
            kind=ActivityKind[row["kind"]],
            model=row["model_key"],
            subject=row["subject"],
            summary=row["summary"],
            actor=row["actor"],
            neurons=row["neurons"],
        )


@strawberry.type
class LiveQuery:
    @strawberry.field(description="Recent changes, newest first; `before` (an id) pages back.")
    def activity(
        self,
        info: Info,
        model: str | None = None,
        kind: ActivityKind | None = None,
        first: int = 50,
        before: int | None = None,
    ) -> list[ActivityItem]:
        if not 1 <= first <= MAX_FIRST:
            raise limit(f"first is 1..{MAX_FIRST}")
        if model:
            model = info.context.graphs.catalog().model(model).key
        with info.context.graphs.engine.connect() as conn:
            rows = activity.recent(conn, model, before, first, kind.value if kind else None)
        return [ActivityItem.of(r) for r in rows]
