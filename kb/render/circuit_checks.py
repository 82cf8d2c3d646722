"""CIRCUIT_CHECK jobs in a worker: load the pinned model and the data set's images, measure the circuit
(kb.experiments.measure), and land the job with its experiment row in one transaction. A cancelled job stops at
its next progress point and lands nothing."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from kb.claims import activity, circuits
from kb.experiments import checks, store
from kb.render import jobs
from kb.render.jobs import InvalidKind, InvalidUnit, ModelRow
from kb.render.keepalive import Progress
from kb.settings import Settings

if TYPE_CHECKING:
    import torch

    from kb.graph.zoo.spec import Architecture

PASS_BATCH = 64  # maps per forward pass (images x conditions)


def run(
    engine: sa.Engine, settings: Settings, model_row: ModelRow, job: dict[str, Any], progress: Progress
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the figures of every target unit, what computed them) for a check's job."""
    import torch

    from kb.experiments import measure
    from kb.experiments.narrow import narrowed
    from kb.render.artifacts import versions
    from kb.render.model_cache import cached_model
    from kb.render.worker_device import device

    params = job["params"]
    circuit_id, revision = store.circuit_of(params)
    with engine.connect() as conn:
        circuit = circuits.at_revision(conn, circuit_id, revision)
    groups = checks.targets(circuit)
    where = device(settings)
    arch, model = cached_model(model_row.source, model_row.weights, model_row.sha256, str(where))
    images = load_images(engine, arch, params["dataset"], params["images"], params["seed"]).to(where)
    results: list[dict[str, Any]] = []
    torch.manual_seed(params["seed"])
    for g, ((s_layer, t_layer), units) in enumerate(groups.items()):
        try:
            source = model.get_submodule(arch.layer(s_layer).module)
            target = model.get_submodule(arch.layer(t_layer).module)
        except (KeyError, AttributeError) as exc:
            raise InvalidUnit(f"{model_row.key} has no layer {exc}") from None

        def part(lo: float, hi: float, g: int = g) -> Progress:
            return lambda step, total: progress(
                int(1000 * (g + lo + (hi - lo) * step / max(1, total)) / len(groups)), 1000
            )

        def narrow(
            units: list[int], probe: Callable[[torch.nn.Module], object], t_layer: str = t_layer
        ) -> AbstractContextManager[None]:
            return narrowed(model, arch, t_layer, units, probe)

        acts = measure.source_activations(model, source, images, PASS_BATCH, part(0.0, 0.2))
        try:
            found = measure.check(
                model,
                source,
                target,
                images,
                units,
                params["ablation"],
                seed=params["seed"],
                draws=params["draws"],
                batch=PASS_BATCH,
                progress=part(0.2, 1.0),
                acts=acts,
                narrow=narrow,
            )
        except ValueError as exc:
            raise InvalidKind(str(exc)) from None
        model_key = model_row.key
        for f in found:
            results.append(
                {
                    "target": f"{model_key}/{t_layer}:{f['target']}",
                    "source_layer": f"{model_key}/{s_layer}",
                    "source_units": int(acts.shape[1]),
                    **{k: v for k, v in f.items() if k != "target"},
                    "sources": [f"{model_key}/{s_layer}:{s}" for s in f["sources"]],
                    "edges": [{**e, "source": f"{model_key}/{s_layer}:{e['source']}"} for e in f["edges"]],
                }
            )
    made_by = {**versions(), "device": where.type, "dtype": "float32", "images": len(images)}
    return results, made_by


def load_images(engine: sa.Engine, arch: Architecture, dataset: str, count: int, seed: int) -> torch.Tensor:
    """``count`` images of the data set, a seeded sample of its files (in their sorted order, as dataset examples
    number them; unreadable files skipped), at the model's input size, preprocessed as the model takes them."""
    import torch

    from kb.render.dataset_examples import image_files, load
    from kb.render.datasets import dataset_by_name
    from kb.render.preprocess import preprocess_fn, preprocess_kind

    with engine.connect() as conn:
        ds = dataset_by_name(conn, dataset)
    if ds is None:
        raise InvalidKind(f"no data set {dataset!r} (kb dataset add NAME PATH)")
    files = image_files(Path(ds["path"]))
    channels, size = arch.input_shape[0], arch.input_shape[-1]
    order = np.random.default_rng([seed, 2]).permutation(len(files))
    picked: list[np.ndarray] = []
    for i in order:
        rgb = load(files[int(i)], size)
        if rgb is not None:
            picked.append(rgb)
        if len(picked) == count:
            break
    if len(picked) < count:
        raise InvalidKind(f"data set {dataset!r} has {len(picked)} readable images: fewer than the {count} asked for")
    x = torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).float() / 255.0
    if channels == 1:
        x = x.mean(1, keepdim=True)
    return preprocess_fn(preprocess_kind(arch.source))(x)


def land(engine: sa.Engine, job: dict[str, Any], results: list[dict[str, Any]], made_by: dict[str, Any]) -> list[int]:
    """The job DONE and its experiment written, in one transaction, if the job is still RUNNING (else nothing)."""
    with engine.begin() as conn:
        if not jobs.land(conn, job["id"]):
            return []
        experiment_id = store.write(conn, job, results, made_by)
        circuit_id, revision = store.circuit_of(job["params"])
        p = job["params"]
        first = results[0] if results else {}
        suff = first.get("sufficiency")
        summary = f"checked circuit:{circuit_id}@{revision} on {p['images']} images of {p['dataset']}"
        summary += f" ({p['ablation']} ablation"
        summary += f"; sufficiency {suff:.2f})" if suff is not None else ")"
        activity.record(
            conn,
            "RENDER",
            job["model_key"],
            store.key(experiment_id),
            summary,
            job["requested_by"],
            [r["target"] for r in results],
            circuit_id=circuit_id,
        )
    return [job["id"]]
