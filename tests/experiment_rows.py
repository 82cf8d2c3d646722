"""A finished circuit check's experiment row, written as a worker would land it (kb.experiments.store), for tests
that read checks back without running one: one place for the row's columns."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from kb.db.experiment_tables import experiment_table
from kb.db.tables import utcnow
from kb.render.params import params_hash


def insert_experiment(
    conn: sa.Connection, circuit_id: int, revision: int, params: dict, result: dict, **more: Any
) -> int:
    """The new experiment's id: circuit_id@revision checked on the "noise" data set (mean ablation) of an
    InceptionV1 whose weights hash is zeros, with one target's ``result``; ``more``: job_id, requested_by."""
    x = experiment_table
    return conn.execute(
        sa.insert(x)
        .values(
            circuit_id=circuit_id,
            circuit_revision=revision,
            model_key="inceptionv1",
            model_sha256="0" * 64,
            dataset="noise",
            ablation="mean",
            params=params,
            params_hash=params_hash("CIRCUIT_CHECK", params),
            results=[result],
            versions={"torch": "2", "circuit-kb": "0"},
            created_at=utcnow(),
            **more,
        )
        .returning(x.c.id)
    ).scalar_one()
