"""DATASET_EXAMPLES in a worker: one streamed pass over the dataset for a whole layer, its top-k per channel
kept for the next batch of the same layer (one layer's at a time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from kb.render.datasets import dataset_by_name
from kb.render.jobs import InvalidKind
from kb.render.keepalive import Progress
from kb.render.preprocess import preprocess_kind
from kb.render.worker_device import device
from kb.settings import Settings

if TYPE_CHECKING:
    import torch

    from kb.graph.zoo.spec import Architecture
    from kb.render.dataset_examples import Batch, TopK

# (model, module, dataset folder, its files, k, image size) -> (the dataset's files, the module's top-k)
_TOPK_CACHE: dict[tuple[int, str, str, int, int, int], tuple[list[Path], TopK]] = {}


def dataset_examples(
    engine: sa.Engine,
    settings: Settings,
    arch: Architecture,
    model: torch.nn.Module,
    layer_key: str,
    params: dict[str, Any],
    group: list[dict[str, Any]],
    progress: Progress,
) -> list[np.ndarray]:
    """Each job's unit's top-k dataset images as a grid."""
    from kb.render import dataset_examples as D

    with engine.connect() as conn:
        ds = dataset_by_name(conn, params["dataset"])
    if ds is None:
        raise InvalidKind(f"no dataset {params['dataset']!r} (kb dataset add NAME PATH)")
    files = D.image_files(Path(ds["path"]))
    module = arch.layer(layer_key).module
    size = arch.input_shape[-1]  # the images at the size the model takes (224 for ImageNet's, 32 for the digits)
    key = (id(model), module, ds["path"], len(files), params["top_k"], size)
    if key not in _TOPK_CACHE:
        total = max(1, len(files))
        done = [0]

        def stream() -> Iterator[Batch]:
            for indices, pixels in D.batches(files, 32, size):
                done[0] += len(indices)
                progress(min(done[0], total - 1), total)
                yield indices, pixels

        try:
            found, _ = D.collect(
                model,
                [module],
                stream(),
                params["top_k"],
                preprocess_kind(arch.source),
                device(settings),
                stop_after=module,
            )
        except D.NoImages as exc:
            raise InvalidKind(f"{exc} ({ds['path']})") from None
        _TOPK_CACHE.clear()
        _TOPK_CACHE[key] = (files, found[module])
    files, top = _TOPK_CACHE[key]
    return [D.grid(files, top, j["unit"], size) for j in group]
