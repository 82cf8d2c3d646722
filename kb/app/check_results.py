"""A circuit check's outcome, as ``kb circuit check --wait`` reports it once its job is done: the experiment the
job wrote (its citable key, the circuit revision it checked) and each target unit's figures as the circuit page
shows them (kb.experiments.figures). One read; asking for a check is kb.experiments.checks.request_check."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from kb.experiments import figures
from kb.experiments import store as experiment_store


@dataclass(frozen=True)
class TargetFigures:
    target: str  # the target unit's key
    badges: list[str]  # "sufficiency 0.82", "necessity 0.64", "random 0.05 ± 0.03", ...
    beats_random: bool | None  # sufficiency above the random circuits'; None when undefined


@dataclass(frozen=True)
class CheckResult:
    key: str  # experiment:N
    circuit: int  # circuit:N
    revision: int  # the revision checked
    targets: list[TargetFigures]


def check_result(engine: sa.Engine, job_id: int) -> CheckResult | None:
    """The experiment render job ``job_id`` wrote, with each target's figures; None if it wrote none."""
    with engine.connect() as conn:
        row = experiment_store.by_jobs(conn, [job_id]).get(job_id)
    if row is None:
        return None
    targets = [
        TargetFigures(
            t["target"],
            figures.badges(row, t),
            figures.beats_random(t["sufficiency"], t["random"]["sufficiency"]),
        )
        for t in row["results"]
    ]
    return CheckResult(experiment_store.key(row["id"]), row["circuit_id"], row["circuit_revision"], targets)
