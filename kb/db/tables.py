"""SQLModel tables: models → layers → neurons → connections, and the link programs behind the weights."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class TableModel(SQLModel):
    """The base of every table: declares the SQLAlchemy ``Table`` that SQLModel builds, typed.

    Each table module defines a handle next to each table (``claim_table = Claim.__table__``); the data-access
    modules write their Core queries on those handles (``claim_table.c.id``), so that they are type-checked."""

    __table__: ClassVar[sa.Table]


class Model(TableModel, table=True):
    """A model version. Its key is never reused: removing a model leaves this row as a tombstone."""

    __tablename__ = "model"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    source: str = Field(sa_column=sa.Column(sa.String(128), nullable=False))  # lucent:inceptionv1
    sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))  # of the weights, canonical order
    weights: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))  # how they were obtained
    input_shape: list[int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    description: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    imported_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )
    removed_at: datetime | None = Field(default=None, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=True))
    removed_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


model_table = Model.__table__


class Layer(TableModel, table=True):
    __tablename__ = "layer"
    __table_args__ = (sa.UniqueConstraint("model_id", "key"), sa.UniqueConstraint("model_id", "position"))

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(sa_column=sa.Column(sa.ForeignKey("model.id", ondelete="CASCADE"), nullable=False))
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))  # mixed4c
    module_path: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))  # order in the network
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    units: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    output_shape: list[int] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    aliases: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))


layer_table = Layer.__table__


class Neuron(TableModel, table=True):
    __tablename__ = "neuron"
    __table_args__ = (sa.UniqueConstraint("layer_id", "index"), sa.Index("ix_neuron_model", "model_id"))

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(sa_column=sa.Column(sa.ForeignKey("model.id", ondelete="CASCADE"), nullable=False))
    layer_id: int = Field(sa_column=sa.Column(sa.ForeignKey("layer.id", ondelete="CASCADE"), nullable=False))
    index: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


neuron_table = Neuron.__table__


class LayerLink(TableModel, table=True):
    """How the units of one layer reach the next: the factors from which any edge's kernel is recomputed."""

    __tablename__ = "layer_link"
    __table_args__ = (sa.UniqueConstraint("source_layer_id", "target_layer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(
        sa_column=sa.Column(sa.ForeignKey("model.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    source_layer_id: int = Field(sa_column=sa.Column(sa.ForeignKey("layer.id", ondelete="CASCADE"), nullable=False))
    target_layer_id: int = Field(sa_column=sa.Column(sa.ForeignKey("layer.id", ondelete="CASCADE"), nullable=False))
    method: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    notes: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    program: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))  # structure (kb.graph.program.dumps)
    # npz of its weights; on PostgreSQL stored out of line without compression (migration 0006): floats do not compress
    arrays: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


layer_link_table = LayerLink.__table__


class Connection(TableModel, table=True):
    """One weighted edge between units of consecutive significant layers.

    weight = sum of the kernel K (net excitation), magnitude = ||K||₂; K, and the method that made it, are the
    layer link's (``layer_link``), so no row repeats them.

    On PostgreSQL the table is partitioned by model (LIST on model_id): an import COPYs a model's edges into a
    fresh partition, builds its indexes once and attaches it, all in the import's transaction; removing a
    model drops its partition. The database is read by ranges of targets only (a graph file is built from
    them; a unit's inputs and outputs are served from its model's graph file), so each partition has one index,
    a BRIN on target_id (its rows are written in target order; ``kb.db.bulk.index_connections`` gives the
    figures against a primary key), and the single SQLite table is stored in its primary key
    (target_id, source_id). The importer writes each (target, source) pair once.
    No foreign keys on purpose: the importer writes the neurons first in the same transaction, and per-row
    RI checks would triple the load time.
    """

    __tablename__ = "connection"
    __table_args__ = ({"sqlite_with_rowid": False},)

    model_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    target_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    source_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    weight: float = Field(sa_column=sa.Column(sa.REAL, nullable=False))
    magnitude: float = Field(sa_column=sa.Column(sa.REAL, nullable=False))


connection_table = Connection.__table__
