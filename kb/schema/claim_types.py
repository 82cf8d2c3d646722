"""GraphQL types of the claim layer that refer to no node: kinds and statuses, evidence, reviews, citations, people,
field changes, a circuit's stated edges and their check, and the helpers they share (BibTeX, UTC timestamps).

The nodes themselves (Claim, ClaimRevision, Circuit) refer to the graph's and the graph's to them: they live in
kb.schema.types, which imports this module (as do circuit revisions, experiments, renders and live updates).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import strawberry

from kb.claims import content
from kb.claims.bibtex import bib_escape as bib_escape  # the citations' BibTeX: kb.claims.bibtex's
from kb.claims.bibtex import bib_key as bib_key
from kb.claims.reviews import last_content_revision
from kb.claims.rows import ClaimRevisionRow, ClaimRow, ReviewRow
from kb.schema.context import Info
from kb.schema.fields import field

# enums built from kb.claims.content's lists at run time (what strawberry reads); mypy sees classes of no members
if TYPE_CHECKING:

    class ClaimKind(Enum): ...

    class ClaimStatus(Enum): ...

    class EvidenceKind(Enum): ...

    class Verdict(Enum): ...
else:
    ClaimKind = strawberry.enum(Enum("ClaimKind", {k: k for k in content.KINDS}), description="What a claim asserts.")
    ClaimStatus = strawberry.enum(Enum("ClaimStatus", {k: k for k in content.STATUSES}))
    EvidenceKind = strawberry.enum(
        Enum("EvidenceKind", {k: k for k in content.EVIDENCE_KINDS}),
        description="The seven lines of evidence of the Circuits thread, citations, and EXPERIMENT: a circuit "
        "checked by experiment here (experiment:N)",
    )
    Verdict = strawberry.enum(Enum("Verdict", {"SUPPORT": "SUPPORT", "DISPUTE": "DISPUTE"}))


def as_utc(v: datetime) -> datetime:
    """A database timestamp as an aware UTC datetime (SQLite returns naive ones)."""
    return v if v.tzinfo else v.replace(tzinfo=UTC)


@strawberry.type(description="How to cite something: a stable key, a URL, a BibTeX entry, a line of text.")
class Citation:
    key: str
    url: str
    bibtex: str
    text: str


@strawberry.type
class Person:
    name: str
    display_name: str


def _shown(p: Person) -> str:
    return p.display_name or p.name


async def _person(info: Info, user_id: int) -> Person:
    row = await info.context.loaders.user.load(user_id)
    return Person(name=row.name, display_name=row.display_name) if row else Person(name="?", display_name="?")


@strawberry.type(description="A piece of evidence and what it points at.")
class Evidence:
    kind: EvidenceKind
    note: str
    neuron: str | None = strawberry.field(default=None, description="a neuron key")
    source: str | None = strawberry.field(default=None, description="an edge's source neuron key")
    target: str | None = strawberry.field(default=None, description="an edge's target neuron key")
    url: str | None = None
    doi: str | None = None
    visualization: str | None = None
    authors: list[str] | None = strawberry.field(default=None, description="a CITATION's authors")
    title: str | None = strawberry.field(default=None, description="a CITATION's title")
    experiment: str | None = strawberry.field(default=None, description="an EXPERIMENT's key: experiment:N")

    @classmethod
    def of(cls, item: dict[str, Any]) -> Evidence:
        return cls(
            kind=EvidenceKind[item["kind"]],
            note=item.get("note", ""),
            neuron=item.get("neuron"),
            source=item.get("source"),
            target=item.get("target"),
            url=item.get("url"),
            doi=item.get("doi"),
            visualization=item.get("visualization"),
            authors=item.get("authors"),
            title=item.get("title"),
            experiment=item.get("experiment"),
        )


@strawberry.type(description="One field that changed between two revisions.")
class FieldChange:
    field: str
    before: str | None = strawberry.field(description="the old value (lists and objects as JSON)")
    after: str | None
    patch: str | None = strawberry.field(description="a unified diff, for label and body (null when tooLarge)")
    too_large: bool = strawberry.field(
        default=False,
        description="the texts were too large to diff within the server's bound: patch is null, before and after "
        "hold both versions",
    )


@strawberry.type
class ReviewRevision:
    revision: int
    verdict: Verdict
    comment: str
    created_at: datetime


@strawberry.type(description="A reviewer's current verdict on a claim; `history` keeps every change.")
class Review:
    verdict: Verdict
    comment: str
    revision: int
    created_at: datetime
    updated_at: datetime
    _row: strawberry.Private[ReviewRow]

    @classmethod
    def of(cls, row: ReviewRow) -> Review:
        return cls(
            verdict=Verdict[row.verdict],
            comment=row.comment,
            revision=row.revision,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            _row=row,
        )

    @field(description="the claim revision this verdict judged (null: reviewed before this was kept)")
    def claim_revision(self) -> int | None:
        return self._row.claim_revision

    @field(description="the claim's content changed after this review: it judged an older revision")
    async def stale(self, info: Info) -> bool:
        revs = await info.context.loaders.revisions.load(self._row.claim_id)
        return (self._row.claim_revision or 0) < last_content_revision(revs)

    @strawberry.field
    async def reviewer(self, info: Info) -> Person:
        return await _person(info, self._row.user_id)

    @strawberry.field
    async def history(self, info: Info) -> list[ReviewRevision]:
        rows = await info.context.loaders.review_history.load((self._row.claim_id, self._row.user_id))
        return [
            ReviewRevision(
                revision=r.revision,
                verdict=Verdict[r.verdict],
                comment=r.comment,
                created_at=as_utc(r.created_at),
            )
            for r in rows
        ]


def pin_key(row: ClaimRow | ClaimRevisionRow) -> str | None:
    """circuit:N@R of a claim (revision) row; circuit:N where the revision is not known (an imported claim)."""
    if not row.circuit_id:
        return None
    revision = row.circuit_revision
    return f"circuit:{row.circuit_id}" + (f"@{revision}" if revision else "")


@strawberry.type
class CircuitEdge:
    source: str
    target: str
    note: str


@strawberry.type(description="One stated edge checked against the weight graph.")
class EdgeCheck:
    source: str
    target: str
    note: str
    exists: bool
    weight: float | None
    magnitude: float | None
    sign: str = strawberry.field(description="POSITIVE, NEGATIVE, ZERO or ABSENT")
    rank: int | None = strawberry.field(description="1 = the target's strongest excitatory input")
    inputs: int | None = strawberry.field(description="how many inputs the target has")
    reason: str


@strawberry.type
class CircuitCheck:
    edges: list[EdgeCheck]

    @field(description="every stated edge exists in the weight graph")
    def all_exist(self) -> bool:
        return all(e.exists for e in self.edges)

    @field(description="every stated edge exists and is excitatory")
    def all_excitatory(self) -> bool:
        return all(e.sign == "POSITIVE" for e in self.edges)
