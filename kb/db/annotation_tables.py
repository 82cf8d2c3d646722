"""Tables of annotation in the browser: sign-in sessions, failed sign-ins, circuit revisions, the activity feed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from kb.db.tables import TableModel, utcnow


def _ts(nullable: bool = False, index: bool = False) -> sa.Column[Any]:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable, index=index)


class WebSession(TableModel, table=True):
    """A signed-in browser. The cookie holds a random secret; only its sha256 is stored. Revocable, expiring."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False, index=True))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    csrf_token: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(True))
    address: str = Field(default="", sa_column=sa.Column(sa.String(64), nullable=False, server_default=""))
    user_agent: str = Field(default="", sa_column=sa.Column(sa.String(300), nullable=False, server_default=""))


web_session_table = WebSession.__table__


class SigninFailure(TableModel, table=True):
    """One failed sign-in: counted per account name and per address over a window (the rate limit)."""

    __tablename__ = "signin_failure"
    __table_args__ = (
        sa.Index("ix_signin_failure_name", "name", "at"),
        sa.Index("ix_signin_failure_address", "address", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    address: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())


signin_failure_table = SigninFailure.__table__


class CircuitEdgeList(TableModel, table=True):
    """An edge list stored once, keyed by the sha256 of its canonical JSON (kb.claims.edge_lists).

    Circuit revisions point at one: a revision that keeps its edges (a rename, a new description) stores none again.
    """

    __tablename__ = "circuit_edge_list"

    sha256: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    edges: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # {source, target, note}
    edge_count: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    size: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # bytes of the canonical JSON


circuit_edge_list_table = CircuitEdgeList.__table__


class CircuitRevision(TableModel, table=True):
    """An immutable revision of a circuit: citable as circuit:N@R. Its edges are a shared, content-addressed list."""

    __tablename__ = "circuit_revision"

    circuit_id: int = Field(sa_column=sa.Column(sa.ForeignKey("circuit.id"), primary_key=True))
    revision: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    author_id: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    description: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    neurons: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    edges_sha256: str = Field(
        sa_column=sa.Column(sa.ForeignKey("circuit_edge_list.sha256"), nullable=False, index=True)
    )
    message: str = Field(default="", sa_column=sa.Column(sa.String(500), nullable=False, server_default=""))


circuit_revision_table = CircuitRevision.__table__


class Activity(TableModel, table=True):
    """One change: a claim revision, a review, a circuit revision, a finished render.

    The feed reads it by ``id`` (insertion order); live updates follow ``seq`` (commit order: given at commit on
    PostgreSQL by a trigger of migration 0007, see kb.claims.activity). PostgreSQL NOTIFY wakes the listeners,
    SQLite's are polling.
    """

    __tablename__ = "activity"

    id: int | None = Field(default=None, primary_key=True)
    seq: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True, unique=True, index=True))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # CLAIM | REVIEW | CIRCUIT | RENDER
    model_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    subject: str = Field(sa_column=sa.Column(sa.String(120), nullable=False))  # claim:3@2, circuit:1@4, render:9
    summary: str = Field(default="", sa_column=sa.Column(sa.String(300), nullable=False, server_default=""))
    actor_id: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=True))
    neurons: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # canonical keys it touches
    claim_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    circuit_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))


activity_table = Activity.__table__
