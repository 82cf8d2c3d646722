"""A group's pictures (jobs of one model, layer, kind and parameters), one per job, by kind: feature and neuron
visualisations (``feature_vis``), dataset examples (``dataset_cache``), a unit's strongest input kernels, and
a whole layer's deep dream and caricatures (``layer_views``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from kb.render import images
from kb.render.jobs import InvalidKind, InvalidUnit, ModelRow
from kb.render.keepalive import Progress
from kb.render.params import LAYER_KINDS
from kb.render.worker_device import bf16, device
from kb.serving.graph_cache import GraphCache
from kb.settings import Settings

if TYPE_CHECKING:
    import torch

    from kb.graph.zoo.spec import Architecture

# (model sha256, layer, image size, device, bf16, KB_RENDER_DEVICE_BATCH) -> units per device batch
_PER_PASS: dict[tuple[str, str, int, str, bool, int], int] = {}


def per_pass(settings: Settings, model_row: ModelRow, job: dict[str, Any]) -> int | None:
    """Units of ``job``'s group rendered in one device batch (feature and neuron visualisations: what the device
    fits, kb.render.batching); None for kinds done for a whole group at once (dataset examples, weights)."""
    if job["kind"] not in ("FEATURE_VIS", "NEURON_VIS"):
        return None
    from kb.render.batching import units_per_pass
    from kb.render.model_cache import cached_model

    where, half, params = device(settings), bf16(settings), job["params"]
    size = params["upsample"] or params["size"]
    key = (model_row.sha256, job["layer_key"], size, str(where), half, settings.render_device_batch)
    if key not in _PER_PASS:  # on a GPU it runs a forward pass to count activations: once per layer and size
        arch, model = cached_model(model_row.source, model_row.weights, model_row.sha256, str(where), half)
        module = arch.layer(job["layer_key"]).module
        _PER_PASS[key] = units_per_pass(model, module, size, where, settings.render_device_batch)
    return _PER_PASS[key]


def pictures(
    engine: sa.Engine, settings: Settings, model_row: ModelRow, group: list[dict[str, Any]], progress: Progress
) -> list[np.ndarray]:
    """HxWx3 uint8 pictures for ``group``'s jobs, in order; ``progress(step, total)`` as they advance."""
    first = group[0]
    kind, params = first["kind"], first["params"]
    where = device(settings)
    if kind == "WEIGHTS":
        return _weights(engine, first["model_key"], group)

    from kb.render.model_cache import cached_model
    from kb.render.preprocess import preprocess_kind

    if kind in LAYER_KINDS:
        arch, model = cached_model(model_row.source, model_row.weights, model_row.sha256, str(where))
        return [_layer_view(engine, settings, arch, model, job, where, progress) for job in group]
    if kind == "DATASET_EXAMPLES":
        from kb.render.dataset_cache import dataset_examples

        arch, model = cached_model(model_row.source, model_row.weights, model_row.sha256, str(where))
        return dataset_examples(engine, settings, arch, model, first["layer_key"], params, group, progress)

    from kb.render.feature_vis import render_units

    half = bf16(settings)
    arch, model = cached_model(model_row.source, model_row.weights, model_row.sha256, str(where), half)
    module = arch.layer(first["layer_key"]).module
    batch = per_pass(settings, model_row, first) or 0
    return render_units(
        model,
        module,
        [j["unit"] for j in group],
        size=params["size"],
        steps=params["steps"],
        seed=params["seed"],
        parameterization=params["parameterization"],
        transforms=params["transforms"],
        lr=params["lr"],
        negative=params["negative"],
        neuron=kind == "NEURON_VIS",
        upsample=params["upsample"],
        preprocess=preprocess_kind(arch.source),
        device=where,
        autocast=half,
        max_batch=batch,
        progress=progress,
    )


def _weights(engine: sa.Engine, model_key: str, group: list[dict[str, Any]]) -> list[np.ndarray]:
    """A unit's ten strongest input kernels (by magnitude) as small multiples."""
    graphs = GraphCache(engine)
    g = graphs.graph(model_key)
    out = []
    for job in group:
        target = g.ordinal(job["layer_key"], job["unit"])
        positions = g.inputs.positions(target, "magnitude")[:10]
        if not len(positions):
            raise InvalidUnit(f"{model_key}/{job['layer_key']}:{job['unit']} has no inputs (the first layer)")
        kernels = [graphs.kernel(g, int(g.inputs.other[p]), target) for p in positions]
        out.append(images.small_multiples(kernels))
    return out


def _layer_view(
    engine: sa.Engine,
    settings: Settings,
    arch: Architecture,
    model: torch.nn.Module,
    job: dict[str, Any],
    where: torch.device,
    progress: Progress,
) -> np.ndarray:
    """A whole layer's DEEPDREAM, or its CARICATURE of a dataset's image or of an uploaded one."""
    from kb.render.layer_views import render_layer_view
    from kb.render.preprocess import preprocess_kind

    params, target = job["params"], None
    if job["kind"] == "CARICATURE" and params.get("upload"):
        target = _uploaded_image(engine, settings, params["upload"], params["size"])
    elif job["kind"] == "CARICATURE":
        target = _dataset_image(engine, params["dataset"], params["image"], params["size"])
    return render_layer_view(
        model,
        arch.layer(job["layer_key"]).module,
        job["kind"],
        target=target,
        size=params["size"],
        steps=params["steps"],
        seed=params["seed"],
        parameterization=params["parameterization"],
        transforms=params["transforms"],
        lr=params["lr"],
        upsample=params["upsample"],
        preprocess=preprocess_kind(arch.source),
        device=where,
        progress=progress,
    )


def _uploaded_image(engine: sa.Engine, settings: Settings, sha256: str, size: int) -> np.ndarray:
    """The uploaded image (kb.render.uploads), its shorter side resized to ``size`` and centre-cropped."""
    from kb.render.storage import storage_from_settings
    from kb.render.uploads import upload_rgb

    rgb = upload_rgb(storage_from_settings(settings, engine), sha256, size)
    if rgb is None:
        raise InvalidKind(f"the uploaded image {sha256} is missing from the artifact store")
    return rgb


def _dataset_image(engine: sa.Engine, name: str, index: int, size: int) -> np.ndarray:
    """Image ``index`` of dataset ``name`` (its files in sorted order, as dataset examples number them), its
    shorter side resized to ``size`` and centre-cropped."""
    from pathlib import Path

    from kb.render.dataset_examples import image_files, load
    from kb.render.datasets import dataset_by_name

    with engine.connect() as conn:
        ds = dataset_by_name(conn, name)
    if ds is None:
        raise InvalidKind(f"no dataset {name!r} (kb dataset add NAME PATH)")
    files = image_files(Path(ds["path"]))
    if not 0 <= index < len(files):
        raise InvalidKind(f"dataset {name!r} has {len(files)} images now: no image {index}")
    rgb = load(files[index], size)
    if rgb is None:
        raise InvalidKind(f"image {index} of dataset {name!r} is not a readable image ({files[index].name})")
    return rgb
