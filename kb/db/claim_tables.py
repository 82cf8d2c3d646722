"""Tables of the claim layer: accounts and tokens, claims with immutable revisions, reviews, circuits.

Claims refer to neurons by canonical key (model, layer, index), not by row id, so that an export imported into
another database (with other row ids) means the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

from kb.db.tables import TableModel, utcnow


def _ts(nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


class User(TableModel, table=True):
    __tablename__ = "kb_user"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    display_name: str = Field(default="", sa_column=sa.Column(sa.String(200), nullable=False, server_default=""))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # viewer|editor|moderator|admin
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    disabled_at: datetime | None = Field(default=None, sa_column=_ts(True))
    password_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))  # argon2id


user_table = User.__table__


class ApiToken(TableModel, table=True):
    """A bearer token; only its sha256 is stored. ``prefix`` (its first characters) identifies it to people."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False, index=True))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    note: str = Field(default="", sa_column=sa.Column(sa.String(200), nullable=False, server_default=""))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    revoked_at: datetime | None = Field(default=None, sa_column=_ts(True))


api_token_table = ApiToken.__table__


class Circuit(TableModel, table=True):
    """A named subgraph: neurons and the edges between them that a claim states, with a note per edge."""

    __tablename__ = "circuit"

    id: int | None = Field(default=None, primary_key=True)  # circuit:{id}
    model_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    description: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    neurons: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # canonical keys
    edges: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # {source, target, note}
    created_by: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    revision: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))


circuit_table = Circuit.__table__


class Claim(TableModel, table=True):
    """The current state of a claim (what search and lists read); its history is in claim_revision."""

    __tablename__ = "claim"

    id: int | None = Field(default=None, primary_key=True)  # claim:{id}
    revision: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # the current revision number
    label: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, index=True))
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    confidence: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    model_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    circuit_id: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("circuit.id"), nullable=True))
    circuit_revision: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))  # pinned
    origin: str | None = Field(default=None, sa_column=sa.Column(sa.String(300), nullable=True, unique=True))
    created_by: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    support_count: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    dispute_count: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))


claim_table = Claim.__table__


class ClaimRevision(TableModel, table=True):
    """An immutable revision: the claim's fields as they were, who changed them and when."""

    __tablename__ = "claim_revision"

    claim_id: int = Field(sa_column=sa.Column(sa.ForeignKey("claim.id"), primary_key=True))
    revision: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    author_id: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    label: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    confidence: float | None = Field(default=None, sa_column=sa.Column(sa.Float, nullable=True))
    subjects: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # canonical neuron keys
    circuit_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    # the circuit's revision this claim revision is about (circuit:N@R): a later circuit edit does not change it
    circuit_revision: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    evidence: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    message: str = Field(default="", sa_column=sa.Column(sa.String(500), nullable=False, server_default=""))


claim_revision_table = ClaimRevision.__table__


class ClaimSubject(TableModel, table=True):
    """The neurons a claim's current revision is about (rewritten with each revision)."""

    __tablename__ = "claim_subject"
    __table_args__ = (sa.Index("ix_claim_subject_neuron", "model_key", "layer_key", "neuron_index"),)

    claim_id: int = Field(sa_column=sa.Column(sa.ForeignKey("claim.id"), primary_key=True))
    model_key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    layer_key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    neuron_index: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))


claim_subject_table = ClaimSubject.__table__


class Review(TableModel, table=True):
    """One review per user per claim (the current verdict); its changes are in review_revision."""

    __tablename__ = "review"

    claim_id: int = Field(sa_column=sa.Column(sa.ForeignKey("claim.id"), primary_key=True))
    user_id: int = Field(sa_column=sa.Column(sa.ForeignKey("kb_user.id"), primary_key=True))
    verdict: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    comment: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    revision: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    claim_revision: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))  # judged
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


review_table = Review.__table__


class ReviewRevision(TableModel, table=True):
    __tablename__ = "review_revision"

    claim_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    user_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    revision: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    verdict: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    comment: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    claim_revision: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


review_revision_table = ReviewRevision.__table__
