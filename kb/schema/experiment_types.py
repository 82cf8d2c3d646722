"""GraphQL of experiments on circuits: checkCircuit (a job of the render queue), Circuit.experiments, and an
experiment by its citable key. The work is kb.experiments'."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import strawberry

from kb.claims import circuits
from kb.experiments import figures
from kb.experiments import store as experiment_store
from kb.schema.claim_types import as_utc
from kb.schema.context import Info
from kb.schema.fields import field

# an enum built from kb.experiments.figures.ABLATIONS at run time (what strawberry reads); mypy sees a class of no
# members
if TYPE_CHECKING:

    class Ablation(Enum): ...
else:
    Ablation = strawberry.enum(
        Enum("Ablation", {a.upper(): a for a in figures.ABLATIONS}),
        description="what an ablated unit's map becomes: ZERO; MEAN, its mean over the image set, position by "
        "position; RESAMPLE, its map on another image of the set (each channel its own seeded random permutation)",
    )


@strawberry.type(description="A measure over random circuits: mean and sample standard deviation of its draws.")
class Spread:
    mean: float | None
    std: float | None
    draws: int
    values: list[float]


@strawberry.type(description="One edge's own effect: (m(M) - m(M without its source)) / (m(M) - m(∅)).")
class EdgeEffect:
    source: str
    m_without: float = strawberry.field(description="m with only this source ablated")
    effect: float | None


@strawberry.type(description="The figures of one target unit of the circuit (its inputs in one layer).")
class TargetFigures:
    target: str
    source_layer: str
    source_units: int = strawberry.field(description="units in the source layer (∅ ablates them all)")
    sources: list[str] = strawberry.field(description="the circuit's inputs of this target (C)")
    m_full: float = strawberry.field(description="m(M): nothing ablated")
    m_empty: float = strawberry.field(description="m(∅): every input of the layer ablated")
    m_circuit: float = strawberry.field(description="m(C): only the circuit's inputs kept")
    m_without_circuit: float = strawberry.field(description="m(M-C): only the circuit's inputs ablated")
    sufficiency: float | None = strawberry.field(
        description="f(C) = (m(C) - m(∅)) / (m(M) - m(∅)); null if m(M) = m(∅)"
    )
    necessity: float | None = strawberry.field(description="1 - f(M-C)")
    random_sufficiency: Spread = strawberry.field(description="f of random sets of as many inputs of the layer")
    random_necessity: Spread
    random_sets: list[list[int]] = strawberry.field(description="the random draws' unit indices")
    sufficiency_beats_random: bool | None = strawberry.field(
        description="f(C) more than 2 standard deviations above the random sets' mean; null if either is undefined"
    )
    necessity_beats_random: bool | None = strawberry.field(
        description="the necessity more than 2 standard deviations above the random sets' mean"
    )
    edges: list[EdgeEffect]
    badges: list[str] = strawberry.field(description='"sufficiency 0.82", "necessity 0.64", "random 0.05 ± 0.03"…')


@strawberry.type(description="A circuit revision checked by experiment on a data set: citable as experiment:N.")
class Experiment:
    key: str = strawberry.field(description="experiment:N")
    circuit_key: str = strawberry.field(description="circuit:N@R, the revision measured")
    circuit_revision: int
    latest_revision: int = strawberry.field(description="the circuit's newest revision")
    dataset: str
    ablation: Ablation
    images: int
    seed: int
    draws: int = strawberry.field(description="random circuits per measure")
    reduction: str = strawberry.field(description="how a unit's map is reduced over positions: mean")
    ablation_point: str = strawberry.field(description="where a source is ablated")
    model: str
    model_sha256: str
    pinned_hash: str = strawberry.field(description="the first 12 hex of the weights' sha256 (the pinned key's)")
    params: str = strawberry.field(description="JSON")
    versions: str = strawberry.field(description="JSON: torch, torchvision, lucent, circuit-kb, device")
    created_at: datetime
    targets: list[TargetFigures]

    @field(description="true when the circuit has a newer revision than the one measured")
    def older_revision(self) -> bool:
        return self.circuit_revision < self.latest_revision

    @classmethod
    def of(cls, row: dict[str, Any], latest_revision: int) -> Experiment:
        p = row["params"]
        return cls(
            key=experiment_store.key(row["id"]),
            circuit_key=f"circuit:{row['circuit_id']}@{row['circuit_revision']}",
            circuit_revision=row["circuit_revision"],
            latest_revision=latest_revision,
            dataset=row["dataset"],
            ablation=Ablation[row["ablation"].upper()],
            images=p["images"],
            seed=p["seed"],
            draws=p["draws"],
            reduction=p["reduction"],
            ablation_point=figures.ABLATION_POINT,
            model=row["model_key"],
            model_sha256=row["model_sha256"],
            pinned_hash=row["model_sha256"][:12],
            params=json.dumps(p, sort_keys=True),
            versions=json.dumps(row["versions"], sort_keys=True),
            created_at=as_utc(row["created_at"]),
            targets=[_target(row, t) for t in row["results"]],
        )


def _target(row: dict[str, Any], t: dict[str, Any]) -> TargetFigures:
    return TargetFigures(
        target=t["target"],
        source_layer=t["source_layer"],
        source_units=t["source_units"],
        sources=t["sources"],
        m_full=t["m_full"],
        m_empty=t["m_empty"],
        m_circuit=t["m_circuit"],
        m_without_circuit=t["m_without_circuit"],
        sufficiency=t["sufficiency"],
        necessity=t["necessity"],
        random_sufficiency=Spread(**t["random"]["sufficiency"]),
        random_necessity=Spread(**t["random"]["necessity"]),
        random_sets=t["random"]["sets"],
        sufficiency_beats_random=figures.beats_random(t["sufficiency"], t["random"]["sufficiency"]),
        necessity_beats_random=figures.beats_random(t["necessity"], t["random"]["necessity"]),
        edges=[EdgeEffect(**e) for e in t["edges"]],
        badges=figures.badges(row, t),
    )


def experiments_of(info: Info, circuit_id: int, latest_revision: int) -> list[Experiment]:
    with info.context.engine.connect() as conn:
        rows = experiment_store.for_circuits(conn, [circuit_id])[circuit_id]
    return [Experiment.of(r, latest_revision) for r in rows]


def experiment_of_job(info: Info, job_id: int) -> Experiment | None:
    with info.context.engine.connect() as conn:
        row = experiment_store.by_jobs(conn, [job_id]).get(job_id)
        if row is None:
            return None
        latest = circuits.get(conn, row["circuit_id"]).revision
    return Experiment.of(row, latest)


@strawberry.type
class ExperimentQuery:
    @field(description="An experiment by its citable key (experiment:N).")
    def experiment(self, info: Info, key: str) -> Experiment:
        with info.context.engine.connect() as conn:
            row = experiment_store.get(conn, experiment_store.parse_key(key))
            latest = circuits.get(conn, row["circuit_id"]).revision
        return Experiment.of(row, latest)
