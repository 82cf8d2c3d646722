"""The activity feed in the API: recent changes, newest first, filterable by model and kind."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import strawberry

from kb.claims import activity
from kb.schema.claim_types import as_utc
from kb.schema.context import Info
from kb.schema.errors import CodedError, limit
from kb.schema.fields import field, subscription

# an enum built from kb.claims.activity.KINDS at run time (what strawberry reads); mypy sees a class of no members
if TYPE_CHECKING:

    class ActivityKind(Enum): ...
else:
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
    seq: int | None = strawberry.field(
        description="commit order (null until committed): a subscription resumed with since: seq misses nothing"
    )

    @classmethod
    def of(cls, row: dict[str, Any]) -> ActivityItem:
        return cls(
            id=row["id"],
            at=as_utc(row["at"]),
            kind=ActivityKind[row["kind"]],
            model=row["model_key"],
            subject=row["subject"],
            summary=row["summary"],
            actor=row["actor"],
            neurons=row["neurons"],
            seq=row.get("seq"),
        )


@strawberry.type
class LiveQuery:
    @field(description="Recent changes, newest first; `before` (an id) pages back.")
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
        with info.context.engine.connect() as conn:
            rows = activity.recent(conn, model, before, first, kind.value if kind else None)
        return [ActivityItem.of(r) for r in rows]


@strawberry.type
class LiveSubscription:
    @subscription(
        description="Changes as they commit, in commit order (over WebSocket at /graphql, graphql-transport-ws), "
        "filtered by model and kinds; since: the seq of the last change a client has, to resume without a gap."
    )
    async def activity(
        self,
        info: Info,
        model: str | None = None,
        kinds: list[ActivityKind] | None = None,
        since: int | None = None,
    ) -> AsyncGenerator[ActivityItem, None]:
        context = info.context
        if context.live is None:
            raise CodedError("subscriptions are served over WebSocket at /graphql (graphql-transport-ws)", "BAD_INPUT")
        if since is not None and since < 0:
            raise CodedError("since is the seq of a change (0 or more)", "BAD_INPUT")
        models = {context.graphs.catalog().model(model).key} if model else set()
        if context.subscriptions >= context.settings.subscriptions_per_connection:
            raise CodedError(
                f"{context.settings.subscriptions_per_connection} subscriptions run on this connection already "
                "(KB_SUBSCRIPTIONS_PER_CONNECTION)",
                "RATE_LIMITED",
            )
        context.subscriptions += 1
        try:
            kind_names = {k.value for k in kinds or ()}
            async for row in context.live.rows(models, kind_names, since, context.request):
                yield ActivityItem.of(row)
        finally:
            context.subscriptions -= 1
