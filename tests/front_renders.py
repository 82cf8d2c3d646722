"""Finished feature visualizations without a render worker, for the front page's tests: jobs requested, started
and landed through kb.render.artifacts.store (real PNGs in storage, artifact rows, jobs DONE), as a worker would."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import sqlalchemy as sa
from stores import settings_for

from kb.db.catalog import load_catalog
from kb.render import artifacts, jobs
from kb.render.params import RenderParams

THUMBNAIL = asdict(RenderParams(size=64, steps=16, seed=0))


def picture(seed: int, size: int = 64) -> np.ndarray:
    """A small, colourful interference pattern (different for each seed): it reads as a feature visualization."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(3, 9), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
        ring = np.cos(2 * np.pi * rng.uniform(2, 5) * np.hypot(x - rng.uniform(0.2, 0.8), y - rng.uniform(0.2, 0.8)))
        channels.append(0.5 + 0.3 * wave + 0.2 * ring)
    return (np.clip(np.stack(channels, axis=-1), 0, 1) * 255).astype(np.uint8)


def land(engine: sa.Engine, model_key: str, units: list[tuple[str, int]], params: dict | None = None) -> list[int]:
    """Feature visualizations of ``units`` (layer key, index) of the model, DONE with stored PNGs (those done
    already are left as they are); their job ids."""
    params = params or THUMBNAIL
    with engine.connect() as conn:
        sha = load_catalog(conn).model(model_key).sha256
    wanted = [jobs.Unit(model_key, sha, layer, index) for layer, index in units]
    with engine.begin() as conn:
        ids, _ = jobs.request(conn, wanted, "FEATURE_VIS", params)
    with engine.begin() as conn:
        started = jobs.start(conn, ids, "test-worker", 60)
    if started:  # the others were landed before (the same unit, kind and parameters: one job)
        size = params.get("size", 64)
        artifacts.store(engine, settings_for(engine), started, [picture(job["id"], size) for job in started])
    return ids
