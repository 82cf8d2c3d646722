"""Tables of the render layer: datasets, render jobs (the source of truth for work), artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

import kb.db.claim_tables  # noqa: F401  (kb_user, which render_job.requested_by names)
from kb.db.tables import TableModel, utcnow


def _ts(nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(sa.DateTime(timezone=True), nullable=nullable)


class Dataset(TableModel, table=True):
    """A folder of images for dataset examples (``kb dataset add NAME PATH``)."""

    __tablename__ = "dataset"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    path: str = Field(sa_column=sa.Column(sa.String(1000), nullable=False))
    images: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


dataset_table = Dataset.__table__


class Artifact(TableModel, table=True):
    """A rendered image, stored content-addressed; the row says what made it."""

    __tablename__ = "artifact"

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    content_type: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    bytes: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    width: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    height: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    versions: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # torch, torchvision, lucent, kb
    meta: dict[str, Any] = Field(default_factory=dict[str, Any], sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


artifact_table = Artifact.__table__


class ArtifactBlob(TableModel, table=True):
    """An artifact's bytes in the ``database`` artifact store (kb.render.storage_db): its length and number of
    chunks; the bytes are its ``artifact_chunk`` rows, written in the same transaction."""

    __tablename__ = "artifact_blob"

    sha256: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    suffix: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))
    bytes: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    chunks: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


artifact_blob_table = ArtifactBlob.__table__


class ArtifactChunk(TableModel, table=True):
    """One piece (``kb.render.storage_db.CHUNK`` bytes, the last one shorter) of a stored artifact."""

    __tablename__ = "artifact_chunk"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["sha256", "suffix"], ["artifact_blob.sha256", "artifact_blob.suffix"], ondelete="CASCADE"
        ),
    )

    sha256: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    suffix: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))
    chunk_no: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


artifact_chunk_table = ArtifactChunk.__table__


class RenderJob(TableModel, table=True):
    """One unit's render of one kind with one set of parameters. The same (pinned model, unit, kind,
    parameters) is one row: asking again returns it (and its artifact) instead of rendering again."""

    __tablename__ = "render_job"
    __table_args__ = (
        sa.UniqueConstraint("model_sha256", "layer_key", "unit", "kind", "params_hash"),
        sa.Index("ix_render_job_status", "status", "deadline"),
        sa.Index("ix_render_job_requested_by", "requested_by", "status"),
        sa.Index("ix_render_job_lane", "status", "lane"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    model_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    model_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    layer_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    unit: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # -1: the whole layer
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    params_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # QUEUED RUNNING DONE FAILED CANCELLED
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    max_attempts: int = Field(default=3, sa_column=sa.Column(sa.Integer, nullable=False, server_default="3"))
    progress: float = Field(default=0.0, sa_column=sa.Column(sa.Float, nullable=False, server_default="0"))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    artifact_id: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("artifact.id"), nullable=True))
    worker: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    started_at: datetime | None = Field(default=None, sa_column=_ts(True))
    finished_at: datetime | None = Field(default=None, sa_column=_ts(True))
    deadline: datetime | None = Field(default=None, sa_column=_ts(True))  # RUNNING past this: re-queued
    enqueued_at: datetime | None = Field(default=None, sa_column=_ts(True))  # its message was last sent
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts(True))  # QUEUED: not to run before
    # the account whose request queued it (last: a FAILED job asked for again is theirs); None: the operator's CLI
    requested_by: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=True))
    # a bulk request's jobs (a layer, a model) keep the id of its first job: the request is one activity entry
    batch_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True, index=True))
    # interactive, view or bulk (kb.render.lanes): workers take the first lane with work; asked again in a
    # better lane while QUEUED, a job moves up
    lane: str = Field(default="bulk", sa_column=sa.Column(sa.String(16), nullable=False, server_default="bulk"))


render_job_table = RenderJob.__table__
