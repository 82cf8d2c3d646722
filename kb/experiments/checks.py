"""What a circuit check asks for; its use case, which the API (checkCircuit), the pages ("Run check") and the CLI
(`kb circuit check`) call, is kb.app.renders.check_circuit. A check is a job of the render queue (kind
CIRCUIT_CHECK, one per circuit revision and parameters): it takes the render lanes (the bulk lane: a check holds its
worker for its whole measurement, so a person's renders and page thumbnails go first), progress and cancel, and a
worker lands it as an experiment row (kb.experiments.store). No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from kb.claims import circuits
from kb.claims.errors import BadInput, NotFound
from kb.claims.rows import CircuitRow
from kb.db.tables import model_table
from kb.experiments import figures
from kb.render import jobs

MIN_IMAGES, MAX_IMAGES = 2, 4096
LANE = "bulk"


@dataclass(frozen=True)
class CheckParams:
    dataset: str
    ablation: str = "mean"  # zero | mean | resample
    images: int = 256
    seed: int = 0
    draws: int = figures.DRAWS

    def check(self) -> CheckParams:
        if self.ablation not in figures.ABLATIONS:
            raise BadInput(f"ablation must be one of {', '.join(a.upper() for a in figures.ABLATIONS)}")
        if not MIN_IMAGES <= self.images <= MAX_IMAGES:
            raise BadInput(f"images must be {MIN_IMAGES}..{MAX_IMAGES}")
        if not 0 <= self.seed < 2**31:
            raise BadInput("seed must be 0..2^31-1")
        if not 2 <= self.draws <= 100:
            raise BadInput("draws must be 2..100")
        if not self.dataset:
            raise BadInput("name a data set to check the circuit on (kb dataset add NAME PATH)")
        return self


def targets(circuit: CircuitRow) -> dict[tuple[str, str], dict[int, list[int]]]:
    """The circuit's edges grouped by (source layer, target layer): {target unit: its inputs in the circuit}."""
    out: dict[tuple[str, str], dict[int, list[int]]] = {}
    for e in circuit.edges:
        s_layer, s_unit = _unit(e["source"])
        t_layer, t_unit = _unit(e["target"])
        inputs = out.setdefault((s_layer, t_layer), {}).setdefault(t_unit, [])
        if s_unit not in inputs:
            inputs.append(s_unit)
    return out


def _unit(neuron_key: str) -> tuple[str, int]:
    """(layer, unit) of a canonical neuron key ``model/layer:unit``."""
    layer, _, unit = neuron_key.split("/", 1)[1].rpartition(":")
    return layer, int(unit)


def check_job(conn: sa.Connection, circuit_key: str, params: CheckParams) -> tuple[jobs.Unit, dict[str, Any]]:
    """The job that checks ``circuit_key`` (``circuit:N`` pins its current revision, ``circuit:N@R`` that one) on
    a data set: its key (the circuit revision in place of a layer) and the parameters it stores; BadInput or
    NotFound when it cannot be asked for. kb.app.renders.check_circuit saves it, or finds the existing one."""
    from kb.render.datasets import dataset_by_name

    params.check()
    number, revision = circuits.parse_key(circuit_key)
    circuit = circuits.at_revision(conn, number, revision)
    model = conn.execute(sa.select(model_table).where(model_table.c.key == circuit.model_key)).first()
    ds = dataset_by_name(conn, params.dataset)
    if not circuit.edges:
        raise BadInput(f"circuit:{number}@{circuit.revision} has no edges: nothing to check")
    if model is None or model.removed_at is not None:
        raise NotFound(f"the circuit's model {circuit.model_key} is not in this knowledge base")
    if ds is None:
        raise NotFound(f"no data set {params.dataset!r}: add one with kb dataset add NAME PATH")
    if params.images > ds["images"]:
        raise BadInput(f"data set {params.dataset!r} has {ds['images']} images: ask for at most that many")
    pinned = f"circuit:{number}@{circuit.revision}"
    stored = {
        "circuit": pinned,
        "dataset": params.dataset,
        "ablation": params.ablation,
        "images": params.images,
        "seed": params.seed,
        "draws": params.draws,
        "reduction": figures.REDUCTION,
    }
    return jobs.Unit(model.key, model.sha256, pinned, jobs.LAYER_UNIT), stored
