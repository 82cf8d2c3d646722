"""The claim layer's rows as typed, immutable values: what kb.claims reads from SQL and hands to the application,
the GraphQL types and the pages. Fields are named as the columns (plus the few a read joins in: a revision's
author, a circuit revision's edge list's size), so a reader's ``row.label`` is checked by mypy where a dict's
``row["label"]`` was not; each is built once, where its SQL is read (``of``). JSON columns stay JSON documents.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

import sqlalchemy as sa

JsonDoc = dict[str, Any]  # one JSON object of a JSON column (an evidence item, an edge)
_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


class _FromRow:
    """``of(mapping)``: the dataclass from a result row's mapping, taking the fields it names (the query may select
    more: labels such as a join's key are not the row's)."""

    __slots__ = ()

    @classmethod
    def of(cls, m: sa.RowMapping, **extra: Any) -> Self:
        return cls(**{k: m[k] for k in _names(cls) if k not in extra and k in m}, **extra)


@dataclass(frozen=True, slots=True)
class UserRow(_FromRow):
    """Who a user is, as pages and citations show them (never their credentials)."""

    id: int
    name: str
    display_name: str
    role: str


@dataclass(frozen=True, slots=True)
class ClaimRow(_FromRow):
    """A claim's current state (table ``claim``)."""

    id: int
    revision: int
    label: str
    body: str
    kind: str
    status: str
    confidence: float | None
    model_key: str
    circuit_id: int | None
    circuit_revision: int | None
    origin: str | None
    created_by: int
    created_at: datetime
    updated_at: datetime
    support_count: int
    dispute_count: int


@dataclass(frozen=True, slots=True)
class ClaimRevisionRow(_FromRow):
    """An immutable revision of a claim (table ``claim_revision``) with its author's name."""

    claim_id: int
    revision: int
    author_id: int
    created_at: datetime
    label: str
    body: str
    kind: str
    status: str
    confidence: float | None
    subjects: list[str]
    circuit_id: int | None
    circuit_revision: int | None
    evidence: list[JsonDoc]
    message: str
    author: str
    author_display: str


@dataclass(frozen=True, slots=True)
class ReviewRow(_FromRow):
    """A reviewer's current verdict on a claim (table ``review``)."""

    claim_id: int
    user_id: int
    verdict: str
    comment: str
    revision: int
    claim_revision: int | None  # the claim revision judged (None: reviewed before this was kept)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ReviewRevisionRow(_FromRow):
    """One change of a review (table ``review_revision``)."""

    claim_id: int
    user_id: int
    revision: int
    verdict: str
    comment: str
    claim_revision: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CircuitRow(_FromRow):
    """A circuit (table ``circuit``) as of one revision: the current one as read, an older one as
    ``circuits.at_revision`` shows it; ``current_revision`` is the circuit's newest either way."""

    id: int
    model_key: str
    name: str
    description: str
    neurons: list[str]
    edges: list[JsonDoc]  # {source, target, note}
    created_by: int
    created_at: datetime
    revision: int
    current_revision: int

    @classmethod
    def current(cls, m: sa.RowMapping) -> CircuitRow:
        """The circuit row as it is: the revision shown is its newest."""
        return cls.of(m, current_revision=m["revision"])


@dataclass(frozen=True, slots=True)
class CircuitRevisionRow(_FromRow):
    """An immutable revision of a circuit (table ``circuit_revision``) with its author's name and its edge list's
    ``edge_count`` and ``edges_size`` (bytes); ``edges`` only where read (None: not read)."""

    circuit_id: int
    revision: int
    author_id: int
    created_at: datetime
    name: str
    description: str
    neurons: list[str]
    edges_sha256: str
    message: str
    author: str
    author_display: str
    edge_count: int
    edges_size: int
    edges: list[JsonDoc] | None = None
