"""DATASET_EXAMPLES in a worker: one streamed pass over the dataset for a whole layer, its top-k per channel
kept for the next batch of the same layer (one layer's at a time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sqlalchemy as sa

from kb.render.datasets import dataset_by_name
from kb.render.jobs import InvalidKind
from kb.render.preprocess import preprocess_kind
from kb.render.worker_device import device
from kb.settings import Settings

_TOPK_CACHE: dict[tuple, tuple] = {}


def dataset_examples(
    engine: sa.Engine, settings: Settings, arch, model, layer_key: str, params: dict, group: list[dict], progress
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

        def stream():
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
