"""Tables of experiments on circuits: one row per measured check (kb.experiments)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field

import kb.db.render_tables  # noqa: F401  (render_job, which experiment.job_id names)
from kb.db.tables import TableModel, utcnow


class Experiment(TableModel, table=True):
    """A circuit revision checked by experiment on a data set: ``experiment:{id}``. The same (circuit revision,
    parameters: data set, ablation, images, seed, draws, reduction) is one row; ``results`` holds the figures
    of each target unit, ``versions`` what computed them."""

    __tablename__ = "experiment"
    __table_args__ = (sa.UniqueConstraint("circuit_id", "circuit_revision", "params_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    circuit_id: int = Field(sa_column=sa.Column(sa.ForeignKey("circuit.id"), nullable=False, index=True))
    circuit_revision: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    model_key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    model_sha256: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    dataset: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    ablation: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # zero | mean | resample
    params: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    params_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    results: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    versions: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    # the job that measured it (null for one imported from a claim file)
    job_id: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("render_job.id"), nullable=True))
    requested_by: int | None = Field(default=None, sa_column=sa.Column(sa.ForeignKey("kb_user.id"), nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False)
    )


experiment_table = Experiment.__table__
